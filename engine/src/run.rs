//! Headless runs: build (or resume from a checkpoint), put the network on its backend, simulate
//! with the duties of every step boundary (progress, device failure, health, observer,
//! checkpoints, signals: one hook each), write the outputs, report.
//!
//! The engine knows no backend: the entry points take a [`Chooser`] (`fum_systems::backend_for`)
//! that makes the one [`RunOptions::backend`] names.

mod checkpoints;
mod hooks;
mod progress;

pub use progress::{Phase, RunProgress, StructuralTotals};

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
use crate::recording::{MissingOutput, OutputError, Recorder, write_atomically};
use crate::report::{NetworkStats, Outcome, RunReport, StepTimes, Timing};
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
    /// RAM for the network, bytes: synapses beyond it are paged to disk (`crate::paging`).
    #[serde(default)]
    pub host_memory: Option<u64>,
    /// Folder of the spilled pages (default: `out`, else the system's temporary folder).
    #[serde(default)]
    pub spill_dir: Option<PathBuf>,
    /// Device memory for the network, bytes (default: the card's free memory); synapses beyond
    /// it stay in pinned host memory that the kernels read over the bus.
    #[serde(default)]
    pub device_memory: Option<u64>,
    /// Use an output folder that is not empty, removing the outputs of an earlier run there.
    #[serde(skip)]
    pub overwrite: bool,
    /// Time each stage of the step (`timing.stages_s`; costs about a microsecond per stage and
    /// step, so `fum bench` times its warm-up run only).
    #[serde(skip)]
    pub time_stages: bool,
    /// Sample the GPU through NVML during the simulation (`monitor` in run.json).
    #[serde(skip)]
    pub monitor: bool,
}

impl RunOptions {
    /// Threads and shards after applying the defaults (model file, then the machine).
    pub fn resolve(&self, model: &Model) -> (usize, usize) {
        let sim = &model.spec.simulation;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = [self.threads, sim.threads].into_iter().find(|&t| t > 0).unwrap_or(cores);
        let neurons = model.spec.populations.iter().map(|p| p.size).sum::<u32>();
        let shards = [self.shards, sim.shards].into_iter().find(|&s| s > 0).unwrap_or_else(|| crate::build::default_shards(neurons, threads * crate::ranks::rank_and_size().1));
        (threads, shards)
    }

    /// The output folder this process writes into: `out`, but across ranks rank 0's only
    /// (`crate::ranks`; the other ranks' checkpoints reach it through rank 0).
    pub fn written_out(&self) -> Option<&PathBuf> {
        self.out.as_ref().filter(|_| crate::ranks::writes())
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
    #[error("the output folder {} is not writable", path.display())]
    NotWritable { path: PathBuf, source: io::Error },
    #[error("the output folder {} is not empty (it holds {entries}): a run writes into an empty or new folder; pass --overwrite to replace an earlier run's outputs there", path.display())]
    NotEmpty { path: PathBuf, entries: String },
    #[error("{} mixes runs: {file} belongs to run {other}, the newest checkpoint to run {run}; move one run's files to another folder", dir.display())]
    MixedRuns { dir: PathBuf, file: String, other: String, run: String },
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
    Paging(#[from] crate::paging::PagingError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("cannot write {}", path.display())]
    Report { path: PathBuf, source: io::Error },
    /// What a run of several processes cannot do yet (`crate::ranks`).
    #[error("{0} is not supported yet in a run of several processes (mpirun -np > 1)")]
    Ranks(String),
}

/// The files and folders fum writes in an output folder; `--overwrite` removes these only.
const OUTPUT_FILES: [&str; 3] = ["run.json", "spikes.h5", "probes.h5"];
const OUTPUT_FOLDERS: [&str; 2] = ["checkpoints", "recording"];

/// Makes `out` the output folder of a new run, before anything is built: created if need be;
/// one that holds anything is refused unless `overwrite`, which removes what fum wrote there
/// (and nothing else); and it must be writable.
pub fn prepare_output(out: &Path, overwrite: bool) -> Result<(), RunError> {
    std::fs::create_dir_all(out).map_err(|source| RunError::OutputFolder { path: out.to_path_buf(), source })?;
    // The steering token of this very run (`fum run --serve --out`) may be there already.
    let mut entries: Vec<String> = std::fs::read_dir(out)
        .map_err(|source| RunError::NotWritable { path: out.to_path_buf(), source })?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name != crate::serve::TOKEN_FILE)
        .collect();
    if !entries.is_empty() && !overwrite {
        entries.sort();
        let more = entries.len().saturating_sub(5);
        let mut listed = entries.into_iter().take(5).collect::<Vec<_>>().join(", ");
        if more > 0 {
            listed += &format!(" and {more} more");
        }
        return Err(RunError::NotEmpty { path: out.to_path_buf(), entries: listed });
    }
    if overwrite {
        remove_outputs(out).map_err(|source| RunError::NotWritable { path: out.to_path_buf(), source })?;
    }
    check_writable(out)
}

/// Removes an earlier run's outputs from `out`: the files fum names, and in its folders the
/// files fum names (the folders too once empty). A link is removed, never followed.
fn remove_outputs(out: &Path) -> io::Result<()> {
    let ours = |name: &str| OUTPUT_FILES.iter().any(|f| name == *f || name == format!(".{f}.tmp"));
    let in_folder = |name: &str| name.starts_with("ckpt-") || name.ends_with(".bin") || name.ends_with(".idx") || name.ends_with(".tmp");
    let remove = |path: &Path| match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    };
    for entry in std::fs::read_dir(out)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if ours(&name) {
            remove(&entry.path())?;
        } else if OUTPUT_FOLDERS.contains(&name.as_str()) {
            if !entry.file_type()?.is_dir() {
                remove(&entry.path())?;
                continue;
            }
            for inner in std::fs::read_dir(entry.path())? {
                let inner = inner?;
                if in_folder(&inner.file_name().to_string_lossy()) && !inner.file_type()?.is_dir() {
                    remove(&inner.path())?;
                }
            }
            let _ = std::fs::remove_dir(entry.path());
        }
    }
    Ok(())
}

