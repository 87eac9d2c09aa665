//! What a run reports: `run.json` ([`RunReport`]), with the size and memory of the network
//! ([`NetworkStats`]) and where the time went ([`Timing`]).

use std::collections::BTreeMap;
use std::ops::Range;

use bevy_ecs::prelude::*;
use serde::Serialize;

use crate::backend::{DeviceStats, installed};
use crate::components::{NeuronBlock, Plasticity, Shard, StdpHistoryOverflows, SynapseBlocks};
use crate::recording::{MissingOutput, Recorder};
use crate::{Model, Simulation};

/// Where a run's wall time went.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Timing {
    pub build_s: f64,
    pub simulate_s: f64,
    /// Copying the device state back after the last step (device backends; 0 on the CPU).
    pub copy_back_s: f64,
    pub write_s: f64,
    pub total_s: f64,
    /// Wall time of the simulation loop over the biological time it covered.
    pub real_time_factor: f64,
    /// Time the simulation waited for checkpoint snapshots (copies) and writer hand-over.
    pub checkpoint_pause_s: f64,
    pub checkpoints_written: u64,
    /// Checkpoints not written because a newer one was due before the writer was free.
    pub checkpoints_superseded: u64,
    /// The session's synaptic events (its share of `synaptic_events`) per second of `simulate_s`.
    pub synaptic_events_per_s: f64,
    /// The distribution of the steps' wall times (a device backend's steps overlap: there it is
    /// the time between launches).
    pub step_us: StepTimes,
    /// Where in the run the time went: wall seconds per stretch of biological time.
    pub timeline: Timeline,
    /// Seconds in each stage of the step, when asked for (`RunOptions::time_stages`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stages_s: Option<BTreeMap<String, f64>>,
    /// Across ranks (`mpirun`): each rank's simulate time and stage times (rank 0's are also
    /// above). A rank's `exchange` includes waiting for the slowest rank (on CPUs also given
    /// apart, `exchange_wait_s`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ranks: Option<Vec<RankTiming>>,
}

/// One rank's share of a multi-process run's time.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RankTiming {
    pub simulate_s: f64,
    /// Bytes of spike messages it sent and received (`SpikeExchange::bytes_sent`).
    pub spike_bytes_sent: u64,
    pub spike_bytes_received: u64,
    /// With the stages timed, on CPUs: of the exchange stage, the seconds spent waiting for the
    /// slowest rank (`SpikeExchange::wait_s`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exchange_wait_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stages_s: Option<BTreeMap<String, f64>>,
}

/// `partition` in run.json: how the shards were split among the ranks (`crate::partition`).
#[derive(Clone, Debug, Serialize)]
pub struct PartitionReport {
    /// How the shards were assigned (`--partition`).
    pub method: &'static str,
    pub ranks: Vec<RankPart>,
    /// Of all synapses, those whose source neuron is on their target's rank: their spikes need
    /// not leave it.
    pub locality: f64,
    /// The most synapses a rank holds, over the mean.
    pub imbalance: f64,
    /// How often the ranks exchange spikes, in steps: 1, or the epoch of a network without
    /// plasticity (`crate::components::Epochs`).
    pub exchange_every_steps: u64,
    /// `all-gather` (every spike to every rank) or `routed` (each spike to the ranks that
    /// read it and to rank 0: `crate::routing`), and the fraction of the all-gather's messages
    /// (neurons times receiving ranks) routes carry, whether or not they were used.
    pub exchange: &'static str,
    pub routed_fraction: f64,
}

/// One rank's part of the network.
#[derive(Clone, Debug, Serialize)]
pub struct RankPart {
    /// Its shards, by index.
    pub shards: Vec<usize>,
    pub neurons: u64,
    pub synapses: u64,
    /// Its synapses whose source neuron is its own.
    pub local_synapses: u64,
}

