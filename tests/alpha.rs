//! `lif_psc_alpha` (NEST's `iaf_psc_alpha`) and bias currents drawn or listed per neuron,
//! through the engine: each neuron's drawn bias gives it the analytic LIF firing period, the
//! draws and the spikes do not depend on shards or threads, listing the drawn values gives the
//! same spikes, and a checkpoint keeps the alpha state. The
//! single-neuron numerics are tested against the analytic solutions in `fum_kernels::lif`.

mod common;
use common::*;

use fum::Simulation;
use fum::engine::checkpoint::{Checkpoint, Snapshot};
use fum::engine::components::{NeuronBlock, Shard};
use fum::engine::sonata::NeuronValues;

/// Alpha neurons with a uniform bias and cuba / coba neurons with a normal and a lognormal one,
/// connected and driven: every model and every distribution of the bias, in one network.
const ALPHA_NETWORK: &str = r#"
[simulation]
dt_ms = 0.1
duration_ms = 200.0
seed = 17

[[populations]]
name = "A"
size = 400
model = "lif_psc_alpha"
tau_m_ms = 10.0
tau_syn_ex_ms = 0.5
tau_syn_in_ms = 2.0
i_e_pa = { uniform = [300.0, 450.0] }
v_init_mv = { uniform = [-70.0, -56.0] }

[[populations]]
name = "C"
size = 100
model = "lif_cuba"
i_e_pa = { normal = [360.0, 30.0] }

[[populations]]
name = "G"
size = 100
model = "lif_coba"
e_l_mv = -60.0
v_th_mv = -50.0
v_reset_mv = -60.0
tau_m_ms = 20.0
c_m_pf = 200.0
tau_syn_ex_ms = 5.0
tau_syn_in_ms = 10.0
i_e_pa = { lognormal = [4.5, 0.3] }

[[projections]]
name = "AA"
source = "A"
target = "A"
rule = { fixed_indegree = 40 }
weight = { uniform = [20.0, 40.0] }
delay_ms = { uniform = [0.5, 2.0] }

[[projections]]
name = "CA"
source = "C"
target = "A"
rule = { fixed_probability = 0.2 }
receptor = "inhibitory"
weight = 60.0
delay_ms = 0.8

[[projections]]
name = "AG"
source = "A"
target = "G"
rule = { fixed_indegree = 20 }
weight = 1.0

[[inputs]]
name = "drive"
kind = "poisson"
target = "A"
rate_hz = 2000.0
weight = 30.0

[[inputs]]
name = "dc"
kind = "dc"
target = "C"
amplitude_pa = 10.0

[recording]
spikes = ["A", "C", "G"]
"#;

/// A neuron column of every neuron by global id, whatever the sharding.
fn column(sim: &mut Simulation, pick: fn(&NeuronBlock) -> Vec<f32>) -> Vec<f32> {
    let mut all: Vec<(u32, f32)> = sim.world.query::<(&Shard, &NeuronBlock)>().iter(&sim.world).flat_map(|(s, b)| s.neurons.clone().zip(pick(b))).collect();
    all.sort_by_key(|p| p.0);
    all.into_iter().map(|p| p.1).collect()
}

fn bias(b: &NeuronBlock) -> Vec<f32> {
    b.bias_pa.as_ref().expect("a bias drawn per neuron").to_vec()
}

/// The state that must match bit for bit: v, both currents, both alpha variables.
fn state(sim: &mut Simulation) -> Vec<Vec<u32>> {
    let picks: [fn(&NeuronBlock) -> Vec<f32>; 5] = [
        |b| b.v.to_vec(),
        |b| b.syn_ex.to_vec(),
        |b| b.syn_in.to_vec(),
        |b| b.dsyn_ex.as_ref().expect("alpha state").to_vec(),
        |b| b.dsyn_in.as_ref().expect("alpha state").to_vec(),
    ];
    picks.into_iter().map(|p| column(sim, p).into_iter().map(f32::to_bits).collect()).collect()
}

