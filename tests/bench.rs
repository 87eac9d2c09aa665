//! `fum bench` end to end: the smoke suite runs the asset models, writes a results file that
//! reads back as a baseline, and grades against a baseline with the exit status scripts check
//! (baselines far off either way, so that no assertion depends on this machine's speed).

use std::path::Path;
use std::process::{Command, Output};

use fum::bench::{BenchReport, Severity};

fn bench(out: &Path, extra: &[&str]) -> Output {
    bench_suite("smoke", out, extra)
}

fn bench_suite(suite: &str, out: &Path, extra: &[&str]) -> Output {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models");
    Command::new(env!("CARGO_BIN_EXE_fum"))
        .args(["bench", "--suite", suite, "--repeat", "2", "--threads", "1", "--backend", "cpu", "--models", models.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap()
}

/// The results files in `out` (not the plots beside them).
fn results(out: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(out).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "json")).collect();
    files.sort();
    files
}

#[test]
fn the_smoke_suite_reports_every_case_and_grades_a_regression() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench");
    let first = bench(&out, &[]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let files = results(&out);
    assert_eq!(files.len(), 1);
    let report: BenchReport = serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    assert_eq!((report.suite.as_str(), report.repeat, report.warmup), ("smoke", 2, 1));
    assert_eq!(report.cases.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["vogels_abbott_cuba", "stdp_balanced"]);
    for c in &report.cases {
        assert_eq!(c.simulate_runs_s.len(), 2, "{}: the warm-up run is not counted", c.name);
        assert!(c.simulate_s.min > 0.0 && c.simulate_s.min <= c.simulate_s.median && c.simulate_s.median <= c.simulate_s.max, "{}", c.name);
        assert!((c.real_time_factor.median - c.simulate_s.median / (c.duration_ms / 1000.0)).abs() < 0.1 * c.real_time_factor.median, "{}", c.name);
        assert!(c.neurons == 4000 && c.synapses > 300_000, "{}", c.name);
        assert_eq!(c.bytes_per_synapse, 6.0, "{}: a u16 target and an f32 weight", c.name);
        assert!(c.bytes_per_neuron > 0.0 && c.network_bytes > 6 * c.synapses, "{}", c.name);
        // Of the 2000 steps (0.1 ms each) at least half take the median or more, so it is at
        // most twice the mean, which the simulate time bounds (each run's own figures).
        assert!(c.step_p50_us.min > 0.0, "{}", c.name);
        let bound_us = 2.0 * c.simulate_s.max / 2000.0 * 1e6 * 1.01;
        assert!(c.step_p50_us.max <= bound_us, "{}: p50 {} us, bound {bound_us} us", c.name, c.step_p50_us.max);
        assert!(c.step_p50_us.median <= c.step_p99_us.median, "{}", c.name);
        assert!(c.rates_hz["E"] > 1.0, "{}: the network fires", c.name);
        assert!(c.synaptic_events_per_s.min > 0.0, "{}", c.name);
        // The warm-up run timed the seven stages; the measured runs did not pay for it.
        let stages = c.stage_us_per_step.as_ref().unwrap_or_else(|| panic!("{}: stage times", c.name));
        assert_eq!(stages.len(), 7, "{}", c.name);
        assert!(stages["update"] > 0.0 && stages["deliver"] > 0.0, "{}: {stages:?}", c.name);
        assert!(c.monitor.is_none() && c.device_bytes.is_none() && c.energy_per_synaptic_event_j.is_none(), "{}: nothing to monitor on the CPU", c.name);
        assert_eq!((c.backend.as_str(), c.threads), ("cpu", 1));
    }
    assert!(report.machine.logical_cores >= 1 && !report.machine.cpu.is_empty() && !report.machine.fum_commit.is_empty());
    let table = String::from_utf8_lossy(&first.stdout);
    assert!(table.contains("| vogels_abbott_cuba | cpu | 1 | 4000 |"), "{table}");
    assert!(table.contains("| case | backend | threads | input | update | exchange | deliver | plasticity | record | advance |"), "{table}");

    // Grades are about time, which a test must not depend on: baselines far off either way
    // grade the same on any machine under any load.
    let scaled = |factor: f64, name: &str| {
        let mut b = report.clone();
        for c in &mut b.cases {
            c.simulate_s.median *= factor;
        }
        let path = dir.path().join(name);
        std::fs::write(&path, serde_json::to_string(&b).unwrap()).unwrap();
        path
    };
    let slow = scaled(100.0, "slow.json");
    let faster = bench(&out, &["--baseline", slow.to_str().unwrap()]);
    assert!(faster.status.success(), "{}", String::from_utf8_lossy(&faster.stderr));
    let table = String::from_utf8_lossy(&faster.stdout);
    assert!(table.contains("| baseline s | ratio | grade |") && table.matches("| improved |").count() == 2, "{table}");
    assert_eq!(results(&out).len(), 2, "a second results file of the same day gets a name of its own");

    let fast = scaled(0.01, "fast.json");
    let slower = bench(&out, &["--baseline", fast.to_str().unwrap()]);
    assert_eq!(slower.status.code(), Some(4), "{}", String::from_utf8_lossy(&slower.stderr));
    let table = String::from_utf8_lossy(&slower.stdout);
    assert_eq!(table.matches("| critical |").count(), 2, "{table}");
    assert_eq!(Severity::of(2.0), Severity::Critical);
}

