//! The postsynaptic half of STDP and the trace bookkeeping.
//!
//! Order within a step (after delivery has applied pending potentiation and depression to the
//! synapses of spiking presynaptic neurons):
//! 1. each shard counts the spikes of its neurons in the postsynaptic traces and spike
//!    histories of the plastic blocks into them (the potentiation these spikes cause is applied
//!    at the next presynaptic spike through each synapse: no transposed index);
//! 2. the presynaptic traces (global) count this step's spikes.
//!
//! Both halves therefore see the partner's trace from earlier steps only. Traces and histories
//! are kept whether weight updates are enabled or not.

use bevy_ecs::prelude::*;
use fum_engine::components::{Clock, NeuronBlock, Plasticity, Shard, SpikeExchange, SynapseBlocks};
use fum_engine::{Plugin, Simulation, Stage};
use fum_kernels::spikes::in_range;
use fum_kernels::stdp::{count_spike, on_post_spike};

pub struct StdpPlugin;

impl Plugin for StdpPlugin {
    fn build(&self, sim: &mut Simulation) {
        sim.add_systems((record_postsynaptic_spikes, update_presynaptic_traces).chain().in_set(Stage::Plasticity));
    }
}

pub fn record_postsynaptic_spikes(mut shards: Query<(&Shard, &NeuronBlock, &mut SynapseBlocks)>, plasticity: Res<Plasticity>, clock: Res<Clock>) {
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
                if !rule.target.contains(&(shard.neurons.start + local)) {
                    continue;
                }
                let (j, len) = (local as usize, rule.history_len);
                let traces = match &mut p.post_history_trace {
                    Some(c) => &mut c[j * len..(j + 1) * len],
                    None => &mut [][..],
                };
                on_post_spike(&mut p.post[j], &mut p.post_history[j * len..(j + 1) * len], traces, step, &rule.post_decay, rule.rule.pairing);
            }
        }
    });
}

pub fn update_presynaptic_traces(mut plasticity: ResMut<Plasticity>, exchange: Res<SpikeExchange>, clock: Res<Clock>) {
    let step = clock.step as u32;
    for p in plasticity.projections.iter_mut() {
        for &g in &exchange.spikes[in_range(&exchange.spikes, p.source.clone())] {
            count_spike(&mut p.pre_trace, &mut p.pre_last_spike, (g - p.source.start) as usize, step, &p.pre_decay, p.rule.pairing);
        }
    }
}
