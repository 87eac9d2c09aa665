//! Recording: spikes of the chosen populations, per-population spike counts, and probes of
//! state variables and weights at their intervals.

use bevy_ecs::prelude::*;
use fum_engine::components::{Clock, NeuronBlock, Populations, Shard, SpikeExchange, SynapseBlocks};
use fum_engine::model::ProbeVariable;
use fum_engine::recording::{ProbeSite, Recorder};
use fum_engine::{Plugin, Simulation, Stage};
use fum_kernels::spikes::in_range;

pub struct RecordPlugin;

impl Plugin for RecordPlugin {
    fn build(&self, sim: &mut Simulation) {
        sim.add_systems(record.in_set(Stage::Record));
    }
}

/// Counts the spikes of `step` (ascending global ids) per population and appends those of the
/// recorded populations. Device backends call it for the steps they copy back.
pub fn record_spikes(recorder: &mut Recorder, populations: &Populations, step: u64, spikes: &[u32]) {
    if spikes.is_empty() {
        return;
    }
    for (count, pop) in recorder.spike_counts.iter_mut().zip(&populations.0) {
        *count += in_range(spikes, pop.ids()).len() as u64;
    }
    for rec in recorder.spikes.iter_mut() {
        let ids = populations.0[rec.population].ids();
        let run = &spikes[in_range(spikes, ids.clone())];
        rec.steps.pending.extend(std::iter::repeat_n(step as u32, run.len()));
        rec.node_ids.pending.extend(run.iter().map(|&g| g - ids.start));
    }
}

pub fn record(
    mut recorder: ResMut<Recorder>,
    exchange: Res<SpikeExchange>,
    populations: Res<Populations>,
    clock: Res<Clock>,
    shards: Query<(&Shard, &NeuronBlock, &SynapseBlocks)>,
) {
    let recorder = &mut *recorder;
    let step = clock.step;
    // In epochs across ranks, a step's spikes are all known when its exchange finishes (`Epochs`).
    match exchange.epochs {
        None => record_spikes(recorder, &populations, step, &exchange.spikes),
        Some(_) => exchange.gathered.iter().for_each(|g| record_spikes(recorder, &populations, g.step, &g.all)),
    }
    if recorder.probes.iter().all(|p| !step.is_multiple_of(p.interval_steps)) {
        return;
    }
    let mut parts: Vec<_> = shards.iter().collect();
    parts.sort_unstable_by_key(|(shard, _, _)| shard.index);
    let held = |shard: usize| parts.binary_search_by_key(&shard, |(s, _, _)| s.index).expect("a probed shard is held here");
    // One row of samples per probe due at this step; sites another rank holds are NaN here.
    let mut rows: Vec<(usize, Vec<f32>)> = Vec::new();
    for (p, probe) in recorder.probes.iter().enumerate().filter(|(_, p)| step.is_multiple_of(p.interval_steps)) {
        let row = probe
            .sites
            .iter()
            .map(|site| match *site {
                ProbeSite::Neuron { shard, local } => {
                    let block = parts[held(shard)].1;
                    match probe.variable {
                        ProbeVariable::V => block.v[local],
                        ProbeVariable::SynEx => block.syn_ex[local],
                        ProbeVariable::SynIn => block.syn_in[local],
                        ProbeVariable::Weight => unreachable!("weight probes have synapse sites"),
                    }
                }
                ProbeSite::Synapse { shard, block, synapse, .. } => synapse.map_or(f32::NAN, |k| parts[held(shard)].2.0[block].weight.get_resident(k)),
                ProbeSite::Elsewhere => f32::NAN,
            })
            .collect();
        rows.push((p, row));
    }
    push_probe_rows(recorder, step, clock.dt_ms, rows);
}

/// Records `rows`, one row of samples per probe due at `step` (the probe's index and a value
/// per site; sites another rank holds are NaN here). Across ranks (a collective at the same
/// steps on every rank: probes are due by the step alone), rank 0 first gathers the samples of
/// the sites the others hold; only it records.
pub fn push_probe_rows(recorder: &mut Recorder, step: u64, dt_ms: f64, mut rows: Vec<(usize, Vec<f32>)>) {
    if let Some(transport) = fum_engine::ranks::transport() {
        let mut mine: Vec<u8> = Vec::new();
        for (r, (p, row)) in rows.iter().enumerate() {
            for (i, value) in row.iter().enumerate().filter(|&(i, _)| !matches!(recorder.probes[*p].sites[i], ProbeSite::Elsewhere)) {
                [r as u32, i as u32, value.to_bits()].iter().for_each(|w| mine.extend_from_slice(&w.to_le_bytes()));
            }
        }
        let Some(others) = transport.gather(&mine) else { return };
        for part in &others[1..] {
            for sample in part.chunks_exact(12) {
                let word = |k: usize| u32::from_le_bytes(sample[4 * k..4 * k + 4].try_into().expect("4 bytes"));
                rows[word(0) as usize].1[word(1) as usize] = f32::from_bits(word(2));
            }
        }
    }
    for (p, row) in rows {
        let probe = &mut recorder.probes[p];
        probe.times_ms.pending.push(step as f64 * dt_ms);
        probe.values.pending.extend(row);
    }
}
