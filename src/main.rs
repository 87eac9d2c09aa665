//! The `fum` command line: `fum run` (headless batch run), `fum view` (live viewer),
//! `fum check` (validate a model) and `fum bench` (the benchmark suite).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fum::Model;
use fum::engine::estimate::bytes;
use fum::engine::{observe, serve};
use fum::run::{BackendChoice, Outcome, Phase, RunError, RunOptions, RunProgress, RunReport, resume, run_observed};

fum::engine::use_jemalloc!();

/// Exit status of a run stopped by SIGINT/SIGTERM after writing a checkpoint and the outputs.
const EXIT_INTERRUPTED: u8 = 3;
/// Exit status after a second SIGINT/SIGTERM (no checkpoint).
const EXIT_ABORTED: i32 = 130;

#[derive(Parser)]
#[command(name = "fum", version, about = "Simulate large spiking neural networks (LIF neurons, STDP)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build and run a model, writing spikes (SONATA HDF5), probes and run.json under --out.
    Run {
        /// Model file (TOML).
        #[arg(required_unless_present = "sonata")]
        model: Option<PathBuf>,
        /// Run a SONATA circuit instead: its circuit_config.json (or a simulation config, or a
        /// config naming both); duration and dt from the simulation config's run.tstop and
        /// run.dt (docs/sonata.md).
        #[arg(long, value_name = "CONFIG", conflicts_with = "model")]
        sonata: Option<PathBuf>,
        #[command(flatten)]
        sim: SimArgs,
        /// Write a checkpoint every this much biological time (e.g. 500ms), under OUT/checkpoints.
        #[arg(long, value_parser = parse_duration_ms, allow_hyphen_values = true, requires = "out")]
        checkpoint_every: Option<f64>,
        /// Checkpoints to keep (at least 1: a run resumes from the newest).
        #[arg(long, default_value_t = 3, value_parser = parse_keep)]
        keep_checkpoints: usize,
        /// Stop after this much biological time with a checkpoint; `fum resume OUT` continues.
        #[arg(long, value_parser = parse_duration_ms, allow_hyphen_values = true, requires = "out")]
        stop_after: Option<f64>,
        /// Largest population rate the health monitor accepts, Hz.
        #[arg(long, value_parser = parse_rate_hz, allow_hyphen_values = true)]
        max_rate_hz: Option<f64>,
        /// No progress bar and no summary.
        #[arg(long)]
        quiet: bool,
        /// Serve the run to viewers (`fum view --attach`) on this address: PORT (loopback) or
        /// HOST:PORT. Prints the token that steering needs.
        #[arg(long, value_name = "ADDR")]
        serve: Option<String>,
        /// Sample the GPU's power, energy, utilisation, memory, temperature and clock every
        /// 100 ms through NVML (run.json's `monitor` and `energy_per_synaptic_event_j`).
        #[arg(long)]
        monitor: bool,
        /// Time each stage of the step (run.json's `timing.stages_s`; about 1 us per stage and
        /// step more).
        #[arg(long)]
        time_stages: bool,
        /// Across ranks (mpirun): how the shards are split among them: contiguous (ranges of
        /// equal cost) or metis (METIS groups the shards that share the most synapses).
        #[arg(long, value_name = "METHOD", default_value = "contiguous")]
        partition: fum::engine::partition::Method,
        /// Across CPU ranks: how spikes travel: auto (routed where that carries less than 90 %
        /// of the all-gather's messages), all-gather (every spike to every rank) or routed
        /// (each spike to the ranks that read it, and to rank 0).
        #[arg(long, value_name = "HOW", default_value = "auto")]
        exchange: fum::engine::routing::Choice,
    },
    /// Watch and steer a simulation live: run MODEL in this process, or attach to a run
    /// started with `fum run --serve`.
    #[cfg(feature = "viewer")]
    View {
        /// Model file (TOML) to simulate in this process.
        #[arg(required_unless_present = "attach")]
        model: Option<PathBuf>,
        /// Attach to a served run at ADDR (PORT or HOST:PORT) instead.
        #[arg(long, value_name = "ADDR", conflicts_with = "model")]
        attach: Option<String>,
        /// The token `fum run --serve` printed; without it an attached viewer only watches.
        /// Visible to other users in the process list: prefer --token-file or FUM_TOKEN.
        #[arg(long, requires = "attach")]
        token: Option<String>,
        /// Read the token from this file (e.g. OUT/serve-token, which `fum run --serve --out
        /// OUT` writes); without --token or --token-file, the token is taken from FUM_TOKEN.
        #[arg(long, value_name = "PATH", requires = "attach", conflicts_with = "token")]
        token_file: Option<PathBuf>,
        /// As `fum run`'s; the raster PNGs the window saves go into --out too (else the working
        /// folder).
        #[command(flatten)]
        sim: SimArgs,
        /// Start paused, at step 0.
        #[arg(long)]
        paused: bool,
        /// Pace: wall time per biological time (1: real time, 2: half speed), or `max`.
        #[arg(long, value_name = "FACTOR", default_value = "1", value_parser = parse_speed)]
        real_time_factor: observe::Speed,
        /// Trace the membrane potential of these neurons (global ids, e.g. 0,10,3300) from the start.
        #[arg(long, value_delimiter = ',')]
        watch: Vec<u32>,
        /// Frames per second the window aims at.
        #[arg(long, default_value_t = 60.0)]
        fps: f64,
        /// Close the window after this many seconds and print the frames drawn per second.
        #[arg(long, value_name = "SECONDS")]
        exit_after: Option<f64>,
    },
    /// Continue a run from its newest valid checkpoint (after a crash, kill, --stop-after or Ctrl-C).
    Resume {
        /// The run's output folder.
        dir: PathBuf,
        /// Worker threads (default: as the original run).
        #[arg(long, default_value_t = 0, value_parser = parse_threads)]
        threads: usize,
        /// Backend to continue on (default: as the original run); checkpoints are the same on both.
        #[arg(long, value_enum)]
        backend: Option<BackendArg>,
        /// Across ranks (mpirun): how the shards are split among them: contiguous (ranges of
        /// equal cost) or metis (METIS groups the shards that share the most synapses).
        #[arg(long, value_name = "METHOD", default_value = "contiguous")]
        partition: fum::engine::partition::Method,
        /// Across CPU ranks: auto, all-gather or routed (as `fum run --exchange`).
        #[arg(long, value_name = "HOW", default_value = "auto")]
        exchange: fum::engine::routing::Choice,
        #[arg(long)]
        quiet: bool,
    },
    /// List the backends this machine offers: CPU cores and each CUDA GPU.
    Info {
        /// Also measure each GPU's device-to-device copy bandwidth (2 x 1 GiB buffers).
        #[arg(long)]
        bandwidth: bool,
    },
    /// Describe a checkpoint: model hash, step, sections, checksum status.
    Inspect {
        checkpoint: PathBuf,
    },
    /// Write a model as a SONATA circuit (nodes and edges HDF5, type tables, NEST parameters,
    /// circuit and simulation configs) with the synapses it builds for its seed, for BMTK or
    /// NEST; `fum run --sonata DIR/simulation_config.json` gives the model's spikes again.
    Export {
        /// Model file (TOML).
        model: PathBuf,
        /// The folder to write the circuit into.
        #[arg(long, value_name = "DIR")]
        sonata: PathBuf,
    },
    /// Validate a model file (or a SONATA circuit) and print its size.
    Check {
        #[arg(required_unless_present = "sonata")]
        model: Option<PathBuf>,
        /// Check a SONATA circuit instead (circuit_config.json or a config naming it).
        #[arg(long, value_name = "CONFIG", conflicts_with = "model")]
        sonata: Option<PathBuf>,
    },
    /// Run the benchmark suite: each case once to warm up, then --repeat times; prints a table
    /// and writes OUT/bench-<date>.json. Exits with 4 if a case ran 15 % or more slower than in
    /// --baseline (a major or critical regression).
    Bench {
        /// smoke (seconds), cpu (the asset models, 1 s each), gpu (those, brunel_100k and the
        /// cortical microcircuit on CUDA), microcircuit (Potjans-Diesmann 2014, 1 s), scaling
        /// (1000 synapses per neuron at each of --sizes, 200 ms each) or poisson (the
        /// Poisson-driven network of poisson_drive.toml, 100 synapses per neuron, at each of
        /// --sizes, 1 s each, on the CPU).
        #[arg(long, default_value = "smoke")]
        suite: String,
        /// Neurons in all for each case of the scaling and poisson suites (default
        /// 2500,5000,10000,20000 for scaling, 10000,100000,1000000 for poisson).
        #[arg(long, value_delimiter = ',')]
        sizes: Vec<u32>,
        /// Measured runs per case (after one warm-up run).
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Worker threads (default: the model's setting, else one per core).
        #[arg(long, default_value_t = 0, value_parser = parse_threads)]
        threads: usize,
        /// Run every case on this backend only (default: cpu for the cpu and poisson suites, cuda for the
        /// gpu suite, else the CPU and, where one is usable, the GPU).
        #[arg(long, value_enum)]
        backend: Option<BackendArg>,
        /// Folder of the cases' model files.
        #[arg(long, default_value = "assets/models")]
        models: PathBuf,
        /// Folder for the results file.
        #[arg(long, default_value = "results")]
        out: PathBuf,
        /// An earlier results file to compare with, case by case.
        #[arg(long)]
        baseline: Option<PathBuf>,
        /// Run each case in the peer simulators installed for --python as well (Brian2, NEST;
        /// Brian2CUDA and PyTorch on a GPU), --repeat times each, with ratios in the table.
        #[arg(long)]
        peers: bool,
        /// The Python interpreter that has the peers (benchmarks/requirements.txt).
        #[arg(long, default_value = "python3", requires = "peers")]
        python: PathBuf,
        /// The peers' entry point.
        #[arg(long, default_value = "benchmarks/peers/run_peer.py", requires = "peers")]
        peers_script: PathBuf,
        /// Run nothing: plot these results files into OUT: the real-time factor against network
        /// size of their scaling cases (bench-rtf.svg and .png) and their stage times
        /// (bench-stages). A suite's run plots its own beside its results file.
        #[arg(long, num_args = 1.., value_name = "RESULTS", conflicts_with = "baseline")]
        plot: Vec<PathBuf>,
    },
}

