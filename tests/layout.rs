//! The synapse layout: bytes per synapse for each weight type and kind of delay, `f16` weights
//! through a checkpoint, `f16` Brunel against `f32`, and the count of STDP pairings lost to
//! full postsynaptic spike histories.

mod common;
use common::*;

use fum::engine::checkpoint::{Checkpoint, Snapshot};
use fum::engine::components::StdpHistoryOverflows;
use fum::engine::model::WeightPrecision;
use fum::run::NetworkStats;
use fum::{DefaultPlugins, Model, Simulation};

/// A small network with a static and a plastic projection; `{weights}`, `{delay}`,
/// `{history}` and `{static}` are filled in by the tests.
const MODEL: &str = r#"
[simulation]
dt_ms = 0.1
duration_ms = 100.0
seed = 3
weights = "{weights}"

[[populations]]
name = "E"
size = 400
model = "lif_cuba"
e_l_mv = 0.0
v_th_mv = 20.0
v_reset_mv = 10.0
tau_m_ms = 20.0
tau_syn_ex_ms = 0.5
v_init_mv = { uniform = [0.0, 20.0] }

[[projections]]
name = "EE"
source = "E"
target = "E"
rule = { fixed_indegree = 40 }
weight = { uniform = [10.0, 30.0] }
delay_ms = {delay}
plasticity = "stdp"

{static}

[[plasticity]]
name = "stdp"
a_plus = 0.01
a_minus = 0.0105
w_max = 60.7
post_history = {history}

[[inputs]]
name = "drive"
kind = "poisson"
target = "E"
rate_hz = 16000.0
weight = 50.0
"#;

const STATIC: &str = r#"[[projections]]
name = "EE_static"
source = "E"
target = "E"
rule = { fixed_indegree = 20 }
weight = 7.3
delay_ms = {delay}"#;

fn model(weights: &str, delay: &str, history: u32, with_static: bool) -> Model {
    let text = MODEL
        .replace("{static}", if with_static { STATIC } else { "" })
        .replace("{weights}", weights)
        .replace("{delay}", delay)
        .replace("{history}", &history.to_string());
    parse(&text)
}

#[test]
fn bytes_per_synapse_follow_the_weight_type_and_the_kind_of_delay() {
    for (weights, delay, bytes) in [("f32", "1.0", 6.0), ("f16", "1.0", 4.0), ("f32", "{ uniform = [0.5, 3.0] }", 8.0), ("f16", "{ uniform = [0.5, 3.0] }", 6.0)] {
        let mut sim = Simulation::from_model(&model(weights, delay, 64, true), 1, 2).unwrap();
        let stats = NetworkStats::measure(&mut sim.world);
        assert!(stats.static_synapses > 0 && stats.plastic_synapses > 0);
        assert_eq!((stats.bytes_per_static_synapse, stats.bytes_per_plastic_synapse), (bytes, bytes), "{weights}, delay {delay}");
    }
}

#[test]
fn f16_weights_round_trip_through_a_checkpoint() {
    let model = model("f16", "{ uniform = [0.5, 3.0] }", 64, false);
    let mut sim = Simulation::from_model(&model, 2, 2).unwrap();
    sim.add_plugins(DefaultPlugins);
    let initial = synapses(&mut sim);
    sim.run(500, |_| {});
    let learned = synapses(&mut sim);
    assert!(learned.iter().zip(&initial).filter(|(a, b)| a.4 != b.4).count() > 100, "STDP must change f16 weights");
    assert!(learned.iter().all(|s| half::f16::from_f32(f32::from_bits(s.4)).to_f32().to_bits() == s.4), "every weight is an f16 value");

    let dir = tempfile::tempdir().unwrap();
    let path = Snapshot::take(&mut sim.world, &model.source, model.hash(), serde_json::Value::Null).unwrap().write(dir.path(), 1).unwrap();
    let ckpt = Checkpoint::open(&path).unwrap();
    let mut resumed = Simulation::from_model(&model, 1, 2).unwrap();
    resumed.add_plugins(DefaultPlugins);
    ckpt.restore(&mut resumed.world, model.hash()).unwrap();
    assert!(synapses(&mut resumed) == learned);
    // The restored traces and spike histories carry on exactly.
    sim.run(1000, |_| {});
    resumed.run(1000, |_| {});
    assert!(synapses(&mut resumed) == synapses(&mut sim));

    // The same model stored as f32: the weight type is checked, and nothing changes.
    let mut other = model.clone();
    other.spec.simulation.weights = WeightPrecision::F32;
    let mut wrong = Simulation::from_model(&other, 1, 2).unwrap();
    let before = synapses(&mut wrong);
    let err = ckpt.restore(&mut wrong.world, model.hash()).unwrap_err().to_string();
    assert!(err.contains("weight.type") && err.contains("f16") && err.contains("f32"), "{err}");
    assert!(synapses(&mut wrong) == before);
}

/// Brunel's weights (50 and 250 pA) are exact in f16, so the f16 run is the f32 run: the rate
/// is the same, bit for bit in the spikes.
#[test]
fn brunel_with_f16_weights_fires_like_f32() {
    let mut f32_model = asset("brunel.toml");
    f32_model.spec.simulation.duration_ms = 300.0;
    let mut f16_model = f32_model.clone();
    f16_model.spec.simulation.weights = WeightPrecision::F16;
    let (a, b) = (simulate(&f32_model, 2, 2), simulate(&f16_model, 2, 2));
    let (rate_32, _) = rate_and_cv(&a, 0, 10_000, 100.0, 300.0, 0.1);
    let (rate_16, _) = rate_and_cv(&b, 0, 10_000, 100.0, 300.0, 0.1);
    assert!(rate_32 > 10.0 && (rate_16 - rate_32).abs() < 0.02 * rate_32, "f32 {rate_32:.2} Hz, f16 {rate_16:.2} Hz");
    let mut sim = Simulation::from_model(&f16_model, 1, 2).unwrap();
    assert_eq!(NetworkStats::measure(&mut sim.world).bytes_per_static_synapse, 4.0);
}

#[test]
fn a_short_history_loses_pairings_the_default_does_not() {
    let lost = |history: u32, shards: usize| {
        let sim = simulate(&model("f32", "1.0", history, false), 2, shards);
        sim.world.resource::<StdpHistoryOverflows>().0
    };
    let short = lost(1, 1);
    assert!(short > 0, "one remembered spike cannot hold the spikes between presynaptic spikes");
    assert_eq!(lost(1, 3), short, "each synapse is counted once, whatever the sharding");
    assert_eq!(lost(64, 2), 0);

    let report = fum::run::run(&asset("stdp_balanced.toml"), &fum::run::RunOptions { threads: 2, ..Default::default() }, |_| {}).unwrap();
    assert_eq!(report.stdp_history_overflows, 0, "stdp_balanced with the default post_history");
}