/// Fails at once where the outputs could not be written at the end: creates and removes a file.
fn check_writable(dir: &Path) -> Result<(), RunError> {
    let probe = dir.join(format!(".fum-write-test-{}", std::process::id()));
    let written = std::fs::File::create(&probe).and_then(|mut f| io::Write::write_all(&mut f, b"fum")).and_then(|()| std::fs::remove_file(&probe));
    written.map_err(|source| RunError::NotWritable { path: dir.to_path_buf(), source })
}

/// Which run a session continues, and the output its earlier sessions lost.
struct Session {
    run_id: u64,
    missing: Vec<MissingOutput>,
}

/// Set by SIGINT/SIGTERM (see the CLI); checked at every step boundary.
pub fn interrupt_flag() -> Arc<AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false))).clone()
}

/// Builds and runs `model` from its start on the backend `choose` makes. `progress` is called
/// every 100 steps and at the end (see [`RunProgress`]).
pub fn run(model: &Model, options: &RunOptions, choose: Chooser, progress: impl Fn(&RunProgress) + Send + Sync) -> Result<RunReport, RunError> {
    run_observed(model, options, choose, None, progress)
}

/// [`run`] watched and steered through `observer` (see [`crate::observe`]), which is called at
/// every step boundary and may write checkpoints into the output folder on request.
pub fn run_observed(model: &Model, options: &RunOptions, choose: Chooser, observer: Option<&mut Observer>, progress: impl Fn(&RunProgress) + Send + Sync) -> Result<RunReport, RunError> {
    run_keeping(model, options, choose, observer, progress).map(|(report, _)| report)
}

/// [`run_observed`], handing back the simulation as the run left it, its state on the host:
/// the recorded spikes and probes ([`Recorder`]) and the learned weights, for callers that read
/// them in memory (the Python package) rather than from the output folder.
pub fn run_keeping(model: &Model, options: &RunOptions, choose: Chooser, observer: Option<&mut Observer>, progress: impl Fn(&RunProgress) + Send + Sync) -> Result<(RunReport, Simulation), RunError> {
    let started = Instant::now();
    let mut sim = build_network(model, options, choose, observer.is_some(), &progress)?;
    let session = Session { run_id: crate::random_u64(), missing: Vec::new() };
    if let Some(out) = options.written_out() {
        // Recorded output moves to logs under OUT/recording at each checkpoint.
        let mut recorder = sim.world.resource_mut::<Recorder>();
        (recorder.log_dir, recorder.run_id) = (Some(out.join("recording")), session.run_id);
    }
    execute(model, options, sim, started, progress, observer, session)
}

