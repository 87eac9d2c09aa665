//! Headless runs: build (or resume from a checkpoint), put the network on its backend, simulate
//! with the duties of every step boundary (progress, device failure, health, observer,
//! checkpoints, signals: one hook each), write the outputs, report.
//!
//! The engine knows no backend: the entry points take a [`Chooser`] (`fum_systems::backend_for`)
//! that makes the one [`RunOptions::backend`] names.

mod checkpoints;
mod hooks;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bevy_ecs::prelude::Mut;
use serde::{Deserialize, Serialize};

use self::checkpoints::{CheckpointTotals, Checkpoints};
use self::hooks::{DeviceFailed, Health, Observed, PeriodicCheckpoints, Progress, Signals, StepHook, Stop};
use crate::backend::{BackendChoice, BackendError, Chooser, HostView, sync_to_host};
use crate::checkpoint::{self, Checkpoint, CheckpointError};
use crate::components::Clock;
use crate::health::{HealthError, HealthMonitor};
use crate::observe::Observer;
use crate::recording::{OutputError, Recorder};
use crate::report::{NetworkStats, Outcome, RunReport, Timing};
use crate::{BuildError, Model, ModelError, Simulation};

/// How to run a model; zero means "choose".
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunOptions {
    /// Output folder; nothing is written without one.
    pub out: Option<PathBuf>,
    /// Worker threads (0: one per core).
    pub threads: usize,
    /// Shards (0: one per thread).
    pub shards: usize,
    /// Write a checkpoint every this much biological time (needs `out`).
    pub checkpoint_every_ms: Option<f64>,
    /// Checkpoints kept (0: 3).
    pub keep_checkpoints: usize,
    /// Stop (with a checkpoint) after this much biological time; `fum resume` continues.
    pub stop_after_ms: Option<f64>,
    /// Overrides of the model's duration and seed, kept so that a resumed run applies them.
    pub duration_ms: Option<f64>,
    pub seed: Option<u64>,
    /// Health checks every this much biological time (0: 10 ms), and the runaway rate bound.
    pub health_interval_ms: f64,
    pub max_rate_hz: Option<f64>,
    /// Where the simulation runs.
    #[serde(default)]
    pub backend: BackendChoice,
}

impl RunOptions {
    /// Threads and shards after applying the defaults (model file, then the machine).
    pub fn resolve(&self, model: &Model) -> (usize, usize) {
        let sim = &model.spec.simulation;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = [self.threads, sim.threads].into_iter().find(|&t| t > 0).unwrap_or(cores);
        let shards = [self.shards, sim.shards].into_iter().find(|&s| s > 0).unwrap_or(threads);
        (threads, shards)
    }

    /// Applies the duration and seed overrides to a model.
    pub fn apply(&self, model: &mut Model) -> Result<(), ModelError> {
        if let Some(ms) = self.duration_ms {
            model.spec.simulation.duration_ms = ms;
        }
        if let Some(seed) = self.seed {
            model.spec.simulation.seed = seed;
        }
        model.revalidate()
    }
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("cannot create the output folder {}", path.display())]
    OutputFolder { path: PathBuf, source: io::Error },
    #[error("{}: no checkpoints to resume from", .0.display())]
    NoCheckpoints(PathBuf),
    #[error("{}: no valid checkpoint to resume from", .0.display())]
    NoValidCheckpoint(PathBuf),
    #[error("the checkpoint's run settings")]
    RunSettings(#[source] serde_json::Error),
    /// Copying the device state to the host for a checkpoint failed.
    #[error("{0}")]
    Sync(String),
    #[error("the device failed at step {step}: {error}")]
    Device { step: u64, error: String },
    /// A health check failed; `hint` says where the state was saved.
    #[error("{error}{hint}")]
    Unhealthy { error: HealthError, hint: String },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("cannot write {}", path.display())]
    Report { path: PathBuf, source: io::Error },
}

/// Set by SIGINT/SIGTERM (see the CLI); checked at every step boundary.
pub fn interrupt_flag() -> Arc<AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false))).clone()
}

/// Builds and runs `model` from its start on the backend `choose` makes. `progress` is called
/// with the steps done and the step the run ends at, every 100 steps and at the end.
pub fn run(model: &Model, options: &RunOptions, choose: Chooser, progress: impl Fn(u64, u64) + Send + Sync) -> Result<RunReport, RunError> {
    run_observed(model, options, choose, None, progress)
}

/// [`run`] watched and steered through `observer` (see [`crate::observe`]), which is called at
/// every step boundary and may write checkpoints into the output folder on request.
pub fn run_observed(model: &Model, options: &RunOptions, choose: Chooser, observer: Option<&mut Observer>, progress: impl Fn(u64, u64) + Send + Sync) -> Result<RunReport, RunError> {
    let started = Instant::now();
    let (threads, shards) = options.resolve(model);
    // Threads and memory this machine cannot give are refused before anything is built.
    crate::estimate::check(model, threads, shards)?;
    // Chosen before building, so that a backend that cannot run here fails at once.
    let backend = choose(crate::structural::backend_choice(model, options.backend)?)?;
    let mut sim = Simulation::from_model(model, threads, shards)?;
    sim.install(backend)?;
    if let Some(out) = &options.out {
        std::fs::create_dir_all(out).map_err(|source| RunError::OutputFolder { path: out.clone(), source })?;
        // Recorded output moves to logs under OUT/recording at each checkpoint.
        sim.world.resource_mut::<Recorder>().log_dir = Some(out.join("recording"));
    }
    execute(model, options, sim, started, progress, observer)
}

