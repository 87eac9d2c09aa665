//! Spike sources: neurons without a membrane that fire at listed times (NEST's
//! `spike_generator`, PyNN's `SpikeSourceArray`, SONATA's `virtual` nodes).
//!
//! A population's listed spikes become a *schedule*: one `u64` key per spike, the step in the
//! high 32 bits and the population-local neuron in the low 32, sorted and without repeats. The
//! spikes of step `t` among neurons `a..b` are then the keys in `[key(t, a), key(t, b))`, found
//! by binary search from the step alone: no cursor to advance, so nothing to checkpoint (a
//! resumed run looks up the same keys), and every shard or GPU thread finds its own neurons'
//! spikes whatever the others do. `fum.cu` searches the same array the same way.

use std::ops::Range;

/// The key of neuron `neuron` (population-local) firing at step `step` (below 2^32: the
/// model refuses runs of more steps).
#[inline]
pub fn schedule_key(step: u64, neuron: u32) -> u64 {
    (step << 32) | u64::from(neuron)
}

/// The step a spike listed at `time_ms` fires at, as NEST's `spike_generator` places it (with
/// `allow_offgrid_times`): the time is first rounded to NEST's tic of 1 µs, then a time on the
/// grid is its step and a time between two steps goes to the later one (NEST rounds off-grid
/// times up, never down, so no spike fires before its listed time). Where `dt_ms` is not a
/// whole number of tics, the same rule in steps, with a tolerance of 10^-6 step.
pub fn spike_step(time_ms: f64, dt_ms: f64) -> f64 {
    const TICS_PER_MS: f64 = 1000.0;
    let dt_tics = (dt_ms * TICS_PER_MS).round();
    if dt_tics >= 1.0 && (dt_tics / TICS_PER_MS - dt_ms).abs() <= 1e-12 * dt_ms {
        ((time_ms * TICS_PER_MS).round() / dt_tics).ceil()
    } else {
        (time_ms / dt_ms - 1e-6).ceil()
    }
}

/// The sorted schedule of spikes of `neurons` (population-local) at `times_ms` on a grid of
/// `dt_ms`: listed spikes in any order; spikes at or beyond step 2^32 (past any run) are left
/// out, and several spikes of one neuron that fall in one step fire once (the schedule is a set).
pub fn schedule(neurons: &[u32], times_ms: &[f64], dt_ms: f64) -> Vec<u64> {
    let mut keys: Vec<u64> = neurons
        .iter()
        .zip(times_ms)
        .map(|(&n, &t)| (n, spike_step(t, dt_ms)))
        .filter(|&(_, step)| step < 4_294_967_296.0)
        .map(|(n, step)| schedule_key(step.max(0.0) as u64, n))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Marks in `fired` (indexed from neuron `neurons.start`) the neurons of `neurons` that the
/// schedule fires at `step`, and clears the others' flags.
pub fn fire_scheduled(schedule: &[u64], step: u64, neurons: Range<u32>, fired: &mut [u8]) {
    fired.fill(0);
    let start = schedule.partition_point(|&k| k < schedule_key(step, neurons.start));
    let end = start + schedule[start..].partition_point(|&k| k < schedule_key(step, neurons.end));
    for &k in &schedule[start..end] {
        fired[(k as u32 - neurons.start) as usize] = 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_on_the_grid_keep_their_step_and_others_go_to_the_next() {
        assert_eq!(spike_step(0.0, 0.1), 0.0);
        assert_eq!(spike_step(0.3, 0.1), 3.0, "0.3 / 0.1 is 2.9999999999999996 in f64: the tics make it 3");
        assert_eq!(spike_step(0.30000049, 0.1), 3.0, "within half a tic of the grid");
        assert_eq!(spike_step(0.3006, 0.1), 4.0, "off the grid: the later step");
        assert_eq!(spike_step(0.35, 0.1), 4.0);
        assert_eq!(spike_step(10.0, 0.25), 40.0);
        assert_eq!(spike_step(10.1, 0.25), 41.0);
        // dt not a whole number of tics: the same rule in steps.
        assert_eq!(spike_step(1.0, 1.0 / 3.0), 3.0);
        assert_eq!(spike_step(1.1, 1.0 / 3.0), 4.0);
    }

    #[test]
    fn a_schedule_is_sorted_by_step_then_neuron_without_repeats() {
        let keys = schedule(&[2, 0, 2, 1, 2], &[0.5, 0.5, 0.1, 0.5, 0.52], 0.1);
        assert_eq!(keys, [schedule_key(1, 2), schedule_key(5, 0), schedule_key(5, 1), schedule_key(5, 2), schedule_key(6, 2)]);
        assert_eq!(schedule(&[3, 3], &[1.01, 1.02], 0.1), [schedule_key(11, 3)], "two spikes of one neuron in one step fire once");
        let keys = schedule(&[0], &[1e300], 0.1);
        assert!(keys.is_empty(), "past any run");
    }

    /// Each range of neurons sees exactly its spikes of the step, however the population is cut.
    #[test]
    fn every_cut_of_the_population_fires_the_same_neurons() {
        let neurons: Vec<u32> = (0..300).map(|i| (i * 37) % 50).collect();
        let times: Vec<f64> = (0..300).map(|i| f64::from((i * 13) % 40) * 0.1).collect();
        let keys = schedule(&neurons, &times, 0.1);
        for step in 0..45u64 {
            let mut whole = vec![0u8; 50];
            fire_scheduled(&keys, step, 0..50, &mut whole);
            let expected: Vec<u8> = (0..50u32).map(|n| u8::from(neurons.iter().zip(&times).any(|(&m, &t)| m == n && spike_step(t, 0.1) == step as f64))).collect();
            assert_eq!(whole, expected, "step {step}");
            let mut parts = vec![7u8; 50];
            for cut in [0..7u32, 7..8, 8..31, 31..50] {
                fire_scheduled(&keys, step, cut.clone(), &mut parts[cut.start as usize..cut.end as usize]);
            }
            assert_eq!(parts, whole, "step {step}");
        }
    }
}
