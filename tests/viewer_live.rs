//! The viewer against a live simulation on its own thread: what the controls do to a run.
//! Pausing stops the step count, stepping advances one step, a new Poisson rate or DC current
//! changes the measured rate, a target real-time factor reaches the simulation and paces it,
//! STDP switches off, clicking the raster traces a neuron, structural commits reach the
//! structural plasticity panel. (The viewer's own UI tests, against
//! scripted frames, are in `viewer/tests/ui.rs`.)
#![cfg(feature = "viewer")]

mod common;
use common::DRIVEN;

use std::path::Path;
use std::time::{Duration, Instant};

use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use fum::engine::observe::{self, Observer, Speed};
use fum::{DefaultPlugins, Model, Simulation};
use fum_viewer::ViewerApp;

const SIZE: [f32; 2] = [1400.0, 860.0];

/// A simulation of `model_text` on its own thread, stopping when the viewer goes.
fn live(model_text: &str) -> (Harness<'static, ViewerApp>, std::thread::JoinHandle<u64>) {
    live_with(model_text, |_| {})
}

/// As [`live`], with the observer set up by `setup` (as `fum view`'s options do).
fn live_with(model_text: &str, setup: impl FnOnce(&mut Observer)) -> (Harness<'static, ViewerApp>, std::thread::JoinHandle<u64>) {
    let model = Model::parse(model_text, Path::new("live.toml")).unwrap();
    let (mut observer, link) = observe::channel(&model, true);
    setup(&mut observer);
    let simulation = std::thread::spawn(move || {
        let mut sim = Simulation::from_model(&model, 1, 2).unwrap();
        sim.add_plugins(DefaultPlugins);
        let mut no_checkpoints = |_: &mut _| Err("no checkpoints here".to_string());
        if observer.before_first_step(&mut sim.world, 0, &mut no_checkpoints).is_break() {
            return 0;
        }
        sim.run_until(model.steps(), |world, done| observer.between_steps(world, done, &mut no_checkpoints))
    });
    let harness = Harness::builder().with_size(SIZE).build_ui_state(|ui, app: &mut ViewerApp| app.ui(ui), ViewerApp::new(link, true));
    (harness, simulation)
}

