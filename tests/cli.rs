//! `fum run` end to end: the SONATA spike file read back by an independent HDF5 reader holds
//! exactly the spikes the engine produced, and run.json carries the summary.

mod common;
use common::*;

use std::process::Command;

#[test]
fn run_writes_sonata_spikes_probes_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let model_path = dir.path().join("small.toml");
    std::fs::write(&model_path, SMALL_NETWORK).unwrap();
    let out = dir.path().join("run");
    let status = Command::new(env!("CARGO_BIN_EXE_fum"))
        .args(["run", model_path.to_str().unwrap(), "--out", out.to_str().unwrap(), "--threads", "2", "--shards", "3", "--quiet"])
        .status()
        .unwrap();
    assert!(status.success());

    let expected = spikes(&simulate(&parse(SMALL_NETWORK), 1, 1));
    assert!(expected.len() > 500, "the test network must fire");
    let file = hdf5::File::open(out.join("spikes.h5")).unwrap();
    let mut read = Vec::new();
    for (pop, name) in ["exc", "inh"].iter().enumerate() {
        let group = file.group(&format!("spikes/{name}")).unwrap();
        assert_eq!(group.attr("sorting").unwrap().read_scalar::<fum::engine::recording::Sorting>().unwrap(), fum::engine::recording::Sorting::by_time);
        let ts = group.dataset("timestamps").unwrap();
        let units: hdf5::types::VarLenUnicode = ts.attr("units").unwrap().read_scalar().unwrap();
        assert_eq!(units.as_str(), "ms");
        let times: Vec<f64> = ts.read_raw().unwrap();
        let ids: Vec<u64> = group.dataset("node_ids").unwrap().read_raw().unwrap();
        assert_eq!(times.len(), ids.len());
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "sorted by time");
        read.extend(times.iter().zip(&ids).map(|(&t, &n)| (pop, (t / 0.1).round() as u32, n as u32)));
    }
    assert!(read == expected, "spikes.h5 differs from the engine's spikes");

    let probes = hdf5::File::open(out.join("probes.h5")).unwrap();
    let values = probes.dataset("membrane/values").unwrap();
    assert_eq!(values.shape(), vec![200, 2]);
    let v: Vec<f32> = values.read_raw().unwrap();
    assert!(v.iter().all(|&x| (0.0..20.0).contains(&x)), "membrane potentials between rest and threshold");

    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(report["network"]["neurons"], 375);
    assert_eq!(report["network"]["shards"], 3);
    assert_eq!(report["threads"], 2);
    assert_eq!(report["spikes_total"], expected.len() as u64);
    assert_eq!(report["network"]["bytes_per_static_synapse"], 6.0);
    assert_eq!(report["stdp_history_overflows"], 0);
    for key in ["build_s", "simulate_s", "real_time_factor"] {
        assert!(report["timing"][key].as_f64().unwrap() > 0.0, "{key}");
    }
    assert!(report["rates_hz"]["exc"].as_f64().unwrap() > 1.0);
    // The step-time distribution: ordered percentiles whose mean accounts for most of the
    // simulate time (the rest is the duties between steps).
    let step = |k: &str| report["timing"]["step_us"][k].as_f64().unwrap();
    assert!(0.0 < step("p50") && step("p50") <= step("p99") && step("p99") <= step("max"), "{}", report["timing"]);
    let stepping_s = step("mean") * report["steps"].as_f64().unwrap() * 1e-6;
    let simulate_s = report["timing"]["simulate_s"].as_f64().unwrap();
    assert!(stepping_s > 0.3 * simulate_s && stepping_s < 1.05 * simulate_s, "steps {stepping_s} s of {simulate_s} s");
    // The timeline: stretches of 100 ms of biological time covering the run, whose wall times
    // add up to the simulate time (less what the loop did after its last step).
    let timeline = &report["timing"]["timeline"];
    assert_eq!(timeline["bucket_ms"].as_f64(), Some(100.0));
    let stretches: Vec<f64> = timeline["wall_s"].as_array().unwrap().iter().map(|w| w.as_f64().unwrap()).collect();
    assert_eq!(stretches.len() as f64, (report["duration_ms"].as_f64().unwrap() / 100.0).ceil());
    let looped: f64 = stretches.iter().sum();
    assert!(stretches.iter().all(|&w| w > 0.0) && looped <= simulate_s && looped > 0.9 * simulate_s, "{stretches:?} of {simulate_s} s");
}

