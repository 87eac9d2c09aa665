//! Spike exchange: every shard's spikes become one ascending list of global ids that all shards
//! read. In one process this is a concatenation in shard order; across processes (ranks) it is
//! also an all-gather of the ranks' lists, every step, or once per epoch for a network without
//! plasticity (`fum_engine::components::Epochs`). [`ClockPlugin`] advances the clock at the end of the step.

use bevy_ecs::prelude::*;
use fum_engine::components::{Clock, GatheredStep, NeuronBlock, Shard, SpikeExchange};
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

pub fn exchange_spikes(shards: Query<(&Shard, &NeuronBlock)>, mut exchange: ResMut<SpikeExchange>, clock: Res<Clock>) {
    let mut parts: Vec<_> = shards.iter().collect();
    parts.sort_unstable_by_key(|(shard, _)| shard.index);
    let spikes = &mut exchange.spikes;
    spikes.clear();
    for (shard, block) in parts {
        spikes.extend(block.spiked.iter().map(|&local| shard.neurons.start + local));
    }
    let Some(transport) = fum_engine::ranks::transport() else { return };
    let signalled = fum_engine::run::interrupt_flag().load(std::sync::atomic::Ordering::Relaxed);
    match exchange.epochs {
        // Across ranks (fum_engine::ranks), every step: the ranks' lists in rank order, each
        // ascending; they are the ascending list of all where every rank owns a contiguous
        // range of shards, and are sorted into it otherwise (`fum_engine::partition`). The
        // signal flag rides along.
        None => {
            let local = std::mem::take(&mut exchange.spikes);
            exchange.stop = transport.all_gather(&local, signalled, &mut exchange.spikes);
            if !exchange.spikes.is_sorted() {
                exchange.spikes.sort_unstable();
            }
        }
        // In epochs: this rank delivers its own spikes now and keeps them; at the epoch's end
        // every rank sends its steps' counts, then their spikes, in one all-gather.
        Some(epochs) => {
            exchange.gathered.clear();
            let own = exchange.spikes.clone();
            exchange.pending.push((clock.step, own));
            exchange.stop = false;
            if epochs.ends_at(clock.step) {
                let pending = std::mem::take(&mut exchange.pending);
                let mut mine: Vec<u32> = pending.iter().map(|(_, s)| s.len() as u32).collect();
                pending.iter().for_each(|(_, s)| mine.extend_from_slice(s));
                let mut all = Vec::new();
                exchange.stop = transport.all_gather(&mine, signalled, &mut all);
                exchange.gathered = split_epoch(&pending, &all, transport.rank());
            }
        }
    }
}

/// The steps of `pending` (this rank's) from the ranks' epoch messages `all` (rank order; each
/// the steps' counts, then their spikes): every rank's spikes and the other ranks', ascending.
fn split_epoch(pending: &[(u64, Vec<u32>)], all: &[u32], rank: usize) -> Vec<GatheredStep> {
    let mut steps: Vec<GatheredStep> = pending.iter().map(|&(step, _)| GatheredStep { step, ..Default::default() }).collect();
    let (n, mut rest, mut r) = (steps.len(), all, 0);
    while rest.len() >= n {
        let (counts, tail) = rest.split_at(n);
        let mut at = 0;
        for (step, &count) in steps.iter_mut().zip(counts) {
            let ids = &tail[at..at + count as usize];
            step.all.extend_from_slice(ids);
            if r != rank {
                step.remote.extend_from_slice(ids);
            }
            at += count as usize;
        }
        (rest, r) = (&tail[at..], r + 1);
    }
    for step in &mut steps {
        step.all.sort_unstable();
        step.remote.sort_unstable();
    }
    steps
}

pub fn advance_clock(mut clock: ResMut<Clock>) {
    clock.step += 1;
}
