//! The ECS data model: one entity per shard carrying its neurons and the synapses into them,
//! plus the resources every shard reads.

use bevy_ecs::prelude::*;
use rayon::prelude::*;
use std::ops::Range;

use crate::column::{AnyColumn, Column};
use crate::model::{Receptor, WeightPrecision};
use crate::state::{Columns, Role, Shape};
use fum_kernels::delivery::{NARROW_SHARD_NEURONS, Ring, RowDelays};
use fum_kernels::lif::{AlphaPropagators, CobaConstants, CubaPropagators};
use fum_kernels::stdp::{PostState, StdpRule, TraceDecay};
use fum_kernels::weight::Weight;
use half::f16;

/// A partition of the network's neurons: the unit of placement and of parallel work.
#[derive(Component, Clone, Debug)]
pub struct Shard {
    pub index: usize,
    /// Global ids of its neurons (contiguous).
    pub neurons: Range<u32>,
}

/// Every shard's neurons, of every rank, in shard order: the cut the network was built with
/// (`crate::build::cut`, or a resumed checkpoint's), which checkpoints record.
#[derive(Resource, Clone, Debug, PartialEq)]
pub struct ShardRanges(pub Vec<Range<u32>>);

/// The part of one population that falls in a shard.
#[derive(Clone, Debug)]
pub struct Segment {
    pub population: usize,
    /// Shard-local indices.
    pub local: Range<usize>,
}

/// State columns of every neuron of a shard, and the ring buffers of input arriving at them.
#[derive(Component, Debug)]
pub struct NeuronBlock {
    pub segments: Vec<Segment>,
    /// Membrane potential, mV.
    pub v: Column<f32>,
    /// Excitatory / inhibitory synaptic variable (pA for `lif_cuba` and `lif_psc_alpha`, nS for
    /// `lif_coba`).
    pub syn_ex: Column<f32>,
    pub syn_in: Column<f32>,
    /// `lif_psc_alpha`'s second variable per receptor (NEST's `dI_ex`, `dI_in`, pA/ms; see
    /// `fum_kernels::lif::AlphaState`). Present for every neuron of every shard when some
    /// population of the model is `lif_psc_alpha`, absent otherwise: a network without one
    /// pays no memory or bandwidth for it, and keeps the columns (and checkpoint sections) it
    /// had before the model existed; a network with one gets one arena per column indexed like
    /// `v`, which the device kernel reads by global index with no per-population offsets (the
    /// other populations' entries stay 0).
    pub dsyn_ex: Option<Column<f32>>,
    pub dsyn_in: Option<Column<f32>>,
    /// Each neuron's bias current drawn from its population's `i_e_pa` distribution, pA (0
    /// where the bias is constant: that one is in `Population::current_pa`). Present for the
    /// same reasons as `dsyn_ex` only when some population draws its bias; read only for the
    /// populations that do (`Population::bias_per_neuron`), so a constant bias keeps its one
    /// multiplication per population. Fixed once built (drawn from the seed, like the initial
    /// state): rebuilt on resume, not checkpointed.
    pub bias_pa: Option<Column<f32>>,
    pub refractory_steps: Column<u32>,
    /// Spike bits of the current step (1: fired), written by the neuron update.
    pub fired: Column<u8>,
    /// Input in flight, per receptor, in fixed point: `ring_slots` slots of one sum per neuron,
    /// slot-major (see `fum_kernels::delivery::Ring`).
    pub ring_ex: Column<i64>,
    pub ring_in: Column<i64>,
    pub ring_slots: usize,
    /// Shard-local indices of the neurons that fired in the current step, ascending.
    pub spiked: Vec<u32>,
}

