//! Checkpoints and resume: a run killed at any moment, stopped, or interrupted resumes to the
//! same spikes as an uninterrupted run; corrupt checkpoints are detected and skipped.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use fum::engine::checkpoint;

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

/// Spike times and ids of every population, and the probe values.
type Outputs = (Vec<(String, Vec<f64>, Vec<u64>)>, Vec<f32>);

/// The outputs in `run/spikes.h5` and `run/probes.h5`.
fn outputs(run: &Path) -> Outputs {
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

fn reference(dir: &Path, model: &Path) -> Outputs {
    let out = dir.join("reference");
    let status = fum().args(["run", model.to_str().unwrap(), "--out", out.to_str().unwrap(), "--threads", "2", "--quiet"]).status().unwrap();
    assert!(status.success());
    let o = outputs(&out);
    assert!(o.0[0].1.len() > 10_000, "the test network must be active");
    o
}

fn resume(run: &Path) -> std::process::Output {
    fum().args(["resume", run.to_str().unwrap(), "--quiet"]).output().unwrap()
}

/// The step of the newest checkpoint in the run folder `run` (files are `ckpt-<step>`).
fn newest_checkpoint(run: &Path) -> Option<u64> {
    let newest = checkpoint::list(&run.join("checkpoints")).into_iter().next()?;
    newest.file_name()?.to_str()?.strip_prefix("ckpt-")?.parse().ok()
}

/// Whether a checkpoint is being written in `run` (its temporary file exists).
fn writing_checkpoint(run: &Path) -> bool {
    std::fs::read_dir(run.join("checkpoints")).into_iter().flatten().flatten().any(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
}

/// Polls `until` every 100 us while `child` runs; false if the child exited first (with success).
fn wait_while_running(child: &mut std::process::Child, mut until: impl FnMut() -> bool) -> bool {
    loop {
        if until() {
            return true;
        }
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "the run failed: {status}");
            return false;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// Kills land by the run's progress, not by the clock: once a checkpoint at or past a random
/// step exists, after a random further moment or at once when the next write begins. Every kill
/// therefore leaves a checkpoint (however slow the machine), and each resumes to the outputs of
/// the uninterrupted run, whether the kill hit a step, a snapshot copy, a write or the end of
/// the run. `a_kill_during_a_checkpoint_write_resumes_to_the_same_outputs` makes the torn write
/// on purpose, whatever moments these kills happen to hit.
#[test]
fn sigkill_at_random_moments_then_resume_gives_the_same_spikes() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let expected = reference(dir.path(), &model);
    let steps = common::parse(MODEL).steps();
    let (mut mid_run, mut during_write) = (0, 0);
    // Deterministic pseudo-random kill points over the run.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..24 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let target = x % steps;
        let out = dir.path().join(format!("killed-{i}"));
        let mut child = fum()
            .args(["run", model.to_str().unwrap(), "--out", out.to_str().unwrap(), "--threads", "2", "--checkpoint-every", "10ms", "--keep-checkpoints", "2", "--quiet"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if wait_while_running(&mut child, || newest_checkpoint(&out).is_some_and(|s| s >= target)) {
            if i % 2 == 0 {
                std::thread::sleep(Duration::from_micros((x >> 32) % 5_000));
            } else {
                wait_while_running(&mut child, || writing_checkpoint(&out));
            }
        }
        let finished = child.try_wait().unwrap().is_some();
        child.kill().ok(); // SIGKILL
        child.wait().unwrap();
        assert!(newest_checkpoint(&out).is_some(), "kill {i}: the checkpoint waited for is gone");
        mid_run += usize::from(!finished);
        during_write += usize::from(writing_checkpoint(&out));
        let o = resume(&out);
        assert!(o.status.success(), "resume {i} failed: {}", String::from_utf8_lossy(&o.stderr));
        assert!(outputs(&out) == expected, "kill {i} past step {target}: resumed outputs differ from the uninterrupted run");
    }
    eprintln!("24 kills resumed ({mid_run} mid-run, {during_write} during a checkpoint write)");
}

/// What a SIGKILL during a checkpoint write leaves, made on purpose: the recording logs already
/// extended with the next chunk (they are written before the checkpoint that points past them),
/// and the checkpoint itself half written under its temporary name. Resume ignores the partial
/// file, cuts the logs back to the newest complete checkpoint and ends with the outputs of the
/// uninterrupted run. A kill during the very first write leaves nothing to resume from, and
/// resume says so.
#[test]
fn a_kill_during_a_checkpoint_write_resumes_to_the_same_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let expected = reference(dir.path(), &model);
    let out = stopped_run(dir.path(), &model, "torn");
    let newest = std::fs::read(out.join("checkpoints/ckpt-000009000")).unwrap();
    std::fs::write(out.join("checkpoints/.ckpt-000012000.tmp"), &newest[..newest.len() / 2]).unwrap();
    let logs: Vec<PathBuf> = std::fs::read_dir(out.join("recording")).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(!logs.is_empty(), "a run with an output folder logs its recordings");
    for log in &logs {
        let mut f = std::fs::OpenOptions::new().append(true).open(log).unwrap();
        std::io::Write::write_all(&mut f, &[0xa5; 4096]).unwrap();
    }
    let o = resume(&out);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("ckpt-000009000"), "resumes from the newest complete checkpoint: {stderr}");
    assert!(outputs(&out) == expected, "resumed outputs differ from the uninterrupted run");

    let first = dir.path().join("first");
    std::fs::create_dir_all(first.join("checkpoints")).unwrap();
    std::fs::write(first.join("checkpoints/.ckpt-000000000.tmp"), &newest[..100]).unwrap();
    let o = resume(&first);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("no checkpoints"), "{}", String::from_utf8_lossy(&o.stderr));
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

/// A rule with a dendritic delay keeps the trace after each spike of its targets' histories
/// (`post_history_trace`): a checkpoint holds them, and a stopped run resumes to the outputs of
/// one run.
#[test]
fn a_dendritic_rule_stops_and_resumes_to_the_outputs_of_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("dendritic.toml");
    let text = MODEL.replacen("name = \"stdp\"\n", "name = \"stdp\"\ndendritic_delay = true\n", 1);
    assert_ne!(text, MODEL);
    std::fs::write(&model, text).unwrap();
    let expected = reference(dir.path(), &model);
    let out = dir.path().join("stopped");
    let status = fum().args(["run", model.to_str().unwrap(), "--out", out.to_str().unwrap(), "--threads", "1", "--stop-after", "600ms", "--quiet"]).status().unwrap();
    assert!(status.success());
    let o = resume(&out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(outputs(&out) == expected, "resumed outputs differ from the uninterrupted run");
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
    // How many are superseded depends on the disk and the machine; that each one taken (at the
    // start, at every step boundary before the end, at the end) is written or superseded does
    // not, nor that the first and the last are written.
    let steps = report["steps"].as_u64().unwrap();
    assert!(written >= 2 && written + superseded == steps + 1, "written {written}, superseded {superseded}, {steps} steps");
    assert!(outputs(&out) == expected, "superseded checkpoints lost recorded output");
    // And the newest checkpoint resumes to the same outputs.
    assert!(resume(&out).status.success());
    assert!(outputs(&out) == expected);
}

/// A snapshot superseded before it was written hands its recorded output to the newer one. In a
/// run that happens when checkpoints fall due faster than the disk writes them, which depends on
/// the machine; here it is made on purpose: restored, the newer checkpoint gives the outputs of a
/// run without checkpoints.
#[test]
fn a_superseded_snapshot_hands_its_recording_to_the_next() {
    use fum::engine::checkpoint::{Checkpoint, Snapshot};
    use fum::engine::recording::Recorder;
    let model = common::parse(MODEL);
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("recording");
    let sim = |log_dir: Option<&Path>| {
        let mut sim = fum::Simulation::from_model(&model, 1, 2).unwrap();
        sim.add_plugins(fum::DefaultPlugins);
        sim.world.resource_mut::<Recorder>().log_dir = log_dir.map(Path::to_path_buf);
        sim
    };
    let write_outputs = |sim: &fum::Simulation, name: &str| {
        let run = dir.path().join(name);
        std::fs::create_dir_all(&run).unwrap();
        let rec = sim.world.resource::<Recorder>();
        rec.write_spikes(&run.join("spikes.h5"), &model).unwrap();
        rec.write_probes(&run.join("probes.h5")).unwrap();
        outputs(&run)
    };
    let mut checkpointed = sim(Some(&logs));
    checkpointed.run(500, |_| {});
    let older = Snapshot::take(&mut checkpointed.world, &model.source, model.hash(), serde_json::Value::Null).unwrap();
    checkpointed.run(1000, |_| {});
    let newer = Snapshot::take(&mut checkpointed.world, &model.source, model.hash(), serde_json::Value::Null).unwrap();
    let path = newer.supersede(older).write(&dir.path().join("checkpoints"), 1).unwrap();
    let mut restored = sim(Some(&logs));
    Checkpoint::open(&path).unwrap().restore(&mut restored.world, model.hash()).unwrap();
    let mut straight = sim(None);
    straight.run(1000, |_| {});
    let expected = write_outputs(&straight, "straight");
    assert!(!expected.0[0].1.is_empty(), "the first 1000 steps have spikes");
    assert!(write_outputs(&restored, "restored") == expected, "the superseded snapshot's recording was lost");
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
    let path = Snapshot::take(&mut sim.world, &model.source, model.hash(), serde_json::Value::Null).unwrap().write(dir.path(), 1).unwrap();
    let ckpt = Checkpoint::open(&path).unwrap();
    let err = ckpt.restore(&mut sim.world, model.hash() ^ 1).unwrap_err().to_string();
    assert!(err.contains("written for another model"), "{err}");
    let mut other_shards = fum::Simulation::from_model(&model, 1, 3).unwrap();
    assert!(ckpt.restore(&mut other_shards.world, model.hash()).is_err());
    ckpt.restore(&mut sim.world, model.hash()).unwrap();
}

/// The signal lands as soon as the handlers are installed (the run announces itself on stderr
/// just after), wherever the run then is (building, or at any step): it finishes the step,
/// checkpoints, writes the outputs so far and exits 3, and resuming gives the full run.
#[test]
fn sigint_checkpoints_writes_outputs_and_exits_3() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let expected = reference(dir.path(), &model);
    let out = dir.path().join("interrupted");
    let mut child = fum()
        .args(["run", model.to_str().unwrap(), "--out", out.to_str().unwrap(), "--threads", "2", "--checkpoint-every", "500ms"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    assert!(stderr.any(|line| line.unwrap().starts_with("fum run ")), "the run announces itself");
    std::thread::spawn(move || stderr.for_each(drop));
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let status = child.wait().unwrap();
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
