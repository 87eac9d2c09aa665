//! Checkpoints and resume: a run killed at any moment, stopped, or interrupted resumes to the
//! same spikes as an uninterrupted run; corrupt checkpoints are detected and skipped.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A balanced network with Poisson drive and STDP, long enough to be killed mid-run.
const MODEL: &str = r#"
[simulation]
dt_ms = 0.1
duration_ms = 1500.0
seed = 11

[[populations]]
name = "E"
size = 1600
model = "lif_cuba"
tau_m_ms = 20.0
e_l_mv = 0.0
v_th_mv = 20.0
v_reset_mv = 10.0
tau_syn_ex_ms = 0.5
tau_syn_in_ms = 0.5
v_init_mv = { uniform = [0.0, 20.0] }

[[populations]]
name = "I"
size = 400
model = "lif_cuba"
tau_m_ms = 20.0
e_l_mv = 0.0
v_th_mv = 20.0
v_reset_mv = 10.0
tau_syn_ex_ms = 0.5
tau_syn_in_ms = 0.5

[[projections]]
name = "EE"
source = "E"
target = "E"
rule = { fixed_indegree = 100 }
weight = 50.0
delay_ms = { uniform = [1.0, 3.0] }
plasticity = "stdp"

[[projections]]
name = "EI"
source = "E"
target = "I"
rule = { fixed_indegree = 100 }
weight = 50.0
delay_ms = 1.5

[[projections]]
name = "IE"
source = "I"
target = "E"
rule = { fixed_indegree = 25 }
receptor = "inhibitory"
weight = 250.0
delay_ms = 1.5

[[plasticity]]
name = "stdp"
a_plus = 0.01
a_minus = 0.0105
w_max = 100.0

[[inputs]]
name = "drive"
kind = "poisson"
target = "E"
rate_hz = 16000.0
weight = 50.0

[[inputs]]
name = "drive_I"
kind = "poisson"
target = "I"
rate_hz = 12000.0
weight = 50.0

[recording]
spikes = ["E", "I"]

[[recording.probes]]
name = "membrane"
variable = "v"
population = "E"
neurons = [1, 2]
interval_ms = 1.0
"#;

fn fum() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fum"))
}

fn write_model(dir: &Path) -> PathBuf {
    let path = dir.join("model.toml");
    std::fs::write(&path, MODEL).unwrap();
    path
}

/// Spike times and ids of every population in `run/spikes.h5`, and the probe values.
fn outputs(run: &Path) -> (Vec<(String, Vec<f64>, Vec<u64>)>, Vec<f32>) {
    let file = hdf5::File::open(run.join("spikes.h5")).unwrap();
    let spikes = ["E", "I"]
        .iter()
        .map(|pop| {
            let g = file.group(&format!("spikes/{pop}")).unwrap();
            (pop.to_string(), g.dataset("timestamps").unwrap().read_raw().unwrap(), g.dataset("node_ids").unwrap().read_raw().unwrap())
        })
        .collect();
    let probes = hdf5::File::open(run.join("probes.h5")).unwrap().dataset("membrane/values").unwrap().read_raw().unwrap();
    (spikes, probes)
}

fn reference(dir: &Path, model: &Path) -> (Vec<(String, Vec<f64>, Vec<u64>)>, Vec<f32>) {
    reference_with(dir, model, &[])
}

fn reference_with(dir: &Path, model: &Path, extra: &[&str]) -> (Vec<(String, Vec<f64>, Vec<u64>)>, Vec<f32>) {
    let out = dir.join("reference");
    let status = fum().args(["run", model.to_str().unwrap(), "--out", out.to_str().unwrap(), "--threads", "2", "--quiet"]).args(extra).status().unwrap();
    assert!(status.success());
    let o = outputs(&out);
    assert!(o.0[0].1.len() > 10_000, "the test network must be active");
    o
}

fn resume(run: &Path) -> std::process::Output {
    fum().args(["resume", run.to_str().unwrap(), "--quiet"]).output().unwrap()
}