impl NeuronBlock {
    pub fn len(&self) -> usize {
        self.v.len()
    }
    pub fn is_empty(&self) -> bool {
        self.v.is_empty()
    }
    /// The ring buffer of `receptor`, for the kernels.
    pub fn ring_mut(&mut self, receptor: Receptor) -> Ring<'_> {
        let neurons = self.len();
        match receptor {
            Receptor::Excitatory => Ring::new(neurons, &mut self.ring_ex),
            Receptor::Inhibitory => Ring::new(neurons, &mut self.ring_in),
        }
    }
    /// Bytes of neuron state and ring buffers.
    pub fn bytes(&self) -> usize {
        let optional = |c: &Option<Column<f32>>| c.as_ref().map_or(0, Column::bytes);
        self.v.bytes() + self.syn_ex.bytes() + self.syn_in.bytes() + self.refractory_steps.bytes() + self.fired.bytes()
            + optional(&self.dsyn_ex) + optional(&self.dsyn_in) + optional(&self.bias_pa)
            + self.ring_ex.bytes() + self.ring_in.bytes()
            + 4 * self.spiked.capacity()
    }
}

impl Columns for NeuronBlock {
    fn columns(&mut self, f: &mut dyn FnMut(&'static str, Role, Shape, &mut dyn AnyColumn)) {
        let neuron = Shape::Neurons { slots: 1 };
        let ring = Shape::Neurons { slots: self.ring_slots };
        f("v", Role::State, neuron, &mut self.v);
        f("syn_ex", Role::State, neuron, &mut self.syn_ex);
        f("syn_in", Role::State, neuron, &mut self.syn_in);
        if let Some(c) = &mut self.dsyn_ex {
            f("dsyn_ex", Role::State, neuron, c);
        }
        if let Some(c) = &mut self.dsyn_in {
            f("dsyn_in", Role::State, neuron, c);
        }
        if let Some(c) = &mut self.bias_pa {
            f("bias_pa", Role::Structure, neuron, c);
        }
        f("refractory", Role::State, neuron, &mut self.refractory_steps);
        f("ring_ex", Role::State, ring, &mut self.ring_ex);
        f("ring_in", Role::State, ring, &mut self.ring_in);
    }
}

/// The synapses of one projection into a shard's neurons: CSR rows keyed by the presynaptic
/// neuron's index in its population. A synapse is its shard-local target, its weight and, for
/// projections with drawn delays, its delay: 6 bytes with `f32` weights, a constant delay and a
/// shard of at most 65,536 neurons, 4 with `f16`, 2 more with per-synapse delays, 2 more in a
/// larger shard ([`Targets`]); a plastic synapse takes no more.
#[derive(Debug)]
pub struct SynapseBlock {
    pub projection: usize,
    pub receptor: Receptor,
    /// Global id of the source population's first neuron, and its size.
    pub source_first: u32,
    pub source_size: u32,
    /// Row `r` spans `row_ptr[r]..row_ptr[r + 1]`.
    pub row_ptr: Column<u32>,
    /// Shard-local index of each synapse's postsynaptic neuron.
    pub target: Targets,
    pub delay: Delays,
    pub weight: Weights,
    pub plastic: Option<PlasticSynapses>,
    /// Structural plasticity changes this block's synapses while running (`crate::structural`):
    /// its rows, targets, delays and weights are then state of varying length.
    pub rewired: bool,
    /// Where its synapses are when the network is paged (`crate::paging`); `None`: all in RAM.
    pub pages: Option<crate::paging::PageTable>,
}

/// The delays of a block's synapses, in steps.
#[derive(Debug)]
pub enum Delays {
    /// The projection's delay is a constant: no per-synapse bytes.
    Constant(u16),
    /// The projection's delay is a distribution: one per synapse, parallel to `target`.
    PerSynapse(Column<u16>),
}

impl Delays {
    /// The delays of synapses `range`, for the kernels; the range must be resident if the
    /// block is paged (`crate::paging`).
    #[inline]
    pub fn row(&self, range: Range<usize>) -> RowDelays<'_> {
        match self {
            Delays::Constant(d) => RowDelays::Constant(*d),
            Delays::PerSynapse(c) => RowDelays::PerSynapse(&c.pages()[range]),
        }
    }

    /// The delay of synapse `k`.
    pub fn get(&self, k: usize) -> u16 {
        match self {
            Delays::Constant(d) => *d,
            Delays::PerSynapse(c) => c[k],
        }
    }

