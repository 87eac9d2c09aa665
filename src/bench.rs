//! `fum bench`: the system-level benchmark suite. Each case of a suite is one of the models in
//! `assets/models`, run as `fum run` runs it (no output written), once to warm up and then
//! `repeat` times; the results are medians with the min-max over the repeats, with the machine
//! they came from, and optionally a comparison with an earlier result file (a baseline) whose
//! regressions are graded minor, major or critical.

pub mod peers;
pub mod plot;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::run::{BackendChoice, RunOptions, RunReport};

/// One benchmark: a model file of the models folder, run for `duration_ms` of biological time,
/// with its populations scaled to `neurons` in all if given.
pub struct Case {
    pub name: String,
    pub model: &'static str,
    pub duration_ms: f64,
    pub neurons: Option<u32>,
    /// fum integrates `lif_coba` with forward Euler (`integrator = "euler"`), and the peers
    /// whose reference scheme that is (Brian2's COBA script) run it alone: like against like.
    pub euler: bool,
}

/// Sizes of the scaling suite unless `--sizes` says otherwise: what a few CPU cores run in
/// minutes (a GPU run names its own, e.g. 100000,1000000).
pub const SCALING_SIZES: &[u32] = &[2500, 5000, 10000, 20000];

/// Sizes of the poisson suite unless `--sizes` says otherwise: the speed issue's CPU scaling
/// set (10k, 100k and 1M neurons x 100 synapses).
pub const POISSON_SIZES: &[u32] = &[10000, 100000, 1000000];

/// The suites, for help texts and errors.
pub const SUITES: &str = "smoke, cpu, gpu, microcircuit, scaling or poisson";

/// The cases of a suite: `smoke` (seconds, for CI and a quick look), `cpu` (the asset models
/// for 1 s each: the CPU figures of benchmarks/RESULTS.md), `gpu` (the same and the cortical
/// microcircuit, sized for a GPU), `microcircuit` (Potjans-Diesmann 2014 alone, 1 s),
/// `scaling` (the scaling family, 1000 synapses per neuron, at each of `sizes`, 200 ms each)
/// or `poisson` (the Poisson-driven network of poisson_drive.toml, 100 synapses per neuron, at
/// each of `sizes`, 1 s each). Empty `sizes` are the suite's own ([`SCALING_SIZES`],
/// [`POISSON_SIZES`]).
pub fn suite(name: &str, sizes: &[u32]) -> Option<Vec<Case>> {
    let sized = |defaults: &'static [u32], prefix: &str, model: &'static str, duration_ms: f64| -> Vec<Case> {
        let sizes = if sizes.is_empty() { defaults } else { sizes };
        sizes.iter().map(|&n| Case { name: format!("{prefix}_{n}"), model, duration_ms, neurons: Some(n), euler: false }).collect()
    };
    let case = |name: &str, model, duration_ms| Case { name: name.into(), model, duration_ms, neurons: None, euler: false };
    let assets = || {
        vec![
            case("vogels_abbott_cuba", "vogels_abbott_cuba.toml", 1000.0),
            case("vogels_abbott_coba", "vogels_abbott_coba.toml", 1000.0),
            Case { euler: true, ..case("vogels_abbott_coba_euler", "vogels_abbott_coba.toml", 1000.0) },
            case("brunel", "brunel.toml", 1000.0),
            case("stdp_balanced", "stdp_balanced.toml", 1000.0),
            case("stdp_structural", "stdp_structural.toml", 1000.0),
        ]
    };
    let microcircuit = || case("microcircuit", "microcircuit.toml", 1000.0);
    Some(match name {
        "smoke" => vec![case("vogels_abbott_cuba", "vogels_abbott_cuba.toml", 200.0), case("stdp_balanced", "stdp_balanced.toml", 200.0)],
        "cpu" => assets(),
        "gpu" => assets().into_iter().chain([case("brunel_100k", "brunel_100k.toml", 1000.0), microcircuit()]).collect(),
        "microcircuit" => vec![microcircuit()],
        "scaling" => sized(SCALING_SIZES, "scaling", "scaling.toml", 200.0),
        "poisson" => sized(POISSON_SIZES, "poisson", "poisson_drive.toml", 1000.0),
        _ => return None,
    })
}

