//! The postsynaptic half of STDP and the trace bookkeeping.
//!
//! Order within a step (after delivery has depressed synapses of spiking presynaptic neurons):
//! 1. each shard potentiates the incoming synapses of its spiking neurons by the presynaptic
//!    traces, then counts those spikes in its postsynaptic traces;
//! 2. the presynaptic traces (global) count this step's spikes.
//! Both halves therefore see the partner's trace from earlier steps only.

use bevy_ecs::prelude::*;
use fum_engine::components::{Clock, NeuronBlock, Plasticity, Shard, SpikeExchange, SynapseBlocks};
use fum_engine::{Plugin, Simulation, Stage};
use fum_kernels::stdp::on_post;

pub struct StdpPlugin;

impl Plugin for StdpPlugin {
    fn build(&self, sim: &mut Simulation) {
        sim.add_systems((potentiate, update_presynaptic_traces).chain().in_set(Stage::Plasticity));
    }
}

pub fn potentiate(mut shards: Query<(&Shard, &NeuronBlock, &mut SynapseBlocks)>, plasticity: Res<Plasticity>, clock: Res<Clock>) {
    if plasticity.projections.is_empty() {
        return;
    }
    let step = clock.step as u32;
    let mut items: Vec<_> = shards.iter_mut().collect();
    crate::for_each_shard(&mut items, |(shard, neurons, synapses)| {
        for block in synapses.0.iter_mut() {
            let Some(p) = block.plastic.as_mut() else { continue };
            let rule = &plasticity.projections[p.rule];
            for &local in &neurons.spiked {
                let global = shard.neurons.start + local;
                if !rule.target.contains(&global) {
                    continue;
                }
                let i = local as usize;
                if plasticity.enabled {
                    let incoming = &p.incoming[p.incoming_ptr[i] as usize..p.incoming_ptr[i + 1] as usize];
                    on_post(&rule.rule, step, incoming, &block.row_ptr, &mut block.weight, &rule.pre_traces, &rule.pre_decay);
                }
                p.post_traces.spike(i, step, &rule.post_decay, rule.rule.pairing);
            }
        }
    });
}

pub fn update_presynaptic_traces(mut plasticity: ResMut<Plasticity>, exchange: Res<SpikeExchange>, clock: Res<Clock>) {
    let step = clock.step as u32;
    for p in plasticity.projections.iter_mut() {
        let first = exchange.spikes.partition_point(|&g| g < p.source.start);
        let last = exchange.spikes.partition_point(|&g| g < p.source.end);
        for &g in &exchange.spikes[first..last] {
            p.pre_traces.spike((g - p.source.start) as usize, step, &p.pre_decay, p.rule.pairing);
        }
    }
}
