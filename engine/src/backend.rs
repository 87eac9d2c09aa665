//! Which backend executes the schedule, and the seam through which a device backend brings the
//! host columns up to date.
//!
//! A backend is a [`Backend`] installed into a built (or restored) simulation with
//! [`Simulation::install`]; the engine holds it as the resource [`Installed`] and knows nothing
//! of a particular one (`fum_systems` implements the CPU and CUDA backends and chooses between
//! them). The CPU backend works on the host columns directly. A device backend (the CUDA backend
//! in `fum_systems::cuda`, on device mirrors from `fum_engine::device`) keeps the authoritative
//! copy of every column on the device while it runs and copies back only when the host must
//! read: a checkpoint, the end of a run, or a health check that found a problem on the device
//! (see [`health_needs_host_scan`]). Code that reads columns between steps calls
//! [`sync_to_host`] first; on the CPU it does nothing.
//!
//! Concurrency contract: only the thread that owns the world calls the installed backend, and
//! never during a step (its step systems run inside the schedule); a device may still be working
//! on queued steps then, which is what [`Backend::sync`] waits for.

use std::fmt;

use bevy_ecs::prelude::*;
use serde::{Deserialize, Serialize};

use crate::Simulation;

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

/// Why a backend could not be installed, with its cause.
pub type InstallError = Box<dyn std::error::Error + Send + Sync>;

/// Where a simulation runs: the step systems it adds, and where its state lives.
pub trait Backend: Send + Sync + 'static {
    /// "cpu", "cuda".
    fn name(&self) -> &'static str;

    /// The device in words, e.g. "8 CPU threads" or "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)".
    fn device(&self) -> String;

    /// Puts the built or restored world on this backend: its step systems, its copy of the state.
    fn install(&mut self, sim: &mut Simulation) -> Result<(), InstallError>;

    /// Brings the host up to date for `view` (waits for the steps queued on the device).
    fn sync(&mut self, _world: &mut World, _view: HostView) -> Result<(), String> {
        Ok(())
    }

    /// Checks the health invariants where the state lives, after the queued steps: neuron
    /// state finite and, if `weights`, every plastic weight inside its rule's bounds;
    /// `Some(Ok(true))` when all hold. `None`: the host scans its own columns.
    fn check(&mut self, _world: &mut World, _weights: bool) -> Option<Result<bool, String>> {
        None
    }

    /// A structural commit rebuilt `blocks` on the host (their columns now have no mirror or, for
    /// columns the device steps, zeros on the host): a device backend rebuilds its copies from
    /// the plans, within the commit.
    fn structure_changed(&mut self, _world: &mut World, _blocks: &[crate::structural::Rebuilt]) -> Result<(), String> {
        Ok(())
    }

    /// Starts computing on the device schedule `schedule`'s structural plan snapshotted at
    /// this step (plan number `plan`; see `crate::structural`), if the backend can, and resets
    /// the device's spike counts of that schedule: per shard with [`Rewiring`](crate::structural::Rewiring), in shard order, per
    /// block a job that waits for the device's part and brings it back (None for a block
    /// without a rule), run on the plan threads. None: the host plans.
    fn plan_structure(&mut self, _world: &mut World, _schedule: usize, _plan: u64) -> Option<Result<Vec<Vec<Option<crate::structural::DevicePlanJob>>>, String>> {
        None
    }

    /// Device memory and transfers, for run.json.
    /// Whether the backend times the stages of its own step when
    /// [`Simulation::time_stages`](crate::Simulation::time_stages) asks (a device measures its
    /// own work); otherwise the clock is read on the host between the stages' systems.
    fn times_stages(&self) -> bool {
        false
    }

    fn stats(&self, _world: &World) -> Option<DeviceStats> {
        None
    }

    /// Host threads the backend keeps busy while stepping (the CPU backend's workers; the one
    /// that launches a device's steps): work beside the simulation leaves them their cores.
    fn host_threads(&self) -> usize {
        1
    }

    /// Whether Poisson rates, DC currents and STDP on/off can change while running.
    fn steerable(&self) -> bool {
        true
    }

    /// Whether a step's spikes reach the host some steps late, and the state columns only at a
    /// sync (the observer then reads [`StepSpikes`] and samples the columns sparingly).
    fn spikes_lag(&self) -> bool {
        false
    }
}

/// The backend a simulation runs on, once installed.
#[derive(Resource)]
pub struct Installed(pub Box<dyn Backend>);

/// The installed backend, if any.
pub fn installed(world: &World) -> Option<&dyn Backend> {
    world.get_resource::<Installed>().map(|b| b.0.as_ref())
}

/// Calls `f` with the installed backend and the rest of the world; `None` without a backend.
fn with_installed<R>(world: &mut World, f: impl FnOnce(&mut dyn Backend, &mut World) -> R) -> Option<R> {
    world.try_resource_scope(|world, mut b: Mut<Installed>| f(b.0.as_mut(), world))
}