/// The backends a suite runs on unless `--backend` names one: `cpu` and `poisson` (the CPU
/// bar's scaling set) on the CPU, `gpu` on CUDA, the others on the CPU and, where a GPU is
/// usable (`cuda_usable`), on it too.
pub fn default_backends(suite: &str, cuda_usable: bool) -> Vec<BackendChoice> {
    match suite {
        "cpu" | "poisson" => vec![BackendChoice::Cpu],
        "gpu" => vec![BackendChoice::Cuda],
        _ if cuda_usable => vec![BackendChoice::Cpu, BackendChoice::Cuda],
        _ => vec![BackendChoice::Cpu],
    }
}

/// Scales every population of `model` by the same factor so that they hold `neurons` in all
/// (the last takes the rounding); rules that fix an in-degree keep it.
pub fn scale(model: &mut crate::Model, neurons: u32) {
    let pops = &mut model.spec.populations;
    let total: u64 = pops.iter().map(|p| u64::from(p.size)).sum();
    let mut given = 0u32;
    let last = pops.len() - 1;
    for (i, p) in pops.iter_mut().enumerate() {
        p.size = if i == last { neurons - given } else { (u64::from(p.size) * u64::from(neurons) / total) as u32 };
        given += p.size;
    }
}

/// Median and range of one figure over the repeats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// Of a non-empty sample; the median of an even count is the mean of the middle two.
    pub fn of(values: &[f64]) -> Spread {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Spread { median, min: v[0], max: v[n - 1] }
    }
}

/// What one case measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CaseResult {
    pub name: String,
    pub model: String,
    pub backend: String,
    pub device: String,
    pub threads: usize,
    pub duration_ms: f64,
    pub neurons: u64,
    pub synapses: u64,
    /// Host bytes of the built network, in all and per neuron and synapse (`run.json`'s
    /// `network`: a synapse's bytes are its columns, a neuron's its state, buffers and row
    /// pointers).
    pub network_bytes: u64,
    pub bytes_per_neuron: f64,
    pub bytes_per_synapse: f64,
    pub build_s: Spread,
    pub simulate_s: Spread,
    /// Wall time per biological time of the simulation loop.
    pub real_time_factor: Spread,
    /// Synaptic events (spikes times their out-degree, `run.json`'s `synaptic_events`) per
    /// second of simulate time.
    #[serde(default)]
    pub synaptic_events_per_s: Spread,
    /// Device bytes of the network as allocated (device backends).
    #[serde(default)]
    pub device_bytes: Option<u64>,
    /// Microseconds per step in each stage (input, update, exchange, deliver, plasticity,
    /// record, advance), from the warm-up run, which alone times them: on the CPU host wall
    /// time between the stages (clock readings cost about a microsecond per stage and step),
    /// on a GPU the device's time between events in the step (a timed step is waited for).
    #[serde(default)]
    pub stage_us_per_step: Option<BTreeMap<String, f64>>,
    /// The GPU during the last repeat (NVML; device backends where NVML is present), and the
    /// energy per synaptic event over the repeats.
    #[serde(default)]
    pub monitor: Option<fum_engine::monitor::DeviceReport>,
    #[serde(default)]
    pub energy_per_synaptic_event_j: Option<Spread>,
    /// The same case in the peer simulators (`--peers`), and the peers that failed on it, with
    /// why.
    #[serde(default)]
    pub peers: Vec<peers::PeerResult>,
    #[serde(default)]
    pub peer_failures: BTreeMap<String, String>,
    /// Each repeat's median and 99th-percentile step wall time (`run.json`'s `timing.step_us`).
    /// Figures added after the first version default to 0, so older results still serve as a
    /// baseline (which compares simulate_s).
    #[serde(default)]
    pub step_p50_us: Spread,
    #[serde(default)]
    pub step_p99_us: Spread,
    /// Each repeat's simulate_s, in order (the warm-up run is not among them).
    pub simulate_runs_s: Vec<f64>,
    /// Mean rates of the last repeat (the same in every repeat: the seed is the model's).
    pub rates_hz: BTreeMap<String, f64>,
}