#[test]
fn sigkill_at_random_moments_then_resume_gives_the_same_spikes() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let expected = reference(dir.path(), &model);
    let (mut resumed, mut during_write, mut mid_run) = (0, 0, 0);
    // Deterministic pseudo-random kill times over the run's wall time.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..24 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let wait = Duration::from_millis(40 + x % 900);
        let out = dir.path().join(format!("killed-{i}"));
        let mut child = fum()
            .args(["run", model.to_str().unwrap(), "--out", out.to_str().unwrap(), "--threads", "2", "--checkpoint-every", "10ms", "--keep-checkpoints", "2", "--quiet"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(wait);
        let finished = child.try_wait().unwrap().is_some();
        child.kill().ok(); // SIGKILL
        child.wait().unwrap();
        let files: Vec<String> = std::fs::read_dir(out.join("checkpoints")).into_iter().flatten().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        if files.iter().any(|f| f.ends_with(".tmp")) {
            during_write += 1; // killed while a checkpoint was being written
        }
        if !files.iter().any(|f| f.starts_with("ckpt-")) {
            // Killed before the first checkpoint existed: resume must say so.
            let o = resume(&out);
            assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("no checkpoints"));
            continue;
        }
        if !finished {
            mid_run += 1;
        }
        let o = resume(&out);
        assert!(o.status.success(), "resume {i} failed: {}", String::from_utf8_lossy(&o.stderr));
        assert!(outputs(&out) == expected, "kill {i} after {wait:?}: resumed outputs differ from the uninterrupted run");
        resumed += 1;
    }
    eprintln!("{resumed} kills resumed ({mid_run} mid-run, {during_write} during a checkpoint write)");
    assert!(resumed >= 20, "only {resumed} of 24 kills left a checkpoint");
    assert!(mid_run >= 15, "only {mid_run} kills hit a running simulation");
    assert!(during_write >= 1, "no kill landed during a checkpoint write");
}

#[test]
fn stop_after_then_resume_equals_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let expected = reference(dir.path(), &model);
    let out = dir.path().join("stopped");
    let status = fum().args(["run", model.to_str().unwrap(), "--out", out.to_str().unwrap(), "--threads", "1", "--stop-after", "600ms", "--quiet"]).status().unwrap();
    assert!(status.success());
    assert!(!out.join("spikes.h5").exists(), "a stopped run writes its outputs when it finishes");
    // Resume with another thread count: the spikes do not depend on it.
    let o = fum().args(["resume", out.to_str().unwrap(), "--threads", "2", "--quiet"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(outputs(&out) == expected);
}

#[test]
fn checkpoints_due_faster_than_the_disk_supersede_each_other_without_losing_output() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let expected = reference(dir.path(), &model);
    let out = dir.path().join("every-step");
    let status = fum()
        .args(["run", model.to_str().unwrap(), "--out", out.to_str().unwrap(), "--threads", "2", "--checkpoint-every", "0.1ms", "--quiet"])
        .status()
        .unwrap();
    assert!(status.success());
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    let (written, superseded) = (report["timing"]["checkpoints_written"].as_u64().unwrap(), report["timing"]["checkpoints_superseded"].as_u64().unwrap());
    assert!(superseded > 0 && written > 1, "written {written}, superseded {superseded}");
    assert!(outputs(&out) == expected, "superseded checkpoints lost recorded output");
    // And the newest checkpoint resumes to the same outputs.
    assert!(resume(&out).status.success());
    assert!(outputs(&out) == expected);
}

/// Runs to 900 ms with checkpoints at 300 and 600 ms, stopping at 900 (three checkpoints).
fn stopped_run(dir: &Path, model: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    let status = fum()
        .args(["run", model.to_str().unwrap(), "--out", out.to_str().unwrap(), "--threads", "2", "--checkpoint-every", "300ms", "--keep-checkpoints", "5", "--stop-after", "900ms", "--quiet"])
        .status()
        .unwrap();
    assert!(status.success());
    out
}

#[test]
fn corrupt_checkpoints_are_detected_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let expected = reference(dir.path(), &model);
    type Damage = fn(&mut Vec<u8>);
    let damages: [(&str, Damage, &str); 5] = [
        ("flip-data", |b| { let n = b.len(); b[n - 100] ^= 0x40 }, "checksum mismatch in section"),
        ("flip-header", |b| b[40] ^= 0x01, "checksum mismatch in the header"),
        ("truncate", |b| { let n = b.len(); b.truncate(n * 2 / 3) }, "truncated"),
        ("empty", |b| b.clear(), "truncated"),
        ("version", |b| b[8] = 99, "format version 99"),
    ];
    for (name, damage, message) in damages {
        let out = stopped_run(dir.path(), &model, name);
        let newest = out.join("checkpoints/ckpt-000009000");
        let mut bytes = std::fs::read(&newest).unwrap();
        damage(&mut bytes);
        std::fs::write(&newest, bytes).unwrap();
        let inspect = fum().args(["inspect", newest.to_str().unwrap()]).output().unwrap();
        assert!(!inspect.status.success() && String::from_utf8_lossy(&inspect.stderr).contains(message), "{name}: {}", String::from_utf8_lossy(&inspect.stderr));
        let o = resume(&out);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{name}: {stderr}");
        assert!(stderr.contains("skipping checkpoint") && stderr.contains(message), "{name}: {stderr}");
        assert!(stderr.contains("resuming from") && stderr.contains("ckpt-000006000"), "{name}: falls back to the previous checkpoint: {stderr}");
        assert!(outputs(&out) == expected, "{name}: resumed outputs differ");
    }
}