impl PartitionReport {
    /// Every rank's part at rank 0 (a collective call; `None` on the other ranks). Rank 0
    /// checks that the ranks' shards cover each shard once: every rank computes its own
    /// (`crate::partition`), and a disagreement would lose or double neurons.
    pub fn gather(world: &mut World, transport: &dyn crate::ranks::Transport, routed_fraction: f64) -> Option<PartitionReport> {
        let mut q = world.query::<&Shard>();
        let mut owned: Vec<(usize, Range<u32>)> = q.iter(world).map(|s| (s.index, s.neurons.clone())).collect();
        owned.sort_unstable_by_key(|(index, _)| *index);
        let (mut synapses, mut local) = (0u64, 0u64);
        for blocks in world.query::<&SynapseBlocks>().iter(world) {
            for b in &blocks.0 {
                synapses += b.len() as u64;
                // Rows are by source neuron: each of the rank's shards is one run of rows.
                let end = b.source_first + b.source_size;
                for (_, ids) in &owned {
                    let (r0, r1) = (ids.start.clamp(b.source_first, end) - b.source_first, ids.end.clamp(b.source_first, end) - b.source_first);
                    local += u64::from(b.row_ptr[r1 as usize] - b.row_ptr[r0 as usize]);
                }
            }
        }
        let neurons: u64 = owned.iter().map(|(_, ids)| u64::from(ids.end - ids.start)).sum();
        let mut mine = vec![neurons, synapses, local];
        mine.extend(owned.iter().map(|(index, _)| *index as u64));
        let parts = transport.gather(bytemuck::cast_slice(&mine))?;
        let ranks: Vec<RankPart> = parts
            .iter()
            .map(|p| {
                let v: Vec<u64> = p.chunks_exact(8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))).collect();
                RankPart { neurons: v[0], synapses: v[1], local_synapses: v[2], shards: v[3..].iter().map(|&s| s as usize).collect() }
            })
            .collect();
        let mut every: Vec<usize> = ranks.iter().flat_map(|r| r.shards.iter().copied()).collect();
        every.sort_unstable();
        if every.iter().enumerate().any(|(i, &s)| i != s) {
            eprintln!("error: the ranks computed different partitions (shards held: {every:?}); ending every rank");
            transport.abort(1);
        }
        let total = ranks.iter().map(|r| r.synapses).sum::<u64>().max(1) as f64;
        let most = ranks.iter().map(|r| r.synapses).max().unwrap_or(0) as f64;
        Some(PartitionReport {
            method: crate::partition::method().name(),
            exchange_every_steps: world.resource::<crate::components::SpikeExchange>().epochs.as_ref().map_or(1, |e| e.length),
            exchange: if world.resource::<crate::components::SpikeExchange>().routes.is_some() { "routed" } else { "all-gather" },
            routed_fraction,
            locality: ranks.iter().map(|r| r.local_synapses).sum::<u64>() as f64 / total,
            imbalance: most * ranks.len() as f64 / total,
            ranks,
        })
    }
}

impl RankTiming {
    /// Every rank's timing at rank 0 (a collective call; `None` on the other ranks).
    pub fn gather(transport: &dyn crate::ranks::Transport, simulate_s: f64, bytes: [u64; 2], wait_s: Option<f64>, stages: Option<&crate::StageTimes>) -> Option<Vec<RankTiming>> {
        let mut mine = vec![simulate_s, bytes[0] as f64, bytes[1] as f64, wait_s.unwrap_or(f64::NAN)];
        mine.extend(stages.map_or(&[][..], |s| &s.seconds[..]));
        let parts = transport.gather(bytemuck::cast_slice(&mine))?;
        Some(
            parts
                .iter()
                .map(|p| {
                    let values: Vec<f64> = p.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes"))).collect();
                    let stages_s: Option<BTreeMap<String, f64>> = (values.len() > 4).then(|| crate::Stage::ALL.iter().zip(&values[4..]).map(|(s, &t)| (s.name().to_string(), t)).collect());
                    let exchange_wait_s = Some(values[3]).filter(|w| !w.is_nan());
                    RankTiming { simulate_s: values[0], spike_bytes_sent: values[1] as u64, spike_bytes_received: values[2] as u64, exchange_wait_s, stages_s }
                })
                .collect(),
        )
    }
}

/// Percentiles of the steps' wall times, microseconds (all 0 when no step ran).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct StepTimes {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl StepTimes {
    /// From a histogram of nanoseconds.
    pub fn of(h: &hdrhistogram::Histogram<u64>) -> StepTimes {
        if h.is_empty() {
            return StepTimes::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        StepTimes { p50: us(h.value_at_quantile(0.5)), p99: us(h.value_at_quantile(0.99)), max: us(h.max()), mean: h.mean() / 1000.0 }
    }
}

/// The simulation loop's wall time per stretch of `bucket_ms` of biological time, from the
/// session's first step: where a run slowed down and for how long (a structural plan and its
/// commit, pages moving, a checkpoint's pause, a viewer's pause are in the stretch they fell in).
/// Stretches are 100 ms of biological time, doubled while there would be more than
/// [`Timeline::MAX`] of them, so a long run's report stays small.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Timeline {
    pub bucket_ms: f64,
    pub wall_s: Vec<f64>,
    #[serde(skip)]
    bucket_steps: u64,
    #[serde(skip)]
    dt_ms: f64,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline::new(0.1)
    }
}

