//! Structural plasticity: the snapshot, background planning and commit of
//! `fum_engine::structural` (whose module comment states the concurrency contract), on every
//! backend, and the per-neuron spike counts a plan's co-activity reads, on the CPU.
//!
//! The snapshot and commit hold the whole world at a few steps (every `every_ms`), so they are
//! no system: as an exclusive system with a run condition in the schedule they cost every step
//! (~2.5 % of a 6 µs step, measured with no snapshot ever due). They run from the step loop
//! ([`StepStart`]) only at the steps [`busy`] names.

use bevy_ecs::prelude::*;
use fum_engine::components::NeuronBlock;
use fum_engine::structural::{Rewiring, Structural, at_step_start, busy};
use fum_engine::simulation::StepStart;
use fum_engine::{Plugin, Simulation, Stage};

/// Prunes and regrows synapses as the model's `[[structural]]` sections say; does nothing for a
/// model without them.
pub struct StructuralPlugin {
    /// Count spikes on the host for co-activity (a device backend counts them in its step).
    pub count_on_host: bool,
}

impl Plugin for StructuralPlugin {
    fn build(&self, sim: &mut Simulation) {
        let Some(structural) = sim.world.get_resource::<Structural>() else { return };
        // Only co-activity (the priority rule) reads the spike counts: other rules spare every
        // step the count.
        let counts = structural.counts_spikes();
        sim.add_step_start(StepStart { next_due: busy, run: at_step_start });
        if counts && self.count_on_host {
            sim.add_systems(count_spikes.in_set(Stage::Record));
        }
    }
}

/// Adds this step's spikes to each neuron's count since each schedule's last snapshot. A few
/// increments per shard and step: serial, as handing them to the pool would cost more.
pub fn count_spikes(mut shards: Query<(&NeuronBlock, &mut Rewiring)>) {
    for (neurons, mut rewiring) in shards.iter_mut() {
        let n = neurons.v.len();
        for slot in rewiring.spike_count.chunks_exact_mut(n) {
            for &local in &neurons.spiked {
                slot[local as usize] += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fum_engine::structural::Schedule;
    use fum_kernels::rng::Key;
    use std::sync::Arc;

    /// `busy` names exactly the steps `Structural::busy_at` does.
    #[test]
    fn busy_names_the_next_busy_step() {
        for (every, commit_after) in [(1, 0), (1, 1), (5, 0), (5, 2), (5, 5), (7, 3), (5000, 2500)] {
            let mut world = World::new();
            assert_eq!(busy(&world, 0), None);
            let s = Structural { rules: Arc::new(Vec::new()), schedules: vec![Schedule { every_steps: every, commit_after_steps: commit_after }], key: Key::from_seed(1), dt_ms: 0.1 };
            world.insert_resource(s.clone());
            for from in (0..40).chain(9990..10010) {
                let expected = (from..).find(|&k| s.busy_at(k));
                assert_eq!(busy(&world, from), expected, "every {every}, commit_after {commit_after}, from {from}");
            }
        }
    }
}