    /// Bytes held per synapse (none for a constant).
    pub fn bytes(&self) -> usize {
        match self {
            Delays::Constant(_) => 0,
            Delays::PerSynapse(c) => c.bytes(),
        }
    }
}

/// The shard-local targets of a block's synapses: 2 bytes each in a shard of at most
/// [`NARROW_SHARD_NEURONS`], else 4 (`fum_kernels::delivery::Target`). Every block of a shard
/// has the same width.
#[derive(Debug)]
pub enum Targets {
    U16(Column<u16>),
    U32(Column<u32>),
}

impl Targets {
    /// `targets`, stored in the width a shard of `shard_neurons` needs.
    pub fn new(targets: Vec<u32>, shard_neurons: usize) -> Self {
        if shard_neurons <= NARROW_SHARD_NEURONS {
            Targets::U16(Column::from_vec(targets.into_par_iter().map(|t| t as u16).collect()))
        } else {
            Targets::U32(Column::from_vec(targets))
        }
    }

    /// Whether targets take 4 bytes.
    pub fn is_wide(&self) -> bool {
        matches!(self, Targets::U32(_))
    }

    pub fn len(&self) -> usize {
        self.column().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The target of synapse `k`.
    pub fn get(&self, k: usize) -> u32 {
        match self {
            Targets::U16(c) => u32::from(c[k]),
            Targets::U32(c) => c[k],
        }
    }

    /// The target of synapse `k`, which must be resident if the block is paged.
    pub fn get_resident(&self, k: usize) -> u32 {
        match self {
            Targets::U16(c) => u32::from(c.pages()[k]),
            Targets::U32(c) => c.pages()[k],
        }
    }

    /// Every target, widened.
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            Targets::U16(c) => c.iter().map(|&t| u32::from(t)).collect(),
            Targets::U32(c) => c.to_vec(),
        }
    }

    /// The targets of synapses `range`, widened; the range must be resident if the block is
    /// paged (`crate::paging`).
    pub fn resident_to_vec(&self, range: Range<usize>) -> Vec<u32> {
        match self {
            Targets::U16(c) => c.pages()[range].iter().map(|&t| u32::from(t)).collect(),
            Targets::U32(c) => c.pages()[range].to_vec(),
        }
    }

    /// Bytes held (see [`Column::bytes`]).
    pub fn bytes(&self) -> usize {
        match self {
            Targets::U16(c) => c.bytes(),
            Targets::U32(c) => c.bytes(),
        }
    }

    /// Bytes per target.
    pub fn element_bytes(&self) -> usize {
        self.column().element_bytes()
    }

    /// The column, whatever its element type.
    pub fn column(&self) -> &dyn AnyColumn {
        match self {
            Targets::U16(c) => c,
            Targets::U32(c) => c,
        }
    }

    /// The column, whatever its element type.
    pub fn column_mut(&mut self) -> &mut dyn AnyColumn {
        match self {
            Targets::U16(c) => c,
            Targets::U32(c) => c,
        }
    }
}

/// Runs `$body` with `$t` bound to a block's target column and `$w` to its weight column,
/// whatever their element types: the kernels are generic over both
/// (`fum_kernels::delivery::Target`, `fum_kernels::weight::Weight`), and this is their one
/// dispatch. `$targets` and `$weights` are (mutable) references to [`Targets`] and [`Weights`].
#[macro_export]
macro_rules! with_synapse_columns {
    ($targets:expr, $weights:expr, |$t:ident, $w:ident| $body:expr) => {
        match ($targets, $weights) {
            ($crate::components::Targets::U16($t), $crate::components::Weights::F32($w)) => $body,
            ($crate::components::Targets::U16($t), $crate::components::Weights::F16($w)) => $body,
            ($crate::components::Targets::U32($t), $crate::components::Weights::F32($w)) => $body,
            ($crate::components::Targets::U32($t), $crate::components::Weights::F16($w)) => $body,
        }
    };
}