#[test]
fn per_neuron_bias_and_alpha_spikes_are_identical_across_threads_and_shards() {
    let model = parse(ALPHA_NETWORK);
    let mut reference = simulate(&model, 1, 1);
    let spikes_ref = spikes(&reference);
    let (bias_ref, state_ref) = (column(&mut reference, bias), state(&mut reference));
    for pop in 0..3 {
        let fired = spikes_ref.iter().filter(|s| s.0 == pop).count();
        assert!(fired > 100, "population {pop} must be active: {fired} spikes");
    }
    for (threads, shards) in [(2, 1), (1, 3), (2, 8), (2, 600)] {
        let mut sim = simulate(&model, threads, shards);
        assert_eq!(column(&mut sim, bias), bias_ref, "drawn biases differ with {threads} threads and {shards} shards");
        assert!(spikes(&sim) == spikes_ref, "spikes differ with {threads} threads and {shards} shards");
        assert!(state(&mut sim) == state_ref, "state differs with {threads} threads and {shards} shards");
    }
    // The draws follow their distributions (sampling error of a mean: a few sigma / sqrt(n)).
    let mean = |r: std::ops::Range<usize>| bias_ref[r.clone()].iter().map(|&x| f64::from(x)).sum::<f64>() / r.len() as f64;
    assert!(bias_ref[..400].iter().all(|&b| (300.0..=450.0).contains(&b)));
    assert!((mean(0..400) - 375.0).abs() < 4.0 * 150.0 / 12f64.sqrt() / 20.0, "uniform mean {}", mean(0..400));
    assert!((mean(400..500) - 360.0).abs() < 4.0 * 30.0 / 10.0, "normal mean {}", mean(400..500));
    assert!(bias_ref[500..].iter().all(|&b| b > 0.0), "lognormal draws are positive");
    // A drawn bias does not move the other streams: the initial potentials are those of the
    // same model with a constant bias.
    let constant = parse(&ALPHA_NETWORK.replace("i_e_pa = { uniform = [300.0, 450.0] }", "i_e_pa = 375.0"));
    let v0 = |m: &fum::Model| column(&mut Simulation::from_model(m, 1, 1).unwrap(), |b| b.v.to_vec());
    assert_eq!(v0(&model), v0(&constant));
}

/// Values listed per neuron (from Python: `v_init_mv=array`, `i_e_pa=array`) fill the columns
/// draws fill: listing the initial potentials and biases the drawn network drew gives its
/// spikes and state, bit for bit, on any threads and shards (G lists the same v for all).
#[test]
fn values_listed_per_neuron_give_the_spikes_of_the_same_values_drawn() {
    let drawn = parse(ALPHA_NETWORK);
    let mut reference = simulate(&drawn, 1, 1);
    let (spikes_ref, bias_ref, state_ref) = (spikes(&reference), column(&mut reference, bias), state(&mut reference));
    assert!(spikes_ref.len() > 1000, "{} spikes", spikes_ref.len());
    let mut built = Simulation::from_model(&drawn, 1, 1).unwrap();
    let (v0, bias0) = (column(&mut built, |b| b.v.to_vec()), column(&mut built, bias));
    let values = |of: &[f32], r: std::ops::Range<usize>| Some(of[r].iter().map(|&x| f64::from(x)).collect::<Vec<f64>>());
    let neurons = vec![
        ("A".to_string(), NeuronValues { v_init_mv: values(&v0, 0..400), i_e_pa: values(&bias0, 0..400), rate_hz: None }),
        ("C".to_string(), NeuronValues { i_e_pa: values(&bias0, 400..500), ..Default::default() }),
        ("G".to_string(), NeuronValues { v_init_mv: values(&v0, 500..600), i_e_pa: values(&bias0, 500..600), rate_hz: None }),
    ];
    let mut text = ALPHA_NETWORK.to_string();
    for line in ["i_e_pa = { uniform = [300.0, 450.0] }\n", "v_init_mv = { uniform = [-70.0, -56.0] }\n", "i_e_pa = { normal = [360.0, 30.0] }\n", "i_e_pa = { lognormal = [4.5, 0.3] }\n"] {
        text = text.replacen(line, "", 1);
    }
    let text = text
        .replacen("model = \"lif_psc_alpha\"\n", "model = \"lif_psc_alpha\"\nlisted = [\"v_init_mv\", \"i_e_pa\"]\n", 1)
        .replacen("model = \"lif_cuba\"\n", "model = \"lif_cuba\"\nlisted = [\"i_e_pa\"]\n", 1)
        .replacen("model = \"lif_coba\"\n", "model = \"lif_coba\"\nlisted = [\"i_e_pa\", \"v_init_mv\"]\n", 1);
    let listed = fum::Model::parse_listed(&text, std::path::Path::new("listed.toml"), vec![], neurons, vec![]).unwrap();
    assert_ne!(listed.hash(), drawn.hash());
    for (threads, shards) in [(1, 1), (2, 1), (1, 3)] {
        let mut sim = simulate(&listed, threads, shards);
        assert_eq!(column(&mut sim, bias), bias_ref, "biases differ with {threads} threads and {shards} shards");
        assert!(spikes(&sim) == spikes_ref, "spikes differ with {threads} threads and {shards} shards");
        assert!(state(&mut sim) == state_ref, "state differs with {threads} threads and {shards} shards");
    }
}