/// Exit status of `fum bench` when a case regressed by a major or critical grade.
const EXIT_REGRESSION: u8 = 4;

/// How to simulate a model: what `fum run` and `fum view MODEL` share.
#[derive(clap::Args)]
struct SimArgs {
    /// Output folder: spikes.h5, probes.h5, run.json, checkpoints.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Use an --out folder that is not empty, first removing the outputs, checkpoints and
    /// recording logs of an earlier run there (other files stay).
    #[arg(long, requires = "out")]
    overwrite: bool,
    /// Worker threads (default: the model's setting, else one per core; at most 4 per core).
    #[arg(long, default_value_t = 0, value_parser = parse_threads)]
    threads: usize,
    /// Shards (default: the model's setting, else one per thread and at least one per 65,536
    /// neurons; larger shards store 4-byte synapse targets).
    #[arg(long, default_value_t = 0)]
    shards: usize,
    /// Biological time to simulate, overriding the model (e.g. 500ms, 2s, 1.5 s).
    #[arg(long, value_parser = parse_duration_ms, allow_hyphen_values = true)]
    duration: Option<f64>,
    /// Seed, overriding the model.
    #[arg(long)]
    seed: Option<u64>,
    /// Where to run: cpu, cuda (fails without a usable GPU), or auto (cuda when usable).
    #[arg(long, value_enum, default_value_t = BackendArg::Cpu)]
    backend: BackendArg,
    /// RAM for the network (e.g. 8GB, 512MiB): synapses beyond it live in compressed pages on
    /// disk, with the same spikes (cuda backend: the host's copies of the synapses, beside the
    /// pinned host memory of --device-memory, which it counts).
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    host_memory: Option<u64>,
    /// Folder for the spilled pages (default: --out, else the system's temporary folder); their
    /// files are unnamed and vanish with the run.
    #[arg(long, value_name = "DIR", requires = "host_memory")]
    spill_dir: Option<PathBuf>,
    /// Device memory for the network (cuda backend; default: the card's free memory): synapses
    /// beyond it stay in pinned host memory, read by the kernels over the bus.
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    device_memory: Option<u64>,
}

