//! Spike exchange: every shard's spikes become one ascending list of global ids that all shards
//! read. In one process this is a concatenation in shard order; across processes (ranks) it is
//! also an all-gather of the ranks' lists. [`ClockPlugin`] advances the clock at the end of the step.

use bevy_ecs::prelude::*;
use fum_engine::components::{Clock, NeuronBlock, Shard, SpikeExchange};
use fum_engine::{Plugin, Simulation, Stage};

pub struct ExchangePlugin;

impl Plugin for ExchangePlugin {
    fn build(&self, sim: &mut Simulation) {
        sim.add_systems(exchange_spikes.in_set(Stage::Exchange));
    }
}

/// Advances the clock at the end of every step (every backend needs it).
pub struct ClockPlugin;

impl Plugin for ClockPlugin {
    fn build(&self, sim: &mut Simulation) {
        sim.add_systems(advance_clock.in_set(Stage::Advance));
    }
}

pub fn exchange_spikes(shards: Query<(&Shard, &NeuronBlock)>, mut exchange: ResMut<SpikeExchange>) {
    let mut parts: Vec<_> = shards.iter().collect();
    parts.sort_unstable_by_key(|(shard, _)| shard.index);
    let spikes = &mut exchange.spikes;
    spikes.clear();
    for (shard, block) in parts {
        spikes.extend(block.spiked.iter().map(|&local| shard.neurons.start + local));
    }
    // Across ranks (fum_engine::ranks): the ranks' lists in rank order, each ascending; they
    // are the ascending list of all where every rank owns a contiguous range of shards, and
    // are sorted into it otherwise (`fum_engine::partition`). The signal flag rides along.
    if let Some(transport) = fum_engine::ranks::transport() {
        let local = std::mem::take(&mut exchange.spikes);
        let signalled = fum_engine::run::interrupt_flag().load(std::sync::atomic::Ordering::Relaxed);
        exchange.stop = transport.all_gather(&local, signalled, &mut exchange.spikes);
        if !exchange.spikes.is_sorted() {
            exchange.spikes.sort_unstable();
        }
    }
}

pub fn advance_clock(mut clock: ResMut<Clock>) {
    clock.step += 1;
}