/// The weights of a block's synapses, stored as the model's `simulation.weights` says.
#[derive(Debug)]
pub enum Weights {
    F32(Column<f32>),
    F16(Column<f16>),
}

impl Weights {
    /// `weights` rounded once to `precision`.
    pub fn from_f32(weights: Vec<f32>, precision: WeightPrecision) -> Self {
        match precision {
            WeightPrecision::F32 => Weights::F32(Column::from_vec(weights)),
            WeightPrecision::F16 => Weights::F16(Column::from_vec(weights.into_par_iter().map(f16::set).collect())),
        }
    }

    pub fn precision(&self) -> WeightPrecision {
        match self {
            Weights::F32(_) => WeightPrecision::F32,
            Weights::F16(_) => WeightPrecision::F16,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Weights::F32(c) => c.len(),
            Weights::F16(c) => c.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The weight of synapse `k` (exact in f32).
    pub fn get(&self, k: usize) -> f32 {
        match self {
            Weights::F32(c) => c[k].get(),
            Weights::F16(c) => c[k].get(),
        }
    }

    /// Every weight as f32 (exact), in one pass over the column.
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            Weights::F32(c) => c.to_vec(),
            Weights::F16(c) => c.iter().map(|w| w.get()).collect(),
        }
    }

    /// The first synapse of `range` whose weight lies outside `[lo, hi]` after both bounds
    /// are rounded to the stored type (rounding is monotonic, so a clamped weight stays
    /// inside). The range must be resident if the block is paged (`crate::paging`).
    pub fn position_outside(&self, range: Range<usize>, lo: f32, hi: f32) -> Option<usize> {
        fn find<W: Weight>(c: &[W], range: Range<usize>, lo: f32, hi: f32) -> Option<usize> {
            let bounds = W::set(lo).get()..=W::set(hi).get();
            let start = range.start;
            c[range].iter().position(|w| !bounds.contains(&w.get())).map(|k| start + k)
        }
        match self {
            Weights::F32(c) => find(c.pages(), range, lo, hi),
            Weights::F16(c) => find(c.pages(), range, lo, hi),
        }
    }

    /// The weight of synapse `k`, which must be resident if the block is paged.
    pub fn get_resident(&self, k: usize) -> f32 {
        match self {
            Weights::F32(c) => c.pages()[k].get(),
            Weights::F16(c) => c.pages()[k].get(),
        }
    }

    pub fn bytes(&self) -> usize {
        match self {
            Weights::F32(c) => c.bytes(),
            Weights::F16(c) => c.bytes(),
        }
    }

    /// The raw little-endian bytes, for checkpoints and checksums.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Weights::F32(c) => c.as_bytes(),
            Weights::F16(c) => c.as_bytes(),
        }
    }

    /// The column, whatever its element type.
    pub fn column_mut(&mut self) -> &mut dyn AnyColumn {
        match self {
            Weights::F32(c) => c,
            Weights::F16(c) => c,
        }
    }
}

/// What a plastic block keeps beyond a static one, per shard-local postsynaptic neuron: its
/// postsynaptic trace (for depression) and the steps of its recent spikes (for potentiation,
/// applied at the next presynaptic spike; see `fum_kernels::stdp`). No transposed index.
#[derive(Debug)]
pub struct PlasticSynapses {
    /// Index into [`Plasticity::projections`].
    pub rule: usize,
    /// Trace, last spike, history count and floor of each neuron (one record, as the GPU reads it).
    pub post: Column<PostState>,
    /// `history_len` spike steps per neuron, neuron-major, each a ring (see `PostState`).
    pub post_history: Column<u32>,
    /// The trace just after each spike of `post_history`, for a rule whose delay is dendritic
    /// (its synapses read the trace as it was one delay ago); absent otherwise, so that other
    /// networks pay nothing and keep the checkpoint sections they had.
    pub post_history_trace: Option<Column<f32>>,
}

