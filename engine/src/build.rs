//! The network builder: from a validated [`Model`] to a `World` of shards.
//!
//! Construction is deterministic in the seed alone. Every random choice is drawn from a Philox
//! stream keyed by what it is about (the projection and the postsynaptic neuron for
//! `fixed_probability` / `fixed_indegree`, the presynaptic neuron for `fixed_outdegree`, the
//! population and neuron for initial state, the projection and a split of its targets for the
//! in-degrees of `fixed_total_number` ([`total_number`])), never by shard or thread. So the same
//! synapses and initial state come out for any shard or thread count, and shards build in
//! parallel.
//!
//! Shards are contiguous ranges of global ids of near-equal cost to step ([`cut`]); across
//! ranks, the partition groups whole shards (`crate::partition`). Synapse targets are shard-local
//! indices, `u16` in shards of at most 65,536 neurons (the default, [`default_shards`]) and
//! `u32` in larger ones ([`Targets`]); spikes do not depend on the shard count. Each shard
//! stores the synapses into its neurons as CSR rows; a stable counting sort by row
//! ([`sort_by_row`]) keeps, within a row, the order in which synapses were drawn (by target for
//! the per-target rules), which does not depend on the sharding either.

use bevy_ecs::prelude::*;
use rayon::prelude::*;
use std::ops::Range;

use crate::column::Column;
use crate::components::*;
use crate::model::{ConnectionRule, Distribution, InputKind, Model, NeuronModel};
use fum_kernels::delivery::{MAX_DELAY_STEPS, MAX_SHARD_NEURONS, NARROW_SHARD_NEURONS, ring_slots};
use fum_kernels::lif::{AlphaPropagators, CobaConstants, CubaPropagators};
use fum_kernels::rng::{Key, Purpose, Stream};
use fum_kernels::stdp::{NEVER, TraceDecay};

mod total_number;

/// Errors that a valid model can still hit when built with given options.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("projection \"{0}\" has more than 2^32 - 1 synapses into one shard; use more shards")]
    BlockTooLarge(String),
    #[error(transparent)]
    Recording(#[from] crate::recording::OutputError),
    #[error("synapse pages: {0}")]
    Spill(String),
}

/// One synapse while building: population-local source, shard-local target.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Draft {
    row: u32,
    target: u32,
    delay_steps: u16,
    weight: f32,
}

/// Splits `total` neurons into `shards` contiguous, near-equal ranges: the cut of checkpoints
/// written before format 6 ([`crate::checkpoint::Header::cut`]); [`cut`] is today's.
pub fn equal_cut(total: u32, shards: usize) -> Vec<Range<u32>> {
    let shards = shards.clamp(1, total.max(1) as usize) as u64;
    (0..shards)
        .map(|s| ((u64::from(total) * s / shards) as u32)..((u64::from(total) * (s + 1) / shards) as u32))
        .collect()
}

/// Cuts the network's neurons into `shards` contiguous ranges (more where a shard would exceed
/// [`MAX_SHARD_NEURONS`], [`shard_count`]) of near-equal cost ([`neuron_costs`]), so that a
/// shard of an excitatory population with plastic inputs and one of an inhibitory population
/// take alike to step, and ranks, which own whole shards (`crate::partition`), can balance even
/// with one shard a GPU. Cut into equal counts of neurons, 4M neurons of an 80 / 20 E / I
/// network in 16 shards left two GPUs of four with 17 and 25 % less work than the other two,
/// which every step waited for (benchmarks/RESULTS.md, "Shards cut by cost").
///
/// Shards are cut one after another, each taking an equal share of the cost still uncut; a cut
/// within a quarter of that share of a population's edge moves onto the edge, so that the
/// shards of small populations (modules of a clustered network) hold one population each and
/// METIS's shard graph keeps them together. No shard is longer than the equal cut allows
/// itself: [`NARROW_SHARD_NEURONS`] where equal ranges fit in it (2-byte targets stay
/// 2-byte), else [`MAX_SHARD_NEURONS`]. The cut is a pure function of the model and the count,
/// so every rank computes the same one; checkpoints record it.
pub fn cut(model: &Model, shards: usize) -> Vec<Range<u32>> {
    let costs = neuron_costs(model);
    let total = costs.last().map_or(0, |(ids, _)| ids.end);
    let shards = shard_count(total, shards).clamp(1, total.max(1) as usize);
    let cap = if (total as usize).div_ceil(shards) <= NARROW_SHARD_NEURONS { NARROW_SHARD_NEURONS } else { MAX_SHARD_NEURONS } as u32;
    // The cost of the neurons before id `at`, and the id before which `cost` is reached.
    let before = |at: u32| -> f64 { costs.iter().map(|(ids, c)| f64::from(at.min(ids.end).saturating_sub(ids.start)) * c).sum() };
    let at_cost = |cost: f64| -> u32 {
        let (ids, c) = costs.iter().find(|(ids, _)| before(ids.end) >= cost).unwrap_or(&costs[costs.len() - 1]);
        (f64::from(ids.start) + ((cost - before(ids.start)) / c).round()).clamp(f64::from(ids.start), f64::from(ids.end)) as u32
    };
    let edges: Vec<u32> = costs.iter().map(|(ids, _)| ids.start).filter(|&e| e > 0).collect();
    let mut ranges = Vec::with_capacity(shards);
    let mut start = 0u32;
    for k in 0..shards {
        let later = (shards - k - 1) as u32;
        let end = if later == 0 {
            total
        } else {
            let share = (before(total) - before(start)) / f64::from(later + 1);
            let target = before(start) + share;
            let nearest_edge = edges.iter().copied().filter(|&e| e > start && (before(e) - target).abs() <= share / 4.0).min_by(|&a, &b| (before(a) - target).abs().total_cmp(&(before(b) - target).abs()));
            // At least one neuron here and in each later shard; at most `cap` here, and no more
            // than the later shards can take.
            let (lo, hi) = ((start + 1).max(total.saturating_sub(later.saturating_mul(cap))), (start.saturating_add(cap)).min(total - later));
            nearest_edge.unwrap_or_else(|| at_cost(target)).clamp(lo, hi)
        };
        ranges.push(start..end);
        start = end;
    }
    ranges
}

