//! What a model asks of this machine, checked before anything is built: memory and threads.
//!
//! The memory estimate counts what the builder allocates, from the model alone (expected
//! synapses per projection, see [`Model::expected_synapses_of`]): per neuron its state and
//! ring buffers; per synapse its target, weight and (drawn delays) delay; per shard and
//! projection the row pointers; STDP traces and histories; the drafts of the blocks being
//! built at once; and the recorded probe values (held until written). A device backend
//! mirrors the network's columns, so its device memory is about `network_bytes`.

use fum_kernels::delivery::ring_slots;
use fum_kernels::stdp::PostState;

use crate::build::{delay_range_steps, shard_count};
use crate::model::{Distribution, Model, ModelError, ProbeVariable, Seg, WeightPrecision};

/// Threads per core above which a run is refused: far past the cores, every step waits on
/// threads that cannot run (10,000 threads on 2 cores took minutes for one step).
pub const MAX_THREADS_PER_CORE: usize = 4;

/// Bytes of one synapse while its block is built: the draft (row, target, delay, weight), the
/// three columns it is sorted into (a `u32` target, narrowed after) and the sort's counts (at
/// most a quarter of the drafts, `crate::build`).
const DRAFT_BYTES: f64 = 16.0 + 10.0 + 4.0;

/// Sizes of a model as built, in bytes (estimates: `fixed_probability` counts its mean).
#[derive(Clone, Debug, Default)]
pub struct Estimate {
    pub neurons: u64,
    pub synapses: f64,
    /// The built network: what stays allocated while simulating.
    pub network_bytes: f64,
    /// Of it, the synapses outside structural plasticity: what `--host-memory` may page to disk.
    pub pageable_bytes: f64,
    /// Of those, the weights of plastic projections (a device writes them: they stay in RAM).
    pub plastic_weight_bytes: f64,
    /// The blocks being built at once (drafts and the columns they are sorted into).
    pub draft_bytes: f64,
    /// The most host memory the run holds at once: the network, the blocks being built, and
    /// the recorded probe values.
    pub host_bytes: f64,
    /// `MemAvailable` of this machine; none where it cannot be read.
    pub available_bytes: Option<u64>,
    /// The projection with the most synapses (where to point when it does not fit).
    largest_projection: Option<usize>,
}

impl Estimate {
    /// The memory `model` needs when built into `shards` shards by `threads` threads.
    pub fn of(model: &Model, threads: usize, shards: usize) -> Estimate {
        let spec = &model.spec;
        let dt = spec.simulation.dt_ms;
        let neurons: u64 = spec.populations.iter().map(|p| u64::from(p.size)).sum();
        let n = neurons as f64;
        let shards = shard_count(u32::try_from(neurons).unwrap_or(u32::MAX), shards).clamp(1, neurons.max(1) as usize) as f64;
        let shard_len = n / shards;
        let target_bytes = if shard_len.ceil() as usize > fum_kernels::delivery::NARROW_SHARD_NEURONS { 4.0 } else { 2.0 };
        let max_delay = spec.projections.iter().map(|p| delay_range_steps(p.delay_ms, dt).1).max().unwrap_or(1);
        // v, syn_ex, syn_in, refractory, fired, two rings of i64 sums; dsyn_ex and dsyn_in where
        // a population is lif_psc_alpha, bias_pa where one draws or lists its bias (for every
        // neuron: `NeuronBlock::dsyn_ex`).
        let alpha = spec.populations.iter().any(|p| p.model == crate::model::NeuronModel::LifPscAlpha);
        let drawn_bias = spec.populations.iter().any(|p| !matches!(p.i_e_pa, Distribution::Constant(_)));
        let optional = 8.0 * f64::from(u8::from(alpha)) + 4.0 * f64::from(u8::from(drawn_bias));
        let mut network = n * (4.0 * 4.0 + 1.0 + optional + 2.0 * 8.0 * ring_slots(max_delay) as f64);
        // Spike sources: their listed spikes (12 bytes each) and schedules (8 bytes a spike).
        network += 20.0 * spec.populations.iter().filter_map(|p| p.trains.as_ref()).map(|t| t.len() as f64).sum::<f64>();
        // Values listed per neuron, which the model keeps (8 bytes each).
        let inputs = model.listed.iter().flat_map(|l| &l.inputs);
        let listed = (0..spec.populations.len()).filter_map(|pi| model.neuron_values(pi)).chain(inputs).flat_map(|v| v.fields()).flatten();
        network += 8.0 * listed.map(|v| v.len() as f64).sum::<f64>();
        let sizes: std::collections::HashMap<&str, u32> = spec.populations.iter().map(|p| (p.name.as_str(), p.size)).collect();
        let size = |name: &str| f64::from(sizes[name]);
        let histories: std::collections::HashMap<&str, u32> = spec.plasticity.iter().map(|r| (r.name.as_str(), r.post_history)).collect();
        let weight_bytes = match spec.simulation.weights {
            WeightPrecision::F32 => 4.0,
            WeightPrecision::F16 => 2.0,
        };
        let (mut synapses, mut drafts, mut largest, mut pageable, mut plastic_weights) = (0.0, 0.0f64, None::<(usize, f64)>, 0.0, 0.0);
        for (i, p) in spec.projections.iter().enumerate() {
            let (src, tgt) = (size(&p.source), size(&p.target));
            // Regrowth ([[structural]]) may fill every target up to its in-degree.
            let regrown = spec.structural.iter().filter(|s| s.projection == p.name).filter_map(|s| s.regrow.as_ref()).map(|r| f64::from(r.to_indegree) * tgt).fold(0.0, f64::max);
            let count = p.rule.expected_synapses(sizes[p.source.as_str()], sizes[p.target.as_str()]).max(regrown);
            // Shards holding the target population, each a block with a row pointer per source.
            let blocks = ((tgt / shard_len.max(1.0)).ceil() + 1.0).min(shards);
            let delay_bytes = if matches!(p.delay_ms, None | Some(Distribution::Constant(_))) { 0.0 } else { 2.0 };
            network += count * (target_bytes + weight_bytes + delay_bytes) + blocks * (src + 1.0) * 4.0;
            if !spec.structural.iter().any(|s| s.projection == p.name) {
                pageable += count * (target_bytes + weight_bytes + delay_bytes);
                if p.plasticity.is_some() {
                    plastic_weights += count * weight_bytes;
                }
            }
            if let Some(&history) = p.plasticity.as_deref().and_then(|name| histories.get(name)) {
                let history = f64::from(history);
                network += blocks * shard_len * (size_of::<PostState>() as f64 + 4.0 * history) + 8.0 * src;
            }
            // Shards over 65,536 neurons build one at a time (`crate::build`), others a thread each.
            let at_once = if target_bytes > 2.0 { 1.0 } else { (threads as f64).min(blocks) };
            drafts = drafts.max(count / blocks * DRAFT_BYTES * at_once);
            synapses += count;
            if largest.is_none_or(|(_, most)| count > most) {
                largest = Some((i, count));
            }
        }
        let steps = model.steps() as f64;
        let probes: f64 = spec
            .recording
            .probes
            .iter()
            .map(|p| {
                let sites = if p.variable == ProbeVariable::Weight { p.synapses.len().max(p.count.unwrap_or(0) as usize) } else { p.neurons.len() } as f64;
                let samples = steps / (p.interval_ms.unwrap_or(dt) / dt).round().max(1.0);
                // Recorded, then read back whole and copied once more when written.
                3.0 * samples * (4.0 * sites + 8.0)
            })
            .sum();
        Estimate {
            neurons,
            synapses,
            network_bytes: network,
            pageable_bytes: pageable,
            plastic_weight_bytes: plastic_weights,
            draft_bytes: drafts,
            host_bytes: network + drafts + probes,
            available_bytes: available_memory(),
            largest_projection: largest.map(|(i, _)| i),
        }
    }
}