impl PlasticSynapses {
    /// The per-target columns: every other column of a plastic block is per synapse.
    pub const PER_TARGET: [&'static str; 3] = ["post", "post_history", "post_history_trace"];

    /// Empty histories of `history_len` spikes for `neurons` neurons.
    pub fn new(rule: usize, neurons: usize, history_len: usize, dendritic: bool) -> Self {
        PlasticSynapses {
            rule,
            post: Column::filled(neurons, PostState::SILENT),
            post_history: Column::filled(neurons * history_len, 0),
            post_history_trace: dendritic.then(|| Column::filled(neurons * history_len, 0.0)),
        }
    }

    /// Bytes per neuron: traces and histories.
    pub fn bytes(&self) -> usize {
        self.post.bytes() + self.post_history.bytes() + self.post_history_trace.as_ref().map_or(0, Column::bytes)
    }
}

impl SynapseBlock {
    pub fn len(&self) -> usize {
        self.target.len()
    }
    pub fn is_empty(&self) -> bool {
        self.target.is_empty()
    }
    /// Bytes proportional to the number of synapses: targets, weights, per-synapse delays.
    pub fn synapse_bytes(&self) -> usize {
        self.target.bytes() + self.weight.bytes() + self.delay.bytes()
    }
    /// Bytes proportional to the number of neurons (row pointers, postsynaptic traces and
    /// spike histories).
    pub fn index_bytes(&self) -> usize {
        self.row_ptr.bytes() + self.plastic.as_ref().map_or(0, PlasticSynapses::bytes)
    }
    /// The row of presynaptic neuron `global_id`, if it belongs to the source population.
    #[inline]
    pub fn row(&self, global_id: u32) -> Option<Range<usize>> {
        let r = global_id.checked_sub(self.source_first)? as usize;
        (r < self.source_size as usize).then(|| self.row_ptr[r] as usize..self.row_ptr[r + 1] as usize)
    }
}

impl Columns for SynapseBlock {
    fn columns(&mut self, f: &mut dyn FnMut(&'static str, Role, Shape, &mut dyn AnyColumn)) {
        // Structural plasticity changes a block's synapses at its commits: the host computes
        // its row pointers, and a device compacts its own copy of the per-synapse columns
        // (state, copied back like learned weights).
        let (index, synapses, shape) = if self.rewired { (Role::HostState, Role::State, Shape::Varying) } else { (Role::Structure, Role::Structure, Shape::Own) };
        f("row_ptr", index, shape, &mut self.row_ptr);
        f("target", synapses, shape, self.target.column_mut());
        if let Delays::PerSynapse(d) = &mut self.delay {
            f("delay", synapses, shape, d);
        }
        let weights = if self.plastic.is_some() { Role::State } else { synapses };
        f("weight", weights, shape, self.weight.column_mut());
        if let Some(p) = &mut self.plastic {
            f("post", Role::State, Shape::Own, &mut p.post);
            f("post_history", Role::State, Shape::Own, &mut p.post_history);
            if let Some(c) = &mut p.post_history_trace {
                f("post_history_trace", Role::State, Shape::Own, c);
            }
        }
    }
}

/// All synapse blocks into a shard (one per projection that targets its neurons).
#[derive(Component, Debug, Default)]
pub struct SynapseBlocks(pub Vec<SynapseBlock>);

/// How a population's neurons are integrated.
#[derive(Clone, Copy, Debug)]
pub enum Dynamics {
    Cuba(CubaPropagators),
    Coba(CobaConstants),
    Alpha(AlphaPropagators),
    /// No membrane: the neurons fire as `Population::schedule` says.
    SpikeSource,
}

/// A population as the hot loop sees it: no names looked up, constants precomputed.
#[derive(Clone, Debug)]
pub struct Population {
    pub name: String,
    /// Global id of its first neuron.
    pub first: u32,
    pub size: u32,
    pub dynamics: Dynamics,
    /// Current into every neuron from the first step (i_e plus the DC inputs flowing then;
    /// DC inputs only where i_e is drawn per neuron), pA.
    pub current_pa: f32,
    /// Where DC inputs start or stop: from each step listed, the current is the one beside it
    /// (ascending steps, each sum rounded once from f64). Like `schedule`, a function of the
    /// step, so not state.
    pub current_changes: std::sync::Arc<[(u64, f32)]>,
    /// Whether i_e is drawn per neuron: each neuron's draw is in `NeuronBlock::bias_pa`, and
    /// its current is that plus `current_pa`.
    pub bias_per_neuron: bool,
    /// A spike source's spikes on the step grid (`fum_kernels::source::schedule`), looked up
    /// from the step: constant, so not state (a resumed run looks up the same spikes).
    pub schedule: Option<std::sync::Arc<[u64]>>,
}

impl Population {
    pub fn ids(&self) -> Range<u32> {
        self.first..self.first + self.size
    }