/// How much more stepping a plastic synapse costs than a static one: about 2.4 on an H100 (the
/// 1M-neuron network of `benchmarks/gpu` at RTF 1.95 with STDP on its 64 % E->E synapses, 1.16
/// without).
pub const PLASTIC_COST: f64 = 2.4;

/// Each population's neurons with the relative cost of stepping one: one, plus its incoming
/// synapses at the rules' expected in-degrees, a plastic one counting [`PLASTIC_COST`] times.
pub fn neuron_costs(model: &Model) -> Vec<(Range<u32>, f64)> {
    let spec = &model.spec;
    let mut first = 0;
    spec.populations
        .iter()
        .map(|pop| {
            let synapses: f64 = spec
                .projections
                .iter()
                .filter(|p| p.target == pop.name)
                .map(|p| model.expected_synapses_of(p) / f64::from(pop.size.max(1)) * if p.plasticity.is_some() { PLASTIC_COST } else { 1.0 })
                .sum();
            first += pop.size;
            (first - pop.size..first, 1.0 + synapses)
        })
        .collect()
}

/// The relative cost of stepping each shard of `ranges` ([`neuron_costs`]). Ranks split the
/// shards by it ([`crate::partition`]).
pub fn shard_costs(model: &Model, ranges: &[Range<u32>]) -> Vec<f64> {
    let per_neuron = neuron_costs(model);
    ranges
        .iter()
        .map(|r| per_neuron.iter().map(|(ids, cost)| f64::from(r.end.min(ids.end).saturating_sub(r.start.max(ids.start))) * cost).sum())
        .collect()
}

/// Shards needed for `neurons` neurons when `requested` are asked for: at least one per
/// [`MAX_SHARD_NEURONS`]. Shards over [`NARROW_SHARD_NEURONS`] store 4-byte targets
/// ([`Targets`]); [`default_shards`] keeps to 2-byte ones.
pub fn shard_count(neurons: u32, requested: usize) -> usize {
    requested.max((neurons as usize).div_ceil(MAX_SHARD_NEURONS))
}

/// Shards when none are asked for: one per worker thread of every rank (`crate::ranks`), and
/// at least one per [`NARROW_SHARD_NEURONS`], where a CPU thread's scattered adds into a
/// shard's ring stay within its cache and targets take 2 bytes.
pub fn default_shards(neurons: u32, threads_of_all_ranks: usize) -> usize {
    threads_of_all_ranks.max((neurons as usize).div_ceil(NARROW_SHARD_NEURONS))
}

/// Builds the world of a model cut into `shards` shards ([`cut`]). Runs in the current rayon
/// pool.
pub fn build_world(model: &Model, shards: usize) -> Result<World, BuildError> {
    build_world_spilled(model, &cut(model, shards), None, &|_| {})
}