/// The machine and build a result came from: results from different machines or builds are
/// not comparable, and the load says whether the machine was quiet.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub logical_cores: usize,
    /// /proc/loadavg's 1, 5 and 15 minute averages before the first run and after the last.
    pub load_before: Vec<f64>,
    pub load_after: Vec<f64>,
    pub os: String,
    /// The GPU and its driver, as NVML names them (a run on a device backend).
    #[serde(default)]
    pub gpu: Option<String>,
    pub fum_version: String,
    /// The commit the binary was built from (`-dirty`: with uncommitted changes then).
    pub fum_commit: String,
    /// When the suite started, UTC (RFC 3339).
    pub started: String,
}

impl Machine {
    fn now() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo.lines().find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_string()));
        Machine {
            cpu: cpu.unwrap_or_else(|| "unknown".into()),
            logical_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            load_before: load_average(),
            load_after: Vec::new(),
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
            gpu: None,
            fum_version: env!("CARGO_PKG_VERSION").into(),
            fum_commit: env!("FUM_COMMIT").into(),
            started: jiff::Timestamp::now().round(jiff::Unit::Second).map_or_else(|_| String::new(), |t| t.to_string()),
        }
    }
}

/// /proc/loadavg's three averages (empty where there is none).
fn load_average() -> Vec<f64> {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.split_whitespace().take(3).filter_map(|v| v.parse().ok()).collect()).unwrap_or_default()
}

/// A suite's results: what `fum bench` writes as JSON and reads back as a baseline.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchReport {
    pub suite: String,
    pub repeat: usize,
    /// Runs per case before the measured ones, not counted.
    pub warmup: usize,
    pub machine: Machine,
    pub cases: Vec<CaseResult>,
}

/// How to run a suite.
pub struct BenchOptions<'a> {
    pub suite: &'a str,
    /// The scaling and poisson suites' sizes (neurons in all; empty: the suite's own).
    pub sizes: &'a [u32],
    pub repeat: usize,
    pub threads: usize,
    /// Every case runs on each of these, in turn.
    pub backends: &'a [BackendChoice],
    /// Where the cases' model files are (`assets/models`).
    pub models: &'a Path,
    /// Peer simulators to run each case in as well (`--peers`).
    pub peers: Option<&'a peers::Peers>,
}

