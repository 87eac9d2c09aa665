//! The same seed gives byte-identical spike trains (and learned weights) whatever the thread
//! and shard count, and from run to run.

mod common;
use common::*;

use fum::Simulation;
use fum::engine::recording::Recorder;

/// [`BALANCED`]: every connection rule, drawn delays and weights, plastic E->E.
fn model() -> fum::Model {
    parse(BALANCED)
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