/// Builds the world of a model cut into the shards `ranges` (every neuron once, in order: [`cut`],
/// or a checkpoint's), spilling each synapse block's pages beyond its share of `--host-memory`
/// to disk as soon as it is built, so that the network never sits whole in memory
/// (`crate::paging::BuildSpill`). `built` hears the number of shards built so far as each is
/// done (from the pool's threads).
pub fn build_world_spilled(model: &Model, ranges: &[Range<u32>], spill: Option<&crate::paging::BuildSpill>, built: &(dyn Fn(usize) + Sync)) -> Result<World, BuildError> {
    let spec = &model.spec;
    let dt = spec.simulation.dt_ms;
    let key = Key::from_seed(spec.simulation.seed);

    let mut populations = Vec::with_capacity(spec.populations.len());
    let mut first = 0u32;
    for p in &spec.populations {
        let lif = p.lif();
        let dynamics = match p.model {
            NeuronModel::LifCuba => Dynamics::Cuba(CubaPropagators::new(&lif, dt)),
            NeuronModel::LifCoba => Dynamics::Coba(CobaConstants {
                euler: p.integrator == Some(crate::model::Integrator::Euler),
                ..CobaConstants::new(&lif, p.reversal_ex_mv(), p.reversal_in_mv(), dt)
            }),
            NeuronModel::LifPscAlpha => Dynamics::Alpha(AlphaPropagators::new(&lif, dt)),
            NeuronModel::SpikeSource => Dynamics::SpikeSource,
        };
        let schedule = p.trains.as_ref().map(|t| std::sync::Arc::from(fum_kernels::source::schedule(&t.neurons, &t.times_ms, dt)));
        // A constant bias joins the DC inputs flowing at a step in f64, rounded once; a drawn
        // or listed one (its span is not a constant) is stored per neuron (`build_neurons`) and
        // added to that f32 sum at each step.
        let dc: Vec<((u64, u64), f64)> = spec.inputs.iter().filter(|i| i.kind == InputKind::Dc && i.target == p.name).map(|i| (i.window_steps(dt), i.amplitude_pa.unwrap_or(0.0))).collect();
        let (i_e, bias_per_neuron) = match p.i_e_pa {
            Distribution::Constant(i_e) => (i_e, false),
            _ => (0.0, true),
        };
        let dc_at = |step: u64| dc.iter().filter(|((start, stop), _)| (*start..*stop).contains(&step)).map(|(_, amp)| amp).sum::<f64>();
        let current_at = |step: u64| if bias_per_neuron { dc_at(step) as f32 } else { (i_e + dc_at(step)) as f32 };
        let mut edges: Vec<u64> = dc.iter().flat_map(|&((start, stop), _)| [start, stop]).filter(|&s| s > 0 && s < u64::MAX).collect();
        edges.sort_unstable();
        edges.dedup();
        let current_changes = edges.into_iter().map(|s| (s, current_at(s))).collect();
        populations.push(Population { name: p.name.clone(), first, size: p.size, dynamics, current_pa: current_at(0), current_changes, bias_per_neuron, schedule });
        first += p.size;
    }
    debug_assert!(ranges.first().is_some_and(|r| r.start == 0) && ranges.last().is_some_and(|r| r.end == first) && ranges.windows(2).all(|w| w[0].end == w[1].start));
    let max_delay = spec
        .projections
        .iter()
        .map(|p| delay_range_steps(p.delay_ms, dt).1)
        .max()
        .unwrap_or(1);

    let plastic: Vec<PlasticProjection> = spec
        .projections
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let rule_spec = &spec.plasticity[model.plasticity_index(p.plasticity.as_deref()?)?];
            let src = &populations[model.population_index(&p.source)?];
            let tgt = &populations[model.population_index(&p.target)?];
            Some(PlasticProjection {
                projection: i,
                rule: rule_spec.rule(),
                pre_decay: TraceDecay::new(rule_spec.tau_plus_ms, dt),
                post_decay: TraceDecay::new(rule_spec.tau_minus_ms, dt),
                source: src.ids(),
                target: tgt.ids(),
                pre_trace: Column::filled(src.size as usize, 0.0),
                pre_last_spike: Column::filled(src.size as usize, NEVER),
                history_len: rule_spec.post_history as usize,
            })
        })
        .collect();

    // In a run of several processes this one builds only the shards it owns (`crate::ranks`).
    let owned = crate::partition::owned_here(model, ranges);
    // Counted under a lock, so that `built` hears 1, 2, 3 ... in order.
    let done = std::sync::Mutex::new(0);
    let build_shard = |&(index, range): &(usize, &Range<u32>)| -> Result<(Shard, NeuronBlock, SynapseBlocks), BuildError> {
        let neurons = build_neurons(model, key, &populations, range.clone(), max_delay);
        let mut blocks = Vec::new();
        for (pi, _) in spec.projections.iter().enumerate() {
            if let Some(mut block) = build_block(model, key, &populations, &plastic, pi, range.clone())? {
                if let Some(spill) = spill {
                    spill.block(&mut block).map_err(BuildError::Spill)?;
                }
                blocks.push(block);
            }
        }
        let mut done = done.lock().unwrap_or_else(|e| e.into_inner());
        *done += 1;
        built(*done);
        Ok((Shard { index, neurons: range.clone() }, neurons, SynapseBlocks(blocks)))
    };
    // Shards build at once, each drafting its synapses on a thread of the pool, except shards
    // over NARROW_SHARD_NEURONS: each of those drafts and sorts over the whole pool, so they
    // build one after another, and only one holds its drafts (16 bytes a synapse) at a time.
    let owned: Vec<(usize, &Range<u32>)> = ranges.iter().enumerate().filter(|(index, _)| owned.binary_search(index).is_ok()).collect();
    let at_once = if ranges.iter().any(|r| r.len() > NARROW_SHARD_NEURONS) { 1 } else { owned.len().max(1) };
    let shard_parts: Vec<Result<(Shard, NeuronBlock, SynapseBlocks), BuildError>> = owned.chunks(at_once).flat_map(|wave| wave.par_iter().map(build_shard).collect::<Vec<_>>()).collect();

    let mut world = World::new();
    for part in shard_parts {
        world.spawn(part?);
    }
    let poisson = spec
        .inputs
        .iter()
        .enumerate()
        .filter(|(_, i)| i.kind == InputKind::Poisson)
        .map(|(index, i)| {
            let target = &populations[model.population_index(&i.target).expect("validated")];
            let mut source = PoissonSource {
                index: index as u16,
                target: target.ids(),
                mean_per_step: 0.0,
                exp_minus_mean: 1.0,
                cdf: Default::default(),
                weight: i.weight.unwrap_or(0.0) as f32,
                receptor: i.receptor,
                per_neuron: None,
            };
            match (model.input_rates_hz(index), i.rate_hz.unwrap_or(Distribution::Constant(0.0))) {
                (None, Distribution::Constant(rate)) => source.set_rate(rate, dt),
                // Listed per target neuron, or one draw per target neuron from its own stream (the
                // same on any shard): either way the per-neuron means both backends read.
                (listed, rate) => {
                    let key = Key::from_seed(spec.simulation.seed);
                    let rate_of = |j: u32| listed.map_or_else(|| rate.sample(&mut key.stream(Purpose::InputRate, index as u16, j)), |l| l[j as usize]);
                    let means: Vec<f64> = (0..target.size).map(|j| rate_of(j) * dt * 1e-3).collect();
                    source.mean_per_step = means.iter().sum::<f64>() / f64::from(target.size.max(1));
                    source.per_neuron = Some(means.into_iter().map(|m| [m, (-m).exp()]).collect());
                }
            }
            source
        })
        .collect();
    world.insert_resource(Populations(populations));
    world.insert_resource(ShardRanges(ranges.to_vec()));
    world.insert_resource(PoissonSources(poisson));
    world.insert_resource(Plasticity { enabled: true, projections: plastic });
    world.insert_resource(StdpHistoryOverflows::default());
    world.insert_resource(Clock { step: 0, dt_ms: dt });
    world.insert_resource(Seed(key));
    world.insert_resource(SpikeExchange::default());
    if let Some(structural) = crate::structural::Structural::of(model) {
        crate::structural::prepare(&mut world, structural);
    }
    // The blocks' drafts (up to 30 B a synapse, a block per thread) are freed now, but glibc
    // keeps freed memory in its per-thread arenas: without a trim the run's resident memory
    // stays near the build's peak (1M neurons x 1000 synapses on 16 threads: 10.8 GB while
    // simulating a network of 5 GB). A program that allocates through `use_jemalloc!` (the fum
    // binary, the Python module) gets its drafts back from jemalloc's background threads; the
    // trim still returns what C libraries freed through glibc.
    // SAFETY: malloc_trim only returns free memory to the system.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::malloc_trim(0)
    };
    Ok(world)
}