/// NEST's reference behaviour: a LIF neuron with a constant current I above the rheobase
/// (v_th - e_l) C / tau_m fires with period t_ref - tau_m ln(1 - (v_th - e_l) C / (tau_m I)),
/// on the grid rounded up to a whole step (the crossing is found at the end of its step); at or
/// below it, never. Each neuron here has its own drawn bias, straddling the rheobase (375 pA),
/// and no input. The membrane is an f32 near -55 mV, within a few 1e-4 mV of the exact one;
/// where it reaches threshold at the slope (I - rheobase) / C, that moves the crossing by up to
/// 5e-4 mV over the slope, which matters just above the rheobase only.
#[test]
fn each_neuron_fires_at_the_analytic_period_of_its_own_bias() {
    let text = r#"
[simulation]
dt_ms = 0.1
duration_ms = 400.0
seed = 5

[[populations]]
name = "A"
size = 200
model = "lif_psc_alpha"
i_e_pa = { uniform = [350.0, 1500.0] }

[recording]
spikes = ["A"]
"#;
    let model = parse(text);
    let mut sim = simulate(&model, 2, 3);
    let biases = column(&mut sim, bias);
    let mut trains = vec![Vec::new(); biases.len()];
    for (_, step, id) in spikes(&sim) {
        trains[id as usize].push(step);
    }
    let (tau_m, c_m, t_ref, theta, dt) = (10.0f64, 250.0f64, 2.0f64, 15.0f64, 0.1f64);
    let rheobase = theta * c_m / tau_m;
    let mut firing = 0;
    for (i, (&bias, train)) in biases.iter().zip(&trains).enumerate() {
        let current = f64::from(bias);
        if current <= rheobase {
            assert!(train.is_empty(), "neuron {i}: {current} pA is below the rheobase, yet it fired");
            continue;
        }
        firing += 1;
        let t_star = -tau_m * (1.0 - theta * c_m / (tau_m * current)).ln();
        let analytic = t_ref + t_star;
        assert!(train.len() >= 2 || t_star > 150.0, "neuron {i} at {current} pA fired {} times", train.len());
        for w in train.windows(2) {
            let period = f64::from(w[1] - w[0]) * dt;
            let slack = dt + 5e-4 / ((current - rheobase) / c_m);
            assert!((period - analytic).abs() < slack, "neuron {i} at {current} pA: period {period} ms, analytic {analytic} ms");
        }
    }
    assert!(firing > 150, "most neurons are above the rheobase: {firing}");
}

