//! UI tests with egui_kittest against a scripted simulation (deterministic frames and replies):
//! snapshots of every panel, every control sends its request, a viewer without the token only
//! watches. What the controls do to a live run is tested in the root package
//! (`tests/viewer_live.rs`).

use std::sync::Arc;
use std::sync::mpsc::Receiver;

use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use fum_protocol::{CommitInfo, Envelope, Frame, Info, InputInfo, PopulationInfo, ProjectionInfo, Reply, Request, ShardInfo, Slot, Speed, StructureInfo, ViewerLink, WeightHistogram};
use fum_viewer::ViewerApp;

const SIZE: [f32; 2] = [1400.0, 860.0];

/// Answers requests the way a simulation of a fixed network would, and keeps them.
struct Scripted {
    requests: Receiver<Envelope>,
    frames: Arc<Slot>,
    sent: Vec<Request>,
}

fn scripted_info() -> Info {
    Info {
        model: "scripted.toml".into(),
        step: 2500,
        end_step: 10_000,
        dt_ms: 0.1,
        paused: false,
        speed: Some(Speed::Max),
        stdp_enabled: true,
        populations: vec![
            PopulationInfo { name: "E".into(), first: 0, size: 3200, current_pa: 0.0 },
            PopulationInfo { name: "I".into(), first: 3200, size: 800, current_pa: 0.0 },
        ],
        inputs: vec![InputInfo { index: 0, name: "drive".into(), target: "E".into(), rate_hz: 5000.0 }],
        plastic_projections: vec![ProjectionInfo { index: 0, name: "E_to_E".into() }],
        shards: (0..4).map(|i| ShardInfo { index: i, first: i * 1000, neurons: 1000, synapses: 80_000, backend: "cpu".into(), device: None, synapse_storage: "host memory".into() }).collect(),
        memory_bytes: 123_400_000,
        structure: Vec::new(),
    }
}

impl Scripted {
    fn new() -> (Scripted, ViewerLink) {
        let (end, link) = fum_protocol::channel();
        (Scripted { requests: end.requests, frames: end.frames, sent: Vec::new() }, link)
    }

    fn answer(&mut self) {
        while let Ok(envelope) = self.requests.try_recv() {
            let reply = match &envelope.request {
                Request::Info => Reply::Info(scripted_info()),
                Request::WeightHistogram { projection, bins } => Reply::WeightHistogram(WeightHistogram {
                    projection: *projection,
                    step: 2500,
                    w_min: 0.0,
                    w_max: 32.4,
                    counts: (0..*bins as u64).map(|k| 2000 * (20 - (k as i64 - 20).abs()) as u64 / 20 + 10).collect(),
                    mean: 16.2,
                }),
                Request::Checkpoint => Reply::Done("checkpoint of step 2500 goes to out/checkpoints".into()),
                other => Reply::Done(format!("{other:?} applied")),
            };
            envelope.reply_to.send(reply).unwrap();
            self.sent.push(envelope.request);
        }
    }

    /// 2500 steps (250 ms) in which neuron `id` fires at step `s` when a fixed hash says so
    /// (about 10 Hz), with neurons 7 and 3300 watched.
    fn publish(&self) {
        for chunk in 0..10u64 {
            let first_step = chunk * 250;
            let mut frame = Frame { first_step, steps: 250, population_spikes: vec![0, 0], watched: vec![7, 3300], wall_s: 0.025, ..Frame::default() };
            for s in first_step..first_step + 250 {
                for id in 0..4000u32 {
                    if (u64::from(id) * 7919 + s * 104_729) % 1000 == 0 {
                        frame.spikes.push(id);
                        frame.population_spikes[usize::from(id >= 3200)] += 1;
                    }
                }
                frame.spike_ends.push(frame.spikes.len() as u32);
                let phase = (s % 200) as f32 / 200.0;
                // 6.28, not TAU: the checked-in snapshot was drawn with it.
                #[allow(clippy::approx_constant)]
                frame.membrane_mv.extend([-60.0 + 10.0 * phase, -55.0 + 4.0 * (phase * 6.28).sin()]);
            }
            self.frames.put(frame);
        }
    }
}

fn harness(app: ViewerApp) -> Harness<'static, ViewerApp> {
    // The background eframe's clear colour gives the window.
    let draw = |ui: &mut eframe::egui::Ui, app: &mut ViewerApp| {
        ui.painter().rect_filled(ui.max_rect(), 0.0, ui.visuals().panel_fill);
        app.ui(ui);
    };
    Harness::builder().with_size(SIZE).build_ui_state(draw, app)
}

/// Steps the UI, answering requests in between, so that replies and frames are taken.
fn settle(h: &mut Harness<'_, ViewerApp>, script: &mut Scripted) {
    for _ in 0..6 {
        h.step();
        script.answer();
    }
}

fn scripted(steering: bool) -> (Harness<'static, ViewerApp>, Scripted) {
    let (mut script, link) = Scripted::new();
    let mut h = harness(ViewerApp::new(link, steering));
    settle(&mut h, &mut script);
    script.publish();
    settle(&mut h, &mut script);
    (h, script)
}