/// Smallest and largest delay of a projection, in steps.
pub(crate) fn delay_range_steps(delay_ms: Option<Distribution>, dt: f64) -> (u32, u32) {
    match delay_ms {
        None => (1, 1),
        Some(d) if d.unbounded() => (1, MAX_DELAY_STEPS),
        Some(d) => {
            let (lo, hi) = d.range();
            (to_steps(lo, dt), to_steps(hi, dt))
        }
    }
}

fn to_steps(delay_ms: f64, dt: f64) -> u32 {
    ((delay_ms / dt).round().max(1.0) as u32).min(MAX_DELAY_STEPS)
}

/// A delay in steps as stored (`MAX_DELAY_STEPS` fits a `u16`).
pub(crate) fn stored_steps(delay_ms: f64, dt: f64) -> u16 {
    to_steps(delay_ms, dt) as u16
}

fn build_neurons(model: &Model, key: Key, populations: &[Population], range: Range<u32>, max_delay: u32) -> NeuronBlock {
    let n = range.len();
    let mut segments = Vec::new();
    let (mut v, mut syn_ex, mut syn_in) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
    // Columns only some models need exist for the whole shard when any population needs
    // them (see `NeuronBlock::dsyn_ex`), whether or not this shard holds one of its neurons.
    let alpha = populations.iter().any(|p| matches!(p.dynamics, Dynamics::Alpha(_)));
    let mut bias = populations.iter().any(|p| p.bias_per_neuron).then(|| vec![0f32; n]);
    for (pi, pop) in populations.iter().enumerate() {
        let lo = pop.first.max(range.start);
        let hi = (pop.first + pop.size).min(range.end);
        if lo >= hi {
            continue;
        }
        let local = (lo - range.start) as usize..(hi - range.start) as usize;
        let spec = &model.spec.populations[pi];
        // Listed per neuron (a SONATA circuit's per-node V_m, values from Python), or drawn.
        let listed = model.neuron_values(pi);
        let (listed_v, listed_bias) = (listed.and_then(|l| l.v_init_mv.as_deref()), listed.and_then(|l| l.i_e_pa.as_deref()));
        for (offset, id) in (lo..hi).enumerate() {
            // One stream per neuron: v, then syn_ex, then syn_in.
            let mut s = key.stream(Purpose::InitialState, pi as u16, id - pop.first);
            let i = local.start + offset;
            let n = (id - pop.first) as usize;
            v[i] = match listed_v {
                Some(listed) => listed[n],
                None => spec.v_init_mv.map_or(spec.e_l_mv, |d| d.sample(&mut s)),
            } as f32;
            syn_ex[i] = spec.syn_ex_init.map_or(0.0, |d| d.sample(&mut s)) as f32;
            syn_in[i] = spec.syn_in_init.map_or(0.0, |d| d.sample(&mut s)) as f32;
            if let (Some(bias), true) = (&mut bias, pop.bias_per_neuron) {
                // A stream of its own per neuron, keyed like the initial state's (population,
                // neuron): the same draw on any shard, thread, rank or backend.
                bias[i] = match listed_bias {
                    Some(listed) => listed[n],
                    None => spec.i_e_pa.sample(&mut key.stream(Purpose::NeuronParameters, pi as u16, id - pop.first)),
                } as f32;
            }
        }
        segments.push(Segment { population: pi, local });
    }
    NeuronBlock {
        segments,
        v: Column::from_vec(v),
        syn_ex: Column::from_vec(syn_ex),
        syn_in: Column::from_vec(syn_in),
        dsyn_ex: alpha.then(|| Column::filled(n, 0.0)),
        dsyn_in: alpha.then(|| Column::filled(n, 0.0)),
        bias_pa: bias.map(Column::from_vec),
        refractory_steps: Column::filled(n, 0),
        fired: Column::filled(n, 0),
        ring_ex: Column::filled(ring_slots(max_delay) * n, 0),
        ring_in: Column::filled(ring_slots(max_delay) * n, 0),
        ring_slots: ring_slots(max_delay),
        spiked: Vec::with_capacity(n / 16 + 16),
    }
}

