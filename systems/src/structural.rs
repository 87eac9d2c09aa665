//! Structural plasticity on the CPU: the snapshot, background planning and commit of
//! `fum_engine::structural` (whose module comment states the concurrency contract), and the
//! per-neuron spike counts a plan's co-activity reads.

use bevy_ecs::prelude::*;
use fum_engine::components::NeuronBlock;
use fum_engine::structural::{Rewiring, Structural, at_step_start, busy};
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
        sim.add_systems(at_step_start.run_if(busy).in_set(Stage::Structure));
        if counts && self.count_on_host {
            sim.add_systems(count_spikes.in_set(Stage::Record));
        }
    }
}

/// Adds this step's spikes to each neuron's count since the last snapshot. A few increments
/// per shard and step: serial, as handing them to the pool would cost more.
pub fn count_spikes(mut shards: Query<(&NeuronBlock, &mut Rewiring)>) {
    for (neurons, mut rewiring) in shards.iter_mut() {
        for &local in &neurons.spiked {
            rewiring.spike_count[local as usize] += 1;
        }
    }
}
