//! `fum view MODEL` as a user runs it, in a window on a virtual X server (Xvfb): it opens
//! paced and open-ended, a signal stops it like `fum run` (checkpoint, outputs, exit 3), also
//! while paused, and a bounded run holds at its end until the window closes.
#![cfg(feature = "viewer")]

mod common;
use common::DRIVEN;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};


/// An X server of its own (`-displayfd` picks a free display), killed when dropped.
struct Xvfb(Child, String);

impl Xvfb {
    fn start() -> Xvfb {
        let mut child = Command::new("Xvfb")
            .args(["-displayfd", "1", "-screen", "0", "1400x860x24", "-nolisten", "tcp"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("these tests need Xvfb: apt-get install -y xvfb (see README's test set-up)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        Xvfb(child, format!(":{}", line.trim()))
    }

    /// `fum view ARGS` on this display, with the model text in `dir`; stdout is piped.
    fn view(&self, dir: &Path, args: &[&str]) -> Child {
        let model = dir.join("driven.toml");
        std::fs::write(&model, DRIVEN).unwrap();
        Command::new(env!("CARGO_BIN_EXE_fum"))
            .arg("view")
            .arg(&model)
            .args(["--threads", "1", "--fps", "20"])
            .args(args)
            .env("DISPLAY", &self.1)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

fn wait(child: &mut Child, within: Duration) -> ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(t0.elapsed() < within, "fum view did not exit within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(child: &Child, signal: &str) {
    assert!(Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap().success());
}

fn run_json(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).expect("run.json is written")).unwrap()
}

#[test]
fn sigterm_stops_a_viewed_run_with_a_checkpoint_and_outputs() {
    let x = Xvfb::start();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut child = x.view(dir.path(), &["--out", out.to_str().unwrap(), "--duration", "60s"]);
    // The window opens and the run builds and steps (a hundred neurons, paced at real time).
    std::thread::sleep(Duration::from_secs(3));
    signal(&child, "-TERM");
    let status = wait(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(3), "a signalled view exits with 3 ({status})");
    let report = run_json(&out);
    assert_eq!(report["outcome"], "interrupted");
    let end = report["end_step"].as_u64().unwrap();
    assert!(end > 0);
    assert!(out.join("spikes.h5").exists());
    assert!(out.join("checkpoints").join(format!("ckpt-{end:09}")).exists(), "a checkpoint of the last step");
}

#[test]
fn ctrl_c_stops_a_paused_view_at_step_zero() {
    let x = Xvfb::start();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut child = x.view(dir.path(), &["--out", out.to_str().unwrap(), "--paused"]);
    // Paused before the first step: nothing to wait for but the window.
    std::thread::sleep(Duration::from_secs(3));
    assert!(child.try_wait().unwrap().is_none(), "a paused view waits");
    signal(&child, "-INT");
    let status = wait(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(3), "{status}");
    let report = run_json(&out);
    assert_eq!(report["end_step"], 0, "paused at step 0, and no step ran");
    assert!(out.join("checkpoints/ckpt-000000000").exists());
}

#[test]
fn a_view_is_paced_and_runs_past_the_model_duration_until_closed() {
    let x = Xvfb::start();
    let dir = tempfile::tempdir().unwrap();
    let mut child = x.view(dir.path(), &["--exit-after", "3"]);
    let stdout = child.stdout.take().unwrap();
    let status = wait(&mut child, Duration::from_secs(60));
    assert!(status.success(), "closing the window ends a view normally ({status})");
    // "simulate         2.981 s for steps 0..29795 of ... (dt 0.1 ms)"
    let summary = std::io::read_to_string(stdout).unwrap();
    let line = summary.lines().find(|l| l.starts_with("simulate")).unwrap_or_else(|| panic!("no summary in {summary}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let simulate_s: f64 = words[1].parse().unwrap();
    let end: u64 = words[5].split("..").nth(1).unwrap().parse().unwrap();
    // The model says 100 ms; without --out or --duration the view goes on. At real time, 3 s
    // of window hold at most ~3 s of biological time (30,000 steps); a loaded machine may lag.
    assert!(end > 1000, "ran past the model's 1000 steps ({line})");
    assert!((end as f64) * 1e-4 <= 1.1 * simulate_s + 0.05, "faster than real time: {line}");
}

#[test]
fn a_bounded_view_holds_at_its_end_until_closed() {
    let x = Xvfb::start();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut child = x.view(dir.path(), &["--out", out.to_str().unwrap(), "--duration", "50ms", "--real-time-factor", "max"]);
    // 500 steps at full speed take well under the 3 s this waits; the window stays open.
    std::thread::sleep(Duration::from_secs(3));
    assert!(child.try_wait().unwrap().is_none(), "the view holds at its end");
    assert!(!out.join("run.json").exists(), "outputs come when the window closes");
    signal(&child, "-TERM");
    wait(&mut child, Duration::from_secs(30));
    let report = run_json(&out);
    assert_eq!(report["end_step"], 500);
    assert_eq!(report["outcome"], "finished", "the run had reached its end");
}