#[test]
fn a_missing_or_foreign_baseline_fails_before_any_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench");
    let missing = bench(&out, &["--baseline", dir.path().join("nope.json").to_str().unwrap()]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("reading the baseline"), "{}", String::from_utf8_lossy(&missing.stderr));
    let foreign = dir.path().join("run.json");
    std::fs::write(&foreign, "{\"steps\": 10}").unwrap();
    let wrong = bench(&out, &["--baseline", foreign.to_str().unwrap()]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("is not a fum bench results file"));
    assert!(!String::from_utf8_lossy(&wrong.stderr).contains("warm-up"), "nothing ran");
    let unknown = bench_suite("nope", &out, &[]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown suite \"nope\""));
}

#[test]
fn a_scaling_run_plots_its_real_time_factor_and_stages_and_plot_redraws_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench");
    let run = bench_suite("scaling", &out, &["--sizes", "1250,2500"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let json = results(&out).pop().unwrap();
    let report: BenchReport = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report.cases.iter().map(|c| (c.name.as_str(), c.neurons, c.synapses)).collect::<Vec<_>>(), [("scaling_1250", 1250, 1_250_000), ("scaling_2500", 2500, 2_500_000)]);
    let stem = json.with_extension("");
    for plot in ["rtf", "stages"] {
        for ext in ["svg", "png"] {
            let plot = std::path::PathBuf::from(format!("{}-{plot}.{ext}", stem.display()));
            assert!(plot.exists(), "{}", plot.display());
        }
    }
    let plots = dir.path().join("plots");
    let redraw = Command::new(env!("CARGO_BIN_EXE_fum")).args(["bench", "--plot", json.to_str().unwrap(), "--out", plots.to_str().unwrap()]).output().unwrap();
    assert!(redraw.status.success(), "{}", String::from_utf8_lossy(&redraw.stderr));
    let svg = std::fs::read_to_string(plots.join("bench-rtf.svg")).unwrap();
    assert!(svg.contains("cpu, 1 CPU thread"), "one series, named by backend and device");
    assert!(std::fs::read_to_string(plots.join("bench-stages.svg")).unwrap().contains("scaling_2500 (cpu, 1T): "));
}

/// `--peers` through a stand-in for benchmarks/peers/run_peer.py (a shell script, so that the
/// test needs neither Python nor a peer): the listing's peer runs every case it lists (with
/// its reference integrator, and fum's where that differs), its times come back with the
/// ratio to fum's, and a case it fails on is recorded with why.
#[test]
fn peers_run_beside_each_case_and_their_failures_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("run_peer.sh");
    std::fs::write(
        &script,
        r#"
if [ "$1" = "--list" ]; then
  echo '{"peers": {"fakesim": {"version": "1.0", "models": ["vogels_abbott_cuba", "stdp_balanced"], "backends": ["cpu"], "matched_differs": ["vogels_abbott_cuba"]}}, "missing": {"othersim": "No module named othersim"}}'
  exit 0
fi
case "$*" in
  *stdp_balanced*) echo '{"peer": "fakesim", "error": "no plasticity in fakesim"}'; exit 3 ;;
  *matched*) echo '{"peer": "fakesim", "version": "1.0", "integrator": "exponential_euler", "settings": "as shipped", "build_s": 0.5, "simulate_s": 4.0, "total_s": 5.0, "rates_hz": {"E": 5.0, "I": 6.0}}'; exit 0 ;;
esac
echo '{"peer": "fakesim", "version": "1.0", "integrator": "euler", "settings": "as shipped", "build_s": 0.5, "simulate_s": 2.0, "total_s": 3.0, "rates_hz": {"E": 5.0, "I": 6.0}}'
"#,
    )
    .unwrap();
    let out = dir.path().join("bench");
    let run = bench(&out, &["--peers", "--python", "sh", "--peers-script", script.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("othersim is not available here: No module named othersim"), "{stderr}");
    let report: BenchReport = serde_json::from_str(&std::fs::read_to_string(&results(&out)[0]).unwrap()).unwrap();
    let cuba = &report.cases[0];
    // Its reference integrator is not fum's on this model, so it ran both ways.
    assert_eq!(cuba.peers.iter().map(|p| (p.integrator.as_str(), p.simulate_s.median)).collect::<Vec<_>>(), [("euler", 2.0), ("exponential_euler", 4.0)]);
    let p = &cuba.peers[0];
    assert_eq!((p.peer.as_str(), p.version.as_str(), p.integrator.as_str()), ("fakesim", "1.0", "euler"));
    assert_eq!((p.simulate_s.median, p.build_s.median, p.total_s.median), (2.0, 0.5, 3.0));
    assert!((p.simulate_ratio - 2.0 / cuba.simulate_s.median).abs() < 1e-9 * p.simulate_ratio);
    assert!(cuba.peer_failures.is_empty());
    let stdp = &report.cases[1];
    assert!(stdp.peers.is_empty());
    assert_eq!(stdp.peer_failures["fakesim (reference integrator)"], "fakesim on stdp_balanced: no plasticity in fakesim");
    let table = String::from_utf8_lossy(&run.stdout);
    assert!(table.contains("| vogels_abbott_cuba | cpu | fakesim 1.0 | euler | 0.500 | 2.000 |"), "{table}");

    let missing = bench(&out, &["--peers", "--python", "sh", "--peers-script", dir.path().join("nope.py").to_str().unwrap()]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope.py not found"));
}