#[test]
fn every_panel_renders() {
    let (mut h, mut script) = scripted(true);
    for heading in ["Spike raster", "Population rates", "Membrane potential", "Weights", "Shards", "Performance"] {
        h.get_by_label(heading);
    }
    let app = h.state();
    assert_eq!(app.history.step, 2500);
    let window = app.history.raster.as_ref().unwrap();
    assert!(window.total() > 8000 && window.steps() == 2160, "the raster holds the window's spikes");
    assert_eq!(app.history.rates.len(), 2, "a rate curve per population");
    assert_eq!(app.history.traces.iter().map(|t| t.0).collect::<Vec<_>>(), [7, 3300]);
    h.get_by_label("10000"); // steps/s: 250 steps per 25 ms
    h.get_by_label("123.4 MB");
    assert_eq!(h.get_all_by_label("cpu").count(), 4, "a row per shard");
    h.get_by_label("mean 16.200 (from 16.200)");
    settle(&mut h, &mut script);
    h.snapshot("viewer");
}

/// A model with `[[structural]]`: a frame that brings commits shows the panel with its figures.
#[test]
fn structural_plasticity_shows_its_figures_and_commits() {
    let (mut h, mut script) = scripted(true);
    assert!(h.query_by_label("Structural plasticity").is_none(), "no panel without [[structural]]");
    let recent: Vec<CommitInfo> = (1..=7).map(|k| CommitInfo { step: 500 * k, pruned: 120 * k, grown: 100 * k, synapses: 64_000 - 20 * (1..=k).sum::<u64>() }).collect();
    let structure = StructureInfo {
        projection: "E_to_E".into(),
        synapses: 63_440,
        bytes_now: 507_520,
        bytes_at_start: 512_000,
        commits: 7,
        pruned: 3360,
        grown: 2800,
        planning_s: 0.25,
        snapshot_s: 0.125,
        commit_s: 0.0125,
        wait_s: 0.002,
        recent,
    };
    script.frames.put(Frame { first_step: 2500, structure: vec![structure], ..Frame::default() });
    settle(&mut h, &mut script);
    h.get_by_label("Structural plasticity");
    for figure in ["63440", "507.5 kB (4.5 kB freed)", "3360 / 2800", "7", "0.250 s", "0.125 s", "0.013 s (waited 0.002 s)"] {
        h.get_by_label(figure);
    }
    let shown = &h.state().history.structure[0];
    assert_eq!(shown.recent.iter().map(|c| c.step).collect::<Vec<_>>(), [500, 1000, 1500, 2000, 2500, 3000, 3500], "the commits the plot draws");
}

/// Clicks the widget labelled `label` and returns the request it sent, leaving out the ones
/// the viewer sends on a timer (info, weights).
fn click(h: &mut Harness<'_, ViewerApp>, script: &mut Scripted, label: &str) -> Request {
    h.get_by_label(label).click();
    settle(h, script);
    let sent = script.sent.drain(..).rfind(|r| !matches!(r, Request::Info | Request::WeightHistogram { .. }));
    sent.unwrap_or_else(|| panic!("{label} sent nothing"))
}

#[test]
fn every_control_sends_its_request() {
    let (mut h, mut script) = scripted(true);
    assert_eq!(click(&mut h, &mut script, "Pause"), Request::Pause);
    assert_eq!(click(&mut h, &mut script, "Step"), Request::Step(1));
    assert_eq!(click(&mut h, &mut script, "Run"), Request::Resume);
    assert_eq!(click(&mut h, &mut script, "max speed"), Request::Speed(Speed::RealTimeFactor(1.0)));
    h.state_mut().rate_hz = 123.0;
    assert_eq!(click(&mut h, &mut script, "Set rate"), Request::SetPoissonRate { input: 0, rate_hz: 123.0 });
    h.state_mut().population_choice = 1;
    h.state_mut().current_pa = 250.0;
    assert_eq!(click(&mut h, &mut script, "Set current"), Request::SetCurrent { population: 1, current_pa: 250.0 });
    assert_eq!(click(&mut h, &mut script, "STDP"), Request::Stdp(false));
    assert_eq!(click(&mut h, &mut script, "Checkpoint now"), Request::Checkpoint);
    assert_eq!(h.state().status, "checkpoint of step 2500 goes to out/checkpoints");

    h.get_by_role(eframe::egui::Role::TextInput).focus();
    h.step();
    h.get_by_role(eframe::egui::Role::TextInput).type_text("42");
    settle(&mut h, &mut script);
    assert_eq!(click(&mut h, &mut script, "Watch"), Request::Watch(vec![42]));
    match click(&mut h, &mut script, "spike raster") {
        Request::Watch(ids) => {
            assert_eq!(ids.len(), 2);
            assert!((1800..2200).contains(&ids[1]), "the middle of the raster is the middle of the network: {ids:?}");
        }
        other => panic!("{other:?}"),
    }

    let dir = tempfile::tempdir().unwrap();
    h.state_mut().save_dir = dir.path().to_path_buf();
    h.get_by_label("Save raster PNG").click();
    settle(&mut h, &mut script);
    let path = dir.path().join("raster-step2500.png");
    let info = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap())).read_info().unwrap().info().clone();
    assert_eq!((info.width, info.height), (720, 300));
    assert!(h.state().status.contains("raster saved to"));
}

#[test]
fn a_viewer_without_the_token_only_watches() {
    let (mut h, mut script) = scripted(false);
    script.sent.clear();
    h.get_by_label("Pause").click();
    settle(&mut h, &mut script);
    assert!(script.sent.iter().all(|r| !r.is_steering()), "{:?}", script.sent);
    assert!(h.state().status.contains("token"));
    h.get_by_label("· watching only");
}
