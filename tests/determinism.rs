//! The same seed gives byte-identical spike trains (and learned weights) whatever the thread
//! and shard count, and from run to run.

mod common;
use common::*;

use fum::Simulation;
use fum::engine::recording::Recorder;

/// A small balanced network with Poisson drive, every connection rule, heterogeneous delays
/// and weights, and plastic E->E synapses: it exercises every random stream and every system.
const MODEL: &str = r#"
[simulation]
dt_ms = 0.1
duration_ms = 300.0
seed = 99

[[populations]]
name = "E"
size = 800
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
size = 200
model = "lif_coba"
e_l_mv = -60.0
v_th_mv = -50.0
v_reset_mv = -60.0
e_ex_mv = 0.0
e_in_mv = -80.0
tau_m_ms = 20.0
c_m_pf = 200.0
tau_syn_ex_ms = 5.0
tau_syn_in_ms = 10.0
v_init_mv = { normal = [-55.0, 3.0] }

[[projections]]
name = "EE"
source = "E"
target = "E"
rule = { fixed_indegree = 80 }
weight = { uniform = [40.0, 60.0] }
delay_ms = { uniform = [0.5, 3.0] }
plasticity = "stdp"

[[projections]]
name = "EI"
source = "E"
target = "I"
rule = { fixed_probability = 0.1 }
weight = 2.0
delay_ms = 1.0

[[projections]]
name = "IE"
source = "I"
target = "E"
rule = { fixed_outdegree = 100 }
receptor = "inhibitory"
weight = { normal = [250.0, 20.0] }
delay_ms = 0.8

[[projections]]
name = "II"
source = "I"
target = "I"
rule = "all_to_all"
receptor = "inhibitory"
weight = 0.5

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
rate_hz = 2000.0
weight = 3.0

[[inputs]]
name = "bias"
kind = "dc"
target = "I"
amplitude_pa = 20.0

[recording]
spikes = ["E", "I"]
"#;

fn model() -> fum::Model {
    parse(MODEL)
}

#[test]
fn spikes_and_weights_identical_across_threads_and_shards() {
    let model = model();
    let mut reference = simulate(&model, 1, 1);
    let spikes_ref = spikes(&reference);
    let synapses_ref = synapses(&mut reference);
    let counts = reference.world.resource::<Recorder>().spike_counts.clone();
    assert!(counts[0] > 1000 && counts[1] > 100, "the network must be active: {counts:?}");
    for threads in [1, 2] {
        for shards in [1, 3, 8] {
            if (threads, shards) == (1, 1) {
                continue;
            }
            let mut sim = simulate(&model, threads, shards);
            assert!(spikes(&sim) == spikes_ref, "spikes differ with {threads} threads and {shards} shards");
            assert!(synapses(&mut sim) == synapses_ref, "synapses or learned weights differ with {threads} threads and {shards} shards");
        }
    }
}

#[test]
fn two_runs_are_identical_and_seeds_matter() {
    let model = model();
    let a = spikes(&simulate(&model, 2, 2));
    let b = spikes(&simulate(&model, 2, 2));
    assert!(a == b);
    let mut other = model.clone();
    other.spec.simulation.seed += 1;
    assert!(spikes(&simulate(&other, 2, 2)) != a, "a different seed must give different spikes");
}

#[test]
fn stdp_changes_weights() {
    let model = model();
    let mut sim = simulate(&model, 2, 2);
    let learned = synapses(&mut sim);
    let mut frozen = Simulation::from_model(&model, 2, 2).unwrap();
    let initial = synapses(&mut frozen);
    let changed = learned.iter().zip(&initial).filter(|(a, b)| a.0 == 0 && a.4 != b.4).count();
    assert!(changed > 1000, "only {changed} plastic weights changed");
    assert!(learned.iter().filter(|s| s.0 == 0).all(|s| (0.0..=100.0).contains(&f32::from_bits(s.4))));
}
