//! What the viewer keeps of the frames it has received: recent spikes (counted into the
//! raster's pixels), population rates over time, membrane traces of watched neurons, the
//! structural plasticity of each projection under `[[structural]]`, and the performance of the
//! simulation. Plain data, no drawing, so that it can be tested without a
//! window. Adding a frame costs in proportion to the frame, whatever the history holds.

use std::collections::VecDeque;

use fum_protocol::{Frame, Info, StructureInfo, merge_structure};

use crate::raster::{self, SpikeWindow};
/// Bin of the population rate curves, ms of biological time.
pub const RATE_BIN_MS: f64 = 5.0;
/// Rate points kept per population.
const MAX_RATE_POINTS: usize = 1_000;
/// Membrane samples kept per watched neuron.
const MAX_TRACE_SAMPLES: usize = 5_000;
/// Wall time over which steps per second and the real-time factor are averaged, s.
const PERF_WINDOW_S: f64 = 1.0;

/// Everything the panels draw, updated frame by frame.
#[derive(Debug, Default)]
pub struct History {
    /// Recent spikes, once the network is known.
    pub raster: Option<SpikeWindow>,
    /// Steps done (the end of the last frame).
    pub step: u64,
    pub dt_ms: f64,
    /// Per population: (time of the bin's end in ms, rate in Hz).
    pub rates: Vec<VecDeque<[f64; 2]>>,
    rate_counts: Vec<u64>,
    rate_steps: u64,
    /// Watched neurons and their traces: (time ms, membrane potential mV).
    pub traces: Vec<(u32, VecDeque<[f64; 2]>)>,
    /// Recent frames' (steps, wall s), for the performance figures.
    perf: VecDeque<(u64, f64)>,
    pub spikes_dropped: u64,
    pub paused: bool,
    pub frames_received: u64,
    /// Per projection under `[[structural]]`: the latest totals and the commits seen (at most
    /// `fum_protocol::MAX_STRUCTURE_COMMITS`).
    pub structure: Vec<StructureInfo>,
}

impl History {
    /// Adds a frame; `info` gives population sizes and the time step.
    pub fn add(&mut self, frame: &Frame, info: &Info) {
        self.frames_received += 1;
        self.add_structure(&frame.structure);
        self.dt_ms = info.dt_ms;
        self.paused = frame.paused;
        self.spikes_dropped += frame.spikes_dropped;
        self.perf.push_back((frame.steps, frame.wall_s));
        while self.perf.len() > 1 && self.perf.iter().skip(1).map(|p| p.1).sum::<f64>() >= PERF_WINDOW_S {
            self.perf.pop_front();
        }
        if frame.steps == 0 {
            return;
        }
        self.step = frame.first_step + frame.steps;

        let window = self.raster.get_or_insert_with(|| SpikeWindow::new(info, (raster::WINDOW_MS / info.dt_ms) as u64, raster::WIDTH, raster::HEIGHT));
        for k in 0..frame.steps as usize {
            window.add_step(frame.first_step + k as u64, frame.step_spikes(k));
        }

        self.rates.resize_with(info.populations.len(), VecDeque::new);
        self.rate_counts.resize(info.populations.len(), 0);
        if frame.spikes_dropped == 0 {
            // Exact bins from the spikes of each step.
            for k in 0..frame.steps as usize {
                let spikes = frame.step_spikes(k);
                for (sum, pop) in self.rate_counts.iter_mut().zip(&info.populations) {
                    *sum += fum_kernels::spikes::in_range(spikes, pop.first..pop.first + pop.size).len() as u64;
                }
                self.close_rate_bin(1, frame.first_step + k as u64 + 1, info);
            }
        } else {
            // Some ids are missing: the frame's exact counts, as one piece.
            for (sum, n) in self.rate_counts.iter_mut().zip(&frame.population_spikes) {
                *sum += n;
            }
            self.close_rate_bin(frame.steps, self.step, info);
        }

        if !frame.watched.is_empty() {
            if self.traces.iter().map(|t| t.0).ne(frame.watched.iter().copied()) {
                self.traces = frame.watched.iter().map(|&id| (id, VecDeque::new())).collect();
            }
            for (k, row) in frame.membrane_mv.chunks_exact(frame.watched.len()).enumerate() {
                let t = (frame.first_step + k as u64) as f64 * info.dt_ms;
                for ((_, trace), &v) in self.traces.iter_mut().zip(row) {
                    if v.is_finite() {
                        trace.push_back([t, f64::from(v)]);
                    }
                    if trace.len() > MAX_TRACE_SAMPLES {
                        trace.pop_front();
                    }
                }
            }
        }
    }

    /// Adds structural plasticity from a frame or an `Info` (which may be older than the frames
    /// already seen: the totals with more commits win, each commit is kept once).
    pub fn add_structure(&mut self, news: &[StructureInfo]) {
        for s in news {
            if self.structure.iter().find(|o| o.projection == s.projection).is_some_and(|o| o.commits > s.commits) {
                continue;
            }
            merge_structure(&mut self.structure, s.clone());
        }
    }