/// Runs every case of the suite: one warm-up run, then `repeat` measured ones. `progress` hears
/// of each run as it starts (case name, run number from 1 or 0 for the warm-up, runs in all),
/// and of each peer's runs of a case as they start (their label, 0, 0).
pub fn run_suite(options: &BenchOptions, progress: impl Fn(&str, usize, usize)) -> anyhow::Result<BenchReport> {
    let cases = suite(options.suite, options.sizes).ok_or_else(|| anyhow::anyhow!("unknown suite {:?} ({SUITES})", options.suite))?;
    anyhow::ensure!(options.repeat > 0, "--repeat must be at least 1");
    let mut machine = Machine::now();
    let mut results = Vec::new();
    for (case, &backend) in cases.iter().flat_map(|c| options.backends.iter().map(move |b| (c, b))) {
        let path = options.models.join(case.model);
        let mut model = crate::Model::load(&path)?;
        if let Some(n) = case.neurons {
            scale(&mut model, n);
        }
        if case.euler {
            let coba = model.spec.populations.iter_mut().filter(|p| p.model == crate::engine::model::NeuronModel::LifCoba);
            coba.for_each(|p| p.integrator = Some(crate::engine::model::Integrator::Euler));
        }
        let on_device = backend != BackendChoice::Cpu;
        let run_options = RunOptions { threads: options.threads, duration_ms: Some(case.duration_ms), backend, monitor: on_device, ..RunOptions::default() };
        run_options.apply(&mut model)?;
        let mut reports: Vec<RunReport> = Vec::new();
        let mut stages = None;
        for i in 0..=options.repeat {
            progress(&case.name, i, options.repeat);
            // The first run warms caches and the allocator up and is not counted; it alone
            // times the stages.
            let timed = RunOptions { time_stages: i == 0, monitor: run_options.monitor && i > 0, ..run_options.clone() };
            let report = crate::run::run(&model, &timed, |_| {})?;
            if let Some(e) = &report.error {
                anyhow::bail!("{}: the run failed: {e}", case.name);
            }
            if i == 0 {
                let steps = report.steps.max(1) as f64;
                stages = report.timing.stages_s.as_ref().map(|s| s.iter().map(|(k, v)| (k.clone(), v / steps * 1e6)).collect());
            } else {
                reports.push(report);
            }
        }
        if machine.gpu.is_none() {
            machine.gpu = reports.iter().find_map(|r| r.monitor.as_ref()).map(|m| format!("{}, driver {}", m.name, m.driver));
        }
        let figure = |f: fn(&RunReport) -> f64| Spread::of(&reports.iter().map(f).collect::<Vec<_>>());
        let energy: Vec<f64> = reports.iter().filter_map(|r| r.energy_per_synaptic_event_j).collect();
        let last = reports.last().expect("repeat > 0");
        results.push(CaseResult {
            name: case.name.clone(),
            model: case.model.into(),
            backend: last.backend.into(),
            device: last.device.clone(),
            threads: last.threads,
            duration_ms: case.duration_ms,
            neurons: last.network.neurons,
            synapses: last.network.synapses,
            network_bytes: last.network.bytes_total,
            bytes_per_neuron: last.network.bytes_per_neuron,
            bytes_per_synapse: (last.network.bytes_static_synapses + last.network.bytes_plastic_synapses) as f64 / last.network.synapses.max(1) as f64,
            build_s: figure(|r| r.timing.build_s),
            simulate_s: figure(|r| r.timing.simulate_s),
            real_time_factor: figure(|r| r.timing.real_time_factor),
            synaptic_events_per_s: figure(|r| r.timing.synaptic_events_per_s),
            device_bytes: last.gpu.as_ref().map(|g| g.device_bytes_total),
            stage_us_per_step: stages,
            monitor: last.monitor.clone(),
            energy_per_synaptic_event_j: (energy.len() == reports.len()).then(|| Spread::of(&energy)),
            peers: Vec::new(),
            peer_failures: BTreeMap::new(),
            step_p50_us: figure(|r| r.timing.step_us.p50),
            step_p99_us: figure(|r| r.timing.step_us.p99),
            simulate_runs_s: reports.iter().map(|r| r.timing.simulate_s).collect(),
            rates_hz: last.rates_hz.clone(),
        });
    }
    if let Some(peers) = options.peers {
        for (c, case) in results.iter_mut().zip(cases.iter().flat_map(|c| options.backends.iter().map(move |_| c))) {
            let model = case.model.trim_end_matches(".toml");
            for (peer, integrator) in peers.for_case(model, &c.backend, case.euler) {
                progress(&format!("{} in {peer} ({integrator} integrator), {} runs", c.name, options.repeat), 0, 0);
                match peers.run(peer, integrator, model, &c.backend, c.threads, c.duration_ms, case.neurons, options.repeat, c.simulate_s.median) {
                    Ok(r) => c.peers.push(r),
                    Err(e) => {
                        eprintln!("warning: {e}");
                        c.peer_failures.insert(format!("{peer} ({integrator} integrator)"), e.to_string());
                    }
                }
            }
        }
    }
    machine.load_after = load_average();
    Ok(BenchReport { suite: options.suite.into(), repeat: options.repeat, warmup: 1, machine, cases: results })
}

/// How much slower a case ran than in the baseline, by the ratio of median simulate_s. The
/// thresholds sit above the run-to-run spread of a quiet machine (a few %, benchmarks/
/// RESULTS.md) so that a grade means a change, not noise: up to 5 % either way is `Same`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// At least 5 % faster.
    Improved,
    Same,
    /// 5 to 15 % slower.
    Minor,
    /// 15 to 40 % slower.
    Major,
    /// More than 40 % slower.
    Critical,
}

impl Severity {
    pub fn of(ratio: f64) -> Severity {
        match ratio {
            r if r > 1.40 => Severity::Critical,
            r if r > 1.15 => Severity::Major,
            r if r > 1.05 => Severity::Minor,
            r if r < 0.95 => Severity::Improved,
            _ => Severity::Same,
        }
    }
}

/// One case against the baseline.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub name: String,
    pub backend: String,
    pub baseline_s: f64,
    pub now_s: f64,
    /// now / baseline, of the medians.
    pub ratio: f64,
    pub severity: Severity,
}

