//! Structural plasticity: synapses pruned and regrown while the network runs (`[[structural]]`
//! in the model file).
//!
//! # Concurrency contract
//!
//! Sections with the same `every_ms` and `commit_after_ms` share a [`Schedule`]; each schedule
//! is planned and committed on its own, as follows, over the blocks of its sections (which no
//! other schedule touches). Every `every_ms` of biological time (step `s = m * every`, m = 1,
//! 2, ...) the structural hook, which runs before the step's schedule holding the world, takes
//! a **snapshot** of what a plan reads: a copy of each affected block's rows, targets and
//! *stored* weights, and the spike count of every neuron since the schedule's previous snapshot
//! (its counters, a slot per schedule of a checkpointed column of [`Rewiring`], are reset).
//! The **plan** is computed from that copy on background threads
//! (at low priority, on the cores the simulation leaves free) while the simulation goes on; it
//! is a pure function of the copy, the seed, the projection, the target neuron and the plan
//! index `m` ([`plan_block`]), so neither timing nor threads nor shards change it. A device
//! backend may compute the heavy part itself (`Backend::plan_structure`): its snapshot is a
//! device-side copy of the weights and counts taken in stream order at `s`, kernels on a side
//! stream decide what [`plan_block`] decides, and the plan threads wait for them and finish
//! ([`finish_device_plan`]: the new synapses' delays and weights are drawn on the host), so the
//! plan is the same function of the same snapshot; a plan thread also lays the plan out over
//! the block's rows, which change only at commits, and makes the device's part of the commit
//! ready ([`Prepared`]), so that the commit itself only swaps columns and launches kernels.
//! The plan is **committed** at the start of step `s + commit_after` (a step count from the
//! model, never from timing; at most `every`, so a plan is applied before the next is made):
//! the hook waits for the plan threads, takes every shard's [`StructureLocks`] entry for
//! writing in shard order, applies the plan to each block ([`apply_plan`]: rows compacted, new
//! synapses appended per row), lets a device backend rebuild its copies of the changed blocks
//! (`Backend::structure_changed`), and releases the locks. Within a process the schedule already
//! serialises the commit against delivery, STDP, recording, checkpoints, health checks and the
//! viewer (they run in the step's stages or between steps, holding the world), so nothing sees a
//! half-applied change, and the result is bit for bit that of a stop-the-world change computed
//! at `s` and applied at `s + commit_after`. Across ranks (`crate::ranks`) each rank snapshots,
//! plans and commits its own shards at those same steps; the snapshot all-gathers the spike
//! counts (a plan reads its sources' rates, and sources live on every rank), and since every
//! step ends in the ranks' collective exchange, no rank steps on while another commits, and a
//! checkpoint (at the same step on every rank) never holds a half-committed network. The locks are the seam for several processes: a
//! rank commits only while holding the write side of the shards it owns, and a reader of
//! structure outside the schedule (a remote viewer, a rank exchanging rows) holds the read side
//! and checks the generation the lock guards.
//!
//! A checkpoint taken between snapshot and commit waits for the plan threads and stores the
//! plan itself (declared columns of [`Rewiring`]), so a resumed run commits the same plan at the
//! same step (what a device made ready is dropped; the commit makes it again). Affected blocks
//! declare their per-synapse columns as state and their row pointers as host state, all of
//! varying length, so the changed structure is checkpointed and restored.
//!
//! # Semantics
//!
//! - **Weights** a rule sees are the stored weights at the snapshot step. STDP potentiation is
//!   applied lazily at a synapse's next presynaptic spike (`fum_kernels::stdp`), so a stored
//!   weight lacks the potentiation pending since its source's last spike.
//! - **Co-activity** of a synapse is `rate_pre * rate_post`, each the neuron's spike count since
//!   the schedule's previous snapshot (since step 0 for the first) over that interval, in Hz;
//!   priority is `|w| * co-activity`.
//! - Rules decide **per target neuron**, ties broken by synapse position (row, then place in
//!   row): `weight_below` prunes `|w| < x`; `keep_strongest = k` keeps the `k` largest `|w|`;
//!   `lowest_priority_fraction = f` prunes `round(f * indegree)` lowest priorities.
//! - **Regrowth** draws `to_indegree - kept` new sources per target uniformly from the source
//!   population, as `fixed_indegree` draws them (no autapse unless allowed; no second synapse
//!   from a source already connected unless multapses are allowed), then a delay and a weight
//!   for each, in that order, from the projection's distributions (`regrow.weight` if given),
//!   clamped to the STDP rule's bounds. In each row they follow the kept synapses, ordered by
//!   target, then by draw.
//! - A **regrown plastic synapse** behaves as if it had been created just after its source's
//!   last spike before the commit, with its drawn weight: at its first presynaptic spike it
//!   pairs with its target's spikes since that source spike, like the other synapses of its row
//!   (the row keeps one presynaptic time, no per-synapse birth step). This is exact and the same
//!   on every backend; the potentiation it may gain from spikes before its birth is that of at
//!   most one inter-spike interval of its source (and at most `post_history` pairings).

use std::ops::Range;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Instant;

use bevy_ecs::prelude::*;
use rayon::prelude::*;
use serde::Serialize;

use crate::build::stored_steps;
use crate::column::{AnyColumn, Column};
use crate::components::{Clock, Delays, Shard, SynapseBlock, SynapseBlocks, Targets, Weights};
use crate::model::{Distribution, Model, Prune};
use crate::state::{Columns, Role, Shape};
use fum_kernels::rng::{Key, Purpose};
use fum_kernels::weight::Weight;

/// One `[[structural]]` section, resolved.
#[derive(Clone, Debug)]
pub struct Rule {
    pub projection: usize,
    pub name: String,
    /// Index of the target population.
    pub target: usize,
    pub prune: Prune,
    pub regrow: Option<Regrow>,
    /// Index of its schedule in [`Structural::schedules`].
    pub schedule: usize,
}

/// What regrowth draws from.
#[derive(Clone, Debug)]
pub struct Regrow {
    pub to_indegree: u32,
    pub weight: Distribution,
    pub delay_ms: Option<Distribution>,
    /// The STDP rule's bounds, for plastic projections.
    pub bounds: Option<(f64, f64)>,
    /// Source and target are the same population and autapses are not allowed.
    pub no_autapses: bool,
    pub multapses: bool,
    pub source_size: u32,
}

/// When the plans of the sections that share it are made and applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Snapshots at every multiple of this step count (from 1 on).
    pub every_steps: u64,
    /// Steps from a snapshot to its commit (at most `every_steps`).
    pub commit_after_steps: u64,
}

impl Schedule {
    /// Whether a plan's snapshot is taken at the start of `step`.
    pub fn snapshot_at(&self, step: u64) -> bool {
        step > 0 && step.is_multiple_of(self.every_steps)
    }

    /// Whether the plan snapshotted `commit_after_steps` before `step` commits at its start.
    pub fn commit_at(&self, step: u64) -> bool {
        step.checked_sub(self.commit_after_steps).is_some_and(|s| self.snapshot_at(s))
    }

    /// Whether the structural hook has work for this schedule at the start of `step`.
    pub fn busy_at(&self, step: u64) -> bool {
        self.snapshot_at(step) || self.commit_at(step)
    }

    /// The first step at or after `from` with a snapshot or a commit.
    pub fn next_busy(&self, from: u64) -> Option<u64> {
        // The first snapshot step (a positive multiple of every) at or after `step`.
        let snapshot_from = |step: u64| step.div_ceil(self.every_steps).max(1).checked_mul(self.every_steps);
        let commit = snapshot_from(from.saturating_sub(self.commit_after_steps)).and_then(|k| k.checked_add(self.commit_after_steps));
        snapshot_from(from).into_iter().chain(commit).min()
    }

    /// Seconds of biological time between two snapshots.
    pub fn interval_s(&self, dt_ms: f64) -> f64 {
        self.every_steps as f64 * dt_ms * 1e-3
    }
}

/// The structural rules of a model and their schedules (a resource; absent without
/// `[[structural]]`). Sections with the same `every_ms` and `commit_after_ms` share a schedule
/// and so their snapshots, plans and commits.
#[derive(Resource, Clone, Debug)]
pub struct Structural {
    pub rules: Arc<Vec<Rule>>,
    pub schedules: Vec<Schedule>,
    pub key: Key,
    pub dt_ms: f64,
}