impl Timeline {
    pub const MAX: usize = 1000;

    pub fn new(dt_ms: f64) -> Timeline {
        let bucket_steps = ((100.0 / dt_ms).round() as u64).max(1);
        Timeline { bucket_ms: bucket_steps as f64 * dt_ms, wall_s: Vec::new(), bucket_steps, dt_ms }
    }

    /// Adds `seconds` of wall time spent on the session's step `i` (0 for its first) and the
    /// duties after it.
    pub fn add(&mut self, i: u64, seconds: f64) {
        while i / self.bucket_steps >= Self::MAX as u64 {
            self.wall_s = self.wall_s.chunks(2).map(|c| c.iter().sum()).collect();
            self.bucket_steps *= 2;
            self.bucket_ms = self.bucket_steps as f64 * self.dt_ms;
        }
        let b = (i / self.bucket_steps) as usize;
        if self.wall_s.len() <= b {
            self.wall_s.resize(b + 1, 0.0);
        }
        self.wall_s[b] += seconds;
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Finished,
    /// Stopped by `stop_after_ms`; resumable.
    Stopped,
    /// Stopped by SIGINT or SIGTERM; resumable.
    Interrupted,
    /// Stopped by a failed health check (`error` says why), with the outputs up to there and
    /// a checkpoint.
    Failed,
}

/// The summary of a run, written as `run.json`.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub fum_version: &'static str,
    /// The run's id (hex), the same in its checkpoints, recording logs and every session's
    /// run.json.
    pub run_id: String,
    pub model: String,
    /// FNV-1a 64 of the model text, hex.
    pub model_hash: String,
    pub seed: u64,
    pub dt_ms: f64,
    pub duration_ms: f64,
    pub steps: u64,
    /// Step this session started from (non-zero after `fum resume`).
    pub start_step: u64,
    /// Steps completed when this session ended.
    pub end_step: u64,
    pub outcome: Outcome,
    /// Why the run failed (outcome `failed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Recorded output lost with damaged or missing recording logs (see `fum resume`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_output: Vec<MissingOutput>,
    pub backend: &'static str,
    /// The device in words (CPU threads, or the GPU's name, architecture and memory).
    pub device: String,
    /// Device memory and transfers of a CUDA run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu: Option<DeviceStats>,
    pub threads: usize,
    /// Processes of the run (`mpirun -np`), each with `threads` threads.
    pub ranks: usize,
    pub network: NetworkStats,
    pub timing: Timing,
    /// Mean firing rate of every population over the simulated time, Hz.
    pub rates_hz: BTreeMap<String, f64>,
    pub spikes_total: u64,
    /// Spikes delivered through synapses, from step 0: each population's spikes times the mean
    /// out-degree of its neurons in every projection it is the source of (exact where
    /// out-degrees are equal, as with `fixed_outdegree`).
    pub synaptic_events: u64,
    /// STDP pairings lost to overflowing postsynaptic spike histories (raise `post_history`).
    pub stdp_history_overflows: u64,
    /// Synapses pruned and grown per projection and commit (`[[structural]]` models only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub structural: Option<crate::structural::StructuralReport>,
    /// How the shards were split among the ranks (several ranks only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<PartitionReport>,
    /// The GPU during the simulation, sampled through NVML (`--monitor`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitor: Option<crate::monitor::DeviceReport>,
    /// The most memory the process held at once (its peak resident set, [`peak_rss_bytes`]), bytes.
    pub host_peak_rss_bytes: u64,
    /// The peak resident set when the first step began: what building (and, resumed, restoring
    /// the checkpoint) held.
    pub host_peak_rss_built_bytes: u64,
    /// Each storage tier of a paged network (`--host-memory`): its bytes, hits, moves, stall.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub storage: BTreeMap<&'static str, crate::paging::TierStats>,
    /// The GPU's energy over the session's synaptic events (`--monitor`, where NVML gives it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub energy_per_synaptic_event_j: Option<f64>,
    pub outputs: Vec<String>,
}

