//! External input: independent Poisson trains into every neuron of a population. (Constant
//! currents need no system: they are part of each population's constant current.)

use bevy_ecs::prelude::*;
use fum_engine::components::{Clock, NeuronBlock, PoissonSources, Seed, Shard};
use fum_engine::model::Receptor;
use fum_engine::{Plugin, Simulation, Stage};
use fum_kernels::delivery::to_fixed;
use fum_kernels::rng::{Purpose, add_poisson_counts, normal_from, poisson, uniform_f64};

pub struct InputPlugin;

impl Plugin for InputPlugin {
    fn build(&self, sim: &mut Simulation) {
        sim.add_systems(poisson_input.in_set(Stage::Input));
    }
}

/// Adds each neuron's Poisson count times the weight to the ring slot read in this step. The
/// count of neuron `id` at step `t` comes from Philox block (input, id, t): the same on any shard
/// (drawn eight neurons at a time where the CPU can). An input of one rate of at most 64 a step
/// counts from its table ([`add_poisson_counts`]); rates per neuron and larger means take
/// `poisson`, the device's loop.
pub fn poisson_input(mut shards: Query<(&Shard, &mut NeuronBlock)>, sources: Res<PoissonSources>, clock: Res<Clock>, seed: Res<Seed>) {
    if sources.0.is_empty() {
        return;
    }
    let step = clock.step;
    let key = seed.0;
    let mut items: Vec<_> = shards.iter_mut().collect();
    // A Poisson count costs about four neuron updates (a Philox block per neuron and step).
    crate::for_each_shard(&mut items, |_| 4 * sources.0.iter().map(|s| s.target.len()).sum::<usize>(), |(shard, block)| {
        let slot = block.ring_mut(Receptor::Excitatory).slot(step);
        for src in &sources.0 {
            let lo = src.target.start.max(shard.neurons.start);
            let hi = src.target.end.min(shard.neurons.end);
            let quantum = to_fixed(src.weight);
            let ring = block.ring_mut(src.receptor).sums;
            if src.per_neuron.is_none() && src.mean_per_step <= 64.0 {
                if lo < hi {
                    let at = slot.start + (lo - shard.neurons.start) as usize;
                    add_poisson_counts(key, src.index, lo..hi, step, &src.cdf, quantum, &mut ring[at..at + (hi - lo) as usize]);
                }
                continue;
            }
            key.for_each_block(Purpose::PoissonInput, src.index, lo..hi, step, |id, w| {
                let u = uniform_f64(w[0], w[1]);
                // A rate per neuron has no table (one per neuron would not pay).
                let [mean, eml] = src.per_neuron.as_ref().map_or([src.mean_per_step, src.exp_minus_mean], |rates| rates[(id - src.target.start) as usize]);
                let k = poisson(mean, eml, u, normal_from(w[2], w[3]));
                if k > 0 {
                    ring[slot.start + (id - shard.neurons.start) as usize] += i64::from(k) * quantum;
                }
            });
        }
    });
}