impl Structural {
    /// The rules of `model`, or None if it has no `[[structural]]` section.
    pub fn of(model: &Model) -> Option<Structural> {
        let spec = &model.spec;
        spec.structural.first()?;
        let dt = spec.simulation.dt_ms;
        let mut schedules = Vec::new();
        let rules = spec
            .structural
            .iter()
            .map(|s| {
                let pi = model.projection_index(&s.projection).expect("validated");
                let p = &spec.projections[pi];
                let bounds = p.plasticity.as_deref().and_then(|n| model.plasticity_index(n)).map(|r| (spec.plasticity[r].w_min, spec.plasticity[r].w_max()));
                let source_size = spec.populations[model.population_index(&p.source).expect("validated")].size;
                let regrow = s.regrow.as_ref().map(|r| Regrow {
                    to_indegree: r.to_indegree,
                    weight: r.weight.unwrap_or(p.weight),
                    delay_ms: p.delay_ms,
                    bounds,
                    no_autapses: p.source == p.target && !p.allow_autapses,
                    multapses: p.allow_multapses,
                    source_size,
                });
                let schedule = Schedule { every_steps: ((s.every_ms / dt).round() as u64).max(1), commit_after_steps: (s.commit_after_ms() / dt).round() as u64 };
                let index = schedules.iter().position(|&x| x == schedule).unwrap_or_else(|| {
                    schedules.push(schedule);
                    schedules.len() - 1
                });
                Rule { projection: pi, name: p.name.clone(), target: model.population_index(&p.target).expect("validated"), prune: s.prune, regrow, schedule: index }
            })
            .collect();
        Some(Structural { rules: Arc::new(rules), schedules, key: Key::from_seed(spec.simulation.seed), dt_ms: dt })
    }

    /// Whether a plan reads co-activity, so that every step must count each neuron's spikes.
    pub fn counts_spikes(&self) -> bool {
        self.rules.iter().any(|r| matches!(r.prune, Prune::LowestPriorityFraction(_)))
    }

    pub fn rule_of(&self, projection: usize) -> Option<&Rule> {
        self.rules.iter().find(|r| r.projection == projection)
    }

    /// The rule of `projection` if it follows schedule `schedule`.
    pub fn rule_in(&self, projection: usize, schedule: usize) -> Option<&Rule> {
        self.rule_of(projection).filter(|r| r.schedule == schedule)
    }

    /// Whether the structural hook has work at the start of `step`.
    pub fn busy_at(&self, step: u64) -> bool {
        self.schedules.iter().any(|s| s.busy_at(step))
    }
}

/// A new synapse: population-local source row, shard-local target, delay in steps (used where
/// the block stores delays per synapse) and weight before rounding to the stored type.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Grown {
    pub row: u32,
    pub weight: f32,
    pub target: u32,
    pub delay: u16,
    /// Zero: the record's size is a multiple of its alignment (no padding bytes).
    pub unused: u16,
}

impl Grown {
    /// Records of checkpoint format versions 3 and 4, whose targets took 2 bytes (row, weight,
    /// target: u16, delay), as this version's; `None` if `raw` is not a whole number of them.
    pub fn widen_v4(raw: &[u8]) -> Option<Vec<u8>> {
        (raw.len() % 12 == 0).then(|| {
            let grown: Vec<Grown> = raw
                .chunks_exact(12)
                .map(|r| Grown {
                    row: u32::from_le_bytes(r[0..4].try_into().expect("4 bytes")),
                    weight: f32::from_le_bytes(r[4..8].try_into().expect("4 bytes")),
                    target: u32::from(u16::from_le_bytes([r[8], r[9]])),
                    delay: u16::from_le_bytes([r[10], r[11]]),
                    unused: 0,
                })
                .collect();
            bytemuck::cast_slice(&grown).to_vec()
        })
    }
}

/// The copy of a block that a plan reads.
#[derive(Clone, Debug)]
pub struct BlockSnapshot {
    pub row_ptr: Vec<u32>,
    pub target: Vec<u32>,
    /// Stored weights, as f32 (exact).
    pub weight: Vec<f32>,
    pub source_first: u32,
    /// Global id of the shard's first neuron.
    pub shard_first: u32,
    /// Shard-local indices of the target population's neurons in the shard.
    pub targets: Range<u32>,
    /// Global id of the target population's first neuron.
    pub target_first: u32,
}

impl BlockSnapshot {
    pub fn of(block: &SynapseBlock, shard: &Shard, targets: Range<u32>, target_first: u32) -> Self {
        BlockSnapshot {
            row_ptr: block.row_ptr.to_vec(),
            target: block.target.to_vec(),
            weight: block.weight.to_f32(),
            source_first: block.source_first,
            shard_first: shard.neurons.start,
            targets,
            target_first,
        }
    }
}

/// What a plan does to one block: the synapses that go (positions at the snapshot, ascending)
/// and the ones that come (by row, then target, then draw).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BlockPlan {
    /// Synapses in the block when the snapshot was taken (checked at commit).
    pub synapses: u32,
    pub pruned: Vec<u32>,
    pub grown: Vec<Grown>,
}

impl BlockPlan {
    /// The new synapses' values of column `name` (`target`, `delay`, or `weight` stored in
    /// `elem` bytes) as the column stores them, rounded as [`apply_plan`] rounds them.
    pub fn grown_bytes(&self, name: &str, elem: usize) -> Vec<u8> {
        let g = &self.grown;
        match (name, elem) {
            ("target", 2) => g.iter().flat_map(|g| (g.target as u16).to_le_bytes()).collect(),
            ("target", _) => g.iter().flat_map(|g| g.target.to_le_bytes()).collect(),
            ("delay", _) => g.iter().flat_map(|g| g.delay.to_le_bytes()).collect(),
            (_, 2) => g.iter().flat_map(|g| half::f16::set(g.weight).to_bits().to_le_bytes()).collect(),
            _ => g.iter().flat_map(|g| f32::set(g.weight).to_bits().to_le_bytes()).collect(),
        }
    }
}

/// The plan of one block for plan number `plan`: which synapses go and which come, decided per
/// target neuron (see the module comment). `counts` are the spike counts of all neurons by
/// global id over the `interval_s` seconds before the snapshot.
pub fn plan_block(rule: &Rule, key: Key, plan: u64, snap: &BlockSnapshot, counts: &[u32], interval_s: f64, dt_ms: f64) -> BlockPlan {
    let n = snap.target.len();
    let local_end = snap.targets.end as usize;
    // Incoming synapses of each target, ascending positions (a counting sort by target).
    let mut start = vec![0u32; local_end + 1];
    for &t in &snap.target {
        start[t as usize + 1] += 1;
    }
    for j in 0..local_end {
        start[j + 1] += start[j];
    }
    let mut fill = start.clone();
    let mut incoming = vec![0u32; n];
    let mut row_of = vec![0u32; n];
    for r in 0..snap.row_ptr.len() - 1 {
        for k in snap.row_ptr[r]..snap.row_ptr[r + 1] {
            row_of[k as usize] = r as u32;
            let t = snap.target[k as usize] as usize;
            incoming[fill[t] as usize] = k;
            fill[t] += 1;
        }
    }
    let rate = |global: u32| f64::from(counts.get(global as usize).copied().unwrap_or(0)) / interval_s;
    let mut pruned = Vec::new();
    let mut grown = Vec::new();
    let mut gone = Vec::new();
    for j in snap.targets.clone() {
        let syn = &incoming[start[j as usize] as usize..start[j as usize + 1] as usize];
        let w = |k: u32| snap.weight[k as usize].abs();
        gone.clear();
        match rule.prune {
            Prune::WeightBelow(x) => gone.extend(syn.iter().copied().filter(|&k| f64::from(w(k)) < x)),
            // Both orders are total (ties go by position), so selecting the synapses that go
            // (select_nth_unstable, linear) picks the same set as a full sort would.
            Prune::KeepStrongest(keep) if (keep as usize) < syn.len() => {
                let mut order = syn.to_vec();
                order.select_nth_unstable_by(keep as usize, |&a, &b| w(b).total_cmp(&w(a)).then(a.cmp(&b)));
                gone.extend_from_slice(&order[keep as usize..]);
            }
            Prune::KeepStrongest(_) => {}
            Prune::LowestPriorityFraction(f) => {
                let post = rate(snap.shard_first + j);
                let priority = |k: u32| f64::from(w(k)) * rate(snap.source_first + row_of[k as usize]) * post;
                let m = (f * syn.len() as f64).round() as usize;
                if m > 0 {
                    let mut order: Vec<(f64, u32)> = syn.iter().map(|&k| (priority(k), k)).collect();
                    if m < order.len() {
                        order.select_nth_unstable_by(m - 1, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                    }
                    gone.extend(order[..m].iter().map(|&(_, k)| k));
                }
            }
        }
        gone.sort_unstable();
        pruned.extend_from_slice(&gone);
        let Some(re) = &rule.regrow else { continue };
        // Sources of the kept synapses, ascending (positions ascend, and rows with them).
        let mut kept_rows: Vec<u32> = syn.iter().filter(|k| gone.binary_search(k).is_err()).map(|&k| row_of[k as usize]).collect();
        kept_rows.dedup();
        let post = snap.shard_first + j - snap.target_first;
        let need = regrow_need(re, syn.len() - gone.len(), kept_rows.len(), post);
        if need == 0 {
            continue;
        }
        let mut s = key.stream_at(Purpose::Structural, rule.projection as u16, post, plan << 32);
        let rows = draw_sources(re, &mut s, need, post, |c| kept_rows.binary_search(&c).is_ok());
        grow(re, &mut s, &rows, j as u32, dt_ms, &mut grown);
    }
    pruned.sort_unstable();
    BlockPlan { synapses: n as u32, pruned, grown: by_row(grown, snap.row_ptr.len() - 1) }
}

/// `grown` (made target by target, in draw order) ordered by row, keeping that order within
/// a row: a counting sort over the block's `rows`.
fn by_row(grown: Vec<Grown>, rows: usize) -> Vec<Grown> {
    if grown.is_empty() {
        return grown;
    }
    let mut start = vec![0u32; rows + 1];
    for g in &grown {
        start[g.row as usize + 1] += 1;
    }
    for r in 0..rows {
        start[r + 1] += start[r];
    }
    let mut out = vec![Grown::default(); grown.len()];
    for g in grown {
        out[start[g.row as usize] as usize] = g;
        start[g.row as usize] += 1;
    }
    out
}

/// New synapses a target gets: `to_indegree - kept`, and without multapses no more than the
/// sources it is not yet connected from (`distinct` of them; its own index excluded without
/// autapses).
pub fn regrow_need(re: &Regrow, kept: usize, distinct: usize, post: u32) -> usize {
    let need = (re.to_indegree as usize).saturating_sub(kept);
    if re.multapses || need == 0 {
        return need;
    }
    let available = re.source_size - u32::from(re.no_autapses && post < re.source_size);
    need.min((available as usize).saturating_sub(distinct))
}

/// Draws `need` sources for target `post` from `s` as `fixed_indegree` draws them: uniform
/// over the source population, never `post` without autapses, and without multapses never a
/// source it is connected from (`connected`) or drawn already. `plan_regrow` in
/// kernels/cuda/fum.cu is its device twin.
pub fn draw_sources(re: &Regrow, s: &mut fum_kernels::rng::Stream, need: usize, post: u32, connected: impl Fn(u32) -> bool) -> Vec<u32> {
    let exclude = re.no_autapses.then_some(post);
    let mut drawn = std::collections::HashSet::new();
    let mut rows = Vec::with_capacity(need);
    while rows.len() < need {
        let c = s.below(re.source_size);
        if Some(c) == exclude || (!re.multapses && (connected(c) || !drawn.insert(c))) {
            continue;
        }
        rows.push(c);
    }
    rows
}

/// The new synapses from `rows` to shard-local target `target`: a delay, then a weight for
/// each, drawn from `s` after the sources.
pub fn grow(re: &Regrow, s: &mut fum_kernels::rng::Stream, rows: &[u32], target: u32, dt_ms: f64, out: &mut Vec<Grown>) {
    for &row in rows {
        let delay = re.delay_ms.map_or(1, |d| stored_steps(d.sample(s), dt_ms));
        let mut weight = re.weight.sample(s).max(0.0);
        if let Some((lo, hi)) = re.bounds {
            weight = weight.clamp(lo, hi);
        }
        out.push(Grown { row, weight: weight as f32, target, delay, unused: 0 });
    }
}

/// What a device computed of one block's plan (`Backend::plan_structure`): the pruned synapses
/// as bits of their positions, and for each target of the block (in order) how many sources it
/// drew, into `rows`, and where its random stream stood after them.
#[derive(Default)]
pub struct DevicePlan {
    pub synapses: u32,
    pub pruned_bits: Vec<u32>,
    pub draws: Vec<Draws>,
    pub rows: Vec<u32>,
    /// Makes the device's part of the commit ready from the finished plan (on the plan thread).
    pub prepare: Option<Box<dyn FnOnce(&BlockPlan) -> Result<Prepared, String> + Send>>,
}

/// Waits for a device's part of one block's plan and brings it back (run on a plan thread).
pub type DevicePlanJob = Box<dyn FnOnce() -> Result<DevicePlan, String> + Send>;

/// The sources one target drew on the device (see [`DevicePlan`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Draws {
    pub count: u32,
    /// Words used of the stream's current block (`rng::Stream::position`).
    pub used: u32,
    pub block: u64,
}