/// Continues the run in `dir` from its newest valid checkpoint, reporting on stderr any newer
/// one that is corrupt or partial. `threads` and `backend` may differ from the original run's.
pub fn resume(dir: &Path, threads: usize, backend: Option<BackendChoice>, choose: Chooser, progress: impl Fn(u64, u64) + Send + Sync) -> Result<RunReport, RunError> {
    let started = Instant::now();
    let ckpt_dir = dir.join("checkpoints");
    let candidates = checkpoint::list(&ckpt_dir);
    if candidates.is_empty() {
        return Err(RunError::NoCheckpoints(ckpt_dir));
    }
    for path in candidates {
        let attempt = Checkpoint::open(&path).and_then(|c| {
            let text = c.model_text()?;
            Ok((c, text))
        });
        let (ckpt, text) = match attempt {
            Ok(v) => v,
            Err(e) => {
                eprintln!("skipping checkpoint: {e}");
                continue;
            }
        };
        let mut options: RunOptions = serde_json::from_value(ckpt.header.run.clone()).map_err(RunError::RunSettings)?;
        if threads > 0 {
            options.threads = threads;
        }
        if let Some(backend) = backend {
            options.backend = backend;
        }
        options.out = Some(dir.to_path_buf());
        options.stop_after_ms = None;
        let model_path = ckpt.header.run.get("model_path").and_then(|v| v.as_str()).unwrap_or("model.toml").to_string();
        let mut model = Model::parse(&text, Path::new(&model_path))?;
        options.apply(&mut model)?;
        let (threads, _) = options.resolve(&model);
        let mut sim = Simulation::from_model(&model, threads, ckpt.header.shards)?;
        sim.world.resource_mut::<Recorder>().log_dir = Some(dir.join("recording"));
        if let Err(e) = ckpt.restore(&mut sim.world, model.hash()) {
            eprintln!("skipping checkpoint: {e}");
            continue;
        }
        sim.install(choose(crate::structural::backend_choice(&model, options.backend)?)?)?;
        eprintln!("resuming from {} (step {})", path.display(), ckpt.header.step);
        return execute(&model, &options, sim, started, progress, None);
    }
    Err(RunError::NoValidCheckpoint(ckpt_dir))
}

/// The steps of a session, and how often checkpoints and health checks fall.
struct Span {
    /// The model's steps.
    steps: u64,
    /// Where the session starts (after a resume, the checkpoint's step) and is to end.
    start_step: u64,
    end_step: u64,
    checkpoint_every: Option<u64>,
    health_every: u64,
}

impl Span {
    fn new(model: &Model, options: &RunOptions, sim: &Simulation) -> Self {
        let to_steps = |ms: f64| ((ms / model.spec.simulation.dt_ms).round() as u64).max(1);
        let steps = model.steps();
        Span {
            steps,
            start_step: sim.world.resource::<Clock>().step,
            end_step: options.stop_after_ms.map_or(steps, |ms| to_steps(ms).min(steps)),
            checkpoint_every: options.checkpoint_every_ms.map(to_steps),
            health_every: to_steps(if options.health_interval_ms > 0.0 { options.health_interval_ms } else { 10.0 }),
        }
    }
}