/// `--backend`, as the engine's [`BackendChoice`].
#[derive(Clone, Copy, clap::ValueEnum)]
enum BackendArg {
    Cpu,
    Cuda,
    Auto,
}

impl From<BackendArg> for BackendChoice {
    fn from(arg: BackendArg) -> Self {
        match arg {
            BackendArg::Cpu => BackendChoice::Cpu,
            BackendArg::Cuda => BackendChoice::Cuda,
            BackendArg::Auto => BackendChoice::Auto,
        }
    }
}

impl SimArgs {
    /// The run options these arguments set; the others as `RunOptions::default()`.
    fn options(self) -> RunOptions {
        let SimArgs { out, overwrite, threads, shards, duration, seed, backend, host_memory, spill_dir, device_memory } = self;
        RunOptions { out, overwrite, threads, shards, duration_ms: duration, seed, backend: backend.into(), host_memory, spill_dir, device_memory, ..RunOptions::default() }
    }
}

/// "8GB", "512MiB", "1.5 GB" -> bytes.
fn parse_bytes(text: &str) -> Result<u64, String> {
    match text.parse::<bytesize::ByteSize>() {
        Ok(size) if size.as_u64() > 0 => Ok(size.as_u64()),
        _ => Err(format!("\"{text}\" is not a size such as 8GB or 512MiB")),
    }
}

/// "max" or a positive real-time factor -> the viewer's pace.
#[cfg(feature = "viewer")]
fn parse_speed(text: &str) -> Result<observe::Speed, String> {
    match text.trim() {
        "max" => Ok(observe::Speed::Max),
        t => match t.parse::<f64>() {
            Ok(f) if f > 0.0 && f.is_finite() => Ok(observe::Speed::RealTimeFactor(f)),
            _ => Err(format!("\"{text}\" is neither `max` nor a positive real-time factor such as 1 or 0.5")),
        },
    }
}

/// "500ms", "2s", "1.5 s" -> milliseconds. The unit is required: a bare number could mean
/// either.
fn parse_duration_ms(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let (number, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000.0)
    } else if t.parse::<f64>().is_ok() {
        return Err(format!("\"{text}\" has no unit: write {t}ms or {t}s"));
    } else {
        (t, f64::NAN)
    };
    match number.trim().parse::<f64>().map(|v| v * scale) {
        Ok(ms) if ms > 0.0 && ms.is_finite() => Ok(ms),
        _ => Err(format!("\"{text}\" is not a positive duration such as 500ms or 2s")),
    }
}

/// `--threads`: 0 (the default) or at most `MAX_THREADS_PER_CORE` per core of this machine.
fn parse_threads(text: &str) -> Result<usize, String> {
    use fum::engine::estimate::MAX_THREADS_PER_CORE;
    let threads: usize = text.parse().map_err(|e| format!("{e}"))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads > MAX_THREADS_PER_CORE * cores {
        return Err(format!("{threads} threads on {cores} cores: at most {} ({MAX_THREADS_PER_CORE} per core)", MAX_THREADS_PER_CORE * cores));
    }
    Ok(threads)
}

/// `--keep-checkpoints`: at least one, the one a run resumes from.
fn parse_keep(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("keep at least 1 checkpoint: a run resumes from the newest".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e}")),
    }
}

