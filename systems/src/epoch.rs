//! STDP across CPU ranks in epochs (`fum_engine::components::Epochs`). The other ranks' spikes
//! of an epoch arrive at the end of the next epoch (or of this one, where nothing may stay
//! under way), so the plastic blocks run then, for each of the epoch's steps in order, what
//! that step would have run: deliver the step's spikes (every rank's)
//! with the postsynaptic states and presynaptic traces as they were at that step, count the
//! step's spikes of this rank's neurons in the postsynaptic traces and histories, count the
//! step's spikes in the presynaptic traces. The weights, traces and histories are therefore
//! those of a network that exchanges every step, bit for bit.
//!
//! Concurrency contract: within an epoch only the neuron updates, static deliveries and
//! recording run each step, and none of them reads a plastic block. What a plastic block
//! delivers for step `t` lands in ring slots `t + delay`, at least one shortest delay (two
//! epochs) ahead, so no update misses it. Whatever reads the plastic state between steps
//! (weight probes, structural snapshots and commits, checkpoints, the run's end) ends an epoch,
//! so it reads the state after the replay; the health check's scan of weights for non-finite
//! values may read them as of an earlier step.

use std::sync::atomic::{AtomicU64, Ordering};

use bevy_ecs::prelude::*;
use fum_engine::components::{NeuronBlock, Plasticity, Shard, SpikeExchange, StdpHistoryOverflows, SynapseBlocks};
use fum_engine::paging::{HostTier, ShardPages};
use fum_kernels::spikes::in_range;

use crate::delivery::{Blocks, deliver_to_shard, settle_pages, synapses_walked};
use crate::stdp::{count_presynaptic_spikes, record_post_spikes};

/// Where an exchange finished, runs the plastic blocks through its steps (see the module).
pub fn replay_epoch(
    mut shards: Query<(&Shard, &mut NeuronBlock, &mut SynapseBlocks, Option<&mut ShardPages>)>,
    exchange: Res<SpikeExchange>,
    mut plasticity: ResMut<Plasticity>,
    mut overflows: ResMut<StdpHistoryOverflows>,
    tier: Option<ResMut<HostTier>>,
    commands: Commands,
) {
    if exchange.epochs.is_none() || exchange.gathered.is_empty() || plasticity.projections.is_empty() {
        return;
    }
    let lost = AtomicU64::new(0);
    // Per shard: its first neuron and the spike bits of its neurons at the step replayed.
    let mut items: Vec<_> = shards.iter_mut().map(|(shard, neurons, synapses, pages)| (shard.neurons.start, neurons, synapses, pages, Vec::new())).collect();
    for g in &exchange.gathered {
        let (step, batch, stdp) = (g.step as u32, [(g.step, &g.all[..])], &*plasticity);
        let work = |items: &[(_, _, Mut<SynapseBlocks>, _, _)]| synapses_walked(items.iter().map(|(_, _, synapses, _, _)| &**synapses), &batch, Blocks::Plastic);
        crate::for_each_shard(&mut items, work, |(first, neurons, synapses, pages, fired)| {
            let spiked: Vec<u32> = g.all[in_range(&g.all, *first..*first + neurons.len() as u32)].iter().map(|&id| id - *first).collect();
            fired.resize(neurons.len(), 0);
            spiked.iter().for_each(|&j| fired[j as usize] = 1);
            let n = deliver_to_shard(neurons, synapses, pages.as_deref_mut(), &batch, Some(fired), stdp, Blocks::Plastic);
            lost.fetch_add(n, Ordering::Relaxed);
            spiked.iter().for_each(|&j| fired[j as usize] = 0);
            record_post_spikes(synapses, stdp, *first, &spiked, step);
        });
        count_presynaptic_spikes(&mut plasticity, &g.all, step);
    }
    overflows.0 += lost.into_inner();
    settle_pages(items.iter_mut().filter_map(|(_, _, _, pages, _)| pages.as_deref_mut()), tier, commands);
}