/// The synapses of projection `pi` into the neurons `shard` (None if it has none there).
fn build_block(
    model: &Model,
    key: Key,
    populations: &[Population],
    plastic: &[PlasticProjection],
    pi: usize,
    shard: Range<u32>,
) -> Result<Option<SynapseBlock>, BuildError> {
    let spec = &model.spec;
    let proj = &spec.projections[pi];
    let dt = spec.simulation.dt_ms;
    let src = &populations[model.population_index(&proj.source).expect("validated")];
    let tgt = &populations[model.population_index(&proj.target).expect("validated")];
    let lo = tgt.first.max(shard.start);
    let hi = (tgt.first + tgt.size).min(shard.end);
    if lo >= hi {
        return Ok(None);
    }
    let same = proj.source == proj.target;
    let bounds = proj.plasticity.as_ref().map(|name| {
        let r = &spec.plasticity[model.plasticity_index(name).expect("validated")];
        (r.w_min, r.w_max())
    });
    let draw_parameters = |s: &mut Stream| -> (u16, f32) {
        let delay = proj.delay_ms.map_or(1, |d| stored_steps(d.sample(s), dt));
        let mut w = proj.weight.sample(s).max(0.0);
        if let Some((w_min, w_max)) = bounds {
            w = w.clamp(w_min, w_max);
        }
        (delay, w as f32)
    };
    let pi16 = pi as u16;
    // Targets in this shard, population-local.
    let posts = (lo - tgt.first)..(hi - tgt.first);
    let to_local = |post: u32| tgt.first + post - shard.start;

    // fixed_total_number: the in-degrees of this shard's targets; each target's sources are then
    // drawn as fixed_indegree draws them.
    let indegrees = match proj.rule {
        ConnectionRule::FixedTotalNumber(total) => total_number::indegrees(key, pi16, total, tgt.size, posts.clone())
            .into_iter()
            .map(|d| u32::try_from(d).map_err(|_| BuildError::BlockTooLarge(proj.name.clone())))
            .collect::<Result<Vec<u32>, _>>()?,
        _ => Vec::new(),
    };
    // In drawing order, in the parts the pool's threads drew (appending them would copy them all
    // once more).
    let drafts: Vec<Vec<Draft>> = match proj.rule {
        // Listed synapses (SONATA edges), in the order listed: a row keeps that order.
        ConnectionRule::Explicit(_) => {
            let list = model.explicit_synapses(pi).expect("an explicit projection has its synapse list");
            (0..list.len())
                .into_par_iter()
                .filter(|&k| posts.contains(&list.post[k]))
                .map(|k| {
                    let mut w = list.weight[k];
                    if let Some((w_min, w_max)) = bounds {
                        w = f64::from(w).clamp(w_min, w_max) as f32;
                    }
                    Draft { row: list.pre[k], target: to_local(list.post[k]), delay_steps: stored_steps(list.delay_ms[k], dt), weight: w }
                })
                .collect_vec_list()
                .into_iter()
                .collect()
        }
        ConnectionRule::FixedOutdegree(k) => (0..src.size)
            .into_par_iter()
            .flat_map_iter(|pre| {
                let mut s = key.stream(Purpose::Connectivity, pi16, pre);
                let mut p = key.stream(Purpose::SynapseParameters, pi16, pre);
                let targets = choose(&mut s, k, tgt.size, (same && !proj.allow_autapses).then_some(pre), proj.allow_multapses);
                targets
                    .into_iter()
                    .map(|post| {
                        let (delay_steps, weight) = draw_parameters(&mut p);
                        (post, Draft { row: pre, target: 0, delay_steps, weight })
                    })
                    .filter(|(post, _)| posts.contains(post))
                    .map(|(post, d)| Draft { target: to_local(post), ..d })
                    .collect::<Vec<_>>()
            })
            .collect_vec_list()
            .into_iter()
            .collect(),
        rule => posts
            .clone()
            .into_par_iter()
            .flat_map_iter(|post| {
                let mut s = key.stream(Purpose::Connectivity, pi16, post);
                let mut p = key.stream(Purpose::SynapseParameters, pi16, post);
                let exclude = (same && !proj.allow_autapses).then_some(post);
                let rule = match rule {
                    ConnectionRule::FixedTotalNumber(_) => ConnectionRule::FixedIndegree(indegrees[(post - posts.start) as usize]),
                    rule => rule,
                };
                let sources = draw_sources(rule, &mut s, src.size, post, exclude, proj.allow_multapses);
                let target = to_local(post);
                sources
                    .into_iter()
                    .map(|row| {
                        let (delay_steps, weight) = draw_parameters(&mut p);
                        Draft { row, target, delay_steps, weight }
                    })
                    .collect::<Vec<_>>()
            })
            .collect_vec_list()
            .into_iter()
            .collect(),
    };
    // Regrowth fills every target up to its in-degree: that too must fit the block.
    let regrown = spec.structural.iter().filter(|s| s.projection == proj.name).filter_map(|s| s.regrow.as_ref()).map(|r| u64::from(r.to_indegree) * u64::from(hi - lo)).max().unwrap_or(0);
    let synapses: usize = drafts.iter().map(Vec::len).sum();
    if synapses.max(regrown as usize) >= u32::MAX as usize {
        return Err(BuildError::BlockTooLarge(proj.name.clone()));
    }
    let (row_ptr, target, delay, weight) = sort_by_row(&drafts, synapses, src.size as usize);
    drop(drafts);
    // A constant delay (or the default of one step) is stored once for the block.
    let delay = match proj.delay_ms {
        None => Delays::Constant(1),
        Some(Distribution::Constant(ms)) => Delays::Constant(stored_steps(ms, dt)),
        Some(_) => Delays::PerSynapse(Column::from_vec(delay)),
    };
    let plastic = plastic
        .iter()
        .position(|pp| pp.projection == pi)
        .map(|rule| PlasticSynapses::new(rule, shard.len(), plastic[rule].history_len, plastic[rule].rule.dendritic));

    Ok(Some(SynapseBlock {
        projection: pi,
        receptor: proj.receptor,
        source_first: src.first,
        source_size: src.size,
        row_ptr: Column::from_vec(row_ptr),
        target: Targets::new(target, shard.len()),
        delay,
        weight: Weights::from_f32(weight, spec.simulation.weights),
        plastic,
        rewired: false,
        pages: None,
    }))
}