    /// Counts `steps` more steps into the current rate bin, ending at step `end`, and adds a
    /// point per population when the bin is full.
    fn close_rate_bin(&mut self, steps: u64, end: u64, info: &Info) {
        self.rate_steps += steps;
        let bin_ms = self.rate_steps as f64 * info.dt_ms;
        if bin_ms < RATE_BIN_MS {
            return;
        }
        for ((points, count), pop) in self.rates.iter_mut().zip(&mut self.rate_counts).zip(&info.populations) {
            points.push_back([end as f64 * info.dt_ms, *count as f64 / (f64::from(pop.size) * bin_ms * 1e-3)]);
            if points.len() > MAX_RATE_POINTS {
                points.pop_front();
            }
            *count = 0;
        }
        self.rate_steps = 0;
    }

    /// Steps per second over the last second of frames.
    pub fn steps_per_s(&self) -> f64 {
        let (steps, wall): (u64, f64) = self.perf.iter().fold((0, 0.0), |(n, w), &(s, t)| (n + s, w + t));
        if wall > 0.0 { steps as f64 / wall } else { 0.0 }
    }

    /// Wall time over biological time (1: real time; below 1: faster than real time).
    pub fn real_time_factor(&self) -> f64 {
        let per_s = self.steps_per_s();
        if per_s > 0.0 { 1.0 / (per_s * self.dt_ms * 1e-3) } else { f64::INFINITY }
    }

    /// Mean rate (Hz) of each shard's neurons over the raster window.
    pub fn shard_rates(&self, info: &Info) -> Vec<f64> {
        let Some(window) = &self.raster else { return vec![0.0; info.shards.len()] };
        let window_ms = (self.step.min(window.steps()) as f64 * self.dt_ms).max(self.dt_ms);
        window.shard_spikes().iter().zip(&info.shards).map(|(&n, s)| n as f64 / (f64::from(s.neurons.max(1)) * window_ms * 1e-3)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fum_protocol::PopulationInfo;

    fn info() -> Info {
        Info { dt_ms: 0.1, populations: vec![PopulationInfo { name: "E".into(), first: 0, size: 10, current_pa: 0.0 }], ..Info::default() }
    }

    /// A frame of `steps` steps in which neuron 3 fires at every step.
    fn frame(first_step: u64, steps: u64) -> Frame {
        Frame {
            first_step,
            steps,
            spike_ends: (1..=steps as u32).collect(),
            spikes: vec![3; steps as usize],
            population_spikes: vec![steps],
            watched: vec![3],
            membrane_mv: vec![-55.0; steps as usize],
            wall_s: steps as f64 * 1e-4,
            ..Frame::default()
        }
    }

    #[test]
    fn rates_are_binned_in_biological_time() {
        let mut h = History::default();
        h.add(&frame(0, 30), &info());
        assert!(h.rates[0].is_empty(), "3 ms is less than a bin");
        h.add(&frame(30, 30), &info());
        // 60 spikes from 10 neurons in 6 ms: 1000 Hz.
        assert_eq!(h.rates[0].len(), 1);
        assert!((h.rates[0][0][1] - 1000.0).abs() < 1e-9);
        // A large frame gives a point per bin, at the bin's end.
        h.add(&frame(60, 240), &info());
        assert_eq!(h.rates[0].iter().map(|p| p[0]).collect::<Vec<_>>(), [5.0, 10.0, 15.0, 20.0, 25.0, 30.0]);
    }

    fn structure(commits: std::ops::Range<u64>) -> StructureInfo {
        let recent = commits.clone().map(|k| fum_protocol::CommitInfo { step: 10 * k, pruned: 5, grown: 1, synapses: 1000 - 4 * k }).collect();
        StructureInfo { projection: "EE".into(), commits: commits.end, pruned: 5 * commits.end, recent, ..StructureInfo::default() }
    }

    #[test]
    fn structural_commits_from_frames_and_info_are_kept_once_in_order() {
        let mut h = History::default();
        h.add(&Frame { structure: vec![structure(1..3)], ..frame(0, 30) }, &info());
        // An Info answered earlier than that frame changes nothing; a later one adds.
        h.add_structure(&[structure(0..2)]);
        assert_eq!(h.structure[0].commits, 3);
        h.add_structure(&[structure(0..5)]);
        h.add(&Frame { structure: vec![structure(5..6)], ..frame(30, 30) }, &info());
        let [ee] = h.structure.as_slice() else { panic!("{:?}", h.structure) };
        assert_eq!(ee.recent.iter().map(|c| c.step).collect::<Vec<_>>(), [0, 10, 20, 30, 40, 50]);
        assert_eq!((ee.commits, ee.pruned), (6, 30));
    }

    #[test]
    fn the_raster_keeps_its_window_and_traces_follow_the_watch_list() {
        let mut h = History::default();
        // 5001 steps fill whole raster columns of 3 steps.
        h.add(&frame(0, 5001), &info());
        // Neuron 3 fires at every step: the window holds one spike per step it covers.
        let window = h.raster.as_ref().unwrap();
        assert_eq!(window.total(), window.steps());
        assert_eq!(h.traces.len(), 1);
        assert_eq!(h.traces[0].1.len(), 5000);
        // 10000 steps per second of wall time with dt 0.1 ms: real time.
        assert!((h.steps_per_s() - 10_000.0).abs() < 1e-6 && (h.real_time_factor() - 1.0).abs() < 1e-9);
    }
}