/// The cases both reports ran alike (same name, biological time, backend and threads), in this
/// report's order; the others are not comparable.
pub fn compare(now: &BenchReport, baseline: &BenchReport) -> Vec<Comparison> {
    now.cases
        .iter()
        .filter_map(|c| {
            let b = baseline.cases.iter().find(|b| b.name == c.name && b.duration_ms == c.duration_ms && b.backend == c.backend && b.threads == c.threads)?;
            let ratio = c.simulate_s.median / b.simulate_s.median;
            Some(Comparison { name: c.name.clone(), backend: c.backend.clone(), baseline_s: b.simulate_s.median, now_s: c.simulate_s.median, ratio, severity: Severity::of(ratio) })
        })
        .collect()
}

/// The results as a Markdown table, with the baseline's columns if there is one.
pub fn markdown(report: &BenchReport, comparisons: &[Comparison]) -> String {
    let m = &report.machine;
    let mut s = format!(
        "fum bench --suite {} --repeat {}: {} ({} logical cores), {}, fum {} ({}), load {:?} -> {:?}\n\n",
        report.suite, report.repeat, m.cpu, m.logical_cores, m.started, m.fum_version, m.fum_commit, m.load_before, m.load_after
    );
    s.push_str("| case | backend | threads | neurons | synapses | B/neuron | B/synapse | build s | simulate s (median, min-max) | RTF | synaptic events/s | step p50 / p99 us |");
    s.push_str(if comparisons.is_empty() { "\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n" } else { " baseline s | ratio | grade |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n" });
    for c in &report.cases {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.1} | {:.2} | {:.3} | {:.3} ({:.3}-{:.3}) | {:.3} | {:.3e} | {:.1} / {:.1} |",
            c.name, c.backend, c.threads, c.neurons, c.synapses, c.bytes_per_neuron, c.bytes_per_synapse, c.build_s.median, c.simulate_s.median, c.simulate_s.min, c.simulate_s.max, c.real_time_factor.median, c.synaptic_events_per_s.median, c.step_p50_us.median, c.step_p99_us.median
        ));
        if !comparisons.is_empty() {
            match comparisons.iter().find(|x| x.name == c.name && x.backend == c.backend) {
                Some(x) => s.push_str(&format!(" {:.3} | {:.2} | {} |", x.baseline_s, x.ratio, serde_json::to_string(&x.severity).unwrap_or_default().trim_matches('"'))),
                None => s.push_str(" - | - | not in the baseline |"),
            }
        }
        s.push('\n');
    }
    let staged: Vec<_> = report.cases.iter().filter_map(|c| Some((c, c.stage_us_per_step.as_ref()?))).collect();
    if !staged.is_empty() {
        s.push_str("\nWhere a step's time goes (us per step, from each case's warm-up run: host wall time on the CPU, device time on a GPU):\n\n| case | backend | threads |");
        let stages = fum_engine::Stage::ALL.map(fum_engine::Stage::name);
        for name in stages {
            s.push_str(&format!(" {name} |"));
        }
        s.push_str(&format!("\n|---|---|---:|{}\n", "---:|".repeat(stages.len())));
        for (c, times) in staged {
            s.push_str(&format!("| {} | {} | {} |", c.name, c.backend, c.threads));
            for name in stages {
                s.push_str(&format!(" {:.2} |", times.get(name).copied().unwrap_or(0.0)));
            }
            s.push('\n');
        }
    }
    if report.cases.iter().any(|c| !c.peers.is_empty()) {
        s.push_str("\nThe same cases in the peer simulators (medians of as many runs; their own timers; ratio = peer / fum simulate time, above 1 fum is faster):\n\n| case | backend | peer | integrator | build s | simulate s | ratio | process wall s (fum build + simulate) | rates Hz peer (fum) |\n|---|---|---|---|---:|---:|---:|---:|---|\n");
        for c in &report.cases {
            for p in &c.peers {
                let rates = p.rates_hz.iter().map(|(k, v)| format!("{k} {v:.2} ({:.2})", c.rates_hz.get(k).copied().unwrap_or(f64::NAN))).collect::<Vec<_>>().join(", ");
                s.push_str(&format!(
                    "| {} | {} | {} {} | {} | {:.3} | {:.3} | {:.2} | {:.2} ({:.2}) | {} |\n",
                    c.name, c.backend, p.peer, p.version, p.integrator, p.build_s.median, p.simulate_s.median, p.simulate_ratio, p.total_s.median, c.build_s.median + c.simulate_s.median, rates
                ));
            }
        }
    }
    let monitored: Vec<_> = report.cases.iter().filter_map(|c| Some((c, c.monitor.as_ref()?))).collect();
    if !monitored.is_empty() {
        s.push_str("\nThe GPU during each case's last run (NVML, every 100 ms):\n\n| case | power W mean / max | energy J | nJ per synaptic event | GPU busy % | memory used GB (max) | temperature C (max) | SM MHz (mean) |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
        let stat = |x: Option<fum_engine::monitor::Stat>| x.map_or("-".to_string(), |x| format!("{:.0} / {:.0}", x.mean, x.max));
        let one = |x: Option<f64>, digits: usize| x.map_or("-".to_string(), |x| format!("{x:.digits$}"));
        for (c, m) in monitored {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                c.name,
                stat(m.power_w),
                one(m.energy_j, 1),
                one(c.energy_per_synaptic_event_j.map(|e| e.median * 1e9), 3),
                one(m.utilization_gpu_pct.map(|u| u.mean), 0),
                one(m.memory_used_bytes.map(|b| b.max / 1e9), 2),
                one(m.temperature_c.map(|t| t.max), 0),
                one(m.sm_clock_mhz.map(|c| c.mean), 0),
            ));
        }
    }
    s
}

