//! Which backend executes the schedule, and the seam through which a device backend brings the
//! host columns up to date.
//!
//! The CPU backend works on the host columns directly. A device backend (the CUDA backend in
//! `fum-cuda`) keeps the authoritative copy of every column on the device while it runs and
//! copies back only when the host must read: a health check (neuron state), a checkpoint or the
//! end of a run (everything). Code that reads columns between steps calls [`sync_to_host`]
//! first; on the CPU it does nothing.

use bevy_ecs::prelude::*;

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

/// Checks every plastic weight against its rule's bounds where the weights live; `Ok(true)`
/// when all are inside.
pub type WeightCheckFn = fn(&mut World) -> Result<bool, String>;

/// The backend a simulation runs on.
#[derive(Resource, Clone, Debug)]
pub struct Backend {
    /// "cpu" or "cuda".
    pub name: &'static str,
    /// The device in words, e.g. "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)".
    pub device: String,
    /// Set by device backends.
    pub sync: Option<SyncFn>,
    /// Set by device backends: checking weights on the device spares copying them all back.
    pub check_weights: Option<WeightCheckFn>,
    /// The first device error met while stepping; the run loop stops on it.
    pub failure: Option<String>,
}

impl Backend {
    pub fn cpu(threads: usize) -> Self {
        Backend { name: "cpu", device: format!("{threads} CPU thread{}", if threads == 1 { "" } else { "s" }), sync: None, check_weights: None, failure: None }
    }
}

/// Makes the host columns current for `view` (no-op on the CPU backend).
pub fn sync_to_host(world: &mut World, view: HostView) -> Result<(), String> {
    match world.get_resource::<Backend>().and_then(|b| b.sync) {
        Some(sync) => sync(world, view),
        None => Ok(()),
    }
}

/// Whether the host must scan its plastic weight columns for values outside their bounds:
/// always on the CPU; on a device backend only when the device found one (its columns are
/// then copied back first, so that the host can name it).
pub fn weights_need_host_scan(world: &mut World) -> Result<bool, String> {
    match world.get_resource::<Backend>().and_then(|b| b.check_weights) {
        None => Ok(true),
        Some(check) if check(world)? => Ok(false),
        Some(_) => sync_to_host(world, HostView::Everything).map(|()| true),
    }
}

/// The device error that stopped stepping, if any.
pub fn failure(world: &World) -> Option<String> {
    world.get_resource::<Backend>().and_then(|b| b.failure.clone())
}
