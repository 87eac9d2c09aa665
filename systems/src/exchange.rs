//! Spike exchange: every shard's spikes become one ascending list of global ids that all shards
//! read. In one process this is a concatenation in shard order; across processes (ranks) it is
//! also an all-gather of the ranks' lists, or an all-to-all of the lists each rank receives
//! where routes pay (`fum_engine::routing`), every step, or, across CPU ranks, once per epoch,
//! beside the next epoch (`fum_engine::components::Epochs`). [`ClockPlugin`] advances the clock at the end of the step.

use bevy_ecs::prelude::*;
use fum_engine::components::{Clock, EpochInFlight, GatheredStep, NeuronBlock, Shard, SpikeExchange};
use fum_engine::ranks::{Exchanged, Outgoing};
use fum_engine::{Plugin, Simulation, Stage, StageTimes};

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

pub fn exchange_spikes(shards: Query<(&Shard, &NeuronBlock)>, mut exchange: ResMut<SpikeExchange>, clock: Res<Clock>, timed: Option<Res<StageTimes>>) {
    let mut parts: Vec<_> = shards.iter().collect();
    parts.sort_unstable_by_key(|(shard, _)| shard.index);
    let exchange = &mut *exchange;
    exchange.spikes.clear();
    // Routed (`fum_engine::routing`), each spike also goes into the outbox of every rank that
    // receives it (routes number this rank's neurons in shard order); in epochs each step's
    // count to each rank is kept too.
    let counted = exchange.routes.is_some() && exchange.epochs.is_some();
    let before: Vec<usize> = if counted { exchange.outbox.iter().map(Vec::len).collect() } else { Vec::new() };
    let mut own = 0;
    for (shard, block) in parts {
        for &local in &block.spiked {
            let g = shard.neurons.start + local;
            exchange.spikes.push(g);
            if let Some(routes) = &exchange.routes {
                routes.of(own + local as usize).iter().for_each(|&r| exchange.outbox[r as usize].push(g));
            }
        }
        own += shard.neurons.len();
    }
    if counted {
        for (counts, (sent, before)) in exchange.outbox_counts.iter_mut().zip(exchange.outbox.iter().zip(before)) {
            counts.push((sent.len() - before) as u32);
        }
    }
    let Some(transport) = fum_engine::ranks::transport() else { return };
    let size = transport.size();
    let signalled = fum_engine::run::interrupt_flag().load(std::sync::atomic::Ordering::Relaxed);
    let rank = transport.rank();
    // Timed runs split the wait for the slowest rank from the exchange (beNNch's split): a
    // barrier before each collective, at the same steps on every rank; in epochs, the time
    // spent finishing exchanges.
    // In epochs: whether this step ends one.
    let epoch_ends = exchange.epochs.as_ref().map(|e| e.ends_at(clock.step));
    if timed.is_some() && epoch_ends.is_none() {
        let start = std::time::Instant::now();
        transport.barrier();
        exchange.wait_s += start.elapsed().as_secs_f64();
    }
    match epoch_ends {
        // Across ranks (fum_engine::ranks), every step: the ranks' lists in rank order, each
        // ascending; they are the ascending list of all where every rank owns a contiguous
        // range of shards, and are sorted into it otherwise (`fum_engine::partition`). The
        // signal flag rides along.
        None => {
            let own = std::mem::take(&mut exchange.spikes);
            let from_others = match &exchange.routes {
                None => {
                    exchange.stop = transport.all_gather(&own, signalled, &mut exchange.spikes);
                    exchange.bytes_sent += 4 * (own.len() as u64 + 1) * (size as u64 - 1);
                    exchange.spikes.len() - own.len() + size - 1
                }
                // Routed: this rank's spikes and those the others sent it.
                Some(_) => {
                    let (mut received, mut counts) = (Vec::new(), Vec::new());
                    exchange.stop = transport.all_to_all(&exchange.outbox, signalled, &mut received, &mut counts);
                    exchange.bytes_sent += 4 * exchange.outbox.iter().enumerate().filter(|&(r, _)| r != rank).map(|(_, m)| m.len() as u64 + 1).sum::<u64>();
                    exchange.outbox.iter_mut().for_each(Vec::clear);
                    exchange.spikes = own;
                    exchange.spikes.extend_from_slice(&received);
                    received.len() + size - 1
                }
            };
            exchange.bytes_received += 4 * from_others as u64;
            if !exchange.spikes.is_sorted() {
                exchange.spikes.sort_unstable();
            }
        }
        // In epochs: this rank delivers its own spikes now and keeps them; at the epoch's end
        // it starts the exchange of the epoch's steps' counts and spikes (to every rank, or to
        // each rank those it receives) and finishes the previous epoch's, whose steps are then
        // delivered (`Epochs`). Where the state must be whole, or a rank asked to stop, it
        // finishes this epoch's too.
        Some(ends) => {
            exchange.gathered.clear();
            let own = exchange.spikes.clone();
            exchange.pending.push((clock.step, own));
            exchange.stop = false;
            if let Some(previous) = exchange.in_flight.as_mut() {
                previous.exchange.progress();
            }
            if ends {
                let drain = exchange.epochs.as_ref().is_some_and(|e| e.drains_at(clock.step));
                let steps = std::mem::take(&mut exchange.pending);
                let outgoing = match &exchange.routes {
                    None => {
                        let mut mine: Vec<u32> = steps.iter().map(|(_, s)| s.len() as u32).collect();
                        steps.iter().for_each(|(_, s)| mine.extend_from_slice(s));
                        exchange.bytes_sent += 4 * mine.len() as u64 * (size as u64 - 1);
                        Outgoing::ToAll(mine)
                    }
                    Some(_) => {
                        let send: Vec<Vec<u32>> = exchange.outbox_counts.iter().zip(&exchange.outbox).map(|(c, ids)| [&c[..], &ids[..]].concat()).collect();
                        exchange.bytes_sent += 4 * send.iter().enumerate().filter(|&(r, _)| r != rank).map(|(_, m)| m.len() as u64).sum::<u64>();
                        exchange.outbox.iter_mut().for_each(Vec::clear);
                        exchange.outbox_counts.iter_mut().for_each(Vec::clear);
                        Outgoing::ToEach(send)
                    }
                };
                let started = EpochInFlight { steps, exchange: transport.start_exchange(outgoing, signalled) };
                let waited = std::time::Instant::now();
                let mut finished: Vec<_> = exchange.in_flight.take().into_iter().map(|e| (e.steps, e.exchange.finish())).collect();
                if drain || finished.iter().any(|(_, e)| e.stop) {
                    finished.push((started.steps, started.exchange.finish()));
                } else {
                    exchange.in_flight = Some(started);
                }
                if timed.is_some() {
                    exchange.wait_s += waited.elapsed().as_secs_f64();
                }
                for (steps, exchanged) in finished {
                    let messages = rank_messages(&exchanged, rank);
                    exchange.bytes_received += 4 * messages.iter().map(|m| m.len() as u64).sum::<u64>();
                    exchange.stop |= exchanged.stop;
                    exchange.gathered.extend(split_epoch(&steps, &messages));
                }
            }
        }
    }
}

