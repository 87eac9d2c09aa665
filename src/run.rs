//! Headless runs on the backends of `fum_systems`: the engine's run loop
//! ([`fum_engine::run`]) with [`backend_for`] choosing the backend.

use std::path::Path;

pub use fum_engine::backend::BackendChoice;
pub use fum_engine::report::{NetworkStats, Outcome, RunReport, Timing};
pub use fum_engine::run::{Phase, RunError, RunOptions, RunProgress, StructuralTotals, interrupt_flag};
pub use fum_systems::backend_for;

use fum_engine::observe::Observer;

/// Builds and runs `model` from its start. `progress` is called every 100 steps and at the
/// end (see [`RunProgress`]).
pub fn run(model: &crate::Model, options: &RunOptions, progress: impl Fn(&RunProgress) + Send + Sync) -> Result<RunReport, RunError> {
    fum_engine::run::run(model, options, backend_for, progress)
}

/// [`run`] watched and steered through `observer` (see `fum_engine::observe`).
pub fn run_observed(model: &crate::Model, options: &RunOptions, observer: Option<&mut Observer>, progress: impl Fn(&RunProgress) + Send + Sync) -> Result<RunReport, RunError> {
    fum_engine::run::run_observed(model, options, backend_for, observer, progress)
}

/// Continues the run in `dir` from its newest valid checkpoint (see `fum_engine::run::resume`).
pub fn resume(dir: &Path, threads: usize, backend: Option<BackendChoice>, progress: impl Fn(&RunProgress) + Send + Sync) -> Result<RunReport, RunError> {
    fum_engine::run::resume(dir, threads, backend, backend_for, progress)
}