/// Where a block's targets lie: shard-local indices of the target population's neurons in the
/// shard, the shard's first global id and the population's.
#[derive(Clone, Debug)]
pub struct BlockTargets {
    pub targets: Range<u32>,
    pub shard_first: u32,
    pub target_first: u32,
}

/// The plan [`plan_block`] makes, from what the device computed of it: pruned positions from
/// the bits, and each target's new synapses from its drawn sources and its stream (delays and
/// weights are drawn here, as the CPU draws them, so that no device maths enters them).
pub fn finish_device_plan(rule: &Rule, key: Key, at: &BlockTargets, d: &DevicePlan, dt_ms: f64) -> BlockPlan {
    let mut pruned = Vec::new();
    for (w, &word) in d.pruned_bits.iter().enumerate() {
        let mut bits = word;
        while bits != 0 {
            pruned.push(w as u32 * 32 + bits.trailing_zeros());
            bits &= bits - 1;
        }
    }
    let mut grown = Vec::new();
    if let Some(re) = &rule.regrow {
        let mut first = 0usize;
        for (j, draws) in at.targets.clone().zip(&d.draws) {
            let rows = &d.rows[first..first + draws.count as usize];
            first += draws.count as usize;
            if rows.is_empty() {
                continue;
            }
            let post = at.shard_first + j - at.target_first;
            let mut s = key.stream_resumed(Purpose::Structural, rule.projection as u16, post, (draws.block, draws.used));
            grow(re, &mut s, rows, j as u32, dt_ms, &mut grown);
        }
    }
    let rows = rule.regrow.as_ref().map_or(0, |re| re.source_size as usize);
    BlockPlan { synapses: d.synapses, pruned, grown: by_row(grown, rows) }
}

/// What a commit changed in one block.
#[derive(Clone, Copy, Debug, Default)]
pub struct Change {
    pub pruned: u64,
    pub grown: u64,
    /// Bytes of the per-synapse columns and row pointers before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// A plan's changes row by row, as a device rebuilding its copy of a block reads them: row `r`
/// keeps its synapses but `plan.pruned[pruned_ptr[r]..pruned_ptr[r + 1]]`, then gets
/// `plan.grown[grown_ptr[r]..grown_ptr[r + 1]]`; `row_ptr` are the block's row pointers after.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Compaction {
    pub pruned_ptr: Vec<u32>,
    pub grown_ptr: Vec<u32>,
    pub row_ptr: Vec<u32>,
}

impl Compaction {
    /// The layout of `plan` over the rows of `row_ptr` (the block's, before the commit).
    pub fn of(plan: &BlockPlan, row_ptr: &[u32]) -> Self {
        let rows = row_ptr.len() - 1;
        let (mut pruned_ptr, mut grown_ptr, mut new_ptr) = (Vec::with_capacity(rows + 1), Vec::with_capacity(rows + 1), Vec::with_capacity(rows + 1));
        // One merge walk over the rows and the two sorted lists.
        let (mut p, mut g) = (0, 0);
        for r in 0..rows {
            pruned_ptr.push(p as u32);
            grown_ptr.push(g as u32);
            new_ptr.push((row_ptr[r] as usize - p + g) as u32);
            while p < plan.pruned.len() && plan.pruned[p] < row_ptr[r + 1] {
                p += 1;
            }
            while g < plan.grown.len() && plan.grown[g].row as usize == r {
                g += 1;
            }
        }
        pruned_ptr.push(p as u32);
        grown_ptr.push(g as u32);
        new_ptr.push((row_ptr[rows] as usize - p + g) as u32);
        Compaction { pruned_ptr, grown_ptr, row_ptr: new_ptr }
    }
}

/// A block a commit rebuilt: (shard, block index in the shard), the plan applied and its layout.
pub struct Rebuilt {
    pub shard: usize,
    pub block: usize,
    pub plan: BlockPlan,
    pub rows: Compaction,
    /// The device's part, made ready by the plan thread, if the backend did (after a restore
    /// or a checkpoint in between, it starts from the plan).
    pub prepared: Option<DevicePart>,
}

/// Columns a commit replaced: freeing gigabytes takes the kernel a while (unmapping pages from
/// every core), so a thread of their own drops them ([`retire`]).
pub type Retired = Vec<Box<dyn Send>>;

/// Drops `retired` on a thread of its own.
pub fn retire(retired: Retired) {
    if !retired.is_empty() {
        std::thread::Builder::new().name("fum-free".into()).spawn(move || drop(retired)).map(drop).unwrap_or(());
    }
}

/// One per-synapse column after `plan` (see [`apply_plan`]): each row's runs between pruned
/// synapses, then its new synapses' values (`new`).
fn compact_rows<T: Copy>(old: &[T], old_ptr: &[u32], plan: &BlockPlan, rows: &Compaction, len: usize, new: impl Fn(&Grown) -> T) -> Vec<T> {
    let mut out = Vec::with_capacity(len);
    for r in 0..old_ptr.len() - 1 {
        let mut from = old_ptr[r] as usize;
        for &k in &plan.pruned[rows.pruned_ptr[r] as usize..rows.pruned_ptr[r + 1] as usize] {
            out.extend_from_slice(&old[from..k as usize]);
            from = k as usize + 1;
        }
        out.extend_from_slice(&old[from..old_ptr[r + 1] as usize]);
        out.extend(plan.grown[rows.grown_ptr[r] as usize..rows.grown_ptr[r + 1] as usize].iter().map(&new));
    }
    out
}