/// Builds `model` and puts it on the backend `choose` makes, without running a step, for
/// callers that run a network in several calls ([`run_built`]; the Python package's
/// `Simulation`). Nothing is written: `options.out`, checkpoints and `stop_after_ms` are not
/// used. `progress` hears the build's phases ([`Phase`]).
pub fn build(model: &Model, options: &RunOptions, choose: Chooser, progress: impl Fn(&RunProgress) + Sync) -> Result<Simulation, RunError> {
    let options = RunOptions { out: None, checkpoint_every_ms: None, stop_after_ms: None, ..options.clone() };
    build_network(model, &options, choose, false, &progress)
}

/// Runs a simulation that [`build`] made (or that [`run_keeping`], [`resume_keeping`] or this
/// handed back) from the step its clock is at to `model`'s duration, which the caller sets to
/// where this call is to end. Stepping on from where the last call stopped takes the steps one
/// run of the whole duration takes, so two calls give the spikes of one, bit for bit. What is
/// recorded accumulates in the simulation's [`Recorder`], and the report's rates and spike
/// totals count from step 0; its `timing.build_s` is what came before the first step here
/// (measuring the network), not [`build`]'s time. Nothing is written (`options.out` and
/// checkpoints are not used). A run that fails (a device error, a failed health check) drops
/// the simulation.
pub fn run_built(model: &Model, options: &RunOptions, sim: Simulation, progress: impl Fn(&RunProgress) + Send + Sync) -> Result<(RunReport, Simulation), RunError> {
    let options = RunOptions { out: None, checkpoint_every_ms: None, stop_after_ms: None, ..options.clone() };
    let session = Session { run_id: crate::random_u64(), missing: Vec::new() };
    execute(model, &options, sim, Instant::now(), progress, None, session)
}

/// What a run does before its first step: refuse what this machine or these ranks cannot run,
/// prepare the output folder, build the network and put it on its backend, telling `progress`.
fn build_network(model: &Model, options: &RunOptions, choose: Chooser, observed: bool, progress: &(impl Fn(&RunProgress) + Sync)) -> Result<Simulation, RunError> {
    if crate::ranks::transport().is_some() {
        refuse_across_ranks(options, observed)?;
    }
    let (threads, asked) = options.resolve(model);
    let chosen = options.shards > 0 || model.spec.simulation.shards > 0;
    let shards = options.host_memory.map_or(asked, |host_bytes| crate::paging::shards_for_building(model, threads, asked, host_bytes, chosen));
    // Threads and memory this machine cannot give are refused before anything is built.
    let estimate = crate::estimate::check(model, threads, shards, options.host_memory)?;
    // Chosen before building, so that a backend that cannot run here fails at once (and
    // writes nothing).
    let backend = choose(options.backend)?;
    // A network larger than --host-memory is paged while it is built (`crate::paging`).
    let spill = match options.host_memory {
        Some(host_bytes) => crate::paging::BuildSpill::plan(model, &estimate, &tier_options(options, host_bytes, backend.name()))?,
        None => None,
    };
    if shards != asked {
        eprintln!("building in {shards} shards instead of {asked}, so that the blocks being built fit beside --host-memory");
    }
    if let Some(out) = options.written_out() {
        prepare_output(out, options.overwrite)?;
    }
    progress(&RunProgress { phase: building(&estimate, shards, 0), ..RunProgress::default() });
    let built = |built| progress(&RunProgress { phase: building(&estimate, shards, built), ..RunProgress::default() });
    let mut sim = Simulation::from_model_spilled(model, threads, &crate::build::cut(model, shards), spill, &built)?;
    limit_device_memory(&mut sim, options);
    page_on_device(&mut sim, options, backend.name(), model.spec.simulation.dt_ms);
    progress(&RunProgress { phase: Phase::Placing { backend: backend.name() }, ..RunProgress::default() });
    sim.install(backend)?;
    records_here(&mut sim);
    Ok(sim)
}