/// `--max-rate-hz`: a positive, finite rate (NaN would disable the check silently).
fn parse_rate_hz(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(hz) if hz > 0.0 && hz.is_finite() => Ok(hz),
        _ => Err(format!("\"{text}\" is not a positive, finite rate in Hz")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Under mpirun this process is one rank of the run (fum_engine::ranks); MPI ends with `_mpi`.
    #[cfg(feature = "mpi")]
    let _mpi = match fum::mpi::start() {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Run { model, sonata, sim, checkpoint_every, keep_checkpoints, stop_after, max_rate_hz, quiet, serve, monitor, time_stages, partition, exchange } => {
            fum::engine::partition::set_method(partition);
            fum::engine::routing::set_choice(exchange);
            let options = RunOptions { checkpoint_every_ms: checkpoint_every, keep_checkpoints, stop_after_ms: stop_after, max_rate_hz, monitor, time_stages, ..sim.options() };
            // Rank 0 records, writes the outputs and checkpoints and reports (fum_engine::ranks).
            cmd_run(ModelSource::of(model, sonata), options, quiet || !fum::engine::ranks::writes(), serve)
        }
        #[cfg(feature = "viewer")]
        Command::View { model, attach, token, token_file, sim, paused, real_time_factor, watch, fps, exit_after } => {
            let options = sim.options();
            let save_dir = options.out.clone().unwrap_or_else(|| PathBuf::from("."));
            let window = fum_viewer::WindowOptions { title: String::new(), exit_after_s: exit_after, save_dir, fps, watch, close_when: None };
            match attach {
                Some(addr) => cmd_attach(&addr, token, token_file, window),
                None => cmd_view(model.expect("clap requires a model without --attach"), options, paused, real_time_factor, window),
            }
        }
        Command::Resume { dir, threads, backend, quiet, partition, exchange } => {
            fum::engine::partition::set_method(partition);
            fum::engine::routing::set_choice(exchange);
            cmd_resume(dir, threads, backend.map(BackendChoice::from), quiet || !fum::engine::ranks::writes())
        }
        Command::Info { bandwidth } => cmd_info(bandwidth),
        Command::Inspect { checkpoint } => cmd_inspect(checkpoint),
        Command::Check { model, sonata } => cmd_check(ModelSource::of(model, sonata)),
        Command::Export { model, sonata } => cmd_export(model, sonata),
        Command::Bench { plot, out, .. } if !plot.is_empty() => cmd_bench_plot(&plot, &out),
        Command::Bench { suite, sizes, repeat, threads, backend, models, out, baseline, peers, python, peers_script, .. } => {
            let backends = match backend {
                Some(b) => vec![b.into()],
                None => fum::bench::default_backends(&suite, fum::run::backend_for(BackendChoice::Auto).is_ok_and(|b| b.name() != "cpu")),
            };
            let bench = || {
                let peers = peers.then(|| fum::bench::peers::Peers::find(&python, &peers_script)).transpose()?;
                let options = fum::bench::BenchOptions { suite: &suite, sizes: &sizes, repeat, threads, backends: &backends, models: &models, peers: peers.as_ref() };
                cmd_bench(&options, &out, baseline.as_deref())
            };
            match bench() {
                Ok(true) => return ExitCode::from(EXIT_REGRESSION),
                Ok(false) => Ok(Outcome::Finished),
                Err(e) => Err(e),
            }
        }
    };
    match result {
        Ok(Outcome::Interrupted) => ExitCode::from(EXIT_INTERRUPTED),
        Ok(_) => ExitCode::SUCCESS,
        // Output cut short by its reader (`fum inspect CKPT | head`): the reader has what it wanted.
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) => ExitCode::SUCCESS,
        Err(e) => {
            let model_error = e.downcast_ref::<fum::ModelError>().is_some() || matches!(e.downcast_ref::<RunError>(), Some(RunError::Model(_)));
            let code = if model_error { 2 } else { 1 };
            match fum::engine::ranks::transport() {
                // Every rank meets the same error before the first step (a model, a refused
                // option): rank 0 says it. Later, one rank's error ends them all, named.
                Some(t) if e.downcast_ref::<RunError>().is_some_and(|e| matches!(e, RunError::Model(_) | RunError::Ranks(_))) || model_error => {
                    if t.rank() == 0 {
                        eprintln!("error: {e:#}");
                    }
                }
                Some(t) => {
                    eprintln!("error: rank {}: {e:#}; ending every rank", t.rank());
                    t.abort(code);
                }
                None => eprintln!("error: {e:#}"),
            }
            ExitCode::from(code as u8)
        }
    }
}

/// SIGINT/SIGTERM: the first finishes the step, checkpoints and writes outputs; a second
/// exits at once.
fn install_signal_handlers() -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = fum::run::interrupt_flag();
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, EXIT_ABORTED, flag.clone())?;
        signal_hook::flag::register(signal, flag.clone())?;
    }
    Ok(())
}

/// The progress line of `fum run` and `fum resume`: a spinner saying what the run does while it
/// builds the network and places it on its backend, ticking so that a long build shows its
/// time, then a bar of the steps ([`show_progress`]).
fn progress_bar(quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(indicatif::ProgressStyle::with_template("{spinner} {msg}, {elapsed} elapsed").expect("a valid template"));
    bar.set_message("reading the model");
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    bar
}