/// Refuses, as an error at the field responsible, a model this machine cannot run with
/// `threads` threads and `shards` shards: more threads than [`MAX_THREADS_PER_CORE`] per core,
/// or more memory than is available (with `host_memory`, `--host-memory`, synapses beyond it go
/// to disk, so only that much and the blocks being built count). Warns on stderr of more
/// threads than cores.
pub fn check(model: &Model, threads: usize, shards: usize, host_memory: Option<u64>) -> Result<Estimate, ModelError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads > MAX_THREADS_PER_CORE * cores {
        let message = format!("{threads} threads on {cores} cores: at most {} ({MAX_THREADS_PER_CORE} per core)", MAX_THREADS_PER_CORE * cores);
        return Err(model.invalid(vec![Seg::from("simulation"), Seg::from("threads")], message));
    }
    if threads > cores {
        eprintln!("warning: {threads} threads on {cores} cores: each step waits for threads that cannot run at once");
    }
    let estimate = Estimate::of(model, threads, shards);
    let needed = host_memory.map_or(estimate.host_bytes, |budget| estimate.host_bytes.min(budget as f64 + estimate.host_bytes - estimate.network_bytes));
    // Across ranks this process builds its share of the shards (`crate::ranks`).
    let ranges = crate::build::cut(model, shards);
    let costs = crate::build::shard_costs(model, &ranges);
    let share = crate::partition::owned_here(model, &ranges).iter().map(|&s| costs[s]).sum::<f64>() / costs.iter().sum::<f64>().max(f64::MIN_POSITIVE);
    let needed = needed * share;
    if let Some(available) = estimate.available_bytes.filter(|&a| needed > a as f64) {
        let at = match estimate.largest_projection {
            Some(i) if estimate.synapses * 6.0 > estimate.network_bytes / 2.0 => vec![Seg::from("projections"), Seg::from(i), Seg::from("rule")],
            _ => vec![Seg::from("populations")],
        };
        let message = format!(
            "the network needs about {} of memory ({} neurons, ~{:.0} synapses; {} when built) and this machine has {} available",
            bytes(needed),
            estimate.neurons,
            estimate.synapses,
            bytes(estimate.network_bytes),
            bytes(available as f64)
        );
        return Err(model.invalid(at, message));
    }
    Ok(estimate)
}

/// Memory available to a new process (`MemAvailable` of /proc/meminfo), bytes.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// "12.3 GB", "4.0 MB", "1.5 kB"; "3.0e20 B" past terabytes.
pub fn bytes(b: f64) -> String {
    match b {
        b if b >= 1e15 => format!("{b:.1e} B"),
        b if b >= 1e12 => format!("{:.1} TB", b / 1e12),
        b if b >= 1e9 => format!("{:.1} GB", b / 1e9),
        b if b >= 1e6 => format!("{:.1} MB", b / 1e6),
        b => format!("{:.1} kB", b / 1e3),
    }
}