/// A checkpoint holds the alpha variables (and not the drawn bias, rebuilt from the seed): a
/// run resumed from it ends in the state of the run that went straight through.
#[test]
fn a_resumed_alpha_run_ends_in_the_same_state() {
    let model = parse(ALPHA_NETWORK);
    let start = |m: &fum::Model| {
        let mut sim = Simulation::from_model(m, 2, 3).unwrap();
        sim.add_plugins(fum::DefaultPlugins);
        sim
    };
    let mut straight = start(&model);
    straight.run(400, |_| {});
    let dir = tempfile::tempdir().unwrap();
    let path = Snapshot::take(&mut straight.world, &model.source, model.hash(), serde_json::Value::Null).unwrap().write(dir.path(), 1).unwrap();
    straight.run(400, |_| {});
    let ckpt = Checkpoint::open(&path).unwrap();
    let names: Vec<&str> = ckpt.header.sections.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"shard/2/dsyn_ex") && names.contains(&"shard/2/dsyn_in"), "the alpha variables are checkpointed");
    assert!(!names.iter().any(|n| n.ends_with("bias_pa")), "the drawn bias is rebuilt, not stored");

    let mut resumed = start(&model);
    ckpt.restore(&mut resumed.world, model.hash()).unwrap();
    resumed.run(400, |_| {});
    assert!(state(&mut resumed) == state(&mut straight), "the resumed run's state differs");
    assert_eq!(column(&mut resumed, bias), column(&mut straight, bias));

    // A checkpoint without the alpha variables (as a fum that did not keep them would write)
    // is refused, naming the column, rather than resumed with them at 0.
    let mut snapshot = Snapshot::take(&mut straight.world, &model.source, model.hash(), serde_json::Value::Null).unwrap();
    snapshot.sections.retain(|(name, _)| !name.contains("dsyn_"));
    let path = snapshot.write(&dir.path().join("old"), 1).unwrap();
    let err = Checkpoint::open(&path).unwrap().restore(&mut start(&model).world, model.hash()).unwrap_err().to_string();
    assert!(err.contains("no section shard/0/dsyn_ex: this network keeps the column \"dsyn_ex\", which the checkpoint (written by fum"), "{err}");
}

/// A network without `lif_psc_alpha` or a drawn bias has none of their columns: nothing more to
/// store, upload or checkpoint than before they existed.
#[test]
fn columns_only_where_a_model_needs_them() {
    let mut sim = Simulation::from_model(&parse(BALANCED), 1, 2).unwrap();
    let blocks: Vec<(bool, bool, bool)> = sim.world.query::<&NeuronBlock>().iter(&sim.world).map(|b| (b.dsyn_ex.is_some(), b.dsyn_in.is_some(), b.bias_pa.is_some())).collect();
    assert!(blocks.iter().all(|&c| c == (false, false, false)), "{blocks:?}");
}

/// The health check reads the alpha variables too: a non-finite `dsyn_in` is found and named.
#[test]
fn the_health_check_finds_a_non_finite_alpha_variable() {
    use fum::engine::health::HealthMonitor;
    let mut sim = Simulation::from_model(&parse(ALPHA_NETWORK), 1, 2).unwrap();
    let mut health = HealthMonitor::new(10, 1e6, &sim.world);
    assert!(health.check(&mut sim.world, 10).is_ok());
    let mut query = sim.world.query::<(&Shard, &mut NeuronBlock)>();
    let (shard, mut block) = query.iter_mut(&mut sim.world).find(|(s, _)| s.neurons.start == 0).unwrap();
    assert_eq!(shard.neurons.start, 0);
    block.dsyn_in.as_mut().expect("an alpha network has dsyn_in")[5] = f32::INFINITY;
    let e = health.check(&mut sim.world, 20).expect_err("the infinite derivative is found");
    assert!(e.to_string().contains("population A, neuron 5: inhibitory synaptic derivative is inf"), "{e}");
}