/// Moves the bar to `p`: while building, its message is the phase; once simulating, a bar of
/// steps whose message is the running totals of structural plasticity and of the host tier,
/// where the run has them.
fn show_progress(bar: &indicatif::ProgressBar, p: &RunProgress) {
    if p.phase != Phase::Simulating {
        bar.set_message(p.phase.to_string());
        return;
    }
    if bar.length().is_none() {
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} [{bar:40}] {pos}/{len} steps, {elapsed} elapsed, eta {eta}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_message("simulating");
    }
    bar.set_length(p.end_step);
    bar.set_position(p.done);
    let message: Vec<String> = [p.structural.as_ref().map(ToString::to_string), p.paging.as_ref().map(ToString::to_string)].into_iter().flatten().collect();
    if !message.is_empty() {
        bar.set_message(message.join("; "));
    }
}

/// "7878" -> loopback port 7878; "HOST:PORT" as given.
fn socket_addr(addr: &str) -> String {
    if addr.parse::<u16>().is_ok() { format!("127.0.0.1:{addr}") } else { addr.to_string() }
}

/// What `fum run` and `fum check` read: a model file, or a SONATA circuit (`--sonata`).
enum ModelSource {
    File(PathBuf),
    Sonata(PathBuf),
}

impl ModelSource {
    fn of(model: Option<PathBuf>, sonata: Option<PathBuf>) -> ModelSource {
        match (model, sonata) {
            (_, Some(config)) => ModelSource::Sonata(config),
            (Some(path), None) => ModelSource::File(path),
            (None, None) => unreachable!("clap requires a model or --sonata"),
        }
    }

    fn path(&self) -> &std::path::Path {
        match self {
            ModelSource::File(p) | ModelSource::Sonata(p) => p,
        }
    }

    /// The model: a SONATA circuit is read through the model file that imports it
    /// (`fum_engine::sonata::model_text`), which checkpoints keep for `fum resume`. A circuit
    /// without a duration (no run.tstop, no --duration) takes `fallback_ms`, where given.
    fn load(&self, duration_ms: Option<f64>, fallback_ms: Option<f64>) -> Result<Model, fum::ModelError> {
        match self {
            ModelSource::File(path) => Model::load(path),
            ModelSource::Sonata(config) => Model::parse(&fum::engine::sonata::model_text(config, duration_ms, fallback_ms)?, config),
        }
    }
}

fn cmd_run(source: ModelSource, options: RunOptions, quiet: bool, serve_addr: Option<String>) -> anyhow::Result<Outcome> {
    let mut model = source.load(options.duration_ms, None)?;
    let path = source.path();
    options.apply(&mut model)?;
    install_signal_handlers()?;
    let (threads, shards) = options.resolve(&model);
    if !quiet {
        eprintln!("fum run {}: {} ms at dt {} ms, {threads} threads, {shards} shards, backend {}", path.display(), model.spec.simulation.duration_ms, model.spec.simulation.dt_ms, options.backend);
    }
    let mut serving = match serve_addr {
        Some(addr) => {
            let (observer, link) = observe::channel(&model, false);
            let addr = socket_addr(&addr);
            let neurons = u32::try_from(model.spec.populations.iter().map(|p| u64::from(p.size)).sum::<u64>()).unwrap_or(u32::MAX);
            let server = serve::serve(&addr, link, neurons).map_err(|e| anyhow::anyhow!("cannot serve on {addr}: {e}"))?;
            // The token in a file of the output folder that only this user reads, for
            // `--token-file`: a token on a command line is visible to every user.
            let token_file = options.out.as_ref().map(|out| out.join(serve::TOKEN_FILE));
            if let Some(path) = &token_file {
                // The folder is checked (and made) before the token file goes there.
                fum::engine::run::prepare_output(path.parent().expect("a file in --out"), options.overwrite)?;
                serve::write_token_file(path, &server.token)
                    .map_err(|e| anyhow::anyhow!("cannot write the token file {}: {e}", path.display()))?;
            }
            let token_arg = token_file.as_ref().map_or(String::new(), |p| format!(" --token-file {}", p.display()));
            // Printed even with --quiet: a viewer needs both.
            eprintln!("serving on {} (fum view --attach {}{token_arg}); steering token {}", server.addr, server.addr, server.token);
            if let Some(warning) = serve::exposure_warning(&server.addr) {
                eprintln!("{warning}");
            }
            Some((observer, server, token_file))
        }
        None => None,
    };
    let bar = progress_bar(quiet);
    let report = run_observed(&model, &options, serving.as_mut().map(|(observer, _, _)| observer), |p| show_progress(&bar, p));
    bar.finish_and_clear();
    if let Some((observer, server, token_file)) = serving {
        drop(observer);
        server.finish();
        // The token steers nothing once the run has ended.
        if let Some(path) = token_file {
            std::fs::remove_file(path).ok();
        }
    }
    let report = report?;
    summarise(&report, options.out.as_deref(), quiet)?;
    Ok(report.outcome)
}

