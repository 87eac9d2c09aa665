//! A run's output folder: one run per folder (`--overwrite`), run ids that keep resume and
//! pruning to one run, checksummed recording logs, outputs written whole or not at all, the
//! outputs of a run that fails its health check, a folder that cannot be written, and the
//! SONATA details of spikes.h5 and probes.h5.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fum() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fum"))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write_model(dir: &Path) -> PathBuf {
    let path = dir.join("small.toml");
    std::fs::write(&path, common::SMALL_NETWORK).unwrap();
    path
}

/// `fum run MODEL --out OUT --threads 1 --quiet` and `extra`.
fn run(model: &Path, out: &Path, extra: &[&str]) -> Output {
    fum().arg("run").arg(model).arg("--out").arg(out).args(["--threads", "1", "--quiet"]).args(extra).output().unwrap()
}

/// A run stopped at 100 ms with checkpoints every 25 ms, keeping three (steps 500, 750, 1000).
fn stopped(model: &Path, out: &Path) {
    let o = run(model, out, &["--checkpoint-every", "25ms", "--stop-after", "100ms"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

fn resume(out: &Path) -> Output {
    fum().arg("resume").arg(out).arg("--quiet").output().unwrap()
}

fn report(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap()
}

/// The spikes in OUT/spikes.h5 as (step, global id).
fn spikes(out: &Path) -> Vec<(u64, u32)> {
    common::spikes_h5(&out.join("spikes.h5"), &[("exc", 0), ("inh", 300)], 0.1)
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn a_folder_that_is_not_empty_is_refused_and_overwrite_replaces_only_what_fum_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let out = dir.path().join("out");
    // An existing empty folder is fine.
    std::fs::create_dir(&out).unwrap();
    stopped(&model, &out);
    let first = report(&out)["run_id"].as_str().unwrap().to_string();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let before = names(&out);

    let o = run(&model, &out, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("not empty") && stderr(&o).contains("checkpoints") && stderr(&o).contains("--overwrite"), "{}", stderr(&o));
    assert_eq!(names(&out), before, "a refused run touches nothing");

    let o = run(&model, &out, &["--overwrite"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(names(&out), ["notes.txt", "probes.h5", "run.json", "spikes.h5"], "the earlier run's checkpoints and logs are gone, the user's file stays");
    assert_eq!(std::fs::read_to_string(out.join("notes.txt")).unwrap(), "mine");
    let second = report(&out)["run_id"].as_str().unwrap().to_string();
    assert!(second.len() == 16 && second != first, "each run has an id of its own: {first} {second}");

    // A link among the outputs is removed, never followed out of the folder.
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("ckpt-000000001"), "not this run's").unwrap();
    std::os::unix::fs::symlink(&elsewhere, out.join("checkpoints")).unwrap();
    let o = run(&model, &out, &["--overwrite"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(elsewhere.join("ckpt-000000001").exists(), "nothing outside the folder is deleted");
    assert!(!out.join("checkpoints").is_symlink());
}

/// A checkpoint of another run among a run's own: pruning leaves it alone, resume continues
/// the run of the newest checkpoint; and a newer one of another run cannot be continued with
/// this run's logs and run.json.
#[test]
fn resume_and_pruning_keep_to_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let (ours, theirs) = (dir.path().join("ours"), dir.path().join("theirs"));
    // Keeping one checkpoint: only the last, at step 1000, is left.
    let o = run(&model, &ours, &["--checkpoint-every", "25ms", "--stop-after", "100ms", "--keep-checkpoints", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    stopped(&model, &theirs);
    let ckpts = ours.join("checkpoints");
    let foreign = ckpts.join("ckpt-000000001");
    std::fs::copy(theirs.join("checkpoints/ckpt-000001000"), &foreign).unwrap();
    let o = resume(&ours);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("resuming from") && stderr(&o).contains("ckpt-000001000"), "{}", stderr(&o));
    // The resumed run wrote at least its last checkpoint (step 2000) and pruned its own older.
    assert_eq!(names(&ckpts), ["ckpt-000000001", "ckpt-000002000"]);
    assert!(foreign.exists(), "pruning left the other run's checkpoint alone");

    // A newer checkpoint of the other run: the folder mixes runs, and resume says so.
    std::fs::copy(theirs.join("checkpoints/ckpt-000001000"), ckpts.join("ckpt-000005000")).unwrap();
    let o = resume(&ours);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("mixes runs") && stderr(&o).contains("run.json belongs to run"), "{}", stderr(&o));
}

/// A same-length overwrite of a recording log, and a deleted log: resume detects them, says
/// what output is missing (stderr and run.json) and goes on; the rest is as an uninterrupted
/// run's.
#[test]
fn damaged_or_lost_recording_logs_are_detected_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let reference = dir.path().join("reference");
    assert!(run(&model, &reference, &[]).status.success());
    let expected = spikes(&reference);
    type Damage = fn(&Path);
    let damages: [(&str, Damage, &str); 3] = [
        ("overwritten", |log| {
            let mut bytes = std::fs::read(log).unwrap();
            bytes[4] ^= 0x01;
            std::fs::write(log, bytes).unwrap();
        }, "checksum mismatch"),
        ("deleted", |log| std::fs::remove_file(log).unwrap(), "spikes-0-node_ids.bin"),
        ("index deleted", |log| std::fs::remove_file(log.with_extension("idx")).unwrap(), "index"),
    ];
    for (name, damage, reason) in damages {
        let out = dir.path().join(name.replace(' ', "-"));
        stopped(&model, &out);
        damage(&out.join("recording/spikes-0-node_ids.bin"));
        let o = resume(&out);
        let err = stderr(&o);
        assert!(o.status.success(), "{name}: {err}");
        assert!(err.contains("spikes of population exc before step 1000 (100 ms) is missing") && err.contains(reason), "{name}: {err}");
        let missing = &report(&out)["missing_output"];
        assert_eq!(missing[0]["output"], "spikes of population exc", "{name}: {missing}");
        assert_eq!(missing[0]["before_step"], 1000, "{name}: {missing}");
        // exc's spikes from step 1000 on, and all of inh's, are the uninterrupted run's.
        let kept = |&&(step, id): &&(u64, u32)| id >= 300 || step >= 1000;
        assert!(spikes(&out) == expected.iter().filter(kept).copied().collect::<Vec<_>>(), "{name}: resumed spikes differ");
    }
}

/// A missing output stays reported in later sessions of the run (here a resume of the finished
/// run from its last checkpoint, which writes the outputs again).
#[test]
fn missing_output_is_reported_by_every_later_session() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let out = dir.path().join("out");
    let o = run(&model, &out, &["--checkpoint-every", "25ms", "--stop-after", "50ms"]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::remove_file(out.join("recording/spikes-0-steps.bin")).unwrap();
    assert!(resume(&out).status.success());
    assert_eq!(report(&out)["missing_output"][0]["output"], "spikes of population exc");
    let o = resume(&out);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("missing"), "nothing new is lost: {}", stderr(&o));
    assert_eq!(report(&out)["missing_output"][0]["output"], "spikes of population exc", "the loss is still reported");
}

/// A full disk when the outputs are written, made real with a file size limit (`ulimit -f`,
/// SIGXFSZ ignored so that a write past it fails with EFBIG as on a full disk): spikes.h5
/// fails, the error names it, and nothing short is left under its name or a temporary one.
#[test]
fn an_output_that_cannot_be_written_leaves_no_partial_file_and_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let out = dir.path().join("full");
    let script = r#"trap "" XFSZ; ulimit -f 24; exec "$0" "$@""#;
    let o = Command::new("bash").args(["-c", script, env!("CARGO_BIN_EXE_fum"), "run"]).arg(&model).arg("--out").arg(&out).args(["--threads", "1", "--quiet"]).output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot write") && err.contains("spikes.h5"), "{err}");
    assert!(names(&out).iter().all(|n| n == "recording" || n == "checkpoints"), "no output, partial or temporary, is left: {:?}", names(&out));

    // A directory where run.json's temporary file goes, made once the run has started.
    let out = dir.path().join("blocked");
    let mut child = fum().arg("run").arg(&model).arg("--out").arg(&out).args(["--threads", "1", "--quiet", "--duration", "5s", "--checkpoint-every", "1s"]).stderr(std::process::Stdio::piped()).spawn().unwrap();
    // The first checkpoint is written once the run has started (its folder checked empty).
    while !out.join("checkpoints/ckpt-000000000").exists() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before its first checkpoint was seen");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    std::fs::create_dir_all(out.join(".run.json.tmp/inside")).unwrap();
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot write") && err.contains("run.json"), "{err}");
    assert!(!out.join("run.json").exists(), "no run.json under its final name");
    assert!(out.join("spikes.h5").exists(), "the outputs written before it are whole");
}

/// A run that fails its health check writes its outputs up to the failure and run.json with
/// the reason, and exits 1 with the message.
#[test]
fn a_failed_health_check_writes_the_outputs_so_far() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let out = dir.path().join("runaway");
    let o = run(&model, &out, &["--max-rate-hz", "1"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("health check failed at step"), "{err}");
    let report = report(&out);
    assert_eq!(report["outcome"], "failed");
    assert!(report["error"].as_str().unwrap().contains("runaway rate"), "{report}");
    let end = report["end_step"].as_u64().unwrap();
    assert!(end > 0 && end < report["steps"].as_u64().unwrap());
    let spikes = spikes(&out);
    assert!(!spikes.is_empty() && spikes.iter().all(|&(step, _)| step < end), "spikes up to the failure");
    assert!(out.join("probes.h5").exists());
}

/// A folder that cannot be written is refused before anything is built or simulated. As root
/// (who may write anywhere) the run drops to user `nobody`.
#[test]
fn an_unwritable_output_folder_is_refused_at_the_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let model = write_model(dir.path());
    let out = dir.path().join("read-only");
    std::fs::create_dir(&out).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o555)).unwrap();
    let root = Command::new("id").arg("-u").output().unwrap().stdout.starts_with(b"0\n");
    let mut cmd = if root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", env!("CARGO_BIN_EXE_fum")]);
        c
    } else {
        fum()
    };
    let o = cmd.arg("run").arg(&model).arg("--out").arg(&out).args(["--quiet", "--threads", "1"]).output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("is not writable") && err.contains("read-only"), "{err}");
    assert!(names(&out).is_empty());
    // And resume, whose folder became read-only.
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).unwrap();
    stopped(&model, &out.join("run"));
    std::fs::set_permissions(out.join("run"), std::fs::Permissions::from_mode(0o555)).unwrap();
    let mut cmd = if root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", env!("CARGO_BIN_EXE_fum")]);
        c
    } else {
        fum()
    };
    let o = cmd.arg("resume").arg(out.join("run")).output().unwrap();
    assert!(!o.status.success() && stderr(&o).contains("is not writable"), "{}", stderr(&o));
}