/// The build phase of a network `fum check` estimated, cut into `shards` shards, `built` of
/// them built.
fn building(estimate: &crate::estimate::Estimate, shards: usize, built: usize) -> Phase {
    Phase::Building { neurons: estimate.neurons, synapses: estimate.synapses.round() as u64, bytes: estimate.network_bytes.round() as u64, shards, built }
}

/// Across ranks only rank 0 records spike trains (every rank has all spikes; rank 0 writes
/// them); the others keep the counts the health checks read.
fn records_here(sim: &mut Simulation) {
    if !crate::ranks::writes() {
        sim.world.resource_mut::<Recorder>().spikes.clear();
    }
}

/// What a run of several ranks cannot do yet: each rank holds only its shards' state, so
/// paging and viewers would need the ranks' parts gathered or agreed on, and a GPU holds
/// contiguous shards only. `auto` could choose differently on different ranks.
fn refuse_across_ranks(options: &RunOptions, observed: bool) -> Result<(), RunError> {
    let refused = [
        (options.host_memory.is_some(), "--host-memory"),
        (options.backend == BackendChoice::Auto, "--backend auto (choose cpu or cuda: every rank runs the same)"),
        (options.backend == BackendChoice::Cuda && crate::partition::method() == crate::partition::Method::Metis, "--partition metis on GPUs (a GPU holds a contiguous range of shards)"),
        (observed, "watching a run (--serve, fum view)"),
    ];
    match refused.into_iter().find(|(yes, _)| *yes) {
        Some((_, what)) => Err(RunError::Ranks(what.into())),
        None => Ok(()),
    }
}

/// Continues the run in `dir` from its newest valid checkpoint, reporting on stderr any newer
/// one that is corrupt or partial. `threads` and `backend` may differ from the original run's.
pub fn resume(dir: &Path, threads: usize, backend: Option<BackendChoice>, choose: Chooser, progress: impl Fn(&RunProgress) + Send + Sync) -> Result<RunReport, RunError> {
    resume_keeping(dir, threads, backend, choose, progress).map(|(report, _, _)| report)
}

/// [`resume`], handing back the simulation as the run left it (see [`run_keeping`]) and the
/// model it ran: the checkpoint's, with the run's duration and seed overrides applied.
pub fn resume_keeping(dir: &Path, threads: usize, backend: Option<BackendChoice>, choose: Chooser, progress: impl Fn(&RunProgress) + Send + Sync) -> Result<(RunReport, Simulation, Model), RunError> {
    let started = Instant::now();
    let ckpt_dir = dir.join("checkpoints");
    let candidates = checkpoint::list(&ckpt_dir);
    if candidates.is_empty() {
        return Err(RunError::NoCheckpoints(ckpt_dir));
    }
    if crate::ranks::writes() {
        check_writable(dir)?;
    }
    // The run to continue is the newest checkpoint's: older checkpoints of another run are
    // skipped, and outputs or logs of another run refuse the folder.
    let mut run_id = None;
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
        let id = ckpt.header.run_id().unwrap_or(0);
        match run_id {
            None => {
                if crate::ranks::writes() {
                    check_one_run(dir, id)?;
                }
                run_id = Some(id);
            }
            Some(run) if run != id => {
                eprintln!("skipping checkpoint {}: it belongs to run {id:016x}, the newer checkpoints to run {run:016x}", path.display());
                continue;
            }
            Some(_) => {}
        }
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
        if crate::ranks::transport().is_some() {
            refuse_across_ranks(&options, false)?;
        }
        let Some(ranges) = ckpt.header.cut(model.spec.populations.iter().map(|p| p.size).sum()) else {
            eprintln!("skipping checkpoint {}: its shard cut does not fit the model's {} shards", path.display(), ckpt.header.shards);
            continue;
        };
        let estimate = crate::estimate::Estimate::of(&model, threads, ckpt.header.shards);
        let building = |built| RunProgress { phase: building(&estimate, ckpt.header.shards, built), done: ckpt.header.step, ..RunProgress::default() };
        progress(&building(0));
        let backend = choose(options.backend)?;
        // A network larger than --host-memory is paged while it is built, and the checkpoint's
        // weights are streamed into its pages (`Checkpoint::restore`).
        let spill = match options.host_memory {
            Some(host_bytes) => crate::paging::BuildSpill::plan(&model, &estimate, &tier_options(&options, host_bytes, backend.name()))?,
            None => None,
        };
        let mut sim = Simulation::from_model_spilled(&model, threads, &ranges, spill, &|built| progress(&building(built)))?;
        records_here(&mut sim);
        let mut recorder = sim.world.resource_mut::<Recorder>();
        (recorder.log_dir, recorder.run_id) = (crate::ranks::writes().then(|| dir.join("recording")), id);
        let lost = match ckpt.restore(&mut sim.world, model.hash()) {
            Ok(lost) => lost,
            Err(e) => {
                eprintln!("skipping checkpoint: {e}");
                continue;
            }
        };
        for m in &lost {
            eprintln!("warning: {m}; the run goes on without it");
        }
        let mut missing: Vec<MissingOutput> = ckpt.header.run.get("missing_output").and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default();
        missing.extend(lost);
        limit_device_memory(&mut sim, &options);
        page_on_device(&mut sim, &options, backend.name(), model.spec.simulation.dt_ms);
        progress(&RunProgress { phase: Phase::Placing { backend: backend.name() }, done: ckpt.header.step, ..RunProgress::default() });
        sim.install(backend)?;
        if crate::ranks::writes() {
            eprintln!("resuming from {} (step {})", path.display(), ckpt.header.step);
        }
        let (report, sim) = execute(&model, &options, sim, started, progress, None, Session { run_id: id, missing })?;
        return Ok((report, sim, model));
    }
    Err(RunError::NoValidCheckpoint(ckpt_dir))
}