/// `--backend`: the CPU, the GPU, or the GPU when one is usable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendChoice {
    #[default]
    Cpu,
    Cuda,
    Auto,
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendChoice::Cpu => "cpu",
            BackendChoice::Cuda => "cuda",
            BackendChoice::Auto => "auto",
        })
    }
}

/// Makes the backend a choice stands for (`fum_systems::backend_for`); the run entry points
/// take one, since the engine knows no backend.
pub type Chooser = fn(BackendChoice) -> Result<Box<dyn Backend>, BackendError>;

/// Errors choosing or installing a backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend asked for cannot run here (no usable GPU, or not built in).
    #[error("--backend {choice}: {reason}")]
    Unavailable { choice: BackendChoice, reason: String },
    /// Putting the network on the backend failed.
    #[error("--backend {backend}")]
    Install { backend: &'static str, source: InstallError },
}

/// The first device error met while stepping; the run loop stops on it.
#[derive(Resource, Debug)]
pub struct DeviceFailure(pub String);

/// Records `error` as the device failure, unless one was recorded before.
pub fn report_failure(world: &mut World, error: String) {
    if !world.contains_resource::<DeviceFailure>() {
        world.insert_resource(DeviceFailure(error));
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
    with_installed(world, |backend, world| backend.sync(world, view)).unwrap_or(Ok(()))
}

/// Tells the installed backend which blocks a structural commit rebuilt.
pub fn structure_changed(world: &mut World, blocks: &[crate::structural::Rebuilt]) -> Result<(), String> {
    with_installed(world, |backend, world| backend.structure_changed(world, blocks)).unwrap_or(Ok(()))
}

/// [`Backend::plan_structure`] of the installed backend (None without one, or on the host).
pub fn plan_structure(world: &mut World, schedule: usize, plan: u64) -> Option<Result<Vec<Vec<Option<crate::structural::DevicePlanJob>>>, String>> {
    with_installed(world, |backend, world| backend.plan_structure(world, schedule, plan)).flatten()
}

/// Whether a health check must scan the host columns (neuron state, and plastic weights when
/// `weights`): always on the CPU; on a device backend only when the device found a violation,
/// after copying everything back so that the host can name it. Recorded output (spike counts)
/// is brought up to date either way.
pub fn health_needs_host_scan(world: &mut World, weights: bool) -> Result<bool, String> {
    sync_to_host(world, HostView::Recorded)?;
    match with_installed(world, |backend, world| backend.check(world, weights)).flatten() {
        None => Ok(true),
        Some(Ok(true)) => Ok(false),
        Some(Ok(false)) => sync_to_host(world, HostView::Everything).map(|()| true),
        Some(Err(e)) => Err(e),
    }
}

/// The device error that stopped stepping, if any.
pub fn failure(world: &World) -> Option<String> {
    world.get_resource::<DeviceFailure>().map(|f| f.0.clone())
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

/// A run's limit on device memory (`--device-memory`), for a device backend to place the network
/// within; without it, the card's free memory is the limit.
#[derive(Resource, Clone, Copy, Debug)]
pub struct DeviceMemoryLimit(pub u64);

/// The synapses a device backend left in pinned host memory, read by its kernels over the bus
/// (zero-copy), because the network did not fit in the device's memory.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct MappedHost {
    /// The device memory the network would need whole, and the limit it had to fit.
    pub needed_bytes: u64,
    pub limit_bytes: u64,
    /// Bytes, blocks and synapses in mapped host memory.
    pub bytes: u64,
    pub blocks: u64,
    pub synapses: u64,
    /// Host-to-device copy bandwidth of pinned memory, measured at the upload: the bus's bound.
    pub link_bytes_per_s: f64,
    /// The device's copies of the rows read most (`fum_engine::row_cache`).
    pub row_cache: RowCacheStats,
}

/// What the device row cache of a network in host memory did (`fum_engine::row_cache`).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct RowCacheStats {
    /// Device bytes of its copies and tables, its slots (one row each) and the rows in them at
    /// the end.
    pub bytes: u64,
    pub slots: u64,
    pub rows: u64,
    /// Rankings of the rows, and the bytes they moved: rows copied in, weights written back
    /// (when rows left, and before the host read the weights).
    pub rankings: u64,
    pub bytes_in: u64,
    pub bytes_back: u64,
    /// Seconds the steps waited for the rankings and their copies, and of those, the host's
    /// ranking itself.
    pub stall_s: f64,
    pub rank_s: f64,
    /// Synapses delivered from the cache and from host memory, and the first's share.
    pub synapses_from_cache: u64,
    pub synapses_from_host: u64,
    pub hit_rate: f64,
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
    /// Synapses kept in host memory because the network did not fit (see [`MappedHost`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mapped_host: Option<MappedHost>,
    /// Across ranks, how the other ranks' spikes reach this GPU: "nccl" (GPU to GPU, inside
    /// the step's graph) or "mpi" (through host memory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ranks_exchange: Option<&'static str>,
}