/// The `synapses` synapses of `drafts` (parts in drawing order) in CSR order: row pointers over
/// `rows` rows, then each synapse's target, delay and weight. A stable counting sort, O(n), so
/// the order within a row stays the drawing order. In parallel over groups of consecutive parts,
/// each with its own count per row and so its own places in every row (a shard of millions of
/// neurons holds 1e9 drafts); the groups are few enough that their counts take at most a
/// quarter of the drafts' memory.
fn sort_by_row(drafts: &[Vec<Draft>], synapses: usize, rows: usize) -> (Vec<u32>, Vec<u32>, Vec<u16>, Vec<f32>) {
    let groups = rayon::current_num_threads().min(synapses / (4 * rows.max(1))).max(1);
    // A group starts at the first part that starts at or after its share of the drafts.
    let share = synapses.div_ceil(groups).max(1);
    let mut bounds = vec![0];
    let mut seen = 0;
    for (i, part) in drafts.iter().enumerate() {
        if i > 0 && seen >= bounds.len() * share {
            bounds.push(i);
        }
        seen += part.len();
    }
    bounds.push(drafts.len());
    let groups: Vec<&[Vec<Draft>]> = bounds.windows(2).map(|w| &drafts[w[0]..w[1]]).collect();
    let mut places: Vec<Vec<u32>> = groups
        .par_iter()
        .map(|group| {
            let mut count = vec![0u32; rows];
            group.iter().flatten().for_each(|d| count[d.row as usize] += 1);
            count
        })
        .collect();
    // Row r holds group 0's synapses of r, then group 1's, ...: turn counts into first places.
    let mut row_ptr = vec![0u32; rows + 1];
    let mut at = 0u32;
    for r in 0..rows {
        row_ptr[r] = at;
        for count in &mut places {
            let n = count[r];
            count[r] = at;
            at += n;
        }
    }
    row_ptr[rows] = at;
    let (mut target, mut delay, mut weight) = (vec![0u32; synapses], vec![0u16; synapses], vec![0f32; synapses]);
    /// The three outputs, written from every group's thread.
    #[derive(Clone, Copy)]
    struct Out(*mut u32, *mut u16, *mut f32);
    // SAFETY: the pointers outlive the scope below, and are only written through at places
    // that no other group writes (see the writes).
    unsafe impl Send for Out {}
    unsafe impl Sync for Out {}
    let out = Out(target.as_mut_ptr(), delay.as_mut_ptr(), weight.as_mut_ptr());
    groups.par_iter().zip(places.par_iter_mut()).for_each(|(group, place)| {
        let out = out;
        for d in group.iter().flatten() {
            let k = place[d.row as usize] as usize;
            place[d.row as usize] += 1;
            // SAFETY: k < synapses (the places of a row end where the next row's begin, the
            // last at `synapses`), and the places of one group in a row never meet another
            // group's, so no two writes go to the same element.
            unsafe {
                *out.0.add(k) = d.target;
                *out.1.add(k) = d.delay_steps;
                *out.2.add(k) = d.weight;
            }
        }
    });
    (row_ptr, target, delay, weight)
}