/// The simulation on its own thread, the window on this one. The run is paced (`speed`).
/// Without --out it records nothing and, unless --duration bounds it, goes on until the window
/// is closed; with --out it runs the model's duration (or --duration), whose outputs they are.
/// At a bounded run's end it holds, so that every panel shows the final state. Closing the window ends the run with
/// outputs (and a checkpoint, if it stopped early) under --out; a signal does the same, closing
/// the window, and exits with status 3.
#[cfg(feature = "viewer")]
fn cmd_view(path: PathBuf, mut options: RunOptions, paused: bool, speed: observe::Speed, mut window: fum_viewer::WindowOptions) -> anyhow::Result<Outcome> {
    let mut model = Model::load(&path)?;
    if options.out.is_none() {
        // Nothing would write what is recorded: record nothing, and run until the window is
        // closed unless --duration bounds the session (as far as recorded step numbers reach).
        model.spec.recording = Default::default();
        if options.duration_ms.is_none() {
            options.duration_ms = Some(f64::from(u32::MAX - 2) * model.spec.simulation.dt_ms);
        }
    }
    options.apply(&mut model)?;
    let (threads, shards) = options.resolve(&model);
    fum::engine::estimate::check(&model, threads, shards, options.host_memory)?;
    // What would fail the run fails here rather than in a window that shows nothing.
    if options.backend == BackendChoice::Cuda {
        fum::run::backend_for(BackendChoice::Cuda)?;
    }
    if let Some(out) = &options.out {
        fum::engine::run::prepare_output(out, options.overwrite)?;
    }
    install_signal_handlers()?;
    let (mut observer, link) = observe::channel(&model, true);
    observer.set_speed(speed);
    observer.hold_at_end();
    if paused {
        observer.start_paused();
    }
    window.title = format!("fum view {}", path.display());
    let interrupted = fum::run::interrupt_flag();
    window.close_when = Some(interrupted.clone());
    let out = options.out.clone();
    let simulation = std::thread::Builder::new().name("fum-simulation".into()).spawn(move || run_observed(&model, &options, Some(&mut observer), |_| {}))?;
    let stats = fum_viewer::run_window(link, true, window)?;
    print_window_stats(&stats)?;
    let report = simulation.join().map_err(|_| anyhow::anyhow!("the simulation thread panicked"))??;
    summarise(&report, out.as_deref(), false)?;
    // Closing the window is how a viewed run ends: an interruption only when signalled.
    Ok(if interrupted.load(std::sync::atomic::Ordering::Relaxed) { Outcome::Interrupted } else { Outcome::Finished })
}

#[cfg(feature = "viewer")]
fn cmd_attach(addr: &str, token: Option<String>, token_file: Option<PathBuf>, mut window: fum_viewer::WindowOptions) -> anyhow::Result<Outcome> {
    let token = serve::client_token(token, token_file.as_deref(), std::env::var("FUM_TOKEN").ok()).map_err(anyhow::Error::msg)?;
    let addr = socket_addr(addr);
    let (link, steering) = serve::attach(&addr, token.clone())?;
    if token.is_some() && !steering {
        eprintln!("the token was not accepted: watching only");
    }
    window.title = format!("fum view --attach {addr}");
    let stats = fum_viewer::run_window(link, steering, window)?;
    print_window_stats(&stats)?;
    Ok(Outcome::Finished)
}

#[cfg(feature = "viewer")]
fn print_window_stats(stats: &fum_viewer::WindowStats) -> std::io::Result<()> {
    use std::io::Write;
    let per_s = stats.frames as f64 / stats.seconds.max(1e-9);
    writeln!(std::io::stdout().lock(), "viewer           {} frames in {:.2} s ({per_s:.1} frames/s), {} simulation frames received", stats.frames, stats.seconds, stats.frames_received)
}

fn cmd_resume(dir: PathBuf, threads: usize, backend: Option<BackendChoice>, quiet: bool) -> anyhow::Result<Outcome> {
    install_signal_handlers()?;
    let bar = progress_bar(quiet);
    let report = resume(&dir, threads, backend, |p| show_progress(&bar, p))?;
    bar.finish_and_clear();
    summarise(&report, Some(&dir), quiet)?;
    Ok(report.outcome)
}

