//! The ECS data model: one entity per shard carrying its neurons and the synapses into them,
//! plus the resources every shard reads.

use bevy_ecs::prelude::*;
use std::ops::Range;

use crate::column::Column;
use crate::model::Receptor;
use fum_kernels::delivery::Ring;
use fum_kernels::lif::{CobaConstants, CubaPropagators};
use fum_kernels::stdp::{StdpRule, TraceDecay, Traces};

/// A partition of the network's neurons: the unit of placement and of parallel work.
#[derive(Component, Clone, Debug)]
pub struct Shard {
    pub index: usize,
    /// Global ids of its neurons (contiguous).
    pub neurons: Range<u32>,
}

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
    /// Excitatory / inhibitory synaptic variable (pA for `lif_cuba`, nS for `lif_coba`).
    pub syn_ex: Column<f32>,
    pub syn_in: Column<f32>,
    pub refractory_steps: Column<u32>,
    /// Spike bits of the current step (1: fired), written by the neuron update.
    pub fired: Column<u8>,
    /// Input in flight, per receptor, in fixed point.
    pub ring_ex: Ring,
    pub ring_in: Ring,
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
    pub fn ring_mut(&mut self, receptor: Receptor) -> &mut Ring {
        match receptor {
            Receptor::Excitatory => &mut self.ring_ex,
            Receptor::Inhibitory => &mut self.ring_in,
        }
    }
    /// Bytes of neuron state and ring buffers.
    pub fn bytes(&self) -> usize {
        self.v.bytes() + self.syn_ex.bytes() + self.syn_in.bytes() + self.refractory_steps.bytes() + self.fired.bytes()
            + 8 * (self.ring_ex.sums.capacity() + self.ring_in.sums.capacity())
            + 4 * self.spiked.capacity()
    }
}

/// The synapses of one projection into a shard's neurons: CSR rows keyed by the presynaptic
/// neuron's index in its population; each entry packs the shard-local target and the delay.
#[derive(Debug)]
pub struct SynapseBlock {
    pub projection: usize,
    pub receptor: Receptor,
    /// Global id of the source population's first neuron, and its size.
    pub source_first: u32,
    pub source_size: u32,
    /// Row `r` spans `row_ptr[r]..row_ptr[r + 1]`.
    pub row_ptr: Column<u32>,
    /// `target | delay_steps << TARGET_BITS` (see `fum_kernels::delivery::pack`).
    pub packed: Column<u32>,
    pub weight: Column<f32>,
    pub plastic: Option<PlasticSynapses>,
}

/// What a plastic block keeps beyond a static one: the transposed index (for each shard-local
/// postsynaptic neuron, the indices of its incoming synapses, ascending) and the postsynaptic
/// traces of the shard's neurons.
#[derive(Debug)]
pub struct PlasticSynapses {
    /// Index into [`Plasticity::projections`].
    pub rule: usize,
    pub incoming_ptr: Column<u32>,
    pub incoming: Column<u32>,
    pub post_traces: Traces,
}

impl SynapseBlock {
    pub fn len(&self) -> usize {
        self.packed.len()
    }
    pub fn is_empty(&self) -> bool {
        self.packed.is_empty()
    }
    /// Bytes proportional to the number of synapses.
    pub fn synapse_bytes(&self) -> usize {
        self.packed.bytes() + self.weight.bytes() + self.plastic.as_ref().map_or(0, |p| p.incoming.bytes())
    }
    /// Bytes proportional to the number of neurons (row pointers, transposed-index pointers,
    /// postsynaptic traces).
    pub fn index_bytes(&self) -> usize {
        self.row_ptr.bytes()
            + self.plastic.as_ref().map_or(0, |p| {
                p.incoming_ptr.bytes() + 8 * p.post_traces.at_last_spike.capacity()
            })
    }
    /// The row of presynaptic neuron `global_id`, if it belongs to the source population.
    #[inline]
    pub fn row(&self, global_id: u32) -> Option<Range<usize>> {
        let r = global_id.checked_sub(self.source_first)? as usize;
        (r < self.source_size as usize).then(|| self.row_ptr[r] as usize..self.row_ptr[r + 1] as usize)
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
}

/// A population as the hot loop sees it: no names looked up, constants precomputed.
#[derive(Clone, Debug)]
pub struct Population {
    pub name: String,
    /// Global id of its first neuron.
    pub first: u32,
    pub size: u32,
    pub dynamics: Dynamics,
    /// Constant current into every neuron (i_e plus DC inputs), pA.
    pub current_pa: f32,
}

impl Population {
    pub fn ids(&self) -> Range<u32> {
        self.first..self.first + self.size
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
    pub weight: f32,
    pub receptor: Receptor,
}

#[derive(Resource, Clone, Debug, Default)]
pub struct PoissonSources(pub Vec<PoissonSource>);

/// The seed of the run as a Philox key.
#[derive(Resource, Clone, Copy, Debug)]
pub struct Seed(pub fum_kernels::rng::Key);

/// The spikes of the current step, as global ids in ascending order: what every shard reads
/// to deliver (in one process a buffer; across processes the result of an all-gather).
#[derive(Resource, Clone, Debug, Default)]
pub struct SpikeExchange {
    pub spikes: Vec<u32>,
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
    pub pre_traces: Traces,
}

/// STDP state shared by all shards.
#[derive(Resource, Clone, Debug, Default)]
pub struct Plasticity {
    /// Weight updates on or off (the viewer toggles this); traces are kept either way.
    pub enabled: bool,
    pub projections: Vec<PlasticProjection>,
}