/// Build (done by the caller) -> hooks -> loop -> outputs.
fn execute(model: &Model, options: &RunOptions, mut sim: Simulation, started: Instant, progress: impl Fn(u64, u64) + Send + Sync, mut observer: Option<&mut Observer>) -> Result<RunReport, RunError> {
    let network = NetworkStats::measure(&mut sim.world);
    let build_s = started.elapsed().as_secs_f64();
    let span = Span::new(model, options, &sim);
    let ckpt_dir = options.out.as_ref().map(|o| o.join("checkpoints"));
    if let Some(dir) = &ckpt_dir {
        let keep = if options.keep_checkpoints == 0 { 3 } else { options.keep_checkpoints };
        let mut settings = serde_json::to_value(options)?;
        settings["model_path"] = model.path.display().to_string().into();
        sim.world.insert_resource(Checkpoints::start(dir.clone(), keep, span.checkpoint_every, span.end_step, model, settings));
    }

    // A run started paused shows its first step to the viewer before anything runs.
    let mut stop = observer.as_deref_mut().and_then(|o| Observed(o).before_first_step(&mut sim.world, span.start_step).break_value());
    let paused_before = observer.as_ref().map_or(0.0, |o| o.paused_s());
    if interrupt_flag().load(Ordering::Relaxed) {
        // Signalled while building (or while paused before the first step): no step runs.
        stop = Some(Stop::Interrupted);
    }
    // The duties of every step boundary, in order.
    let health = HealthMonitor::new(span.health_every, options.max_rate_hz.unwrap_or(1000.0), &sim.world);
    let mut hooks: Vec<Box<dyn StepHook + '_>> = vec![Box::new(Progress { report: &progress, end_step: span.end_step }), Box::new(DeviceFailed), Box::new(Health(health))];
    if let Some(observer) = observer.as_deref_mut() {
        hooks.push(Box::new(Observed(observer)));
    }
    if ckpt_dir.is_some() {
        hooks.push(Box::new(PeriodicCheckpoints));
    }
    hooks.push(Box::new(Signals(interrupt_flag())));
    // A run with checkpoints starts with one, so that it can always be resumed.
    if let (Some(_), 0) = (span.checkpoint_every, span.start_step) {
        sim.world.resource_scope(|world, mut c: Mut<Checkpoints>| c.write_now(world))?;
    }

    let t0 = Instant::now();
    let end_step = if stop.is_some() { span.start_step } else { span.end_step };
    let done = sim.run_until(end_step, |world, done| hooks.iter_mut().try_for_each(|hook| hook.between_steps(world, done)).map_break(|s| stop = Some(s)));
    drop(hooks);
    // The last steps queued on a device belong to the simulation time; copying its state back
    // (learned weights, for the outputs and a final checkpoint) is timed apart.
    let drained = sync_to_host(&mut sim.world, HostView::Recorded);
    let mut paused_s = 0.0;
    if let Some(observer) = observer {
        // On a device backend the last steps' spikes reached the host only now.
        observer.run_ended(&mut sim.world);
        paused_s = observer.paused_s() - paused_before;
    }
    // Time a viewer held the run paused is not simulation time.
    let simulate_s = (t0.elapsed().as_secs_f64() - paused_s).max(0.0);
    let t_copy = Instant::now();
    let synced = drained.and_then(|()| sync_to_host(&mut sim.world, HostView::Everything));
    let copy_back_s = t_copy.elapsed().as_secs_f64();
    let (device_failure, unhealthy) = match stop {
        Some(Stop::Device(e)) => (Some(e), None),
        Some(Stop::Unhealthy(e)) => (None, Some(e)),
        Some(Stop::Interrupted) | None => (None, None),
    };
    if let Some(error) = device_failure.or(synced.err()) {
        return Err(RunError::Device { step: done, error });
    }
    let outcome = if done == span.steps {
        Outcome::Finished
    } else if done == span.end_step && unhealthy.is_none() {
        Outcome::Stopped
    } else {
        Outcome::Interrupted
    };
    // A final checkpoint wherever the run ends early (stop, signal, failed health check).
    let checkpoints = match sim.world.remove_resource::<Checkpoints>() {
        Some(writer) => writer.finish(&mut sim.world, outcome != Outcome::Finished || span.checkpoint_every.is_some())?,
        None => CheckpointTotals::default(),
    };
    if let Some(error) = unhealthy {
        let hint = ckpt_dir.map(|d| format!("; the state is in the newest checkpoint in {}", d.display())).unwrap_or_default();
        return Err(RunError::Unhealthy { error, hint });
    }

    let t1 = Instant::now();
    let outputs = write_outputs(model, options, &sim, outcome)?;
    let mut report = RunReport::new(model, &sim, span.start_step..done, outcome, network, outputs);
    let dt = model.spec.simulation.dt_ms;
    let session_ms = (done - span.start_step) as f64 * dt;
    report.timing = Timing {
        build_s,
        simulate_s,
        copy_back_s,
        write_s: t1.elapsed().as_secs_f64(),
        total_s: started.elapsed().as_secs_f64(),
        real_time_factor: simulate_s / (session_ms.max(dt) * 1e-3),
        checkpoint_pause_s: checkpoints.pause_s,
        checkpoints_written: checkpoints.written,
        checkpoints_superseded: checkpoints.superseded,
    };
    if report.stdp_history_overflows > 0 {
        eprintln!("warning: {} STDP pairings lost to full postsynaptic spike histories; raise post_history in [[plasticity]]", report.stdp_history_overflows);
    }
    if let Some(out) = &options.out {
        report.outputs.push("run.json".to_string());
        let json = serde_json::to_string_pretty(&report)?;
        let path = out.join("run.json");
        std::fs::write(&path, json).map_err(|source| RunError::Report { path, source })?;
    }
    Ok(report)
}

/// Writes the recorded spikes and probes under the output folder, unless the run stopped to be
/// resumed; their file names.
fn write_outputs(model: &Model, options: &RunOptions, sim: &Simulation, outcome: Outcome) -> Result<Vec<String>, RunError> {
    let recorder = sim.world.resource::<Recorder>();
    let mut outputs = Vec::new();
    if let Some(out) = options.out.as_ref().filter(|_| outcome != Outcome::Stopped) {
        if !recorder.spikes.is_empty() {
            recorder.write_spikes(&out.join("spikes.h5"), model)?;
            outputs.push("spikes.h5".to_string());
        }
        if !recorder.probes.is_empty() {
            recorder.write_probes(&out.join("probes.h5"))?;
            outputs.push("probes.h5".to_string());
        }
    }
    Ok(outputs)
}