fn summarise(report: &RunReport, dir: Option<&std::path::Path>, quiet: bool) -> std::io::Result<()> {
    use std::io::Write;
    if quiet {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    let n = &report.network;
    let t = &report.timing;
    writeln!(out, "neurons          {}", n.neurons)?;
    writeln!(out, "synapses         {} ({} plastic)", n.synapses, n.plastic_synapses)?;
    writeln!(out, "memory           {} ({:.1} B/neuron, {:.2} B/static synapse, {:.2} B/plastic synapse)", bytes(n.bytes_total as f64), n.bytes_per_neuron, n.bytes_per_static_synapse, n.bytes_per_plastic_synapse)?;
    let ranks = if report.ranks > 1 { format!(" on each of {} ranks", report.ranks) } else { String::new() };
    writeln!(out, "backend          {} ({}{ranks})", report.backend, report.device)?;
    if let Some(g) = &report.gpu {
        writeln!(
            out,
            "device memory    {} allocated, {} measured peak ({:.1} B/neuron, {:.2} B/synapse); this card fits ~{} neurons at {:.0} synapses each",
            bytes(g.device_bytes_total as f64),
            bytes(g.device_bytes_peak_measured as f64),
            g.bytes_per_neuron,
            g.bytes_per_synapse,
            g.largest_network_neurons,
            g.synapses_per_neuron
        )?;
        writeln!(out, "transfers        {} to the device, {} to the host in {} copies", bytes(g.transfers.to_device_bytes as f64), bytes(g.transfers.to_host_bytes as f64), g.transfers.copies)?;
        if let Some(m) = &g.mapped_host {
            let c = &m.row_cache;
            writeln!(
                out,
                "host memory      {} of synapses ({} blocks) read over the bus; row cache {} ({} rows), {:.1} % of synaptic reads, {} moved in, {} written back, {:.3} s stalled",
                bytes(m.bytes as f64),
                m.blocks,
                bytes(c.bytes as f64),
                c.rows,
                100.0 * c.hit_rate,
                bytes(c.bytes_in as f64),
                bytes(c.bytes_back as f64),
                c.stall_s
            )?;
        }
    }
    if let Some(h) = report.storage.get("host") {
        writeln!(
            out,
            "host tier        {} of synapses in {} pages, {} budget ({} peak), {:.1} % hits, {} moved ({}/s), {} on disk, {:.3} s stalled; process peak {} ({} when built)",
            bytes(h.paged_bytes as f64),
            h.pages,
            bytes(h.budget_bytes as f64),
            bytes(h.peak_resident_bytes as f64),
            100.0 * h.hit_rate,
            bytes((h.moved.bytes_in + h.moved.bytes_out) as f64),
            bytes(h.bytes_moved_per_s),
            bytes(h.moved.disk_bytes as f64),
            h.moved.stall_s,
            bytes(report.host_peak_rss_bytes as f64),
            bytes(report.host_peak_rss_built_bytes as f64)
        )?;
    }
    writeln!(out, "build            {:.3} s", t.build_s)?;
    writeln!(out, "simulate         {:.3} s for steps {}..{} of {} (dt {} ms)", t.simulate_s, report.start_step, report.end_step, report.steps, report.dt_ms)?;
    writeln!(out, "real-time factor {:.3} (wall time / biological time)", t.real_time_factor)?;
    if t.checkpoints_written > 0 {
        writeln!(out, "checkpoints      {} written, simulation paused {:.3} s for them", t.checkpoints_written, t.checkpoint_pause_s)?;
    }
    for (pop, rate) in &report.rates_hz {
        writeln!(out, "rate {pop:<11} {rate:.2} Hz")?;
    }
    match (report.outcome, dir) {
        (Outcome::Finished, Some(dir)) => writeln!(out, "outputs          {} in {}", report.outputs.join(", "), dir.display()),
        (Outcome::Stopped, Some(dir)) => writeln!(out, "stopped at step {}: `fum resume {}` continues", report.end_step, dir.display()),
        (Outcome::Interrupted, Some(dir)) => writeln!(out, "interrupted at step {}: outputs so far in {}; `fum resume {}` continues", report.end_step, dir.display(), dir.display()),
        _ => Ok(()),
    }
}

fn cmd_info(bandwidth: bool) -> anyhow::Result<Outcome> {
    use fum::systems::backend::CudaReport;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("cpu              {cores} cores (backend cpu, always available)");
    fum::systems::backend::cuda_report(bandwidth, |item| match item {
        CudaReport::NotBuilt => println!("cuda             not built in (cargo feature `cuda`)"),
        CudaReport::Unavailable(e) => println!("cuda             unavailable: {e}"),
        CudaReport::Gpu(g) => println!("cuda             {g}"),
        CudaReport::Bandwidth(bytes_per_s) => println!("                 copy bandwidth {:.0} GB/s (bytes read + written)", bytes_per_s / 1e9),
    })?;
    Ok(Outcome::Finished)
}

fn cmd_inspect(path: PathBuf) -> anyhow::Result<Outcome> {
    use std::io::Write;
    let ckpt = fum::engine::checkpoint::Checkpoint::open(&path)?;
    let h = &ckpt.header;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}: fum checkpoint, format {}, written by fum {}", path.display(), fum::engine::checkpoint::FORMAT_VERSION, h.fum_version)?;
    writeln!(out, "model hash       {:016x} ({})", h.model_hash, h.run.get("model_path").and_then(|v| v.as_str()).unwrap_or("?"))?;
    writeln!(out, "step             {} (t = {} ms)", h.step, h.step as f64 * h.dt_ms)?;
    writeln!(out, "shards           {}", h.shards)?;
    let stored: u64 = h.sections.iter().map(|s| s.stored_len).sum();
    let raw: u64 = h.sections.iter().map(|s| s.raw_len).sum();
    writeln!(out, "sections         {} ({} stored, {} raw)", h.sections.len(), bytes(stored as f64), bytes(raw as f64))?;
    for s in &h.sections {
        writeln!(out, "  {:<40} {:>12} B stored {:>12} B raw  crc32 {:08x}", s.name, s.stored_len, s.raw_len, s.crc32)?;
    }
    writeln!(out, "checksums        all {} sections and the header verify", h.sections.len())?;
    Ok(Outcome::Finished)
}

/// Runs the suite, prints its table and writes its results; true if a case regressed by a
/// major or critical grade against `baseline`.
fn cmd_bench(options: &fum::bench::BenchOptions, out: &std::path::Path, baseline: Option<&std::path::Path>) -> anyhow::Result<bool> {
    use anyhow::Context;
    use fum::bench::{Severity, compare, markdown, result_path, run_suite};
    // Read first: a missing or broken baseline fails before minutes of runs.
    let baseline = baseline.map(|path| read_bench_results(path, "baseline")).transpose()?;
    let report = run_suite(options, |case, run, repeat| match (run, repeat) {
        (_, 0) => eprintln!("{case}"),
        (0, _) => eprintln!("{case}: warm-up run"),
        _ => eprintln!("{case}: run {run} of {repeat}"),
    })?;
    let comparisons = baseline.as_ref().map(|b| compare(&report, b)).unwrap_or_default();
    print!("{}", markdown(&report, &comparisons));
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = result_path(out);
    std::fs::write(&path, serde_json::to_string_pretty(&report)?).with_context(|| format!("writing {}", path.display()))?;
    println!("\nresults: {}", path.display());
    plot(std::slice::from_ref(&report), &path.with_file_name(path.file_stem().unwrap_or_default()))?;
    Ok(comparisons.iter().any(|c| c.severity >= Severity::Major))
}

