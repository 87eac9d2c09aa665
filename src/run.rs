//! Headless runs: build (or resume from a checkpoint), simulate with periodic checkpoints and
//! health checks, write the outputs, report.
//!
//! Checkpoints are snapshots copied at a step boundary on the simulation thread and compressed
//! and written by a background thread, so the simulation pauses only for the copy. It never
//! waits for the disk: a snapshot that finds the writer busy is kept and handed over at a later
//! step; if the next one is due first, it supersedes the waiting one (`checkpoints_superseded`).

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::stats::NetworkStats;
use crate::{DefaultPlugins, Model, Simulation};
use fum_engine::backend::{Backend, HostView, sync_to_host};
use fum_engine::checkpoint::{self, Checkpoint, Snapshot};
use fum_engine::health::HealthMonitor;
use fum_engine::observe::Observer;
use fum_engine::recording::Recorder;

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
    pub fn apply(&self, model: &mut Model) -> Result<(), fum_engine::ModelError> {
        if let Some(ms) = self.duration_ms {
            model.spec.simulation.duration_ms = ms;
        }
        if let Some(seed) = self.seed {
            model.spec.simulation.seed = seed;
        }
        model.revalidate()
    }
}

/// `--backend`: the CPU, the GPU, or the GPU when one is usable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum BackendChoice {
    #[default]
    Cpu,
    Cuda,
    Auto,
}

#[cfg(feature = "cuda")]
use crate::kernels::cuda::Gpu;
/// Stands for the GPU in a build without the CUDA backend: no value exists.
#[cfg(not(feature = "cuda"))]
pub enum Gpu {}

/// The GPU a `cuda` or `auto` run uses, opened (and its kernels compiled) once per process.
#[cfg(feature = "cuda")]
fn gpu() -> Result<Arc<Gpu>, String> {
    static GPU: std::sync::OnceLock<Result<Arc<Gpu>, String>> = std::sync::OnceLock::new();
    GPU.get_or_init(|| Gpu::open(0).map(Arc::new).map_err(|e| e.to_string())).clone()
}
#[cfg(not(feature = "cuda"))]
fn gpu() -> Result<Arc<Gpu>, String> {
    Err("this fum was built without the CUDA backend (cargo feature `cuda`)".into())
}

/// The GPU a run will use: `None` for the CPU. Called before building, so that `--backend
/// cuda` without a usable GPU fails at once; `auto` says on stderr which it chose.
pub fn choose_backend(choice: BackendChoice) -> anyhow::Result<Option<Arc<Gpu>>> {
    Ok(match choice {
        BackendChoice::Cpu => None,
        BackendChoice::Cuda => Some(gpu().map_err(|e| anyhow::anyhow!("--backend cuda: {e}"))?),
        BackendChoice::Auto => match gpu() {
            Ok(gpu) => {
                #[cfg(feature = "cuda")]
                eprintln!("backend: cuda ({})", gpu.label());
                Some(gpu)
            }
            Err(e) => {
                eprintln!("backend: cpu ({e})");
                None
            }
        },
    })
}

/// Puts the simulation on its backend: the CPU systems, or the network uploaded to the GPU.
/// Call after the world is built or restored.
pub fn attach_backend(sim: &mut Simulation, gpu: Option<Arc<Gpu>>) -> anyhow::Result<()> {
    match gpu {
        #[cfg(feature = "cuda")]
        Some(gpu) => crate::systems::cuda::install(sim, gpu).context("--backend cuda")?,
        #[cfg(not(feature = "cuda"))]
        Some(gpu) => match *gpu {},
        None => {
            let threads = sim.threads();
            sim.world.insert_resource(Backend::cpu(threads));
            sim.add_plugins(DefaultPlugins);
        }
    }
    Ok(())
}

#[derive(Clone, Debug, Serialize)]
pub struct Timing {
    pub build_s: f64,
    pub simulate_s: f64,
    /// Copying the device state back after the last step (device backends; 0 on the CPU).
    pub copy_back_s: f64,
    pub write_s: f64,
    pub total_s: f64,
    /// Wall time of the simulation loop over the biological time it covered.
    pub real_time_factor: f64,
    /// Time the simulation waited for checkpoint snapshots (copies) and writer hand-over.
    pub checkpoint_pause_s: f64,
    pub checkpoints_written: u64,
    /// Checkpoints not written because a newer one was due before the writer was free.
    pub checkpoints_superseded: u64,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Finished,
    /// Stopped by `stop_after_ms`; resumable.
    Stopped,
    /// Stopped by SIGINT or SIGTERM; resumable.
    Interrupted,
}