/// Tells a device backend the run's `--device-memory`, before it places the network.
fn limit_device_memory(sim: &mut Simulation, options: &RunOptions) {
    if let Some(bytes) = options.device_memory {
        sim.world.insert_resource(crate::backend::DeviceMemoryLimit(bytes));
    }
}

/// Tells a device backend the run's `--host-memory`, for it to start paging as it places the
/// network (`crate::paging::DeviceHostBudget`).
fn page_on_device(sim: &mut Simulation, options: &RunOptions, backend: &str, dt_ms: f64) {
    if let Some(host_bytes) = options.host_memory.filter(|_| backend != "cpu") {
        sim.world.insert_resource(crate::paging::DeviceHostBudget { options: tier_options(options, host_bytes, backend), dt_ms });
    }
}

/// Pages the synapses that do not fit in `host_bytes` (`--host-memory`) to disk, saying so
/// (unless a device backend did while placing the network).
fn start_paging(sim: &mut Simulation, options: &RunOptions, host_bytes: u64, dt_ms: f64) -> Result<(), RunError> {
    if sim.world.contains_resource::<crate::paging::HostTier>() {
        return Ok(());
    }
    let backend = crate::backend::installed(&sim.world).map_or("cpu", |b| b.name());
    if let Some(line) = crate::paging::enable(&mut sim.world, &tier_options(options, host_bytes, backend), dt_ms)? {
        eprintln!("{line}");
    }
    Ok(())
}

/// The host tier a run on `backend` asks for: `--host-memory` bytes, pages spilled to
/// `--spill-dir` (default the output folder, else the system's temporary folder).
fn tier_options(options: &RunOptions, host_bytes: u64, backend: &str) -> crate::paging::TierOptions {
    let spill_dir = options.spill_dir.clone().or_else(|| options.out.clone()).unwrap_or_else(std::env::temp_dir);
    crate::paging::TierOptions { host_bytes, spill_dir, page_bytes: crate::paging::PAGE_BYTES, device: backend != "cpu" }
}

/// Starts sampling the run's GPU every 100 ms (NVML's queries take ~5 ms), or says on stderr
/// why not; the run goes on either way.
fn start_monitor(world: &bevy_ecs::world::World) -> Option<crate::monitor::Monitor> {
    if crate::backend::installed(world).is_some_and(|b| b.name() == "cpu") {
        eprintln!("warning: --monitor samples a GPU; this run is on the cpu backend, so there is nothing to monitor");
        return None;
    }
    crate::monitor::Monitor::start(0, std::time::Duration::from_millis(100)).map_err(|e| eprintln!("warning: --monitor: {e}; the run goes on without it")).ok()
}