#[test]
fn check_prints_the_size() {
    let output = Command::new(env!("CARGO_BIN_EXE_fum")).args(["check", repo().join("assets/models/brunel.toml").to_str().unwrap()]).output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("12500 neurons") && text.contains("~15625000"), "{text}");
}

/// `fum ARGS`: exit status and stderr.
fn fum(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fum")).args(args).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn small_model(dir: &std::path::Path) -> String {
    let path = dir.join("small.toml");
    std::fs::write(&path, SMALL_NETWORK).unwrap();
    path.to_str().unwrap().to_string()
}

/// Item 14: each bad value is refused by the parser with what is wrong (exit 2), before the run.
#[test]
fn bad_option_values_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let model = small_model(dir.path());
    let out = dir.path().join("out");
    let out = out.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--duration", "-1s"], "\"-1s\" is not a positive duration"),
        (&["--duration", "10"], "\"10\" has no unit: write 10ms or 10s"),
        (&["--duration", "nan ms"], "not a positive duration"),
        (&["--stop-after", "-5ms"], "\"-5ms\" is not a positive duration"),
        (&["--keep-checkpoints", "0"], "keep at least 1 checkpoint"),
        (&["--max-rate-hz", "nan"], "\"nan\" is not a positive, finite rate"),
        (&["--max-rate-hz", "inf"], "\"inf\" is not a positive, finite rate"),
        (&["--max-rate-hz", "-3"], "\"-3\" is not a positive, finite rate"),
        (&["--threads", "100000"], "100000 threads on"),
    ];
    for (extra, message) in cases {
        let mut args = vec!["run", &model, "--out", out, "--quiet"];
        args.extend_from_slice(extra);
        let (code, stderr) = fum(&args);
        assert_eq!(code, Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains(message) && !stderr.contains("unexpected argument"), "{extra:?}: {stderr}");
        assert!(!std::path::Path::new(out).exists(), "{extra:?} wrote output");
    }
    let (code, stderr) = fum(&["resume", out, "--threads", "100000"]);
    assert_eq!(code, Some(2), "{stderr}");
    // Units given: accepted.
    let (code, stderr) = fum(&["run", &model, "--duration", "20ms", "--keep-checkpoints", "1", "--max-rate-hz", "500", "--quiet"]);
    assert_eq!(code, Some(0), "{stderr}");
}