/// The summary of a run, written as `run.json`.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub fum_version: &'static str,
    pub model: String,
    /// FNV-1a 64 of the model text, hex.
    pub model_hash: String,
    pub seed: u64,
    pub dt_ms: f64,
    pub duration_ms: f64,
    pub steps: u64,
    /// Step this session started from (non-zero after `fum resume`).
    pub start_step: u64,
    /// Steps completed when this session ended.
    pub end_step: u64,
    pub outcome: Outcome,
    pub backend: &'static str,
    /// The device in words (CPU threads, or the GPU's name, architecture and memory).
    pub device: String,
    /// Device memory and transfers of a CUDA run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu: Option<fum_engine::backend::DeviceStats>,
    pub threads: usize,
    pub network: NetworkStats,
    pub timing: Timing,
    /// Mean firing rate of every population over the simulated time, Hz.
    pub rates_hz: BTreeMap<String, f64>,
    pub spikes_total: u64,
    /// STDP pairings lost to overflowing postsynaptic spike histories (raise `post_history`).
    pub stdp_history_overflows: u64,
    pub outputs: Vec<String>,
}

/// Set by SIGINT/SIGTERM (see the CLI); checked at every step boundary.
pub fn interrupt_flag() -> Arc<AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false))).clone()
}

/// Builds and runs `model` from its start. `progress` is called with the steps done and the
/// step the run ends at, every 100 steps and at the end.
pub fn run(model: &Model, options: &RunOptions, progress: impl Fn(u64, u64) + Send + Sync) -> anyhow::Result<RunReport> {
    run_observed(model, options, None, progress)
}

/// [`run`] watched and steered through `observer` (see `fum_engine::observe`), which is called
/// at every step boundary and may write checkpoints into the output folder on request.
pub fn run_observed(model: &Model, options: &RunOptions, observer: Option<&mut Observer>, progress: impl Fn(u64, u64) + Send + Sync) -> anyhow::Result<RunReport> {
    let started = Instant::now();
    let (threads, shards) = options.resolve(model);
    let gpu = choose_backend(options.backend)?;
    let mut sim = Simulation::from_model(model, threads, shards)?;
    attach_backend(&mut sim, gpu)?;
    if let Some(out) = &options.out {
        std::fs::create_dir_all(out).with_context(|| format!("cannot create the output folder {}", out.display()))?;
        // Recorded output moves to logs under OUT/recording at each checkpoint.
        sim.world.resource_mut::<Recorder>().log_dir = Some(out.join("recording"));
    }
    execute(model, options, sim, started, progress, observer)
}

/// Continues the run in `dir` from its newest valid checkpoint, reporting on stderr any newer
/// one that is corrupt or partial. `threads` may differ from the original run's.
pub fn resume(dir: &Path, threads: usize, backend: Option<BackendChoice>, progress: impl Fn(u64, u64) + Send + Sync) -> anyhow::Result<RunReport> {
    let started = Instant::now();
    let ckpt_dir = dir.join("checkpoints");
    let candidates = checkpoint::list(&ckpt_dir);
    if candidates.is_empty() {
        bail!("{}: no checkpoints to resume from", ckpt_dir.display());
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
        let mut options: RunOptions = serde_json::from_value(ckpt.header.run.clone()).context("the checkpoint's run settings")?;
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
        attach_backend(&mut sim, choose_backend(options.backend)?)?;
        eprintln!("resuming from {} (step {})", path.display(), ckpt.header.step);
        return execute(&model, &options, sim, started, progress, None);
    }
    bail!("{}: no valid checkpoint to resume from", ckpt_dir.display())
}