/// Applies `plan` to `block` (`rows` is its [`Compaction`]): each row keeps its surviving
/// synapses in order, then gets its new ones; the columns are rebuilt at their new size, so
/// pruned synapses give their memory back. The block's weights are those at the commit step
/// (kept synapses keep any change since the snapshot); new weights are rounded to the stored
/// type. Rows are copied run by run between pruned synapses. The replaced columns go to
/// `retired`, to be freed off the simulation's path.
pub fn apply_plan(block: &mut SynapseBlock, plan: &BlockPlan, rows: &Compaction, retired: &mut Retired) -> Change {
    assert_eq!(block.len(), plan.synapses as usize, "a plan applies to the structure it was made from");
    let bytes_before = (block.synapse_bytes() + block.row_ptr.bytes()) as u64;
    if plan.pruned.is_empty() && plan.grown.is_empty() {
        return Change { bytes_before, bytes_after: bytes_before, ..Change::default() };
    }
    let len = block.len() - plan.pruned.len() + plan.grown.len();
    let old_ptr = &block.row_ptr;
    // A column whose host copy is behind a device's (which compacts its own) gets zeros of the
    // new length until a download.
    fn rebuilt<T: bytemuck::Pod>(c: &Column<T>, old_ptr: &[u32], plan: &BlockPlan, rows: &Compaction, len: usize, new: impl Fn(&Grown) -> T) -> Column<T> {
        if c.host_is_current() { Column::from_vec(compact_rows(c, old_ptr, plan, rows, len, new)) } else { Column::filled(len, T::zeroed()) }
    }
    let target = match &block.target {
        Targets::U16(t) => Targets::U16(rebuilt(t, old_ptr, plan, rows, len, |g| g.target as u16)),
        Targets::U32(t) => Targets::U32(rebuilt(t, old_ptr, plan, rows, len, |g| g.target)),
    };
    let delay = match &block.delay {
        Delays::PerSynapse(d) => Some(rebuilt(d, old_ptr, plan, rows, len, |g| g.delay)),
        _ => None,
    };
    let weight = match &block.weight {
        Weights::F32(w) => Weights::F32(rebuilt(w, old_ptr, plan, rows, len, |g| f32::set(g.weight))),
        Weights::F16(w) => Weights::F16(rebuilt(w, old_ptr, plan, rows, len, |g| half::f16::set(g.weight))),
    };
    let row_ptr = rows.row_ptr.clone();
    retired.push(Box::new(std::mem::replace(&mut block.target, target)));
    if let (Some(d), Delays::PerSynapse(old)) = (delay, &mut block.delay) {
        retired.push(Box::new(std::mem::replace(old, d)));
    }
    retired.push(Box::new(std::mem::replace(&mut block.weight, weight)));
    retired.push(Box::new(std::mem::replace(&mut block.row_ptr, Column::from_vec(row_ptr))));
    let bytes_after = (block.synapse_bytes() + block.row_ptr.bytes()) as u64;
    Change { pruned: plan.pruned.len() as u64, grown: plan.grown.len() as u64, bytes_before, bytes_after }
}

/// A block whose structure was restored from a checkpoint is well formed: row pointers ascend
/// from 0 to the synapse count, every per-synapse column has that length, every target lies in
/// the shard.
pub fn check_block(block: &SynapseBlock, shard_neurons: usize) -> Result<(), String> {
    let n = block.len();
    let ok_ptr = block.row_ptr.len() == block.source_size as usize + 1
        && block.row_ptr.first() == Some(&0)
        && block.row_ptr.last().is_some_and(|&e| e as usize == n)
        && block.row_ptr.windows(2).all(|w| w[0] <= w[1]);
    if !ok_ptr {
        return Err(format!("block of projection {}: row pointers do not describe its {n} synapses", block.projection));
    }
    if block.weight.len() != n || block.delay.bytes() != 0 && block.delay.bytes() != 2 * n {
        return Err(format!("block of projection {}: weights or delays do not match its {n} synapses", block.projection));
    }
    if (0..n).any(|k| block.target.get(k) as usize >= shard_neurons) {
        return Err(format!("block of projection {}: a target lies outside its shard", block.projection));
    }
    if let Delays::PerSynapse(d) = &block.delay
        && d.iter().any(|&d| d == 0 || u32::from(d) > fum_kernels::delivery::MAX_DELAY_STEPS)
    {
        return Err(format!("block of projection {}: a delay lies outside [1, {}] steps", block.projection, fum_kernels::delivery::MAX_DELAY_STEPS));
    }
    Ok(())
}

/// The plans of one shard's blocks (None for blocks without a rule), and the seconds spent
/// planning each.
type ShardPlan = Vec<Option<Planned>>;

/// One block's plan as a plan thread leaves it.
pub struct Planned {
    pub plan: BlockPlan,
    /// Seconds the plan thread spent on it.
    pub seconds: f64,
    /// What a device backend made ready for the commit (see [`Prepared`]).
    pub prepared: Option<Prepared>,
}

/// A block's commit made ready on a plan thread by a device backend: the plan's layout over
/// the block's rows (they change only at commits, so the layout holds at this one; computed
/// inside the commit it was most of its pause: 25 ms a block of 50 M synapses) and the
/// device's own part.
pub struct Prepared {
    pub rows: Compaction,
    pub device: DevicePart,
}

/// A device backend's part of a commit, made ready beside the simulation (its own type).
pub type DevicePart = Box<dyn std::any::Any + Send + Sync>;

/// A shard's structural state: its neurons' spike counts since each schedule's last snapshot
/// and, per schedule, the plan awaiting its commit (computing on a thread, computed, or
/// stored). Registered as `structural`, so a checkpoint stores both.
#[derive(Component, Default)]
pub struct Rewiring {
    /// Spikes of each neuron since the last snapshot of each schedule, `[schedule][neuron]`.
    pub spike_count: Column<u32>,
    /// The stored form of the pending plans (what a checkpoint writes and a restore reads):
    /// [plan index, snapshot step, commit step] per schedule (u64::MAX: none pending), empty if
    /// none is.
    plan_meta: Column<u64>,
    /// Per block of the shard: synapses at the snapshot (u32::MAX: no plan), pruned, grown.
    plan_blocks: Column<u32>,
    plan_pruned: Column<u32>,
    plan_grown: Column<Grown>,
    /// Whether the stored form is that of `pending`.
    stored: bool,
    pending: Vec<Pending>,
    /// The schedule of each block's rule.
    block_schedule: Vec<Option<usize>>,
}

/// One schedule's pending plan in a shard.
#[derive(Default)]
struct Pending {
    /// [plan index, snapshot step, commit step].
    meta: Option<[u64; 3]>,
    job: Option<JoinHandle<Result<ShardPlan, String>>>,
    /// The plan the thread computed, until the commit takes it, or why a device failed to.
    ready: Option<Result<ShardPlan, String>>,
    /// Seconds the snapshot paused the simulation (reported only).
    snapshot_s: f64,
}

impl std::fmt::Debug for Rewiring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pending: Vec<_> = self.pending.iter().map(|p| (p.meta, p.job.is_some())).collect();
        f.debug_struct("Rewiring").field("pending (meta, computing)", &pending).finish()
    }
}

impl Rewiring {
    /// The state of a shard of `neurons` neurons whose blocks follow `block_schedule` of
    /// `schedules` schedules.
    pub fn new(neurons: usize, schedules: usize, block_schedule: Vec<Option<usize>>) -> Self {
        let pending = (0..schedules).map(|_| Pending::default()).collect();
        Rewiring { spike_count: Column::filled(neurons * schedules, 0), stored: true, pending, block_schedule, ..Default::default() }
    }

    /// (plan index, snapshot step, commit step) of schedule `schedule`'s plan awaiting its
    /// commit.
    pub fn pending(&self, schedule: usize) -> Option<[u64; 3]> {
        self.pending[schedule].meta
    }

    /// Starts waiting for schedule `schedule`'s plan, computed by `job`.
    fn start(&mut self, schedule: usize, meta: [u64; 3], job: JoinHandle<Result<ShardPlan, String>>) {
        self.pending[schedule] = Pending { meta: Some(meta), job: Some(job), ready: None, snapshot_s: 0.0 };
        self.stored = false;
    }