/// Item 14: a reader that stops early (`fum inspect CKPT | head`) ends fum quietly, with success.
#[test]
fn a_closed_stdout_is_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let model = small_model(dir.path());
    let out = dir.path().join("out");
    let (code, stderr) = fum(&["run", &model, "--out", out.to_str().unwrap(), "--duration", "20ms", "--checkpoint-every", "10ms", "--quiet"]);
    assert_eq!(code, Some(0), "{stderr}");
    let ckpt = std::fs::read_dir(out.join("checkpoints")).unwrap().next().unwrap().unwrap().path();
    // A run's summary comes after its outputs: a reader that went away loses nothing either.
    let rerun = vec!["run".to_string(), model.clone(), "--duration".into(), "20ms".into(), "--out".into(), out.to_str().unwrap().into(), "--overwrite".into()];
    for args in [vec!["inspect".to_string(), ckpt.to_str().unwrap().to_string()], vec!["check".to_string(), model.clone()], rerun] {
        // The read end is closed before fum writes: every write fails with a broken pipe.
        let mut child = Command::new(env!("CARGO_BIN_EXE_fum")).args(&args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        drop(child.stdout.take());
        let result = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    assert!(out.join("run.json").exists() && out.join("spikes.h5").exists());
}

/// Item 6: the shipped STDP model runs with any seed (its weight probe picks existing synapses).
#[test]
fn the_shipped_stdp_model_runs_with_another_seed() {
    let dir = tempfile::tempdir().unwrap();
    let model = repo().join("assets/models/stdp_balanced.toml");
    let out = dir.path().join("out");
    let (code, stderr) = fum(&["run", model.to_str().unwrap(), "--seed", "3", "--duration", "2ms", "--out", out.to_str().unwrap(), "--quiet"]);
    assert_eq!(code, Some(0), "{stderr}");
    let probes = hdf5::File::open(out.join("probes.h5")).unwrap();
    assert_eq!(probes.dataset("learning_synapses/pre_post").unwrap().shape(), vec![6, 2]);
}

/// Synaptic events count each spike once per outgoing synapse (fixed out-degrees make that
/// exact: 15 per E spike, none for I, which projects nowhere), and `--time-stages` splits the
/// stepping into the seven stages, whose sum cannot exceed the simulate time.
#[test]
fn run_reports_synaptic_events_and_stage_times() {
    const MODEL: &str = r#"
[simulation]
dt_ms = 0.1
duration_ms = 200.0
seed = 3
[[populations]]
name = "E"
size = 80
model = "lif_cuba"
[[populations]]
name = "I"
size = 20
model = "lif_cuba"
[[projections]]
name = "E_to_E"
source = "E"
target = "E"
rule = { fixed_outdegree = 10 }
weight = 20.0
[[projections]]
name = "E_to_I"
source = "E"
target = "I"
rule = { fixed_outdegree = 5 }
weight = 20.0
[[inputs]]
name = "drive_E"
target = "E"
kind = "poisson"
rate_hz = 8000.0
weight = 30.0
[[inputs]]
name = "drive_I"
target = "I"
kind = "poisson"
rate_hz = 8000.0
weight = 30.0
"#;
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("events.toml");
    std::fs::write(&model, MODEL).unwrap();
    let out = dir.path().join("run");
    let (code, stderr) = fum(&["run", model.to_str().unwrap(), "--out", out.to_str().unwrap(), "--threads", "2", "--time-stages", "--quiet"]);
    assert_eq!(code, Some(0), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    // Spikes per population from its rate (rate x size x 0.2 s).
    let spikes = |pop: &str| (report["rates_hz"][pop].as_f64().unwrap() * if pop == "E" { 80.0 } else { 20.0 } * 0.2).round();
    assert!(spikes("E") > 100.0 && spikes("I") > 10.0, "both populations fire: {}", report["rates_hz"]);
    assert_eq!(spikes("E") + spikes("I"), report["spikes_total"].as_f64().unwrap());
    assert_eq!(report["synaptic_events"].as_f64().unwrap(), 15.0 * spikes("E"));
    let simulate_s = report["timing"]["simulate_s"].as_f64().unwrap();
    assert!((report["timing"]["synaptic_events_per_s"].as_f64().unwrap() - 15.0 * spikes("E") / simulate_s).abs() < 1e-6 * 15.0 * spikes("E") / simulate_s);
    let stages = report["timing"]["stages_s"].as_object().unwrap();
    let names: Vec<&str> = stages.keys().map(String::as_str).collect();
    assert_eq!(names, ["advance", "deliver", "exchange", "input", "plasticity", "record", "update"]);
    let sum: f64 = stages.values().map(|v| v.as_f64().unwrap()).sum();
    assert!(stages.values().all(|v| v.as_f64().unwrap() >= 0.0) && sum > 0.0 && sum <= simulate_s, "{stages:?} of {simulate_s} s");
    // Without the flag, nothing is timed apart.
    let (code, stderr) = fum(&["run", model.to_str().unwrap(), "--out", out.to_str().unwrap(), "--overwrite", "--quiet"]);
    assert_eq!(code, Some(0), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert!(report["timing"].get("stages_s").is_none());
}