    /// The current into every neuron at `step` (see `current_changes`), pA.
    pub fn current_at(&self, step: u64) -> f32 {
        match self.current_changes.partition_point(|&(from, _)| from <= step) {
            0 => self.current_pa,
            k => self.current_changes[k - 1].1,
        }
    }
}

#[derive(Resource, Clone, Debug)]
pub struct Populations(pub Vec<Population>);

/// The step counter and the time grid.
#[derive(Resource, Clone, Debug)]
pub struct Clock {
    /// The step being computed (0-based); a spike in step `s` has time `s * dt_ms`.
    pub step: u64,
    pub dt_ms: f64,
}

/// A Poisson generator feeding every neuron of a population independent trains.
#[derive(Clone, Debug)]
pub struct PoissonSource {
    /// Index among the model's inputs: keys its random stream.
    pub index: u16,
    pub target: Range<u32>,
    /// Mean count per neuron and step, and its exp(-mean).
    pub mean_per_step: f64,
    pub exp_minus_mean: f64,
    /// The CPU's table of that Poisson distribution (means up to 64; above, a normal).
    pub cdf: fum_kernels::rng::PoissonCdf,
    pub weight: f32,
    pub receptor: Receptor,
    /// With a rate drawn or listed per neuron: each target neuron's mean count per step and its
    /// exp(-mean), in target order (`mean_per_step` is then their mean).
    pub per_neuron: Option<Vec<[f64; 2]>>,
}

impl PoissonSource {
    /// Sets the rate: the mean count per step, its exp(-mean) and the CPU's table change
    /// together (at the build and when a viewer steers the input). Rates drawn per neuron are
    /// scaled to the new mean, keeping their spread.
    pub fn set_rate(&mut self, rate_hz: f64, dt_ms: f64) {
        let mean = rate_hz * dt_ms * 1e-3;
        if let Some(rates) = &mut self.per_neuron {
            let scale = if self.mean_per_step > 0.0 { mean / self.mean_per_step } else { 0.0 };
            for r in rates.iter_mut() {
                let m = if scale > 0.0 { r[0] * scale } else { mean };
                *r = [m, (-m).exp()];
            }
        }
        self.mean_per_step = mean;
        self.exp_minus_mean = (-self.mean_per_step).exp();
        self.cdf = if self.mean_per_step <= 64.0 { fum_kernels::rng::PoissonCdf::new(self.mean_per_step, self.exp_minus_mean) } else { Default::default() };
    }
}

#[derive(Resource, Clone, Debug, Default)]
pub struct PoissonSources(pub Vec<PoissonSource>);

/// The seed of the run as a Philox key.
#[derive(Resource, Clone, Copy, Debug)]
pub struct Seed(pub fum_kernels::rng::Key);

/// The spikes of the current step, as global ids in ascending order: what every shard reads
/// to deliver (in one process a buffer; across processes the result of an all-gather, or of an
/// all-to-all along `routes`, or, in epochs, this rank's own spikes, the others' arriving in
/// `gathered`).
#[derive(Resource, Debug, Default)]
pub struct SpikeExchange {
    pub spikes: Vec<u32>,
    /// Across CPU ranks, where the partition makes it pay: which ranks each of this rank's
    /// neurons' spikes go to (`None`: to every rank, by all-gather).
    pub routes: Option<crate::routing::Routes>,
    /// Spikes to each rank at this step's exchange (with `routes`; in epochs, the epoch's so
    /// far, after each step's count in `outbox_counts`).
    pub outbox: Vec<Vec<u32>>,
    pub outbox_counts: Vec<Vec<u32>>,
    /// Bytes of spike messages this rank sent and received (ids and counts, 4 bytes each; a
    /// rank's own spikes are not counted as received): what routes save.
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// With `--time-stages` across CPU ranks: seconds at a barrier before each exchange, waiting
    /// for the slowest rank (the rest of the exchange stage is the exchange itself).
    pub wait_s: f64,
    /// Across ranks: whether any rank asked to stop (a signal) by this step's exchange, so that
    /// all stop after the same step (`crate::ranks`).
    pub stop: bool,
    /// Across CPU ranks: exchange once per epoch instead of every step (`None`: every step).
    pub epochs: Option<Epochs>,
    /// This rank's spikes of the epoch's steps so far (epochs only).
    pub pending: Vec<(u64, Vec<u32>)>,
    /// The exchange of the previous epoch, while the next one is computed (epochs only).
    pub in_flight: Option<EpochInFlight>,
    /// The steps gathered at this step's exchange, an epoch's (epochs only; empty between).
    pub gathered: Vec<GatheredStep>,
}

/// An epoch's exchange under way, and the epoch's steps with this rank's spikes.
pub struct EpochInFlight {
    pub steps: Vec<(u64, Vec<u32>)>,
    pub exchange: Box<dyn crate::ranks::InFlight>,
}

impl std::fmt::Debug for EpochInFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochInFlight").field("steps", &self.steps.len()).finish_non_exhaustive()
    }
}

