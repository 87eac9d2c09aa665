//! Which backend executes the schedule, and the seam through which a device backend brings the
//! host columns up to date.
//!
//! The CPU backend works on the host columns directly. A device backend (the CUDA backend in
//! `fum_systems::cuda`, on device mirrors from `fum_engine::device`) keeps the authoritative copy of every column on the device while it runs and
//! copies back only when the host must read: a checkpoint, the end of a run, or a health check
//! that found a problem on the device (see [`health_needs_host_scan`]). Code that reads columns
//! between steps calls [`sync_to_host`] first; on the CPU it does nothing.

use bevy_ecs::prelude::*;
use serde::Serialize;

/// What the host is about to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostView {
    /// Recorded output only (spikes, probes): waits for the steps queued on the device.
    Recorded,
    /// Recorded output and neuron state columns (membrane potential, synaptic variables).
    Neurons,
    /// Every column a checkpoint stores, and recorded output.
    Everything,
}

/// Brings the host copy of `HostView` up to date, or says why it could not.
pub type SyncFn = fn(&mut World, HostView) -> Result<(), String>;

/// Checks the health invariants where the state lives: neuron state finite and, when the flag
/// says so, every plastic weight inside its rule's bounds; `Ok(true)` when all hold.
pub type CheckFn = fn(&mut World, bool) -> Result<bool, String>;

/// The backend a simulation runs on.
#[derive(Resource, Clone, Debug)]
pub struct Backend {
    /// "cpu" or "cuda".
    pub name: &'static str,
    /// The device in words, e.g. "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)".
    pub device: String,
    /// Set by device backends.
    pub sync: Option<SyncFn>,
    /// Set by device backends: checking on the device spares copying the state back.
    pub check: Option<CheckFn>,
    /// The first device error met while stepping; the run loop stops on it.
    pub failure: Option<String>,
}

impl Backend {
    pub fn cpu(threads: usize) -> Self {
        Backend { name: "cpu", device: format!("{threads} CPU thread{}", if threads == 1 { "" } else { "s" }), sync: None, check: None, failure: None }
    }
}

/// The spikes of the steps a device backend has brought back to the host since a reader last
/// took them, oldest first, each labelled with its step. A device backend reads a step's spikes
/// some steps after it ran (and several at once when it syncs), so `SpikeExchange` between steps
/// holds an older step than the clock's, and not every step passes through it; a reader that
/// needs every step (the observer of `crate::observe`) inserts this resource and the backend
/// appends to it while it exists. The CPU backend never fills it: there `SpikeExchange` holds
/// the step just done.
#[derive(Resource, Debug, Default)]
pub struct StepSpikes {
    steps: Vec<u64>,
    /// Entry `k`'s spikes are `ids[ends[k - 1]..ends[k]]` (from 0 for `k = 0`).
    ends: Vec<usize>,
    ids: Vec<u32>,
}

impl StepSpikes {
    /// Appends the spikes of `step` (ascending global ids).
    pub fn push(&mut self, step: u64, spikes: &[u32]) {
        self.steps.push(step);
        self.ids.extend_from_slice(spikes);
        self.ends.push(self.ids.len());
    }

    /// Every step held and its spikes, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[u32])> {
        self.steps.iter().zip(&self.ends).scan(0, |start, (&step, &end)| {
            let spikes = &self.ids[*start..end];
            *start = end;
            Some((step, spikes))
        })
    }

    pub fn clear(&mut self) {
        self.steps.clear();
        self.ends.clear();
        self.ids.clear();
    }
}

/// Makes the host columns current for `view` (no-op on the CPU backend).
pub fn sync_to_host(world: &mut World, view: HostView) -> Result<(), String> {
    match world.get_resource::<Backend>().and_then(|b| b.sync) {
        Some(sync) => sync(world, view),
        None => Ok(()),
    }
}

/// Whether a health check must scan the host columns (neuron state, and plastic weights when
/// `weights`): always on the CPU; on a device backend only when the device found a violation,
/// after copying everything back so that the host can name it. Recorded output (spike counts)
/// is brought up to date either way.
pub fn health_needs_host_scan(world: &mut World, weights: bool) -> Result<bool, String> {
    let Some(check) = world.get_resource::<Backend>().and_then(|b| b.check) else { return Ok(true) };
    sync_to_host(world, HostView::Recorded)?;
    if check(world, weights)? {
        return Ok(false);
    }
    sync_to_host(world, HostView::Everything).map(|()| true)
}

/// The device error that stopped stepping, if any.
pub fn failure(world: &World) -> Option<String> {
    world.get_resource::<Backend>().and_then(|b| b.failure.clone())
}

/// Bytes copied each way, and how many copies.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Transfers {
    pub to_device_bytes: u64,
    pub to_host_bytes: u64,
    pub copies: u64,
}

/// Device memory by what it holds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct DeviceMemory {
    pub neuron_bytes: u64,
    pub synapse_bytes: u64,
    pub index_bytes: u64,
    pub plasticity_bytes: u64,
    pub staging_bytes: u64,
}

impl DeviceMemory {
    pub fn total(&self) -> u64 {
        self.neuron_bytes + self.synapse_bytes + self.index_bytes + self.plasticity_bytes + self.staging_bytes
    }
}

/// Device memory, transfers and GPU-side counters of a CUDA run.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceStats {
    /// Device bytes by what they hold, as allocated.
    pub device_bytes: DeviceMemory,
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
    pub transfers: Transfers,
    pub steps: u64,
    pub nvrtc_compile_s: f64,
    pub graph_capture_s: f64,
    /// Copying the built network to the device (included in the build time).
    pub upload_s: f64,
}