/// Steps the UI until `done` holds (10 s at most).
fn wait_until(h: &mut Harness<'_, ViewerApp>, what: &str, done: impl Fn(&ViewerApp) -> bool) {
    let t0 = Instant::now();
    while !done(h.state()) {
        assert!(t0.elapsed() < Duration::from_secs(10), "timed out waiting until {what}");
        h.step();
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn pausing_stops_the_step_count_and_the_controls_reach_the_simulation() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/stdp_balanced.toml")).unwrap();
    let text = text.replace("duration_ms = 1000.0", "duration_ms = 100000.0");
    let (mut h, simulation) = live(&text);
    wait_until(&mut h, "the run has done 50 steps", |a| a.history.step > 50);

    h.get_by_label("Pause").click();
    wait_until(&mut h, "paused", |a| a.history.paused);
    let paused_at = h.state().history.step;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(300) {
        h.step();
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(h.state().history.step, paused_at, "no steps while paused");
    h.get_by_label("Step").click();
    wait_until(&mut h, "one step done", |a| a.history.step == paused_at + 1);

    h.get_by_label("spike raster").click();
    h.get_by_label("STDP").click();
    wait_until(&mut h, "STDP is off in the simulation", |a| a.status.starts_with("STDP off"));
    h.get_by_label("Run").click();
    wait_until(&mut h, "the run goes on with a trace of the clicked neuron", |a| a.history.step > paused_at + 200 && a.history.traces.first().is_some_and(|t| t.1.len() > 100));
    wait_until(&mut h, "fresh info and weights", |a| a.info().is_some_and(|i| !i.stdp_enabled && i.step > paused_at && i.memory_bytes > 0));
    let trace = &h.state().history.traces[0].1;
    assert!(trace.iter().all(|p| p[1] > -90.0 && p[1] < -50.0), "membrane potentials below threshold");
    drop(h);
    assert!(simulation.join().unwrap() < 1_000_000, "closing the viewer stops the run");
}


#[test]
fn structural_commits_reach_the_panel_as_they_happen() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/stdp_structural.toml")).unwrap();
    // A plan every 5 ms, committed 2 ms later, over a long run that the viewer ends.
    let text = text.replace("duration_ms = 10000.0", "duration_ms = 100000.0").replace("every_ms = 500.0", "every_ms = 5.0").replace("commit_after_ms = 250.0", "commit_after_ms = 2.0");
    let (mut h, simulation) = live(&text);
    wait_until(&mut h, "five commits in the panel", |a| a.history.structure.first().is_some_and(|s| s.commits >= 5));
    h.get_by_label("Structural plasticity");
    let s = &h.state().history.structure[0];
    assert_eq!(s.projection, "E_to_E");
    // Plan m is snapshot at step 50 m and committed at step 50 m + 20.
    assert_eq!(s.recent.iter().take(5).map(|c| c.step).collect::<Vec<_>>(), [70, 120, 170, 220, 270]);
    assert!(s.recent.iter().all(|c| c.pruned > 0), "{s:?}");
    assert!(s.recent.windows(2).all(|w| w[1].synapses + w[1].pruned == w[0].synapses + w[1].grown), "each commit's count follows from the one before: {s:?}");
    assert_eq!(s.recent.last().map(|c| c.synapses), Some(s.synapses));
    assert!(s.pruned == s.recent.iter().map(|c| c.pruned).sum::<u64>() && s.commit_s > 0.0 && s.bytes_now > 0);
    drop(h);
    simulation.join().unwrap();
}

#[test]
fn changing_a_poisson_rate_changes_the_measured_rate() {
    let (mut h, simulation) = live(&DRIVEN.replace("duration_ms = 100.0", "duration_ms = 100000.0"));
    let mean_rate = |a: &ViewerApp| {
        let points = &a.history.rates[0];
        points.iter().rev().take(5).map(|p| p[1]).sum::<f64>() / 5.0
    };
    wait_until(&mut h, "ten rate points", |a| a.info().is_some() && a.history.rates.first().is_some_and(|r| r.len() >= 10));
    let driven = mean_rate(h.state());
    assert!(driven > 20.0, "the input drives the population ({driven} Hz)");

    h.state_mut().rate_hz = 0.0;
    h.get_by_label("Set rate").click();
    wait_until(&mut h, "the rate is applied", |a| a.status.starts_with("input 0 at 0 Hz"));
    let step = h.state().history.step;
    wait_until(&mut h, "100 ms more", |a| a.history.step > step + 1000);
    let silent = mean_rate(h.state());
    assert!(silent < 0.05 * driven, "without input the rate falls ({driven} Hz -> {silent} Hz)");

    h.state_mut().current_pa = 1000.0;
    h.get_by_label("Set current").click();
    wait_until(&mut h, "the current is applied", |a| a.status.starts_with("driven at 1000 pA"));
    let step = h.state().history.step;
    wait_until(&mut h, "100 ms more", |a| a.history.step > step + 1000);
    let with_current = mean_rate(h.state());
    assert!(with_current > 20.0, "a DC current makes the population fire ({with_current} Hz)");

    // Half real time: at most 5000 steps of 0.1 ms per second. The target is set while paused,
    // so that the pace starts at a known step when the run resumes; a loaded machine may run
    // slower than the target, never faster.
    h.get_by_label("Pause").click();
    wait_until(&mut h, "paused", |a| a.history.paused);
    h.state_mut().real_time_factor = 2.0;
    h.get_by_label("max speed").click();
    wait_until(&mut h, "the speed is applied", |a| a.status.starts_with("speed RealTimeFactor(2.0)"));
    wait_until(&mut h, "the simulation reports the target speed", |a| a.info().is_some_and(|i| i.speed == Some(Speed::RealTimeFactor(2.0))));
    let paused_at = h.state().history.step;
    let resumed = Instant::now();
    h.get_by_label("Run").click();
    wait_until(&mut h, "half a second of steps at the target", |a| a.history.step > paused_at + 2500);
    let (steps, elapsed_s) = (h.state().history.step - paused_at, resumed.elapsed().as_secs_f64());
    assert!(steps as f64 <= 1.2 * 5000.0 * elapsed_s + 10.0, "{steps} steps in {elapsed_s:.3} s: faster than the target");
    drop(h);
    simulation.join().unwrap();
}

#[test]
fn a_run_started_paused_shows_step_zero_and_steps_from_there() {
    let (mut h, simulation) = live_with(DRIVEN, Observer::start_paused);
    wait_until(&mut h, "the viewer sees the run paused at step 0", |a| a.history.paused && a.info().is_some_and(|i| i.paused && i.step == 0));
    assert_eq!(h.state().history.step, 0);
    h.get_by_label("Step").click();
    wait_until(&mut h, "one step done", |a| a.history.step == 1 && a.history.paused);
    drop(h);
    assert_eq!(simulation.join().unwrap(), 1, "closing the viewer ends the paused run where it is");
}

#[test]
fn a_held_run_refreshes_every_panel_at_its_end() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/stdp_balanced.toml")).unwrap();
    let text = text.replace("duration_ms = 1000.0", "duration_ms = 30.0");
    let (mut h, simulation) = live_with(&text, |o| {
        o.start_paused();
        o.hold_at_end();
    });
    wait_until(&mut h, "the network description", |a| a.info().is_some());
    h.state_mut().watch(7);
    wait_until(&mut h, "neuron 7 is watched", |a| a.status.starts_with("watching 1"));
    h.get_by_label("Run").click();
    let end = 300;
    wait_until(&mut h, "the raster, info, weights and trace reach the last step", |a| {
        a.history.step == end
            && a.history.paused
            && a.info().is_some_and(|i| i.step == end && i.paused)
            && a.histogram().is_some_and(|w| w.step == end)
            && a.history.traces.first().is_some_and(|t| t.1.back().is_some_and(|p| (p[0] - (end - 1) as f64 * 0.1).abs() < 1e-9))
    });
    h.get_by_label("Run").click();
    wait_until(&mut h, "the run says it is at its end", |a| a.status.contains("reached its end"));
    assert!(!simulation.is_finished(), "the run holds until the viewer goes");
    drop(h);
    assert_eq!(simulation.join().unwrap(), end);
}