/// The other ranks' messages in what an exchange brought, in rank order.
fn rank_messages(exchanged: &Exchanged, rank: usize) -> Vec<&[u32]> {
    let mut rest = &exchanged.received[..];
    let mut messages = Vec::new();
    for (r, &c) in exchanged.counts.iter().enumerate() {
        let (message, tail) = rest.split_at(c);
        if r != rank {
            messages.push(message);
        }
        rest = tail;
    }
    messages
}

/// The steps of `pending` (this rank's own spikes) with the other ranks' epoch `messages` (each
/// the steps' counts, then their spikes): every spike known here, and the others', ascending.
fn split_epoch(pending: &[(u64, Vec<u32>)], messages: &[&[u32]]) -> Vec<GatheredStep> {
    let n = pending.len();
    let mut steps: Vec<GatheredStep> = pending.iter().map(|(step, own)| GatheredStep { step: *step, all: own.clone(), remote: Vec::new() }).collect();
    for message in messages {
        let (counts, mut ids) = message.split_at(n);
        for (step, &count) in steps.iter_mut().zip(counts) {
            let (these, rest) = ids.split_at(count as usize);
            step.all.extend_from_slice(these);
            step.remote.extend_from_slice(these);
            ids = rest;
        }
    }
    for step in &mut steps {
        step.all.sort_unstable();
        step.remote.sort_unstable();
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epochs_messages_split_into_its_steps() {
        // Two steps; three ranks' messages, this rank (1) sending [5] then [6, 7].
        let exchanged = Exchanged { received: vec![1, 0, 3, /**/ 1, 2, 5, 6, 7, /**/ 0, 1, 9], counts: vec![3, 5, 3], stop: false };
        let messages = rank_messages(&exchanged, 1);
        assert_eq!(messages, [&[1, 0, 3][..], &[0, 1, 9][..]]);
        let pending = [(10, vec![5]), (11, vec![6, 7])];
        let steps = split_epoch(&pending, &messages);
        assert_eq!((steps[0].step, &steps[0].all[..], &steps[0].remote[..]), (10, &[3, 5][..], &[3][..]));
        assert_eq!((steps[1].step, &steps[1].all[..], &steps[1].remote[..]), (11, &[6, 7, 9][..], &[9][..]));
    }
}

pub fn advance_clock(mut clock: ResMut<Clock>) {
    clock.step += 1;
}