#[test]
fn inspect_describes_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let out = stopped_run(dir.path(), &model, "run");
    let o = fum().args(["inspect", out.join("checkpoints/ckpt-000003000").to_str().unwrap()]).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for fragment in ["model hash", "step             3000", "shard/0/v", "block/0/weight", "verify"] {
        assert!(text.contains(fragment), "{fragment} missing: {text}");
    }
}

#[test]
fn checkpoint_of_another_model_is_refused() {
    use fum::engine::checkpoint::{Checkpoint, Snapshot};
    let dir = tempfile::tempdir().unwrap();
    let model = common::parse(MODEL);
    let mut sim = fum::Simulation::from_model(&model, 1, 2).unwrap();
    let path = Snapshot::take(&mut sim.world, &model.source, model.hash(), serde_json::Value::Null).write(dir.path(), 1).unwrap();
    let ckpt = Checkpoint::open(&path).unwrap();
    let err = ckpt.restore(&mut sim.world, model.hash() ^ 1).unwrap_err().to_string();
    assert!(err.contains("written for another model"), "{err}");
    let mut other_shards = fum::Simulation::from_model(&model, 1, 3).unwrap();
    assert!(ckpt.restore(&mut other_shards.world, model.hash()).is_err());
    ckpt.restore(&mut sim.world, model.hash()).unwrap();
}

#[test]
fn sigint_checkpoints_writes_outputs_and_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    // Long enough that the signal lands mid-run.
    let expected = reference_with(dir.path(), &model, &["--duration", "6s"]);
    let out = dir.path().join("interrupted");
    let child = fum()
        .args(["run", model.to_str().unwrap(), "--out", out.to_str().unwrap(), "--threads", "2", "--checkpoint-every", "500ms", "--duration", "6s", "--quiet"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let status = child.wait_with_output().unwrap().status;
    assert_eq!(status.code(), Some(3), "an interrupted run exits with status 3");
    assert!(out.join("spikes.h5").exists() && out.join("run.json").exists(), "outputs so far are written");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(report["outcome"], "interrupted");
    let o = resume(&out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(outputs(&out) == expected);
}

#[test]
fn health_monitor_stops_a_runaway_network_with_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let out = dir.path().join("runaway");
    let o = fum().args(["run", model.to_str().unwrap(), "--out", out.to_str().unwrap(), "--max-rate-hz", "5", "--quiet"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("health check failed at step") && stderr.contains("population E: runaway rate"), "{stderr}");
    assert!(stderr.contains("checkpoint"), "{stderr}");
    assert!(std::fs::read_dir(out.join("checkpoints")).unwrap().count() >= 1, "a final checkpoint is written");
}

#[test]
fn health_monitor_checks_plastic_weights_every_hundredth_check() {
    use fum::engine::components::{SynapseBlocks, Weights};
    use fum::engine::health::{HealthMonitor, WEIGHT_CHECK_EVERY};
    let model = common::asset("stdp_balanced.toml");
    let mut sim = fum::Simulation::from_model(&model, 1, 1).expect("builds");
    let mut query = sim.world.query::<&mut SynapseBlocks>();
    let mut blocks = query.iter_mut(&mut sim.world).next().unwrap();
    let block = blocks.0.iter_mut().find(|b| b.plastic.is_some()).expect("a plastic block");
    let Weights::F32(weights) = &mut block.weight else { panic!("stdp_balanced stores f32 weights") };
    weights[7] = f32::NAN;
    let mut health = HealthMonitor::new(10, 1000.0, &sim.world);
    assert!(health.check(&mut sim.world, 10).is_ok(), "weights are not due at the first check");
    let e = health.check(&mut sim.world, 10 * WEIGHT_CHECK_EVERY).expect_err("a NaN weight is found");
    assert!(e.to_string().contains("weight NaN outside"), "{e}");
}
