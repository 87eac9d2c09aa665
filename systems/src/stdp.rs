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
//! are kept whether weight updates are enabled or not. Across CPU ranks in epochs, both run for an
//! epoch's steps when its exchange finishes, step by step between the plastic blocks'
//! deliveries ([`crate::epoch`]).

use bevy_ecs::prelude::*;
use fum_engine::components::{Clock, NeuronBlock, Plasticity, Shard, SpikeExchange, SynapseBlocks};
use fum_engine::{Plugin, Simulation, Stage};
use fum_kernels::spikes::in_range;
use fum_kernels::stdp::{count_spike, on_post_spike};

pub struct StdpPlugin;

impl Plugin for StdpPlugin {
    fn build(&self, sim: &mut Simulation) {
        sim.add_systems((record_postsynaptic_spikes, update_presynaptic_traces, crate::epoch::replay_epoch).chain().in_set(Stage::Plasticity));
    }
}

pub fn record_postsynaptic_spikes(mut shards: Query<(&Shard, &NeuronBlock, &mut SynapseBlocks)>, plasticity: Res<Plasticity>, exchange: Res<SpikeExchange>, clock: Res<Clock>) {
    // In epochs across ranks, the epoch's replay records them (`crate::epoch`).
    if plasticity.projections.is_empty() || exchange.epochs.is_some() {
        return;
    }
    let mut items: Vec<_> = shards.iter_mut().collect();
    let work = |items: &[(_, &NeuronBlock, Mut<SynapseBlocks>)]| items.iter().map(|(_, neurons, synapses)| neurons.spiked.len() * synapses.0.len()).sum();
    crate::for_each_shard(&mut items, work, |(shard, neurons, synapses)| record_post_spikes(synapses, &plasticity, shard.neurons.start, &neurons.spiked, clock.step as u32));
}

/// Counts the spikes of step `step` of a shard's neurons (`spiked`, local ids of a shard whose
/// first neuron is `first`) in its plastic blocks' postsynaptic traces and histories.
pub(crate) fn record_post_spikes(synapses: &mut SynapseBlocks, plasticity: &Plasticity, first: u32, spiked: &[u32], step: u32) {
    for block in synapses.0.iter_mut() {
        let Some(p) = block.plastic.as_mut() else { continue };
        let rule = &plasticity.projections[p.rule];
        for &local in spiked {
            if !rule.target.contains(&(first + local)) {
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
}

pub fn update_presynaptic_traces(mut plasticity: ResMut<Plasticity>, exchange: Res<SpikeExchange>, clock: Res<Clock>) {
    if exchange.epochs.is_none() {
        count_presynaptic_spikes(&mut plasticity, &exchange.spikes, clock.step as u32);
    }
}

/// Counts `spikes` (ascending global ids) of step `step` in the presynaptic traces.
pub(crate) fn count_presynaptic_spikes(plasticity: &mut Plasticity, spikes: &[u32], step: u32) {
    for p in plasticity.projections.iter_mut() {
        for &g in &spikes[in_range(spikes, p.source.clone())] {
            count_spike(&mut p.pre_trace, &mut p.pre_last_spike, (g - p.source.start) as usize, step, &p.pre_decay, p.rule.pairing);
        }
    }
}