/// When the ranks exchange their spikes (`SpikeExchange::epochs`). A spike of step `t` is
/// delivered into the ring slots `t + delay`, and no delay is shorter than `shortest_delay`
/// steps. Epochs are half of it (rounded down) long, and each epoch's exchange runs while the
/// next epoch is computed (Arbor's scheme): the other ranks' spikes of an epoch arrive at the
/// end of the next one, at most `2 length - 1 < shortest_delay` steps after they were fired,
/// so the slots they reach are still ahead. Ring sums are fixed-point, so a spike delivered
/// later adds the same bits. Plastic blocks are walked when the other ranks' spikes arrive,
/// step by step with the STDP bookkeeping of each step (`fum_systems::epoch`): what they deliver
/// also lies beyond that epoch.
///
/// An epoch ends at multiples of `length`, and also, with nothing left under way ([`Epochs::drains_at`]),
/// wherever the state at a step's end must be whole: where a checkpoint is taken and where the
/// run ends (so that no spike is pending at a step boundary that outlives the step loop), where
/// a weight probe samples, and before a structural snapshot or commit (which read and change
/// the rows at the next step's start).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Epochs {
    pub length: u64,
    pub checkpoint_every: Option<u64>,
    pub end_step: u64,
    /// The sampling intervals of weight probes, steps.
    pub weight_probe_every: Vec<u64>,
    pub structural: Vec<crate::structural::Schedule>,
}

impl Epochs {
    /// Epochs for a network whose shortest delay is `shortest_delay` steps; `None` where it is
    /// one step (then the ranks exchange every step).
    pub fn for_delay(shortest_delay: u64, checkpoint_every: Option<u64>, end_step: u64, weight_probe_every: Vec<u64>, structural: Vec<crate::structural::Schedule>) -> Option<Epochs> {
        (shortest_delay > 1).then(|| Epochs { length: shortest_delay / 2, checkpoint_every, end_step, weight_probe_every, structural })
    }

    /// Whether an epoch ends with step `step`.
    pub fn ends_at(&self, step: u64) -> bool {
        (step + 1).is_multiple_of(self.length) || self.drains_at(step)
    }

    /// Whether every spike up to step `step` must be delivered at its end.
    pub fn drains_at(&self, step: u64) -> bool {
        let done = step + 1;
        done == self.end_step
            || self.checkpoint_every.is_some_and(|every| done.is_multiple_of(every))
            || self.weight_probe_every.iter().any(|&every| step.is_multiple_of(every))
            || self.structural.iter().any(|s| s.busy_at(done))
    }
}