/// The sources of target `post` under a rule drawn per target (all but `fixed_outdegree`;
/// `fixed_total_number` as `fixed_indegree` of the target's in-degree), in drawing order, from
/// its connectivity stream `s`.
fn draw_sources(rule: ConnectionRule, s: &mut Stream, sources: u32, post: u32, exclude: Option<u32>, multapses: bool) -> Vec<u32> {
    match rule {
        ConnectionRule::FixedProbability(q) => bernoulli(s, q, sources, exclude),
        ConnectionRule::FixedIndegree(k) => choose(s, k, sources, exclude, multapses),
        ConnectionRule::OneToOne => vec![post],
        ConnectionRule::AllToAll => (0..sources).filter(|&pre| Some(pre) != exclude).collect(),
        ConnectionRule::FixedOutdegree(_) => unreachable!("drawn per source"),
        ConnectionRule::FixedTotalNumber(_) => unreachable!("drawn as fixed_indegree of each target's in-degree"),
        ConnectionRule::Explicit(_) => unreachable!("listed, not drawn"),
    }
}

/// The synapses of projection `pi` of row `neuron` as population-local `[pre, post]` pairs,
/// ascending and without repeats: the synapses into target `neuron`, or out of source `neuron`
/// for `fixed_outdegree` (whose draws are per source). The same draws as [`build_world`] makes
/// for the model's seed, one row alone: what weight probes are checked and chosen from before
/// building.
pub fn synapse_row(model: &Model, pi: usize, neuron: u32) -> Vec<[u32; 2]> {
    let spec = &model.spec;
    let proj = &spec.projections[pi];
    let size = |name: &str| spec.populations[model.population_index(name).expect("validated")].size;
    let (n_src, n_tgt) = (size(&proj.source), size(&proj.target));
    let mut s = Key::from_seed(spec.simulation.seed).stream(Purpose::Connectivity, pi as u16, neuron);
    let exclude = (proj.source == proj.target && !proj.allow_autapses).then_some(neuron);
    let mut row: Vec<[u32; 2]> = match proj.rule {
        ConnectionRule::Explicit(_) => {
            let list = model.explicit_synapses(pi).expect("an explicit projection has its synapse list");
            (0..list.len()).filter(|&k| list.post[k] == neuron).map(|k| [list.pre[k], neuron]).collect()
        }
        ConnectionRule::FixedOutdegree(k) => choose(&mut s, k, n_tgt, exclude, proj.allow_multapses).into_iter().map(|post| [neuron, post]).collect(),
        ConnectionRule::FixedTotalNumber(total) => {
            let indegree = total_number::indegrees(Key::from_seed(spec.simulation.seed), pi as u16, total, n_tgt, neuron..neuron + 1)[0];
            // Rows drawn alone are short (`MAX_ROW_DRAWN`): an in-degree fits a u32.
            choose(&mut s, indegree as u32, n_src, exclude, proj.allow_multapses).into_iter().map(|pre| [pre, neuron]).collect()
        }
        rule => draw_sources(rule, &mut s, n_src, neuron, exclude, proj.allow_multapses).into_iter().map(|pre| [pre, neuron]).collect(),
    };
    row.sort_unstable();
    row.dedup();
    row
}

/// Sources drawn independently with probability `q` (geometric skipping: O(expected count)).
fn bernoulli(s: &mut Stream, q: f64, n: u32, exclude: Option<u32>) -> Vec<u32> {
    if q <= 0.0 {
        return Vec::new();
    }
    if q >= 1.0 {
        return (0..n).filter(|&i| Some(i) != exclude).collect();
    }
    let log_miss = (1.0 - q).ln();
    let mut out = Vec::with_capacity((f64::from(n) * q * 1.2) as usize + 4);
    let mut i: f64 = -1.0;
    loop {
        let u = 1.0 - s.uniform(); // (0, 1]
        i += 1.0 + (u.ln() / log_miss).floor();
        if i >= f64::from(n) {
            return out;
        }
        if Some(i as u32) != exclude {
            out.push(i as u32);
        }
    }
}

