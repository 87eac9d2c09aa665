//! Cheap invariants checked every few milliseconds of biological time: finite state and rates
//! below a runaway bound; and, every [`WEIGHT_CHECK_EVERY`] checks, plastic weights within
//! their bounds (rounded to the stored type: an `f16` weight may sit at the `f16` nearest to a
//! bound). A violation names the population, the neuron (or synapse) and the step.
//!
//! Weights are checked less often because there are a thousand times more of them than
//! neurons: scanning all of them every 10 ms costs more than delivering the spikes of those
//! 10 ms (a synapse is touched only when its source fires). Device backends check state and
//! weights on the device and copy back only to name a violation
//! (`backend::health_needs_host_scan`).

use bevy_ecs::prelude::*;

use crate::backend::health_needs_host_scan;
use crate::components::{NeuronBlock, Plasticity, Populations, Shard, SynapseBlocks};
use crate::recording::Recorder;

/// Plastic weights are checked at every this many-th check (every 1 s of biological time at
/// the default 10 ms interval).
pub const WEIGHT_CHECK_EVERY: u64 = 100;

#[derive(Debug, thiserror::Error)]
#[error("health check failed at step {step} (t = {time_ms} ms): {what}")]
pub struct HealthError {
    pub step: u64,
    pub time_ms: f64,
    pub what: String,
}

/// Watches a running simulation; `check` is called at step boundaries.
#[derive(Clone, Debug)]
pub struct HealthMonitor {
    pub interval_steps: u64,
    pub max_rate_hz: f64,
    last_counts: Vec<u64>,
    last_step: u64,
}

impl HealthMonitor {
    pub fn new(interval_steps: u64, max_rate_hz: f64, world: &World) -> Self {
        let rec = world.resource::<Recorder>();
        let step = world.resource::<crate::components::Clock>().step;
        HealthMonitor { interval_steps: interval_steps.max(1), max_rate_hz, last_counts: rec.spike_counts.clone(), last_step: step }
    }

    /// Whether [`HealthMonitor::check`] looks at the state after `step` (device backends copy
    /// the neuron state back only then).
    pub fn due(&self, step: u64) -> bool {
        step.is_multiple_of(self.interval_steps) && step != self.last_step
    }

    /// Checks the invariants if `step` (steps done) is due.
    pub fn check(&mut self, world: &mut World, step: u64) -> Result<(), HealthError> {
        if !self.due(step) {
            return Ok(());
        }
        let dt = world.resource::<crate::components::Clock>().dt_ms;
        let fail = |what: String| HealthError { step, time_ms: step as f64 * dt, what };
        let populations = world.resource::<Populations>().0.clone();
        let name_of = |global: u32| populations.iter().find(|p| p.ids().contains(&global)).map_or("?", |p| p.name.as_str()).to_string();
        let weights_due = step.is_multiple_of(self.interval_steps * WEIGHT_CHECK_EVERY);
        let scan = health_needs_host_scan(world, weights_due).map_err(|e| fail(format!("checking on the device: {e}")))?;
        let mut query = world.query::<(&Shard, &NeuronBlock, &SynapseBlocks)>();
        for (shard, neurons, synapses) in query.iter(world).filter(|_| scan) {
            let state = [("membrane potential", Some(&neurons.v)), ("excitatory synaptic variable", Some(&neurons.syn_ex)), ("inhibitory synaptic variable", Some(&neurons.syn_in))];
            // lif_psc_alpha's second variables, where some population has them.
            let alpha = [("excitatory synaptic derivative", neurons.dsyn_ex.as_ref()), ("inhibitory synaptic derivative", neurons.dsyn_in.as_ref())];
            for (variable, column) in state.into_iter().chain(alpha).filter_map(|(name, c)| Some((name, c?))) {
                if let Some(i) = column.iter().position(|x| !x.is_finite()) {
                    let g = shard.neurons.start + i as u32;
                    let pop = populations.iter().find(|p| p.ids().contains(&g)).expect("every neuron has a population");
                    return Err(fail(format!("population {}, neuron {}: {variable} is {}", pop.name, g - pop.first, column[i])));
                }
            }
            if !weights_due {
                continue;
            }
            let plasticity = world.resource::<Plasticity>();
            for block in &synapses.0 {
                let Some(p) = &block.plastic else { continue };
                let rule = &plasticity.projections[p.rule].rule;
                // A paged block's resident pages: a spilled page cannot change (under a device
                // the weights are not paged, and every one is read).
                if let Some(k) = crate::paging::resident_ranges(block).into_iter().find_map(|r| block.weight.position_outside(r, rule.w_min, rule.w_max)) {
                    let target = crate::paging::target_of(block, k).map_err(fail)? + shard.neurons.start;
                    return Err(fail(format!("projection #{} synapse into {} neuron {}: weight {} outside [{}, {}]", block.projection, name_of(target), target, block.weight.get_resident(k), rule.w_min, rule.w_max)));
                }
            }
        }
        let rec = world.resource::<Recorder>();
        let window_s = (step - self.last_step) as f64 * dt * 1e-3;
        for ((pop, &now), &before) in populations.iter().zip(&rec.spike_counts).zip(&self.last_counts) {
            let rate = (now - before) as f64 / (f64::from(pop.size) * window_s);
            if rate > self.max_rate_hz {
                return Err(fail(format!("population {}: runaway rate {rate:.0} Hz over the last {:.1} ms (limit {} Hz)", pop.name, window_s * 1e3, self.max_rate_hz)));
            }
        }
        self.last_counts = rec.spike_counts.clone();
        self.last_step = step;
        Ok(())
    }
}
