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
                s.bytes_neurons += 8 * proj.pre_traces.at_last_spike.len() as u64;
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

/// Device memory, transfers and GPU-side counters of a CUDA run.
#[derive(Clone, Debug, Serialize)]
pub struct GpuStats {
    /// Device bytes by what they hold, as allocated.
    pub device_bytes: fum_cuda::network::DeviceMemory,
    pub device_bytes_total: u64,
    /// The drop in free device memory from before the upload to after the graph upload: the
    /// peak, since nothing is allocated while stepping.
    pub device_bytes_peak_measured: u64,
    /// Per neuron: state, ring buffers, row pointers, traces and spike history, staging.
    pub bytes_per_neuron: f64,
    /// Per synapse: target, weight and (when delays vary) delay.
    pub bytes_per_synapse: f64,
    pub card_memory_bytes: u64,
    /// Neurons that fit on this card at this model's synapses per neuron and bytes above.
    pub largest_network_neurons: u64,
    pub synapses_per_neuron: f64,
    pub transfers: fum_cuda::network::Transfers,
    pub steps: u64,
    pub nvrtc_compile_s: f64,
    pub graph_capture_s: f64,
    /// Copying the built network to the device (included in the build time).
    pub upload_s: f64,
}

impl GpuStats {
    pub fn measure(runner: &fum_cuda::runner::CudaRunner) -> Self {
        let net = &runner.net;
        let m = net.memory;
        let neurons = u64::from(net.n).max(1);
        let per_neuron = (m.total() - m.synapse_bytes) as f64 / neurons as f64;
        let per_synapse = if net.synapses == 0 { 0.0 } else { m.synapse_bytes as f64 / net.synapses as f64 };
        let k = net.synapses as f64 / neurons as f64;
        let card = runner.gpu.info.total_memory_bytes as u64;
        GpuStats {
            device_bytes: m,
            device_bytes_total: m.total(),
            device_bytes_peak_measured: runner.device_bytes_measured,
            bytes_per_neuron: per_neuron,
            bytes_per_synapse: per_synapse,
            card_memory_bytes: card,
            largest_network_neurons: (card as f64 / (per_neuron + k * per_synapse)) as u64,
            synapses_per_neuron: k,
            transfers: runner.net.transfers,
            steps: runner.steps,
            nvrtc_compile_s: runner.gpu.kernels.compile_s,
            graph_capture_s: runner.capture_s,
            upload_s: runner.upload_s,
        }
    }
}