/// Refuses a folder where run.json or a recording log belongs to another run than `run_id`.
fn check_one_run(dir: &Path, run_id: u64) -> Result<(), RunError> {
    let mixed = |file: String, other: u64| RunError::MixedRuns { dir: dir.to_path_buf(), file, other: format!("{other:016x}"), run: format!("{run_id:016x}") };
    let report: Option<serde_json::Value> = std::fs::read(dir.join("run.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
    if let Some(other) = report.as_ref().and_then(|r| r.get("run_id")?.as_str()).and_then(|hex| u64::from_str_radix(hex, 16).ok()).filter(|&other| other != run_id) {
        return Err(mixed("run.json".into(), other));
    }
    for log in std::fs::read_dir(dir.join("recording")).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "bin")) {
        if let Some(other) = crate::recording::log_run_id(&log).filter(|&other| other != run_id) {
            return Err(mixed(format!("recording/{}", log.file_name().unwrap_or_default().to_string_lossy()), other));
        }
    }
    Ok(())
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

/// Across ranks, spikes are exchanged once per epoch (`components::Epochs`): on CPUs of half the
/// network's shortest delay, each beside the next epoch; on GPUs of the whole shortest delay,
/// each replayed at its end (fum_systems::cuda, `EpochRun`), so that a spike is delivered at
/// most `length - 1` steps late, into ring slots still ahead.
fn epochs(model: &Model, sim: &Simulation, span: &Span) -> Option<crate::components::Epochs> {
    let spec = &model.spec;
    let shortest = spec.projections.iter().map(|p| u64::from(crate::build::delay_range_steps(p.delay_ms, spec.simulation.dt_ms).0)).min()?;
    let weight_probe_every = sim.world.get_resource::<crate::recording::Recorder>().map_or(Vec::new(), |r| r.probes.iter().filter(|p| p.variable == crate::model::ProbeVariable::Weight).map(|p| p.interval_steps).collect());
    let structural = sim.world.get_resource::<crate::structural::Structural>().map_or(Vec::new(), |s| s.schedules.clone());
    crate::ranks::transport()?;
    let mut epochs = crate::components::Epochs::for_delay(shortest, span.checkpoint_every, span.end_step, weight_probe_every, structural)?;
    if crate::backend::installed(&sim.world).is_some_and(|b| b.name() != "cpu") {
        epochs.length = shortest;
    }
    Some(epochs)
}

/// Build (done by the caller) -> hooks -> loop -> outputs.
fn execute(model: &Model, options: &RunOptions, mut sim: Simulation, started: Instant, progress: impl Fn(&RunProgress) + Send + Sync, mut observer: Option<&mut Observer>, session: Session) -> Result<(RunReport, Simulation), RunError> {
    let mut network = NetworkStats::measure(&mut sim.world);
    let mut partition = None;
    let span = Span::new(model, options, &sim);
    if let Some(epochs) = epochs(model, &sim, &span) {
        sim.world.resource_mut::<crate::components::SpikeExchange>().epochs = Some(epochs);
    }
    let cpu = crate::backend::installed(&sim.world).is_none_or(|b| b.name() == "cpu");
    if crate::routing::choice() != crate::routing::Choice::Auto && !(cpu && crate::ranks::transport().is_some()) && crate::ranks::writes() {
        eprintln!("warning: --exchange chooses how CPU ranks (mpirun) exchange spikes: it changes nothing in this run (one process, or GPUs, which all-gather their spikes as bits)");
    }
    if let Some(transport) = crate::ranks::transport() {
        network.sum_over_ranks(transport, model.spec.projections.len());
        // CPU ranks send each spike where it is read, where that pays (GPUs gather bits).
        let mut fraction = 1.0;
        if cpu {
            let routing = crate::routing::Routes::build(&mut sim.world, transport);
            fraction = routing.fraction;
            let mut exchange = sim.world.resource_mut::<crate::components::SpikeExchange>();
            (exchange.outbox, exchange.outbox_counts) = (vec![Vec::new(); transport.size()], vec![Vec::new(); transport.size()]);
            exchange.routes = routing.routes;
        }
        partition = crate::report::PartitionReport::gather(&mut sim.world, transport, fraction);
    }
    if let Some(host_bytes) = options.host_memory {
        start_paging(&mut sim, options, host_bytes, model.spec.simulation.dt_ms)?;
    }
    if options.device_memory.is_some() && crate::backend::installed(&sim.world).is_some_and(|b| b.name() == "cpu") {
        eprintln!("warning: --device-memory limits a GPU's memory; this run is on the cpu backend (--host-memory limits its RAM)");
    }
    let (build_s, built_rss) = (started.elapsed().as_secs_f64(), crate::report::peak_rss_bytes());
    if options.time_stages {
        sim.time_stages();
    }
    let ckpt_dir = options.out.as_ref().map(|o| o.join("checkpoints"));
    if let Some(dir) = &ckpt_dir {
        let keep = if options.keep_checkpoints == 0 { 3 } else { options.keep_checkpoints };
        let mut settings = serde_json::to_value(options)?;
        settings["model_path"] = model.path.display().to_string().into();
        settings["run_id"] = format!("{:016x}", session.run_id).into();
        settings["missing_output"] = serde_json::to_value(&session.missing)?;
        sim.world.insert_resource(Checkpoints::start(dir.clone(), keep, span.checkpoint_every, span.end_step, model, session.run_id, settings));
    }

    // A run started paused shows its first step to the viewer before anything runs.
    let mut stop = observer.as_deref_mut().and_then(|o| Observed(o).before_first_step(&mut sim.world, span.start_step).break_value());
    let paused_before = observer.as_ref().map_or(0.0, |o| o.paused_s());
    if interrupt_flag().load(Ordering::Relaxed) && crate::ranks::transport().is_none() {
        // Signalled while building (or while paused before the first step): no step runs.
        // (Ranks agree on a signal in the first step's exchange.)
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

    let monitor = options.monitor.then(|| start_monitor(&sim.world)).flatten();
    let t0 = Instant::now();
    let end_step = if stop.is_some() { span.start_step } else { span.end_step };
    // Each step's wall time: from the end of the duties before it to the start of those after
    // it (its start-of-step hooks and systems; a checkpoint's pause and a viewer's are not in
    // it). Nanoseconds, 3 significant digits, up to an hour.
    let mut steps = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds");
    let mut step_began = Instant::now();
    // And the loop's wall time (steps and duties) along the run.
    let mut timeline = crate::report::Timeline::new(model.spec.simulation.dt_ms);
    let mut stretch_began = t0;
    let done = sim.run_until(end_step, |world, done| {
        steps.saturating_record(step_began.elapsed().as_nanos() as u64);
        let duties = hooks.iter_mut().try_for_each(|hook| hook.between_steps(world, done)).map_break(|s| stop = Some(s));
        step_began = Instant::now();
        timeline.add(done - 1 - span.start_step, (step_began - stretch_began).as_secs_f64());
        stretch_began = step_began;
        duties
    });
    drop(hooks);
    // A rank whose device failed cannot meet the others at their next collective (draining
    // gathers the probes of the queued steps): it ends them all, as a failed health check does.
    if let (Some(Stop::Device(e)), Some(transport)) = (&stop, crate::ranks::transport()) {
        eprintln!("error: rank {}: {}; ending every rank", transport.rank(), RunError::Device { step: done, error: e.clone() });
        transport.abort(3);
    }
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
    let monitored = monitor.map(crate::monitor::Monitor::finish);
    let t_copy = Instant::now();
    let synced = drained.and_then(|()| sync_to_host(&mut sim.world, HostView::Everything));
    let copy_back_s = t_copy.elapsed().as_secs_f64();
    let (device_failure, unhealthy) = match stop {
        Some(Stop::Device(e)) => (Some(e), None),
        Some(Stop::Unhealthy(e)) => (None, Some(e)),
        Some(Stop::Interrupted) | None => (None, None),
    };
    // A rank whose own shards failed cannot stop the others at a step boundary: it ends them all.
    if let (Some(e), Some(transport)) = (&unhealthy, crate::ranks::transport()) {
        eprintln!("error: rank {}: {e}; ending every rank", transport.rank());
        transport.abort(3);
    }
    if let Some(error) = device_failure.or(synced.err()) {
        return Err(RunError::Device { step: done, error });
    }
    let outcome = if unhealthy.is_some() {
        Outcome::Failed
    } else if done == span.steps {
        Outcome::Finished
    } else if done == span.end_step {
        Outcome::Stopped
    } else {
        Outcome::Interrupted
    };
    // A final checkpoint wherever the run ends early (stop, signal, failed health check).
    let checkpoints = match sim.world.remove_resource::<Checkpoints>() {
        Some(writer) => writer.finish(&mut sim.world, outcome != Outcome::Finished || span.checkpoint_every.is_some())?,
        None => CheckpointTotals::default(),
    };
    // A failed health check ends the run with the outputs so far, then the error.
    let failure = unhealthy.map(|error| {
        let hint = options.out.as_ref().map(|out| format!("; the outputs up to step {done} and the state (newest checkpoint) are in {}", out.display())).unwrap_or_default();
        RunError::Unhealthy { error, hint }
    });

    let exchange = sim.world.get_resource::<crate::components::SpikeExchange>();
    let bytes = exchange.map_or([0; 2], |e| [e.bytes_sent, e.bytes_received]);
    // Timed CPU ranks wait at a barrier before each exchange; a GPU's exchange is in its graph.
    let cpu = crate::backend::installed(&sim.world).is_none_or(|b| b.name() == "cpu");
    let wait_s = exchange.map(|e| e.wait_s).filter(|_| cpu && options.time_stages);
    let ranks = crate::ranks::transport().and_then(|t| crate::report::RankTiming::gather(t, simulate_s, bytes, wait_s, sim.world.get_resource::<crate::StageTimes>()));
    // What each rank counted of its own shards, summed for the report (collectives, in order).
    let summed = crate::ranks::transport().map(|transport| {
        let structural = sim.world.get_resource::<crate::structural::StructuralReport>().cloned().map(|mut r| {
            r.sum_over_ranks(transport);
            r
        });
        let mut lost = [sim.world.resource::<crate::components::StdpHistoryOverflows>().0];
        transport.sum(&mut lost);
        (structural, lost[0])
    });
    let t1 = Instant::now();
    let outputs = write_outputs(model, options, &sim, outcome)?;
    let mut report = RunReport::new(model, &sim, span.start_step..done, outcome, network, outputs);
    report.run_id = format!("{:016x}", session.run_id);
    report.partition = partition;
    report.host_peak_rss_built_bytes = built_rss;
    if let Some((structural, lost)) = summed {
        (report.structural, report.stdp_history_overflows) = (structural, lost);
    }
    report.error = failure.as_ref().map(ToString::to_string);
    report.missing_output = session.missing;
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
        synaptic_events_per_s: report.synaptic_events as f64 * (done - span.start_step) as f64 / done.max(1) as f64 / simulate_s.max(1e-9),
        step_us: StepTimes::of(&steps),
        timeline,
        stages_s: sim.world.get_resource::<crate::StageTimes>().map(crate::StageTimes::by_name),
        ranks,
    };
    if let Some(host) = report.storage.get_mut("host") {
        host.bytes_moved_per_s = (host.moved.bytes_in + host.moved.bytes_out) as f64 / simulate_s.max(1e-9);
    }
    if let Some(m) = monitored {
        let session_events = report.timing.synaptic_events_per_s * simulate_s;
        report.energy_per_synaptic_event_j = m.energy_j.filter(|_| session_events >= 1.0).map(|j| j / session_events);
        report.monitor = Some(m);
    }
    if report.stdp_history_overflows > 0 {
        eprintln!("warning: {} STDP pairings lost to full postsynaptic spike histories; raise post_history in [[plasticity]]", report.stdp_history_overflows);
    }
    if let Some(out) = options.written_out() {
        report.outputs.push("run.json".to_string());
        let json = serde_json::to_string_pretty(&report)?;
        let path = out.join("run.json");
        let error = |source| RunError::Report { path: path.clone(), source };
        write_atomically(&path, |tmp| std::fs::write(tmp, &json).map_err(error), error)?;
    }
    match failure {
        Some(e) => Err(e),
        None => Ok((report, sim)),
    }
}

/// Writes the recorded spikes and probes under the output folder, unless the run stopped to be
/// resumed; their file names.
fn write_outputs(model: &Model, options: &RunOptions, sim: &Simulation, outcome: Outcome) -> Result<Vec<String>, RunError> {
    let recorder = sim.world.resource::<Recorder>();
    let mut outputs = Vec::new();
    if let Some(out) = options.written_out().filter(|_| outcome != Outcome::Stopped) {
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
