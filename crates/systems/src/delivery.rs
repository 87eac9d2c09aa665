//! Delivery: every shard walks the rows of this step's spikes in its synapse blocks and adds
//! the weights into its ring buffers, `delay` steps ahead. A plastic synapse is first depressed
//! by its target's postsynaptic trace (the presynaptic half of STDP), then delivers its new
//! weight. Fixed-point sums make the result independent of the order of spikes and shards.

use bevy_ecs::prelude::*;
use fum_engine::components::{Clock, NeuronBlock, Plasticity, SpikeExchange, SynapseBlocks};
use fum_engine::{Plugin, Simulation, Stage};
use fum_kernels::delivery::deliver_row;
use fum_kernels::stdp::on_pre_row;

pub struct DeliveryPlugin;

impl Plugin for DeliveryPlugin {
    fn build(&self, sim: &mut Simulation) {
        sim.add_systems(deliver_spikes.in_set(Stage::Deliver));
    }
}

pub fn deliver_spikes(mut shards: Query<(&mut NeuronBlock, &mut SynapseBlocks)>, exchange: Res<SpikeExchange>, plasticity: Res<Plasticity>, clock: Res<Clock>) {
    if exchange.spikes.is_empty() {
        return;
    }
    let step = clock.step;
    let mut items: Vec<_> = shards.iter_mut().collect();
    crate::for_each_shard(&mut items, |(neurons, synapses)| {
        for block in synapses.0.iter_mut() {
            // Spikes are ascending: the ones from this block's source population are one run.
            let first = exchange.spikes.partition_point(|&g| g < block.source_first);
            let last = exchange.spikes.partition_point(|&g| g < block.source_first + block.source_size);
            let ring = neurons.ring_mut(block.receptor);
            for &g in &exchange.spikes[first..last] {
                let row = (g - block.source_first) as usize;
                let syn = block.row_ptr[row] as usize..block.row_ptr[row + 1] as usize;
                match &block.plastic {
                    Some(p) if plasticity.enabled => {
                        let rule = &plasticity.projections[p.rule];
                        on_pre_row(&rule.rule, ring, step, &block.packed[syn.clone()], &mut block.weight[syn], &p.post_traces, &rule.post_decay);
                    }
                    _ => deliver_row(ring, step, &block.packed[syn.clone()], &block.weight[syn]),
                }
            }
        }
    });
}