/// One step's spikes, gathered from every rank when its epoch's exchange finished.
#[derive(Clone, Debug, Default)]
pub struct GatheredStep {
    pub step: u64,
    /// Every rank's spikes, ascending (rank 0 records them).
    pub all: Vec<u32>,
    /// The other ranks' spikes, ascending (this rank delivers them).
    pub remote: Vec<u32>,
}

/// A plastic projection's rule and the presynaptic traces of its source population. The
/// traces are global (every shard reads them); each shard keeps its own postsynaptic traces.
#[derive(Clone, Debug)]
pub struct PlasticProjection {
    pub projection: usize,
    pub rule: StdpRule,
    pub pre_decay: TraceDecay,
    pub post_decay: TraceDecay,
    pub source: Range<u32>,
    pub target: Range<u32>,
    /// Presynaptic traces of the source population, stored lazily (see
    /// `fum_kernels::stdp::count_spike`): the trace just after each neuron's last spike, and
    /// the step of that spike.
    pub pre_trace: Column<f32>,
    pub pre_last_spike: Column<u32>,
    /// Postsynaptic spikes each target neuron remembers (the rule's `post_history`).
    pub history_len: usize,
}

impl Columns for PlasticProjection {
    fn columns(&mut self, f: &mut dyn FnMut(&'static str, Role, Shape, &mut dyn AnyColumn)) {
        f("pre_trace", Role::State, Shape::Own, &mut self.pre_trace);
        f("pre_last_spike", Role::State, Shape::Own, &mut self.pre_last_spike);
    }
}

/// STDP state shared by all shards.
#[derive(Resource, Clone, Debug, Default)]
pub struct Plasticity {
    /// Weight updates on or off (the viewer toggles this); traces and spike histories are kept
    /// either way. While off, presynaptic spikes deliver without changing weights; a
    /// postsynaptic spike after a synapse's last presynaptic spike still potentiates it at its
    /// first presynaptic spike once updates are back on.
    pub enabled: bool,
    pub projections: Vec<PlasticProjection>,
}

/// Pairings lost because a postsynaptic spike history overflowed, summed over shards and
/// steps: one per synapse and presynaptic spike whose target fired more than `history_len`
/// times since the previous presynaptic spike (`stdp_history_overflows` in run.json).
#[derive(Resource, Clone, Copy, Debug, Default)]
pub struct StdpHistoryOverflows(pub u64);

#[cfg(test)]
mod tests {
    use super::*;

    /// Two epochs are shorter than the shortest delay, so a spike received one epoch late still
    /// reaches ring slots ahead; the state is whole where it is read.
    #[test]
    fn epochs_are_half_the_shortest_delay_and_drain_where_the_state_is_read() {
        assert_eq!(Epochs::for_delay(1, None, 100, Vec::new(), Vec::new()), None);
        for shortest in 2..40 {
            let e = Epochs::for_delay(shortest, None, 1000, Vec::new(), Vec::new()).expect("epochs");
            assert!(e.length >= 1 && 2 * e.length - 1 < shortest, "shortest delay {shortest}: epochs of {}", e.length);
        }
        let schedule = crate::structural::Schedule { every_steps: 50, commit_after_steps: 20 };
        let e = Epochs::for_delay(15, Some(40), 1000, vec![30], vec![schedule]).expect("epochs");
        assert_eq!(e.length, 7);
        let ends: Vec<u64> = (0..75).filter(|&s| e.ends_at(s)).collect();
        let drains: Vec<u64> = (0..75).filter(|&s| e.drains_at(s)).collect();
        // Checkpoints after steps 39; probes at 0, 30, 60; the snapshot at 50 and commit at 70.
        assert_eq!(drains, [0, 30, 39, 49, 60, 69]);
        assert_eq!(ends, [0, 6, 13, 20, 27, 30, 34, 39, 41, 48, 49, 55, 60, 62, 69]);
        assert!(e.drains_at(999) && !e.drains_at(998));
    }
}