    /// Waits for the plan threads, if any run.
    fn join(&mut self) {
        for p in &mut self.pending {
            if let Some(job) = p.job.take() {
                p.ready = Some(job.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
            }
        }
    }

    /// Waits for the plan threads, if any run, and writes the pending plans' stored form (for a
    /// checkpoint: see [`settle`]).
    pub fn settle(&mut self) {
        self.join();
        if self.stored {
            return;
        }
        let mut meta = Vec::new();
        if self.pending.iter().any(|p| p.meta.is_some()) {
            meta = self.pending.iter().flat_map(|p| p.meta.unwrap_or([u64::MAX; 3])).collect();
        }
        let (mut blocks, mut pruned, mut grown) = (Vec::new(), Vec::new(), Vec::new());
        for (b, schedule) in self.block_schedule.iter().enumerate() {
            // A failed plan is reported at its commit; a checkpoint stores none.
            let planned = schedule.and_then(|g| match &self.pending[g].ready {
                Some(Ok(plans)) => plans[b].as_ref(),
                _ => None,
            });
            match planned {
                Some(Planned { plan: p, .. }) => {
                    blocks.extend([p.synapses, p.pruned.len() as u32, p.grown.len() as u32]);
                    pruned.extend_from_slice(&p.pruned);
                    grown.extend_from_slice(&p.grown);
                }
                None => blocks.extend([u32::MAX, 0, 0]),
            }
        }
        if meta.is_empty() {
            blocks.clear();
        }
        self.plan_meta = Column::from_vec(meta);
        self.plan_blocks = Column::from_vec(blocks);
        self.plan_pruned = Column::from_vec(pruned);
        self.plan_grown = Column::from_vec(grown);
        self.stored = true;
    }

    /// Reads the pending plans from their stored form, as a restore left it.
    fn load(&mut self) {
        let schedules = self.pending.len();
        let meta: Vec<u64> = self.plan_meta.to_vec();
        let (mut p, mut g) = (0, 0);
        let mut plans: Vec<ShardPlan> = (0..schedules).map(|_| (0..self.block_schedule.len()).map(|_| None).collect()).collect();
        for (b, c) in self.plan_blocks.chunks_exact(3).enumerate() {
            if c[0] == u32::MAX {
                continue;
            }
            let plan = BlockPlan { synapses: c[0], pruned: self.plan_pruned[p..p + c[1] as usize].to_vec(), grown: self.plan_grown[g..g + c[2] as usize].to_vec() };
            p += c[1] as usize;
            g += c[2] as usize;
            if let Some(s) = self.block_schedule[b] {
                plans[s][b] = Some(Planned { plan, seconds: 0.0, prepared: None });
            }
        }
        for ((pending, m), plans) in self.pending.iter_mut().zip(meta.chunks_exact(3)).zip(plans) {
            if m[0] != u64::MAX {
                *pending = Pending { meta: Some([m[0], m[1], m[2]]), job: None, ready: Some(Ok(plans)), snapshot_s: 0.0 };
            }
        }
        self.stored = true;
    }

    /// Takes schedule `schedule`'s pending plan out: one entry per block (None for blocks of
    /// other schedules).
    fn take_plan(&mut self, schedule: usize) -> Result<ShardPlan, String> {
        self.join();
        self.stored = false;
        let p = std::mem::take(&mut self.pending[schedule]);
        p.ready.unwrap_or_else(|| Ok((0..self.block_schedule.len()).map(|_| None).collect()))
    }

    /// Whether the stored plans' lengths add up (a restored checkpoint's may not).
    pub fn check(&self) -> Result<(), String> {
        if self.plan_meta.is_empty() && self.plan_blocks.is_empty() && self.plan_pruned.is_empty() && self.plan_grown.is_empty() {
            return Ok(());
        }
        let (p, g) = self.plan_blocks.chunks_exact(3).fold((0usize, 0usize), |(p, g), c| (p + c[1] as usize, g + c[2] as usize));
        let blocks = self.block_schedule.len();
        if self.plan_meta.len() != 3 * self.pending.len() || self.plan_blocks.len() != 3 * blocks || p != self.plan_pruned.len() || g != self.plan_grown.len() {
            return Err("the pending structural plan does not fit the network".into());
        }
        Ok(())
    }
}

impl Columns for Rewiring {
    /// The plans' columns are their stored form as of the last [`settle`] (a checkpoint settles
    /// first); other walks of the state (a device's uploads between steps) never wait for the
    /// plan threads.
    fn columns(&mut self, f: &mut dyn FnMut(&'static str, Role, Shape, &mut dyn AnyColumn)) {
        f("spike_count", Role::State, Shape::Neurons { slots: self.pending.len() }, &mut self.spike_count);
        f("plan_meta", Role::HostState, Shape::Varying, &mut self.plan_meta);
        f("plan_blocks", Role::HostState, Shape::Varying, &mut self.plan_blocks);
        f("plan_pruned", Role::HostState, Shape::Varying, &mut self.plan_pruned);
        f("plan_grown", Role::HostState, Shape::Varying, &mut self.plan_grown);
    }
}

/// Waits for every shard's plan threads and writes the pending plans' stored form, which a
/// checkpoint then takes.
pub fn settle(world: &mut World) {
    let mut q = world.query::<&mut Rewiring>();
    q.iter_mut(world).for_each(|mut r| r.settle());
}

/// One lock per shard over its synapse structure, guarding the number of commits applied to it
/// (see the module comment). A commit holds all write sides, taken in shard order.
#[derive(Resource, Clone, Debug, Default)]
pub struct StructureLocks(pub Arc<Vec<RwLock<u64>>>);

impl StructureLocks {
    /// Reads shard `shard`'s structure generation, waiting for a commit in progress.
    pub fn generation(&self, shard: usize) -> u64 {
        *self.0[shard].read().unwrap_or_else(|e| e.into_inner())
    }
}

/// One commit of one projection, as run.json reports it.
#[derive(Clone, Debug, Serialize)]
pub struct CommitReport {
    /// The step whose start applied it, and the step its snapshot was taken at.
    pub step: u64,
    pub snapshot_step: u64,
    pub pruned: u64,
    pub grown: u64,
    /// Bytes of the projection's synapses (targets, weights, per-synapse delays, row pointers)
    /// before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Seconds the plan threads spent (beside the simulation, summed over threads).
    pub planning_s: f64,
    /// Seconds the simulation paused for the snapshot (copies, and their download from a
    /// device) and for the commit (on the host and the device), shared among the projections
    /// committed together in proportion to their synapse bytes.
    pub snapshot_s: f64,
    pub commit_s: f64,
    /// Of `commit_s`, the seconds a device backend took to rebuild its copies.
    pub commit_device_s: f64,
}

/// Structural plasticity of one projection over this session, in run.json.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProjectionReport {
    pub pruned: u64,
    pub grown: u64,
    /// Bytes of its synapses when the session started and now.
    pub bytes_at_start: u64,
    pub bytes_now: u64,
    pub planning_s: f64,
    pub snapshot_s: f64,
    pub commit_s: f64,
    pub commit_device_s: f64,
    /// Seconds the simulation waited at commits for plans not yet computed.
    pub wait_s: f64,
    pub commits: Vec<CommitReport>,
}

/// `structural` in run.json: per projection name.
#[derive(Resource, Clone, Debug, Default, Serialize)]
pub struct StructuralReport(pub std::collections::BTreeMap<String, ProjectionReport>);

impl StructuralReport {
    /// Sums what each rank counted of its shards (synapses pruned and grown, bytes), per
    /// projection and per commit (every rank commits at the same steps); times stay this rank's.
    /// A collective: every rank calls it once, at the end of the run.
    pub fn sum_over_ranks(&mut self, transport: &dyn crate::ranks::Transport) {
        let mut values = Vec::new();
        for r in self.0.values() {
            values.extend([r.pruned, r.grown, r.bytes_at_start, r.bytes_now]);
            r.commits.iter().for_each(|c| values.extend([c.pruned, c.grown, c.bytes_before, c.bytes_after]));
        }
        transport.sum(&mut values);
        let mut sums = values.into_iter();
        let mut next = || sums.next().expect("as many values as were summed");
        for r in self.0.values_mut() {
            (r.pruned, r.grown, r.bytes_at_start, r.bytes_now) = (next(), next(), next(), next());
            for c in &mut r.commits {
                (c.pruned, c.grown, c.bytes_before, c.bytes_after) = (next(), next(), next(), next());
            }
        }
    }
}

/// Bytes of projection `pi`'s synapses over all shards.
fn projection_bytes(world: &mut World, pi: usize) -> u64 {
    let mut q = world.query::<&SynapseBlocks>();
    q.iter(world).flat_map(|b| b.0.iter()).filter(|b| b.projection == pi).map(|b| (b.synapse_bytes() + b.row_ptr.bytes()) as u64).sum()
}

/// Makes `world` ready for its structural rules: a [`Rewiring`] per shard (registered, so it is
/// checkpointed), the locks and the report. Call before a checkpoint is restored into it.
pub fn prepare(world: &mut World, structural: Structural) {
    crate::state::register::<Rewiring>(world, "structural");
    let shards = crate::state::shards_in_order(world);
    for &e in &shards {
        let n = world.get::<Shard>(e).expect("a shard").neurons.len();
        let mut blocks = world.get_mut::<SynapseBlocks>(e).expect("a shard has synapses");
        for b in blocks.0.iter_mut() {
            b.rewired = structural.rule_of(b.projection).is_some();
        }
        let block_schedule = blocks.0.iter().map(|b| structural.rule_of(b.projection).map(|r| r.schedule)).collect();
        world.entity_mut(e).insert(Rewiring::new(n, structural.schedules.len(), block_schedule));
    }
    world.insert_resource(StructureLocks(Arc::new(shards.iter().map(|_| RwLock::new(0)).collect())));
    let mut report = StructuralReport::default();
    for rule in structural.rules.iter() {
        let bytes = projection_bytes(world, rule.projection);
        report.0.insert(rule.name.clone(), ProjectionReport { bytes_at_start: bytes, bytes_now: bytes, ..Default::default() });
    }
    world.insert_resource(report);
    world.insert_resource(structural);
}

/// Checks what a checkpoint restored (every affected block well formed, every stored plan
/// whole) and takes up its pending plans.
pub fn check_restored(world: &mut World) -> Result<(), String> {
    let mut q = world.query::<(&Shard, &SynapseBlocks, Option<&mut Rewiring>)>();
    for (shard, blocks, rewiring) in q.iter_mut(world) {
        for b in blocks.0.iter().filter(|b| b.rewired) {
            check_block(b, shard.neurons.len()).map_err(|e| format!("shard {}: {e}", shard.index))?;
        }
        if let Some(mut r) = rewiring {
            r.check().map_err(|e| format!("shard {}: {e}", shard.index))?;
            r.load();
        }
    }
    Ok(())
}

/// When [`at_step_start`] has work: the first step at or after `from` with a snapshot or a
/// commit ([`Structural::busy_at`]), None without structural rules. The step loop runs it only
/// there (`crate::simulation::StepStart`), so most steps pay nothing for it.
pub fn busy(world: &World, from: u64) -> Option<u64> {
    world.get_resource::<Structural>()?.schedules.iter().filter_map(|s| s.next_busy(from)).min()
}

/// The structural work at the start of the clock's step: commit the pending plan if this is
/// its step, then take a snapshot and start planning if one is due. Runs stop-the-world
/// between steps, before the step's schedule, at the steps [`busy`] names.
pub fn at_step_start(world: &mut World) {
    let Some(structural) = world.get_resource::<Structural>().cloned() else { return };
    let step = world.resource::<Clock>().step;
    for (g, schedule) in structural.schedules.iter().enumerate() {
        // A plan due now commits before the next snapshot (commit_after = every); with
        // commit_after = 0 the snapshot's own plan commits at once (stop-the-world).
        commit_if_due(world, g, step);
        if !schedule.snapshot_at(step) {
            continue;
        }
        let started = Instant::now();
        // A device backend computes the heavy part of the plan itself, at this step; else the
        // host copies what a plan reads.
        let work = match crate::backend::plan_structure(world, g, step / schedule.every_steps) {
            Some(Ok(device)) => device_work(world, &structural, device),
            Some(Err(e)) => return crate::backend::report_failure(world, e),
            None => {
                if let Err(e) = make_host_current(world) {
                    return crate::backend::report_failure(world, e.to_string());
                }
                snapshot(world, &structural, g)
            }
        };
        start_planning(world, &structural, g, step, work);
        let seconds = started.elapsed().as_secs_f64();
        let mut q = world.query::<&mut Rewiring>();
        q.iter_mut(world).for_each(|mut r| r.pending[g].snapshot_s = seconds);
        commit_if_due(world, g, step);
    }
}

/// Makes the host copies a snapshot reads current: the weights of rewired blocks and the spike
/// counts, which a device backend steps. Nothing moves on the CPU.
fn make_host_current(world: &mut World) -> Result<(), crate::column::TransferError> {
    let mut q = world.query::<(&mut SynapseBlocks, &mut Rewiring)>();
    for (mut blocks, mut rewiring) in q.iter_mut(world) {
        rewiring.bypass_change_detection().spike_count.download()?;
        for b in blocks.bypass_change_detection().0.iter_mut().filter(|b| b.rewired) {
            // The row pointers are host state, always current; STDP's per-target records are
            // not read.
            b.target.column_mut().download()?;
            if let Delays::PerSynapse(d) = &mut b.delay {
                d.download()?;
            }
            b.weight.column_mut().download()?;
        }
    }
    Ok(())
}

fn download_probed_targets(world: &mut World) -> Result<(), crate::column::TransferError> {
    let Some(probed) = world.get_resource::<crate::recording::Recorder>().map(|r| r.probed_blocks()) else { return Ok(()) };
    // Probe sites name shards by index; across ranks a process holds some shards only, not
    // necessarily contiguous ones (METIS), and probes only those.
    let mut q = world.query::<(Entity, &Shard)>();
    let held: std::collections::HashMap<usize, Entity> = q.iter(world).map(|(e, s)| (s.index, e)).collect();
    for (shard, block) in probed {
        let Some(&entity) = held.get(&shard) else { continue };
        let mut blocks = world.get_mut::<SynapseBlocks>(entity).expect("a shard has synapses");
        let b = &mut blocks.bypass_change_detection().0[block];
        if b.rewired {
            b.target.column_mut().download()?;
        }
    }
    Ok(())
}

fn shards_with_rewiring(world: &mut World) -> Vec<(Entity, usize)> {
    let mut q = world.query_filtered::<(Entity, &Shard), With<Rewiring>>();
    let mut v: Vec<_> = q.iter(world).map(|(e, s)| (e, s.index)).collect();
    v.sort_unstable_by_key(|&(_, i)| i);
    v
}

/// Commits the pending plan if it is due at `step`.
pub fn commit_if_due(world: &mut World, schedule: usize, step: u64) {
    let shards = shards_with_rewiring(world);
    let due = shards.first().and_then(|&(e, _)| world.get::<Rewiring>(e).and_then(|r| r.pending(schedule))).filter(|m| m[2] == step);
    let Some([_, snapshot_step, _]) = due else { return };
    let snapshot_s = world.get::<Rewiring>(shards[0].0).map_or(0.0, |r| r.pending[schedule].snapshot_s);
    let locks = world.resource::<StructureLocks>().clone();
    let waited = Instant::now();
    let mut plans = Vec::with_capacity(shards.len());
    for &(e, _) in &shards {
        match world.get_mut::<Rewiring>(e).expect("queried").take_plan(schedule) {
            Ok(plan) => plans.push(plan),
            Err(e) => return crate::backend::report_failure(world, format!("structural plan: {e}")),
        }
    }
    let wait_s = waited.elapsed().as_secs_f64();
    let started = Instant::now();
    // Weight probes find their synapses in the new rows on the host: a device's copy of the
    // probed blocks' targets comes back first, so that the host compacts them too.
    if let Err(e) = download_probed_targets(world) {
        return crate::backend::report_failure(world, e.to_string());
    }
    // Every shard's write side, in shard order, for the whole commit.
    let mut guards: Vec<_> = locks.0.iter().map(|l| l.write().unwrap_or_else(|e| e.into_inner())).collect();
    // Blocks are independent: they are rebuilt in parallel.
    let mut q = world.query::<(&Shard, &mut SynapseBlocks)>();
    let mut shard_blocks: Vec<_> = q.iter_mut(world).filter(|(s, _)| shards.iter().any(|&(_, i)| i == s.index)).collect();
    shard_blocks.sort_unstable_by_key(|(s, _)| s.index);
    let work: Vec<(usize, usize, &mut SynapseBlock, Planned)> = shard_blocks
        .iter_mut()
        .zip(plans)
        .flat_map(|((shard, blocks), plan)| blocks.0.iter_mut().enumerate().zip(plan).filter_map(|((i, b), p)| Some((shard.index, i, b, p?))))
        .collect();
    let done: Vec<((usize, Change, f64), Option<Rebuilt>, Retired)> = work
        .into_par_iter()
        .map(|(shard, block, b, Planned { plan, seconds, prepared })| {
            let changed = !(plan.pruned.is_empty() && plan.grown.is_empty());
            let (rows, prepared) = match prepared {
                Some(Prepared { rows, device }) => (rows, Some(device)),
                None if changed => (Compaction::of(&plan, &b.row_ptr), None),
                // A plan that changes nothing is not laid out: apply_plan returns before.
                None => (Compaction::default(), None),
            };
            let mut retired = Vec::new();
            let change = apply_plan(b, &plan, &rows, &mut retired);
            ((b.projection, change, seconds), changed.then_some(Rebuilt { shard, block, plan, rows, prepared }), retired)
        })
        .collect();
    let mut changes = Vec::with_capacity(done.len());
    let (mut rebuilt, mut retired) = (Vec::new(), Vec::new());
    for (change, r, old) in done {
        changes.push(change);
        rebuilt.extend(r);
        retired.extend(old);
    }
    crate::recording::Recorder::relocate_synapses(world);
    // A device backend rebuilds its copies inside the commit, under the same locks.
    let device = Instant::now();
    if let Err(e) = crate::backend::structure_changed(world, &rebuilt) {
        crate::backend::report_failure(world, e);
    }
    let device_s = device.elapsed().as_secs_f64();
    for g in guards.iter_mut() {
        **g += 1;
    }
    drop(guards);
    let commit_s = started.elapsed().as_secs_f64();
    // The plans themselves (hundreds of megabytes of positions and new synapses for a large
    // projection) go with the old columns: unmapping them stalled the step loop. A device's
    // part is freed here, on the thread whose context it is.
    rebuilt.iter_mut().for_each(|r| drop(r.prepared.take()));
    retired.push(Box::new(rebuilt));
    retire(retired);
    let total = changes.iter().map(|c| c.1.bytes_after).sum::<u64>().max(1) as f64;
    let rules = world.resource::<Structural>().rules.clone();
    let mut report = world.remove_resource::<StructuralReport>().unwrap_or_default();
    for rule in rules.iter().filter(|r| r.schedule == schedule) {
        let mut c = CommitReport { step, snapshot_step, pruned: 0, grown: 0, bytes_before: 0, bytes_after: 0, planning_s: 0.0, snapshot_s: 0.0, commit_s: 0.0, commit_device_s: 0.0 };
        for (_, change, planning_s) in changes.iter().filter(|c| c.0 == rule.projection) {
            c.pruned += change.pruned;
            c.grown += change.grown;
            c.bytes_before += change.bytes_before;
            c.bytes_after += change.bytes_after;
            c.planning_s += planning_s;
        }
        let share = c.bytes_after as f64 / total;
        (c.snapshot_s, c.commit_s, c.commit_device_s) = (snapshot_s * share, commit_s * share, device_s * share);
        let bytes_now = projection_bytes(world, rule.projection);
        let r = report.0.entry(rule.name.clone()).or_default();
        r.pruned += c.pruned;
        r.grown += c.grown;
        r.planning_s += c.planning_s;
        r.snapshot_s += c.snapshot_s;
        r.commit_s += c.commit_s;
        r.commit_device_s += c.commit_device_s;
        r.wait_s += wait_s * share;
        r.bytes_now = bytes_now;
        r.commits.push(c);
    }
    world.insert_resource(report);
}

/// What a shard's plan thread computes each block's plan from (None: a block without a rule).
type ShardWork = Vec<Option<(Rule, Work)>>;

enum Work {
    /// The host plans from a copy ([`plan_block`]), with every neuron's spike count.
    Host(BlockSnapshot, Arc<Vec<u32>>),
    /// The device plans (the job waits for it and brings back what it decided); the host
    /// finishes ([`finish_device_plan`]).
    Device(BlockTargets, DevicePlanJob),
}

/// The shard-local range of `rule`'s target population in `shard`, and where it starts.
pub fn block_targets(populations: &[crate::components::Population], rule: &Rule, shard: &Shard) -> BlockTargets {
    let tgt = &populations[rule.target];
    let first = shard.neurons.start;
    BlockTargets { targets: tgt.first.max(first) - first..(tgt.first + tgt.size).min(shard.neurons.end) - first, shard_first: first, target_first: tgt.first }
}

/// Every neuron's spike count by global id (`total` neurons), from those held here: each
/// shard's (or a GPU's) first id and counts. Across ranks an all-gather, so a collective at the
/// snapshot step: each rank sends its parts' first ids and lengths before their counts, and
/// every rank puts them in place (a rank's shards need not be contiguous, `crate::partition`).
pub fn counts_by_id(held: &[(u32, Vec<u32>)], total: usize) -> Vec<u32> {
    let mut mine = Vec::new();
    for (first, counts) in held {
        mine.extend_from_slice(&[*first, counts.len() as u32]);
        mine.extend_from_slice(counts);
    }
    let mut parts = Vec::new();
    match crate::ranks::transport() {
        Some(transport) => {
            transport.all_gather(&mine, false, &mut parts);
        }
        None => parts = mine,
    }
    let mut counts = vec![0; total];
    let mut rest = &parts[..];
    while let [first, n, tail @ ..] = rest {
        let (first, n) = (*first as usize, *n as usize);
        counts[first..first + n].copy_from_slice(&tail[..n]);
        rest = &tail[n..];
    }
    counts
}

/// The snapshot of a plan: the copies a host plan reads, per shard. The spike counts are reset.
fn snapshot(world: &mut World, structural: &Structural, schedule: usize) -> Vec<ShardWork> {
    let shards = shards_with_rewiring(world);
    // Spike counts of the shards' neurons since the schedule's last snapshot, restarted.
    let mut held = Vec::new();
    for &(e, _) in &shards {
        let first = world.get::<Shard>(e).expect("queried").neurons.start;
        let mut r = world.get_mut::<Rewiring>(e).expect("queried");
        let n = r.spike_count.len() / r.pending.len();
        let slot = &mut r.spike_count[schedule * n..(schedule + 1) * n];
        held.push((first, slot.to_vec()));
        slot.fill(0);
    }
    let total = world.resource::<crate::components::Populations>().0.iter().map(|p| p.size as usize).sum();
    let counts = Arc::new(counts_by_id(&held, total));
    let populations = world.resource::<crate::components::Populations>().0.clone();
    let mut q = world.query::<(&Shard, &SynapseBlocks)>();
    let sources: Vec<(&Shard, &SynapseBlocks)> = shards.iter().map(|&(e, _)| q.get(world, e).expect("a shard has synapses")).collect();
    // The copies are what the simulation waits for: one scoped thread per shard makes them.
    std::thread::scope(|scope| {
        let jobs: Vec<_> = sources
            .into_iter()
            .map(|(shard, blocks)| {
                let (populations, counts) = (&populations, &counts);
                scope.spawn(move || {
                    blocks
                        .0
                        .iter()
                        .map(|b| {
                            let rule = structural.rule_in(b.projection, schedule)?;
                            let at = block_targets(populations, rule, shard);
                            Some((rule.clone(), Work::Host(BlockSnapshot::of(b, shard, at.targets, at.target_first), counts.clone())))
                        })
                        .collect()
                })
            })
            .collect();
        jobs.into_iter().map(|j| j.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    })
}

/// What the host finishes of the plans a device computed, per shard.
fn device_work(world: &mut World, structural: &Structural, device: Vec<Vec<Option<DevicePlanJob>>>) -> Vec<ShardWork> {
    let shards = shards_with_rewiring(world);
    let populations = world.resource::<crate::components::Populations>().0.clone();
    let mut q = world.query::<(&Shard, &SynapseBlocks)>();
    shards
        .iter()
        .zip(device)
        .map(|(&(e, _), plans)| {
            let (shard, blocks) = q.get(world, e).expect("a shard has synapses");
            blocks.0.iter().zip(plans).map(|(b, d)| Some((structural.rule_of(b.projection)?.clone(), Work::Device(block_targets(&populations, structural.rule_of(b.projection)?, shard), d?)))).collect()
        })
        .collect()
}

/// Starts a planning thread per shard for schedule `schedule`'s plan `step / every`, from
/// `work`.
fn start_planning(world: &mut World, structural: &Structural, schedule: usize, step: u64, work: Vec<ShardWork>) {
    let shards = shards_with_rewiring(world);
    let s = structural.schedules[schedule];
    let plan = step / s.every_steps;
    let interval_s = s.interval_s(structural.dt_ms);
    let meta = [plan, step, step + s.commit_after_steps];
    // Planning runs on the cores the simulation leaves free (at least one), at low priority.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let busy = crate::backend::installed(world).map_or(1, |b| b.host_threads());
    let planners = cores.saturating_sub(busy).clamp(1, shards.len().max(1));
    let pool = Arc::new(rayon::ThreadPoolBuilder::new().num_threads(planners).thread_name(|i| format!("fum-plan-{i}")).start_handler(|_| crate::yield_to_simulation()).build().expect("a planning pool"));
    for (&(e, index), work) in shards.iter().zip(work) {
        let (key, dt, pool) = (structural.key, structural.dt_ms, pool.clone());
        // A thread per shard holds its plan (joined at the commit); the pool bounds how many
        // compute at once.
        let job = std::thread::Builder::new()
            .name(format!("fum-plan-shard-{index}"))
            .spawn(move || {
                pool.install(|| {
                    work.into_iter()
                        .map(|w| {
                            let Some((rule, work)) = w else { return Ok(None) };
                            Ok(Some(match work {
                                Work::Host(snap, counts) => {
                                    let started = Instant::now();
                                    let plan = plan_block(&rule, key, plan, &snap, &counts, interval_s, dt);
                                    Planned { plan, seconds: started.elapsed().as_secs_f64(), prepared: None }
                                }
                                Work::Device(at, job) => {
                                    let mut d = job()?;
                                    let started = Instant::now();
                                    let plan = finish_device_plan(&rule, key, &at, &d, dt);
                                    let changes = !(plan.pruned.is_empty() && plan.grown.is_empty());
                                    let prepared = d.prepare.take().filter(|_| changes).map(|prepare| prepare(&plan)).transpose()?;
                                    Planned { plan, seconds: started.elapsed().as_secs_f64(), prepared }
                                }
                            }))
                        })
                        .collect()
                })
            })
            .expect("a planning thread");
        world.get_mut::<Rewiring>(e).expect("queried").start(schedule, meta, job);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Receptor;
    use half::f16;

    fn block() -> SynapseBlock {
        SynapseBlock {
            projection: 0,
            receptor: Receptor::Excitatory,
            source_first: 10,
            source_size: 3,
            row_ptr: Column::from_vec(vec![0, 2, 3, 5]),
            target: Targets::U16(Column::from_vec(vec![0, 1, 1, 0, 2])),
            delay: Delays::PerSynapse(Column::from_vec(vec![1, 2, 3, 4, 5])),
            weight: Weights::F16(Column::from_vec([1.0f32, 0.5, 2.0, 0.25, 3.0].map(f16::from_f32).to_vec())),
            plastic: None,
            rewired: true,
            pages: None,
        }
    }

    fn rule(prune: Prune, regrow: Option<Regrow>) -> Rule {
        Rule { projection: 0, name: "p".into(), target: 0, prune, regrow, schedule: 0 }
    }

    #[test]
    fn grown_synapses_of_version_4_checkpoints_are_widened() {
        let mut raw = Vec::new();
        for (row, weight, target, delay) in [(3u32, 7.5f32, 65_535u16, 9u16), (0, -1.0, 2, 1)] {
            raw.extend(row.to_le_bytes());
            raw.extend(weight.to_le_bytes());
            raw.extend(target.to_le_bytes());
            raw.extend(delay.to_le_bytes());
        }
        let wide = Grown::widen_v4(&raw).unwrap();
        let grown: Vec<Grown> = bytemuck::pod_collect_to_vec(&wide);
        assert_eq!(grown, [Grown { row: 3, weight: 7.5, target: 65_535, delay: 9, unused: 0 }, Grown { row: 0, weight: -1.0, target: 2, delay: 1, unused: 0 }]);
        assert_eq!(Grown::widen_v4(&raw[..13]), None);
    }

    #[test]
    fn a_plan_compacts_rows_and_appends_new_synapses_after_the_kept_ones() {
        let mut b = block();
        let plan = BlockPlan { synapses: 5, pruned: vec![1, 3], grown: vec![Grown { row: 0, weight: 7.0, target: 2, delay: 9, unused: 0 }, Grown { row: 2, weight: 8.0, target: 1, delay: 8, unused: 0 }] };
        let rows = Compaction::of(&plan, &b.row_ptr);
        let change = apply_plan(&mut b, &plan, &rows, &mut Vec::new());
        assert_eq!(&b.row_ptr[..], &[0, 2, 3, 5]);
        assert_eq!(b.target.to_vec(), [0, 2, 1, 2, 1]);
        assert_eq!((0..5).map(|k| b.delay.get(k)).collect::<Vec<_>>(), vec![1, 9, 3, 5, 8]);
        assert_eq!((0..5).map(|k| b.weight.get(k)).collect::<Vec<_>>(), vec![1.0, 7.0, 2.0, 3.0, 8.0]);
        assert_eq!((change.pruned, change.grown, change.bytes_before, change.bytes_after), (2, 2, 5 * 6 + 16, 5 * 6 + 16));
        let gone_plan = BlockPlan { synapses: 5, pruned: vec![0, 1, 2, 3], grown: vec![] };
        let rows = Compaction::of(&gone_plan, &b.row_ptr);
        let gone = apply_plan(&mut b, &gone_plan, &rows, &mut Vec::new());
        assert_eq!(&b.row_ptr[..], &[0, 0, 0, 1]);
        assert_eq!(gone.bytes_after, 6 + 16);
        check_block(&b, 3).unwrap();
    }

    #[test]
    fn the_compaction_gives_each_row_its_pruned_and_grown_synapses() {
        let b = block();
        let plan = BlockPlan { synapses: 5, pruned: vec![1, 3, 4], grown: vec![Grown { row: 0, ..Default::default() }, Grown { row: 0, ..Default::default() }, Grown { row: 2, ..Default::default() }] };
        let c = Compaction::of(&plan, &b.row_ptr);
        // Rows span 0..2, 2..3, 3..5: row 0 loses 1 and gains 2, row 2 loses 3 and 4 and gains 1.
        assert_eq!(c, Compaction { pruned_ptr: vec![0, 1, 1, 3], grown_ptr: vec![0, 2, 2, 3], row_ptr: vec![0, 3, 4, 5] });
    }

    fn snapshot() -> BlockSnapshot {
        // Targets 0..3 of a shard starting at global 0; sources 10..13.
        BlockSnapshot::of(&block(), &Shard { index: 0, neurons: 0..3 }, 0..3, 0)
    }

    #[test]
    fn rules_decide_per_target_with_ties_to_the_earlier_synapse() {
        let key = Key::from_seed(1);
        let counts = vec![0u32; 13];
        let plan = |prune| plan_block(&rule(prune, None), key, 1, &snapshot(), &counts, 1.0, 0.1).pruned;
        assert_eq!(plan(Prune::WeightBelow(0.6)), vec![1, 3]);
        // Target 0 has synapses 0 (w 1) and 3 (w 0.25), target 1 has 1 (0.5) and 2 (2).
        assert_eq!(plan(Prune::KeepStrongest(1)), vec![1, 3]);
        assert_eq!(plan(Prune::KeepStrongest(0)), vec![0, 1, 2, 3, 4]);
        // Priority |w| x rate_pre x rate_post: all rates zero, so ties: the earlier synapse goes.
        assert_eq!(plan(Prune::LowestPriorityFraction(0.5)), vec![0, 1, 4]);
        // Source 11 (row 1: synapse 2) silent makes synapse 2 the lowest of target 1.
        let mut counts = vec![5u32; 13];
        counts[11] = 0;
        let p = plan_block(&rule(Prune::LowestPriorityFraction(0.5), None), key, 1, &snapshot(), &counts, 1.0, 0.1).pruned;
        assert_eq!(p, vec![2, 3, 4]);
    }

    /// What the device returns for a plan (pruned bits; per target the sources drawn and where
    /// its stream stopped), computed here as `plan_regrow` does, finishes into the host's plan.
    #[test]
    fn a_plan_finished_from_device_draws_is_the_host_plan() {
        let regrow = |multapses, weight| Regrow { to_indegree: 3, weight, delay_ms: Some(Distribution::Uniform { uniform: [0.1, 0.5] }), bounds: Some((0.0, 1.8)), no_autapses: true, multapses, source_size: 3 };
        let counts = vec![3u32; 13];
        for (prune, multapses, weight) in [
            (Prune::WeightBelow(0.6), false, Distribution::Normal { normal: [1.0, 0.5] }),
            (Prune::KeepStrongest(1), true, Distribution::Uniform { uniform: [1.0, 2.0] }),
            (Prune::LowestPriorityFraction(0.5), false, Distribution::Constant(1.5)),
        ] {
            let r = rule(prune, Some(regrow(multapses, weight)));
            let (key, snap) = (Key::from_seed(9), snapshot());
            let host = plan_block(&r, key, 2, &snap, &counts, 1.0, 0.1);
            let mut d = DevicePlan { synapses: 5, pruned_bits: vec![0], ..Default::default() };
            for &k in &host.pruned {
                d.pruned_bits[0] |= 1 << k;
            }
            for j in 0..3u32 {
                let kept: Vec<u32> = (0..3u32).filter(|&row| (snap.row_ptr[row as usize]..snap.row_ptr[row as usize + 1]).any(|k| u32::from(snap.target[k as usize]) == j && !host.pruned.contains(&k))).collect();
                let re = r.regrow.as_ref().unwrap();
                let need = regrow_need(re, kept.len(), kept.len(), j);
                let mut s = key.stream_at(Purpose::Structural, 0, j, 2 << 32);
                let rows = if need == 0 { Vec::new() } else { draw_sources(re, &mut s, need, j, |c| kept.contains(&c)) };
                let (block, used) = s.position();
                d.draws.push(Draws { count: rows.len() as u32, used, block });
                d.rows.extend(rows);
            }
            let at = BlockTargets { targets: 0..3, shard_first: 0, target_first: 0 };
            assert_eq!(finish_device_plan(&r, key, &at, &d, 0.1), host, "{prune:?}");
            assert!(!host.grown.is_empty(), "{prune:?}: something regrows");
        }
    }

    #[test]
    fn regrowth_is_a_function_of_seed_projection_target_and_plan() {
        let regrow = Regrow { to_indegree: 3, weight: Distribution::Uniform { uniform: [1.0, 2.0] }, delay_ms: Some(Distribution::Constant(0.3)), bounds: Some((0.0, 1.8)), no_autapses: false, multapses: false, source_size: 3 };
        let r = rule(Prune::WeightBelow(0.0), Some(regrow));
        let counts = vec![0u32; 13];
        let a = plan_block(&r, Key::from_seed(1), 1, &snapshot(), &counts, 1.0, 0.1);
        assert_eq!(a, plan_block(&r, Key::from_seed(1), 1, &snapshot(), &counts, 1.0, 0.1));
        assert_ne!(a.grown, plan_block(&r, Key::from_seed(1), 2, &snapshot(), &counts, 1.0, 0.1).grown);
        // Targets 0 and 1 have 2 sources each, target 2 has 1: 1 + 1 + 2 new, distinct sources.
        assert_eq!(a.grown.len(), 4);
        assert!(a.grown.windows(2).all(|w| w[0].row <= w[1].row));
        assert!(a.grown.iter().all(|g| g.delay == 3 && (1.0..=1.8).contains(&g.weight)));
        let mut b = block();
        let rows = Compaction::of(&a, &b.row_ptr);
        apply_plan(&mut b, &a, &rows, &mut Vec::new());
        for j in 0..3u16 {
            let mut rows: Vec<usize> = (0..3).flat_map(|r| (b.row_ptr[r]..b.row_ptr[r + 1]).map(move |k| (r, k))).filter(|&(_, k)| b.target.get(k as usize) == u32::from(j)).map(|(r, _)| r).collect();
            rows.sort_unstable();
            assert_eq!(rows, vec![0, 1, 2], "target {j}: one synapse from each source");
        }
    }
}
