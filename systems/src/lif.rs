//! The neuron update: every shard integrates its neurons, population segment by segment, and
//! lists the ones that fired.

use bevy_ecs::prelude::*;
use fum_engine::components::{Clock, Dynamics, NeuronBlock, Populations, Shard};
use fum_engine::{Plugin, Simulation, Stage};
use fum_kernels::delivery::Ring;
use fum_kernels::lif::{AlphaState, LifInput, LifState, alpha_step, coba_step, collect_spikes, cuba_step};
use fum_kernels::source::fire_scheduled;

pub struct LifPlugin;

impl Plugin for LifPlugin {
    fn build(&self, sim: &mut Simulation) {
        sim.add_systems(lif_update.in_set(Stage::Update));
    }
}

pub fn lif_update(mut shards: Query<(&Shard, &mut NeuronBlock)>, populations: Res<Populations>, clock: Res<Clock>) {
    let step = clock.step;
    let mut items: Vec<_> = shards.iter_mut().collect();
    crate::for_each_shard(&mut items, |items| items.iter().map(|(_, block)| block.len()).sum(), |(shard, block)| update_shard(block, shard.neurons.start, &populations, step));
}

/// One step of all neurons of a shard, whose first neuron is global id `shard_first`;
/// consumes (zeroes) the ring slot of `step`.
pub fn update_shard(block: &mut NeuronBlock, shard_first: u32, populations: &Populations, step: u64) {
    let neurons = block.len();
    let NeuronBlock { segments, v, syn_ex, syn_in, dsyn_ex, dsyn_in, bias_pa, refractory_steps, fired, ring_ex, ring_in, spiked, .. } = block;
    spiked.clear();
    let (ring_ex, ring_in) = (Ring::new(neurons, ring_ex), Ring::new(neurons, ring_in));
    let slot = ring_ex.slot(step);
    for seg in segments.iter() {
        let r = seg.local.clone();
        let state = LifState {
            v: &mut v[r.clone()],
            syn_ex: &mut syn_ex[r.clone()],
            syn_in: &mut syn_in[r.clone()],
            refractory: &mut refractory_steps[r.clone()],
            fired: &mut fired[r.clone()],
        };
        let pop = &populations.0[seg.population];
        let input = LifInput {
            arriving_ex: &mut ring_ex.sums[slot.start + r.start..slot.start + r.end],
            arriving_in: &mut ring_in.sums[slot.start + r.start..slot.start + r.end],
            current_pa: pop.current_at(step),
            bias_pa: if pop.bias_per_neuron { Some(&bias_pa.as_ref().expect("built with the bias column")[r.clone()]) } else { None },
        };
        match &pop.dynamics {
            Dynamics::Cuba(c) => cuba_step(c, state, input),
            Dynamics::Coba(c) => coba_step(c, state, input),
            Dynamics::Alpha(c) => {
                let (Some(dsyn_ex), Some(dsyn_in)) = (dsyn_ex.as_mut(), dsyn_in.as_mut()) else { unreachable!("built with the alpha columns") };
                alpha_step(c, state, AlphaState { dsyn_ex: &mut dsyn_ex[r.clone()], dsyn_in: &mut dsyn_in[r.clone()] }, input)
            }
            Dynamics::SpikeSource => {
                // Nothing projects into a spike source (the model refuses it), but the slot is
                // consumed as every neuron's is.
                input.arriving_ex.fill(0);
                input.arriving_in.fill(0);
                let schedule = pop.schedule.as_deref().expect("a spike source has a schedule");
                let first = (shard_first + r.start as u32) - pop.first;
                fire_scheduled(schedule, step, first..first + r.len() as u32, state.fired);
            }
        }
    }
    collect_spikes(fired, 0, spiked);
}