/// `k` draws from [0, n), skipping `exclude`, with or without repeats.
fn choose(s: &mut Stream, k: u32, n: u32, exclude: Option<u32>, multapses: bool) -> Vec<u32> {
    let available = n - u32::from(exclude.is_some_and(|e| e < n));
    if available == 0 {
        return Vec::new();
    }
    let k = if multapses { k } else { k.min(available) };
    let mut out = Vec::with_capacity(k as usize);
    let mut taken = std::collections::HashSet::new();
    while out.len() < k as usize {
        let c = s.below(n);
        if Some(c) == exclude || (!multapses && !taken.insert(c)) {
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An 80 / 20 network, STDP on E -> E: an excitatory neuron costs 1 + 800 x 2.4 + 200, an
    /// inhibitory one 1 + 1000.
    fn excitatory_inhibitory(e: u32, i: u32) -> Model {
        let text = format!(
            r#"
[simulation]
dt_ms = 0.1
duration_ms = 1.0
[[populations]]
name = "E"
size = {e}
model = "lif_cuba"
[[populations]]
name = "I"
size = {i}
model = "lif_cuba"
[[plasticity]]
name = "stdp"
a_plus = 0.001
a_minus = 0.001
w_max = 10.0
[[projections]]
name = "EE"
source = "E"
target = "E"
rule = {{ fixed_indegree = 800 }}
weight = 1.0
delay_ms = 1.5
plasticity = "stdp"
[[projections]]
name = "IE"
source = "I"
target = "E"
rule = {{ fixed_indegree = 200 }}
weight = 1.0
receptor = "inhibitory"
delay_ms = 1.5
[[projections]]
name = "EI"
source = "E"
target = "I"
rule = {{ fixed_indegree = 1000 }}
weight = 1.0
delay_ms = 1.5
"#
        );
        Model::parse(&text, std::path::Path::new("ei.toml")).unwrap()
    }

    fn covers_in_order(parts: &[Range<u32>], total: u32) -> bool {
        parts.first().is_some_and(|p| p.start == 0) && parts.last().is_some_and(|p| p.end == total) && parts.windows(2).all(|w| w[0].end == w[1].start) && parts.iter().all(|p| !p.is_empty())
    }

    #[test]
    fn cuts_cover_all_neurons_in_order() {
        for (total, shards) in [(10, 3), (4000, 8), (5, 8), (1, 1)] {
            assert!(covers_in_order(&equal_cut(total, shards), total));
        }
        for (e, i, shards) in [(8, 2, 3), (4, 1, 5), (1, 1, 2), (3_200_000, 800_000, 16), (800, 200, 1), (80_000, 20_000, 7)] {
            let parts = cut(&excitatory_inhibitory(e, i), shards);
            assert!(covers_in_order(&parts, e + i), "{e} + {i} in {shards}: {parts:?}");
            assert_eq!(parts.len(), shards.min((e + i) as usize));
        }
    }

    /// 4M neurons in 16 shards (4 GPUs of 4 shards): equal ranges put three of the inhibitory
    /// population's four fifths of a million neurons on the last GPU; cut by cost, every shard
    /// and every rank of four shards costs within 1 % of the mean.
    #[test]
    fn shards_cut_by_cost_balance_excitatory_and_inhibitory_ranges() {
        let model = excitatory_inhibitory(3_200_000, 800_000);
        let (by_count, by_cost) = (shard_costs(&model, &equal_cut(4_000_000, 16)), shard_costs(&model, &cut(&model, 16)));
        let spread = |c: &[f64]| c.iter().cloned().fold(0.0, f64::max) / (c.iter().sum::<f64>() / c.len() as f64);
        let ranks = |c: &[f64]| c.chunks(4).map(|r| r.iter().sum()).collect::<Vec<f64>>();
        assert!(spread(&ranks(&by_count)) > 1.1, "{by_count:?}");
        assert!(spread(&by_cost) < 1.01 && spread(&ranks(&by_cost)) < 1.01, "{by_cost:?}");
    }

    /// A cut near a population's edge moves onto it; the cut never widens targets: where
    /// equal ranges fit 2-byte targets, so does every shard cut by cost.
    #[test]
    fn cuts_snap_to_population_edges_and_keep_two_byte_targets() {
        // E ends at 0.894 of the cost: 8.05 shares of nine (the eighth cut snaps onto it), 3.58
        // of four (no cut within a quarter of a share).
        let model = excitatory_inhibitory(8_000, 2_000);
        assert!(cut(&model, 9).iter().any(|r| r.end == 8_000), "{:?}", cut(&model, 9));
        assert!(!cut(&model, 4).iter().any(|r| r.end == 8_000), "{:?}", cut(&model, 4));
        let wide = excitatory_inhibitory(800_000, 200_000);
        assert!(cut(&wide, 16).iter().all(|r| r.len() <= NARROW_SHARD_NEURONS), "{:?}", cut(&wide, 16));
        assert!(cut(&wide, 8).iter().any(|r| r.len() > NARROW_SHARD_NEURONS));
    }

    #[test]
    fn shards_never_exceed_the_target_range_and_default_to_two_byte_targets() {
        assert_eq!(shard_count(12_500, 2), 2);
        assert_eq!(shard_count(65_537, 1), 1);
        assert_eq!(shard_count(1 << 22, 1), 1);
        assert_eq!(shard_count((1 << 22) + 1, 1), 2);
        assert_eq!(shard_count(1_000_000, 3), 3);
        assert_eq!(default_shards(65_536, 1), 1);
        assert_eq!(default_shards(65_537, 1), 2);
        assert_eq!(default_shards(1_000_000, 3), 16);
        assert_eq!(default_shards(1_000_000, 32), 32);
        for (total, requested) in [(65_537u32, 1usize), (1_000_000, 3), (200_000, 0), (10_000_000, 1)] {
            let model = excitatory_inhibitory(total - total / 5, total / 5);
            assert!(cut(&model, shard_count(total, requested)).iter().all(|r| r.len() <= MAX_SHARD_NEURONS));
            assert!(cut(&model, default_shards(total, requested)).iter().all(|r| r.len() <= NARROW_SHARD_NEURONS));
        }
    }

    #[test]
    fn bernoulli_count_matches_probability() {
        let mut s = Key::from_seed(5).stream(Purpose::Connectivity, 0, 0);
        let picks = bernoulli(&mut s, 0.02, 1_000_000, None);
        assert!((19_000..21_000).contains(&picks.len()), "{}", picks.len());
        assert!(picks.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn choose_without_multapses_is_distinct_and_skips_self() {
        let mut s = Key::from_seed(5).stream(Purpose::Connectivity, 0, 0);
        let mut picks = choose(&mut s, 99, 100, Some(7), false);
        picks.sort();
        assert_eq!(picks, (0..100).filter(|&i| i != 7).collect::<Vec<_>>());
    }
}