impl RunReport {
    /// The report of a session of `model` that ran `session` (steps) on `sim`'s backend; timing
    /// is left to the caller.
    pub fn new(model: &Model, sim: &Simulation, session: Range<u64>, outcome: Outcome, network: NetworkStats, outputs: Vec<String>) -> Self {
        let dt = model.spec.simulation.dt_ms;
        let recorder = sim.world.resource::<Recorder>();
        let simulated_ms = session.end as f64 * dt;
        let rates_hz = model
            .spec
            .populations
            .iter()
            .zip(&recorder.spike_counts)
            .map(|(p, &n)| (p.name.clone(), n as f64 / (f64::from(p.size) * simulated_ms * 1e-3)))
            .collect();
        let backend = installed(&sim.world).expect("a run has a backend");
        let events = synaptic_events(model, &recorder.spike_counts, &network.synapses_by_projection);
        RunReport {
            fum_version: env!("CARGO_PKG_VERSION"),
            run_id: String::new(),
            model: model.path.display().to_string(),
            model_hash: format!("{:016x}", model.hash()),
            seed: model.spec.simulation.seed,
            dt_ms: dt,
            duration_ms: model.steps() as f64 * dt,
            steps: model.steps(),
            start_step: session.start,
            end_step: session.end,
            outcome,
            error: None,
            missing_output: Vec::new(),
            backend: backend.name(),
            device: backend.device(),
            gpu: backend.stats(&sim.world),
            threads: sim.threads(),
            ranks: crate::ranks::rank_and_size().1,
            network,
            timing: Timing::default(),
            rates_hz,
            spikes_total: recorder.spike_counts.iter().sum(),
            synaptic_events: events,
            stdp_history_overflows: sim.world.resource::<StdpHistoryOverflows>().0,
            structural: sim.world.get_resource::<crate::structural::StructuralReport>().cloned(),
            partition: None,
            monitor: None,
            host_peak_rss_bytes: peak_rss_bytes(),
            host_peak_rss_built_bytes: 0,
            storage: sim.world.get_resource::<crate::paging::HostTier>().map(|t| ("host", t.stats.clone())).into_iter().collect(),
            energy_per_synaptic_event_j: None,
            outputs,
        }
    }
}

/// Counts and bytes of a built network. Synapse bytes are the per-synapse columns (u16 target,
/// f32 or f16 weight, u16 delay where delays are drawn per synapse: 6, 4 or 2 more bytes, the
/// same for plastic synapses); per-neuron bytes are everything else (state, ring buffers, row
/// pointers, traces, postsynaptic spike histories).
#[derive(Clone, Debug, Default, Serialize)]
pub struct NetworkStats {
    pub neurons: u64,
    pub synapses: u64,
    pub static_synapses: u64,
    pub plastic_synapses: u64,
    pub shards: usize,
    pub bytes_neurons: u64,
    pub bytes_static_synapses: u64,
    pub bytes_plastic_synapses: u64,
    pub bytes_total: u64,
    pub bytes_per_neuron: f64,
    pub bytes_per_static_synapse: f64,
    pub bytes_per_plastic_synapse: f64,
    /// Synapses of each projection, in the model's order (for `synaptic_events`).
    #[serde(skip)]
    pub synapses_by_projection: Vec<u64>,
}

/// Spikes of each population (`spikes`, in the model's order) times its neurons' mean
/// out-degree in each projection from it.
fn synaptic_events(model: &Model, spikes: &[u64], synapses_by_projection: &[u64]) -> u64 {
    let pops = &model.spec.populations;
    let events: f64 = model
        .spec
        .projections
        .iter()
        .zip(synapses_by_projection)
        .filter_map(|(proj, &synapses)| {
            let i = pops.iter().position(|p| p.name == proj.source)?;
            Some(spikes.get(i).copied().unwrap_or(0) as f64 * synapses as f64 / f64::from(pops[i].size.max(1)))
        })
        .sum();
    events.round() as u64
}

impl NetworkStats {
    /// Counts the shards of a built world.
    pub fn measure(world: &mut World) -> Self {
        let mut s = NetworkStats::default();
        let mut query = world.query::<(&NeuronBlock, &SynapseBlocks)>();
        for (neurons, synapses) in query.iter(world) {
            s.shards += 1;
            s.neurons += neurons.len() as u64;
            s.bytes_neurons += neurons.bytes() as u64;
            for block in &synapses.0 {
                if s.synapses_by_projection.len() <= block.projection {
                    s.synapses_by_projection.resize(block.projection + 1, 0);
                }
                s.synapses_by_projection[block.projection] += block.len() as u64;
                s.bytes_neurons += block.index_bytes() as u64;
                if block.plastic.is_some() {
                    s.plastic_synapses += block.len() as u64;
                    s.bytes_plastic_synapses += block.synapse_bytes() as u64;
                } else {
                    s.static_synapses += block.len() as u64;
                    s.bytes_static_synapses += block.synapse_bytes() as u64;
                }
            }
        }
        if let Some(p) = world.get_resource::<Plasticity>() {
            for proj in &p.projections {
                s.bytes_neurons += 8 * proj.pre_trace.len() as u64;
            }
        }
        s.derive();
        s
    }