/// Where a suite's results go: OUT/bench-<date>.json, with -2, -3, ... after a first one of
/// the same day.
pub fn result_path(out: &Path) -> std::path::PathBuf {
    let date = jiff::Timestamp::now().strftime("%Y-%m-%d").to_string();
    let mut path = out.join(format!("bench-{date}.json"));
    let mut n = 2;
    while path.exists() {
        path = out.join(format!("bench-{date}-{n}.json"));
        n += 1;
    }
    path
}

/// A case result for tests: `simulate_s` (and the real-time factor it gives) spread ±10 %.
#[cfg(test)]
pub(crate) fn sample_case(name: &str, backend: &str, duration_ms: f64, threads: usize, neurons: u64, simulate_s: f64) -> CaseResult {
    let spread = |x: f64| Spread { median: x, min: 0.9 * x, max: 1.1 * x };
    CaseResult {
        name: name.into(),
        model: String::new(),
        backend: backend.into(),
        device: format!("{backend} device"),
        threads,
        duration_ms,
        neurons,
        synapses: 1000 * neurons,
        network_bytes: 0,
        bytes_per_neuron: 0.0,
        bytes_per_synapse: 6.0,
        build_s: Spread::default(),
        simulate_s: spread(simulate_s),
        real_time_factor: spread(simulate_s / (duration_ms / 1000.0)),
        synaptic_events_per_s: Spread::default(),
        device_bytes: None,
        stage_us_per_step: None,
        monitor: None,
        energy_per_synaptic_event_j: None,
        peers: Vec::new(),
        peer_failures: BTreeMap::new(),
        step_p50_us: Spread::default(),
        step_p99_us: Spread::default(),
        simulate_runs_s: vec![simulate_s],
        rates_hz: BTreeMap::new(),
    }
}