/// A results file of `fum bench` (`what` names it in errors).
fn read_bench_results(path: &std::path::Path, what: &str) -> anyhow::Result<fum::bench::BenchReport> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the {what} {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("the {what} {} is not a fum bench results file", path.display()))
}

/// `fum bench --plot`: the plots of results files, into OUT.
fn cmd_bench_plot(files: &[PathBuf], out: &std::path::Path) -> anyhow::Result<Outcome> {
    use anyhow::Context;
    let reports = files.iter().map(|f| read_bench_results(f, "results file")).collect::<anyhow::Result<Vec<_>>>()?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    anyhow::ensure!(plot(&reports, &out.join("bench"))?, "nothing to plot: no scaling cases and no stage times in {}", files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "));
    Ok(Outcome::Finished)
}

/// Draws what `reports` have to plot at `stem`-rtf (scaling cases) and `stem`-stages (stage
/// times), .svg and .png, and says where; false if there was nothing.
fn plot(reports: &[fum::bench::BenchReport], stem: &std::path::Path) -> anyhow::Result<bool> {
    use fum::bench::plot::{rtf_against_size, stages_per_case};
    let cases = || reports.iter().flat_map(|r| &r.cases);
    let at = |suffix: &str| stem.with_file_name(format!("{}-{suffix}", stem.file_name().unwrap_or_default().to_string_lossy()));
    let mut plots = Vec::new();
    if cases().any(|c| c.name.starts_with("scaling_")) {
        plots.extend(rtf_against_size(reports, &at("rtf"))?);
    }
    if cases().any(|c| c.stage_us_per_step.is_some()) {
        plots.extend(stages_per_case(reports, &at("stages"))?);
    }
    if !plots.is_empty() {
        println!("plots: {}", plots.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
    }
    Ok(!plots.is_empty())
}

/// Writes a model as a SONATA circuit and says where.
fn cmd_export(path: PathBuf, dir: PathBuf) -> anyhow::Result<Outcome> {
    let model = Model::load(&path)?;
    let e = fum::engine::sonata::export(&model, &dir)?;
    println!("{}: {} neurons, {} synapses as a SONATA circuit: {} (run it with fum run --sonata {})", path.display(), e.neurons, e.synapses, e.circuit_config.display(), e.simulation_config.display());
    Ok(Outcome::Finished)
}

/// Validates a model, prints its size and the memory it needs, and refuses one that this
/// machine cannot run (threads, memory) as `fum run` would.
fn cmd_check(source: ModelSource) -> anyhow::Result<Outcome> {
    use fum::engine::estimate;
    use std::io::Write;
    // A circuit without run.tstop is checked as if it ran a second.
    let model = source.load(None, Some(1000.0))?;
    let path = source.path();
    let spec = &model.spec;
    let neurons: u64 = spec.populations.iter().map(|p| u64::from(p.size)).sum();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}: valid", path.display())?;
    writeln!(out, "populations      {} ({} neurons)", spec.populations.len(), neurons)?;
    for p in &spec.projections {
        let expected = model.expected_synapses_of(p);
        let kind = if p.plasticity.is_some() { "plastic" } else { "static" };
        writeln!(out, "projection {:<18} {} -> {}: ~{:.0} synapses ({kind})", p.name, p.source, p.target, expected)?;
    }
    writeln!(out, "synapses         ~{:.0}", model.expected_synapses())?;
    for p in spec.populations.iter().filter(|p| p.trains.is_some()) {
        // What the listed spikes become on the grid: surprises (merged, past the end) named.
        let grid = p.trains.as_ref().expect("filtered").on_grid(spec.simulation.dt_ms, model.steps());
        let mut notes = Vec::new();
        if grid.merged > 0 {
            notes.push(format!("{} merged into a spike of the same neuron and step", grid.merged));
        }
        if grid.after_end > 0 {
            notes.push(format!("{} after the run's end", grid.after_end));
        }
        let notes = if notes.is_empty() { String::new() } else { format!(" ({})", notes.join("; ")) };
        writeln!(out, "spike source {:<16} {} spikes in the run{notes}", p.name, grid.fired)?;
    }
    writeln!(out, "duration         {} ms, {} steps of {} ms", spec.simulation.duration_ms, model.steps(), spec.simulation.dt_ms)?;
    out.flush()?;
    let (threads, shards) = RunOptions::default().resolve(&model);
    let e = estimate::check(&model, threads, shards, None)?;
    let available = e.available_bytes.map_or(String::new(), |a| format!(" of {} available", bytes(a as f64)));
    writeln!(out, "memory           ~{} on the host{available}; ~{} when built (a cuda run needs about that on the GPU)", bytes(e.host_bytes), bytes(e.network_bytes))?;
    Ok(Outcome::Finished)
}