    /// The totals over every rank of a multi-process run (`crate::ranks`; a collective call):
    /// shards, neurons, synapses and bytes of all processes, `projections` long by projection.
    pub fn sum_over_ranks(&mut self, transport: &dyn crate::ranks::Transport, projections: usize) {
        self.synapses_by_projection.resize(projections, 0);
        let mut values = vec![self.shards as u64, self.neurons, self.bytes_neurons, self.static_synapses, self.plastic_synapses, self.bytes_static_synapses, self.bytes_plastic_synapses];
        values.extend_from_slice(&self.synapses_by_projection);
        transport.sum(&mut values);
        let [shards, neurons, bytes_neurons, static_synapses, plastic_synapses, bytes_static, bytes_plastic] = values[..7].try_into().expect("seven totals");
        (self.shards, self.neurons, self.bytes_neurons) = (shards as usize, neurons, bytes_neurons);
        (self.static_synapses, self.plastic_synapses, self.bytes_static_synapses, self.bytes_plastic_synapses) = (static_synapses, plastic_synapses, bytes_static, bytes_plastic);
        self.synapses_by_projection = values[7..].to_vec();
        self.derive();
    }

    /// The totals and ratios that follow from the counts.
    fn derive(&mut self) {
        self.synapses = self.static_synapses + self.plastic_synapses;
        self.bytes_total = self.bytes_neurons + self.bytes_static_synapses + self.bytes_plastic_synapses;
        let per = |bytes: u64, n: u64| if n == 0 { 0.0 } else { bytes as f64 / n as f64 };
        self.bytes_per_neuron = per(self.bytes_neurons, self.neurons);
        self.bytes_per_static_synapse = per(self.bytes_static_synapses, self.static_synapses);
        self.bytes_per_plastic_synapse = per(self.bytes_plastic_synapses, self.plastic_synapses);
    }
}


/// The most memory this process has held at once (peak resident set size), bytes: Linux's
/// `VmHWM`, the high-water mark of this program's own memory map. Not getrusage's `ru_maxrss`
/// where there is `VmHWM`: Linux carries that across `execve` from the parent's memory at fork,
/// so a fum started by a large process (a test harness, a notebook) reported the parent's size.
pub fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().strip_suffix("kB")).and_then(|kb| kb.trim().parse::<u64>().ok());
    if let Some(kb) = hwm {
        return kb * 1024;
    }
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0;
    }
    usage.ru_maxrss as u64 * 1024
}

#[cfg(test)]
mod tests {
    use super::Timeline;

    #[test]
    fn the_timeline_keeps_every_second_and_doubles_its_stretches() {
        // dt 0.5 ms: 200 steps a stretch of 100 ms.
        let mut t = Timeline::new(0.5);
        for i in 0..1000 {
            t.add(i, 0.001);
        }
        assert_eq!(t.bucket_ms, 100.0);
        assert_eq!(t.wall_s.len(), 5);
        assert!(t.wall_s.iter().all(|&w| (w - 0.2).abs() < 1e-12), "{:?}", t.wall_s);
        // A step beyond MAX stretches merges them in pairs, as often as needed: step 399 800 is
        // stretch 1999 of 200 steps, 999 of 400.
        t.add(200 * 1999, 1.0);
        assert_eq!(t.bucket_ms, 200.0);
        assert_eq!(t.wall_s.len(), 1000);
        assert!((t.wall_s[0] - 0.4).abs() < 1e-12 && (t.wall_s[2] - 0.2).abs() < 1e-12 && t.wall_s[999] == 1.0, "{:?}", &t.wall_s[..3]);
        // Three more doublings at once.
        t.add(200 * 15_999, 1.0);
        assert_eq!((t.bucket_ms, t.wall_s.len()), (1600.0, 1000));
        assert!((t.wall_s[0] - 1.0).abs() < 1e-12 && t.wall_s[124] == 1.0 && t.wall_s[999] == 1.0);
        assert!((t.wall_s.iter().sum::<f64>() - 3.0).abs() < 1e-9);
    }
}