fn execute(model: &Model, options: &RunOptions, mut sim: Simulation, started: Instant, progress: impl Fn(u64, u64) + Send + Sync, mut observer: Option<&mut Observer>) -> anyhow::Result<RunReport> {
    let network = NetworkStats::measure(&mut sim.world);
    let build_s = started.elapsed().as_secs_f64();
    let dt = model.spec.simulation.dt_ms;
    let to_steps = |ms: f64| ((ms / dt).round() as u64).max(1);
    let steps = model.steps();
    let start_step = sim.world.resource::<fum_engine::components::Clock>().step;
    let end_step = options.stop_after_ms.map_or(steps, |ms| to_steps(ms).min(steps));
    let ckpt_dir = options.out.as_ref().map(|o| o.join("checkpoints"));
    let ckpt_every = options.checkpoint_every_ms.map(to_steps);
    let keep = if options.keep_checkpoints == 0 { 3 } else { options.keep_checkpoints };
    let mut run_settings = serde_json::to_value(options)?;
    run_settings["model_path"] = model.path.display().to_string().into();
    let (hash, text) = (model.hash(), model.source.clone());
    let mut device_failure: Option<String> = None;
    let snapshot = |world: &mut bevy_ecs::world::World| -> Result<Snapshot, String> {
        sync_to_host(world, HostView::Everything)?;
        Ok(Snapshot::take(world, &text, hash, run_settings.clone()))
    };

    // The writer thread compresses and writes; a bounded channel of one keeps at most one
    // snapshot waiting, so memory stays bounded if the disk is slow.
    let writer = ckpt_dir.clone().map(|dir| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Snapshot>(1);
        let handle = std::thread::Builder::new()
            .name("fum-checkpoint".into())
            .spawn(move || -> anyhow::Result<u64> {
                let mut written = 0;
                for snap in rx {
                    snap.write(&dir, 1)?;
                    checkpoint::prune(&dir, keep);
                    written += 1;
                }
                Ok(written)
            })
            .expect("a thread for the checkpoint writer");
        (tx, handle)
    });
    let mut health = HealthMonitor::new(
        to_steps(if options.health_interval_ms > 0.0 { options.health_interval_ms } else { 10.0 }),
        options.max_rate_hz.unwrap_or(1000.0),
        &sim.world,
    );
    let interrupted = interrupt_flag();
    let mut failure = None;
    let mut pause_s = 0.0;
    let mut waiting: Option<Snapshot> = None;
    let mut superseded = 0;
    // A run with checkpoints starts with one, so that it can always be resumed.
    if let (Some((tx, _)), Some(_), 0) = (&writer, ckpt_every, start_step) {
        tx.send(snapshot(&mut sim.world).map_err(anyhow::Error::msg)?).ok();
    }

    let t0 = Instant::now();
    let done = sim.run_until(end_step, |world, done| {
        if done % 100 == 0 || done == end_step {
            progress(done, end_step);
        }
        if let Some(e) = fum_engine::backend::failure(world) {
            device_failure = Some(e);
            return ControlFlow::Break(());
        }
        if health.due(done) {
            if let Err(e) = health.check(world, done) {
                failure = Some(e);
                return ControlFlow::Break(());
            }
        }
        if let Some(observer) = observer.as_deref_mut() {
            // Handed over at once, so that a paused run writes it too.
            let mut checkpoint_now = |world: &mut bevy_ecs::world::World| match (&writer, &ckpt_dir) {
                (Some((tx, _)), Some(dir)) => {
                    let snap = replace_waiting(&mut waiting, snapshot(world)?, &mut superseded);
                    if let Err(std::sync::mpsc::TrySendError::Full(snap)) = tx.try_send(snap) {
                        waiting = Some(snap);
                    }
                    Ok(format!("checkpoint of step {done} goes to {}", dir.display()))
                }
                _ => Err("checkpoints need an output folder (--out)".to_string()),
            };
            if observer.between_steps(world, done, &mut checkpoint_now).is_break() {
                return ControlFlow::Break(());
            }
        }
        if let Some((tx, _)) = &writer {
            let t = Instant::now();
            let due = ckpt_every.is_some_and(|every| done % every == 0 && done != end_step);
            if due {
                match snapshot(world) {
                    Ok(snap) => waiting = Some(replace_waiting(&mut waiting, snap, &mut superseded)),
                    Err(e) => {
                        device_failure = Some(e);
                        return ControlFlow::Break(());
                    }
                }
            }
            if let Some(snap) = waiting.take()
                && let Err(std::sync::mpsc::TrySendError::Full(snap)) = tx.try_send(snap)
            {
                waiting = Some(snap);
            }
            if due {
                pause_s += t.elapsed().as_secs_f64();
            }
        }
        if interrupted.load(Ordering::Relaxed) {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    // The last steps queued on a device belong to the simulation time; copying its state back
    // (learned weights, for the outputs and a final checkpoint) is timed apart.
    let drained = sync_to_host(&mut sim.world, HostView::Recorded);
    if let Some(observer) = observer {
        // On a device backend the last steps' spikes reached the host only now.
        observer.run_ended(&mut sim.world);
    }
    let simulate_s = t0.elapsed().as_secs_f64();
    let t_copy = Instant::now();
    let synced = drained.and_then(|()| sync_to_host(&mut sim.world, HostView::Everything));
    let copy_back_s = t_copy.elapsed().as_secs_f64();
    if let Some(e) = device_failure.or(synced.err()) {
        bail!("the device failed at step {done}: {e}");
    }
    let outcome = if done == steps {
        Outcome::Finished
    } else if done == end_step && failure.is_none() {
        Outcome::Stopped
    } else {
        Outcome::Interrupted
    };

    // A final checkpoint wherever the run ends early (stop, signal, failed health check).
    let mut checkpoints_written = 0;
    if let Some((tx, handle)) = writer {
        if outcome != Outcome::Finished || ckpt_every.is_some() {
            let last = snapshot(&mut sim.world).map_err(anyhow::Error::msg)?;
            tx.send(replace_waiting(&mut waiting, last, &mut superseded)).ok();
        }
        drop(tx);
        checkpoints_written = handle.join().expect("the checkpoint writer does not panic")?;
    }
    if let Some(e) = failure {
        let hint = ckpt_dir.map(|d| format!("; the state is in the newest checkpoint in {}", d.display())).unwrap_or_default();
        bail!("{e}{hint}");
    }

    let t1 = Instant::now();
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
    let simulated_ms = done as f64 * dt;
    let rates_hz = model
        .spec
        .populations
        .iter()
        .zip(&recorder.spike_counts)
        .map(|(p, &n)| (p.name.clone(), n as f64 / (f64::from(p.size) * simulated_ms * 1e-3)))
        .collect();
    let spikes_total = recorder.spike_counts.iter().sum();
    let stdp_history_overflows = sim.world.resource::<fum_engine::components::StdpHistoryOverflows>().0;
    let write_s = t1.elapsed().as_secs_f64();
    let session_ms = (done - start_step) as f64 * dt;
    let mut report = RunReport {
        fum_version: env!("CARGO_PKG_VERSION"),
        model: model.path.display().to_string(),
        model_hash: format!("{:016x}", model.hash()),
        seed: model.spec.simulation.seed,
        dt_ms: dt,
        duration_ms: steps as f64 * dt,
        steps,
        start_step,
        end_step: done,
        outcome,
        backend: sim.world.resource::<Backend>().name,
        device: sim.world.resource::<Backend>().device.clone(),
        #[cfg(feature = "cuda")]
        gpu: sim.world.get_resource::<crate::systems::cuda::CudaRunner>().map(|r| r.stats()),
        #[cfg(not(feature = "cuda"))]
        gpu: None,
        threads: sim.threads(),
        network,
        timing: Timing {
            build_s,
            simulate_s,
            copy_back_s,
            write_s,
            total_s: 0.0,
            real_time_factor: simulate_s / (session_ms.max(dt) * 1e-3),
            checkpoint_pause_s: pause_s,
            checkpoints_written,
            checkpoints_superseded: superseded,
        },
        rates_hz,
        spikes_total,
        stdp_history_overflows,
        outputs,
    };
    report.timing.total_s = started.elapsed().as_secs_f64();
    if stdp_history_overflows > 0 {
        eprintln!("warning: {stdp_history_overflows} STDP pairings lost to full postsynaptic spike histories; raise post_history in [[plasticity]]");
    }
    if let Some(out) = &options.out {
        report.outputs.push("run.json".to_string());
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(out.join("run.json"), json).with_context(|| format!("cannot write {}", out.join("run.json").display()))?;
    }
    Ok(report)
}

/// `newer`, having taken over the snapshot still waiting for the writer, if any (counted).
fn replace_waiting(waiting: &mut Option<Snapshot>, newer: Snapshot, superseded: &mut u64) -> Snapshot {
    match waiting.take() {
        Some(older) => {
            *superseded += 1;
            newer.supersede(older)
        }
        None => newer,
    }
}
