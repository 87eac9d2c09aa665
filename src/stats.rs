//! Size and memory of a built network, for summaries and `run.json`.

use bevy_ecs::prelude::*;
use fum_engine::components::{NeuronBlock, Plasticity, SynapseBlocks};
use serde::Serialize;

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
}

impl NetworkStats {
    pub fn measure(world: &mut World) -> Self {
        let mut s = NetworkStats::default();
        let mut query = world.query::<(&NeuronBlock, &SynapseBlocks)>();
        for (neurons, synapses) in query.iter(world) {
            s.shards += 1;
            s.neurons += neurons.len() as u64;
            s.bytes_neurons += neurons.bytes() as u64;
            for block in &synapses.0 {
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
        s.synapses = s.static_synapses + s.plastic_synapses;
        s.bytes_total = s.bytes_neurons + s.bytes_static_synapses + s.bytes_plastic_synapses;
        let per = |bytes: u64, n: u64| if n == 0 { 0.0 } else { bytes as f64 / n as f64 };
        s.bytes_per_neuron = per(s.bytes_neurons, s.neurons);
        s.bytes_per_static_synapse = per(s.bytes_static_synapses, s.static_synapses);
        s.bytes_per_plastic_synapse = per(s.bytes_plastic_synapses, s.plastic_synapses);
        s
    }
}