/// A report of `cases` for tests.
#[cfg(test)]
pub(crate) fn sample_report(cases: Vec<CaseResult>) -> BenchReport {
    BenchReport { suite: "test".into(), repeat: 1, warmup: 1, machine: Machine::now(), cases }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_the_median_and_range() {
        assert_eq!(Spread::of(&[3.0, 1.0, 2.0]), Spread { median: 2.0, min: 1.0, max: 3.0 });
        assert_eq!(Spread::of(&[4.0, 1.0, 2.0, 3.0]), Spread { median: 2.5, min: 1.0, max: 4.0 });
        assert_eq!(Spread::of(&[7.0]), Spread { median: 7.0, min: 7.0, max: 7.0 });
    }

    #[test]
    fn grades_follow_the_documented_thresholds() {
        let cases = [(0.90, Severity::Improved), (0.96, Severity::Same), (1.05, Severity::Same), (1.06, Severity::Minor), (1.15, Severity::Minor), (1.2, Severity::Major), (1.4, Severity::Major), (1.41, Severity::Critical), (3.0, Severity::Critical)];
        for (ratio, grade) in cases {
            assert_eq!(Severity::of(ratio), grade, "ratio {ratio}");
        }
    }

    #[test]
    fn only_cases_run_alike_are_compared() {
        let case = |name: &str, duration_ms: f64, threads: usize, s: f64| sample_case(name, "cpu", duration_ms, threads, 0, s);
        let report = sample_report;
        let baseline = report(vec![case("a", 1000.0, 2, 1.0), case("b", 200.0, 2, 1.0), case("c", 1000.0, 1, 1.0)]);
        let now = report(vec![case("a", 1000.0, 2, 1.3), case("b", 1000.0, 2, 1.0), case("c", 1000.0, 2, 1.0), case("d", 1000.0, 2, 1.0)]);
        let compared = compare(&now, &baseline);
        assert_eq!(compared.len(), 1, "b ran longer, c on more threads, d is new");
        assert_eq!((compared[0].name.as_str(), compared[0].severity), ("a", Severity::Major));
        assert!((compared[0].ratio - 1.3).abs() < 1e-12);
        assert!(markdown(&now, &compared).contains("| - | - | not in the baseline |"));
    }

    #[test]
    fn every_case_of_every_suite_names_an_asset_model_that_loads() {
        let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models");
        for name in SUITES.split(", ").flat_map(|s| s.split(" or ")) {
            for case in suite(name, &[]).unwrap_or_else(|| panic!("the suite {name}")) {
                crate::Model::load(models.join(case.model)).unwrap_or_else(|e| panic!("{name}/{}: {e}", case.name));
            }
        }
        assert!(suite("tpu", SCALING_SIZES).is_none());
    }

    #[test]
    fn sized_suites_take_their_own_sizes_unless_given() {
        let names = |s: &str, sizes: &[u32]| suite(s, sizes).unwrap().into_iter().map(|c| (c.name, c.neurons, c.duration_ms)).collect::<Vec<_>>();
        assert_eq!(names("poisson", &[]), [("poisson_10000".to_string(), Some(10000), 1000.0), ("poisson_100000".to_string(), Some(100_000), 1000.0), ("poisson_1000000".to_string(), Some(1_000_000), 1000.0)]);
        assert_eq!(names("poisson", &[2000]), [("poisson_2000".to_string(), Some(2000), 1000.0)]);
        assert_eq!(names("scaling", &[]).len(), SCALING_SIZES.len());
        assert_eq!(names("scaling", &[1250]), [("scaling_1250".to_string(), Some(1250), 200.0)]);
    }

    #[test]
    fn the_poisson_set_keeps_100_synapses_and_the_drive_at_any_size() {
        let mut model = crate::Model::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/poisson_drive.toml")).unwrap();
        assert_eq!(model.spec.populations.iter().map(|p| p.size).sum::<u32>(), 10_000, "10,000 neurons as written");
        scale(&mut model, 2500);
        assert_eq!(model.spec.populations.iter().map(|p| p.size).collect::<Vec<_>>(), [2000, 500], "80 % E");
        model.revalidate().unwrap();
        let mut sim = crate::Simulation::from_model(&model, 1, 1).unwrap();
        let synapses = crate::engine::report::NetworkStats::measure(&mut sim.world).synapses;
        assert_eq!(synapses, 2500 * 100, "100 synapses per neuron (80 E, 20 I) at any size");
    }

    #[test]
    fn suites_run_where_they_belong() {
        use BackendChoice::{Cpu, Cuda};
        assert_eq!(default_backends("cpu", true), [Cpu]);
        assert_eq!(default_backends("poisson", true), [Cpu], "the CPU bar's scaling set");
        assert_eq!(default_backends("gpu", false), [Cuda], "a gpu suite without a GPU fails, it does not fall back");
        assert_eq!(default_backends("smoke", true), [Cpu, Cuda]);
        assert_eq!(default_backends("scaling", false), [Cpu]);
    }

    #[test]
    fn scaling_keeps_the_proportions_and_the_in_degree() {
        let mut model = crate::Model::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/scaling.toml")).unwrap();
        scale(&mut model, 2503);
        let sizes: Vec<u32> = model.spec.populations.iter().map(|p| p.size).collect();
        assert_eq!(sizes, [2002, 501], "80 % E, the rounding to the last");
        model.revalidate().unwrap();
        let mut sim = crate::Simulation::from_model(&model, 1, 1).unwrap();
        let synapses = crate::engine::report::NetworkStats::measure(&mut sim.world).synapses;
        assert_eq!(synapses, 2503 * 1000, "1000 synapses per neuron at any size");
    }
}