/// SONATA: `sorting` is an enum on each population group (libsonata's none/by_id/by_time),
/// timestamps are round (step x dt in decimal), probes' node ids are uint64.
#[test]
fn sonata_sorting_round_timestamps_and_uint64_probe_ids() {
    use fum::engine::recording::{Sorting, step_time_ms};
    assert_eq!(step_time_ms(19998, 0.1), 1999.8);
    assert_ne!(19998.0 * 0.1, 1999.8, "the naive product misrounds");
    for (step, dt, t) in [(3, 0.1, 0.3), (7, 0.025, 0.175), (1, 1e-300, 1e-300), (12345, 0.5, 6172.5), (10, 0.3, 3.0)] {
        assert_eq!(step_time_ms(step, dt), t, "{step} x {dt}");
    }
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let out = dir.path().join("out");
    assert!(run(&model, &out, &[]).status.success());
    let file = hdf5::File::open(out.join("spikes.h5")).unwrap();
    for pop in ["exc", "inh"] {
        let group = file.group(&format!("spikes/{pop}")).unwrap();
        let sorting = group.attr("sorting").unwrap();
        assert!(matches!(sorting.dtype().unwrap().to_descriptor().unwrap(), hdf5::types::TypeDescriptor::Enum(_)), "an HDF5 enum");
        assert_eq!(sorting.read_scalar::<Sorting>().unwrap(), Sorting::by_time);
        let times: Vec<f64> = group.dataset("timestamps").unwrap().read_raw().unwrap();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "sorted by time");
        assert!(times.iter().all(|&t| t == step_time_ms((t / 0.1).round() as u64, 0.1)), "round timestamps");
    }
    let probes = hdf5::File::open(out.join("probes.h5")).unwrap();
    let ids = probes.dataset("membrane/node_ids").unwrap();
    assert_eq!(ids.dtype().unwrap().to_descriptor().unwrap(), hdf5::types::TypeDescriptor::Unsigned(hdf5::types::IntSize::U8));
    assert_eq!(ids.read_raw::<u64>().unwrap(), [0, 5]);
    let times: Vec<f64> = probes.dataset("membrane/time_ms").unwrap().read_raw().unwrap();
    assert_eq!(times[..4], [0.0, 1.0, 2.0, 3.0]);
    assert!(times.iter().all(|&t| t == t.round()), "probe times every 1 ms are whole ms");
}
