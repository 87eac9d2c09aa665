//! Pair-based spike-timing-dependent plasticity with presynaptic and postsynaptic traces.
//!
//! Depression happens at presynaptic spikes (by the target's postsynaptic trace) and
//! potentiation at postsynaptic spikes (by the source's presynaptic trace), as in Song, Miller &
//! Abbott (2000) and Morrison, Diesmann & Gerstner (2008). Pairing uses the spike times at the
//! neurons; a spike pairs with spikes of earlier steps only, so a pre and post spike in the same
//! step leave the weight unchanged.
//!
//! Traces are evaluated lazily: a neuron stores its trace just after its last spike and the step
//! of that spike; the value at a later step is that times `exp(-elapsed / tau)`, read from a
//! table computed once on the host. No per-step sweep over all neurons, and the value is the
//! same bit for bit on every backend.

/// How a spike adds to its trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pairing {
    /// Every earlier spike of the partner counts: the trace jumps by 1 (x <- x + 1).
    AllToAll,
    /// Only the most recent spike of the partner counts: the trace is reset to 1 (x <- 1).
    Nearest,
}

/// How a weight change depends on the weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightDependence {
    /// dw = +a_plus w_max x (potentiation), -a_minus w_max y (depression).
    Additive,
    /// dw = +a_plus (w_max - w) x, -a_minus (w - w_min) y (soft bounds).
    Multiplicative,
}

/// One STDP rule, in the unit of the projection's weights.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StdpRule {
    pub a_plus: f32,
    pub a_minus: f32,
    pub w_min: f32,
    pub w_max: f32,
    pub dependence: WeightDependence,
    pub pairing: Pairing,
}

impl StdpRule {
    /// The weight after a postsynaptic spike that sees presynaptic trace `x`.
    #[inline]
    pub fn potentiate(&self, w: f32, x: f32) -> f32 {
        let dw = match self.dependence {
            WeightDependence::Additive => self.a_plus * self.w_max * x,
            WeightDependence::Multiplicative => self.a_plus * (self.w_max - w) * x,
        };
        (w + dw).clamp(self.w_min, self.w_max)
    }

    /// The weight after a presynaptic spike that sees postsynaptic trace `y`.
    #[inline]
    pub fn depress(&self, w: f32, y: f32) -> f32 {
        let dw = match self.dependence {
            WeightDependence::Additive => self.a_minus * self.w_max * y,
            WeightDependence::Multiplicative => self.a_minus * (w - self.w_min) * y,
        };
        (w - dw).clamp(self.w_min, self.w_max)
    }
}

/// exp(-n dt / tau) for n = 0, 1, ... until it drops below 1e-12 (then 0).
#[derive(Clone, Debug, PartialEq)]
pub struct TraceDecay {
    table: Vec<f32>,
}

impl TraceDecay {
    pub fn new(tau_ms: f64, dt_ms: f64) -> Self {
        let len = ((tau_ms / dt_ms) * 12.0_f64 * std::f64::consts::LN_10).ceil() as usize + 1;
        TraceDecay { table: (0..len).map(|n| (-(n as f64) * dt_ms / tau_ms).exp() as f32).collect() }
    }

    #[inline]
    pub fn after(&self, steps: u32) -> f32 {
        self.table.get(steps as usize).copied().unwrap_or(0.0)
    }
}

/// Marks a neuron that has not spiked yet.
pub const NEVER: u32 = u32::MAX;

/// Lazily evaluated traces of a range of neurons.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Traces {
    /// The trace just after the neuron's last spike.
    pub at_last_spike: Vec<f32>,
    /// Step of the last spike, or [`NEVER`].
    pub last_spike_step: Vec<u32>,
}

impl Traces {
    pub fn new(neurons: usize) -> Self {
        Traces { at_last_spike: vec![0.0; neurons], last_spike_step: vec![NEVER; neurons] }
    }

    /// The trace of neuron `i` at `step`, before any spike of `step` is counted.
    #[inline]
    pub fn value(&self, i: usize, step: u32, decay: &TraceDecay) -> f32 {
        let last = self.last_spike_step[i];
        if last == NEVER {
            return 0.0;
        }
        self.at_last_spike[i] * decay.after(step - last)
    }

    /// Counts a spike of neuron `i` at `step`.
    #[inline]
    pub fn spike(&mut self, i: usize, step: u32, decay: &TraceDecay, pairing: Pairing) {
        self.at_last_spike[i] = match pairing {
            Pairing::AllToAll => self.value(i, step, decay) + 1.0,
            Pairing::Nearest => 1.0,
        };
        self.last_spike_step[i] = step;
    }
}

/// A presynaptic spike through a row of plastic synapses: depress each synapse by its target's
/// postsynaptic trace, then deliver the new weight (NEST's order for `stdp_synapse`).
#[inline]
pub fn on_pre_row(
    rule: &StdpRule,
    ring: &mut crate::delivery::Ring,
    step: u64,
    packed: &[u32],
    weight: &mut [f32],
    post: &Traces,
    post_decay: &TraceDecay,
) {
    for (&p, w) in packed.iter().zip(weight.iter_mut()) {
        let y = post.value(crate::delivery::target(p), step as u32, post_decay);
        *w = rule.depress(*w, y);
        ring.add(step, p, *w);
    }
}

/// A postsynaptic spike at `step`: potentiate the synapses `incoming` (indices into the CSR
/// arrays, found through the transposed index) by their sources' presynaptic traces. The source
/// of a synapse is its CSR row, found by bisection of `row_ptr`; `pre` holds the traces of the
/// projection's source population, indexed by row.
#[inline]
pub fn on_post(
    rule: &StdpRule,
    step: u32,
    incoming: &[u32],
    row_ptr: &[u32],
    weight: &mut [f32],
    pre: &Traces,
    pre_decay: &TraceDecay,
) {
    for &s in incoming {
        let row = row_ptr.partition_point(|&start| start <= s) - 1;
        let x = pre.value(row, step, pre_decay);
        let w = &mut weight[s as usize];
        *w = rule.potentiate(*w, x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::{Ring, pack};

    const DT: f64 = 0.1;
    const TAU: f64 = 20.0;

    fn rule(dependence: WeightDependence, pairing: Pairing) -> StdpRule {
        StdpRule { a_plus: 0.01, a_minus: 0.012, w_min: 0.0, w_max: 10.0, dependence, pairing }
    }

    /// One synapse 0 -> 0; pre and post spikes at the given steps; returns the final weight.
    fn pair_run(rule: &StdpRule, w0: f32, pre_steps: &[u32], post_steps: &[u32]) -> f32 {
        let decay = TraceDecay::new(TAU, DT);
        let (mut pre, mut post) = (Traces::new(1), Traces::new(1));
        let mut ring = Ring::new(1, 1);
        let mut w = [w0];
        let end = pre_steps.iter().chain(post_steps).max().copied().unwrap_or(0);
        for step in 0..=end {
            if pre_steps.contains(&step) {
                on_pre_row(rule, &mut ring, u64::from(step), &[pack(0, 1)], &mut w, &post, &decay);
            }
            if post_steps.contains(&step) {
                on_post(rule, step, &[0], &[0, 1], &mut w, &pre, &decay);
            }
            if pre_steps.contains(&step) {
                pre.spike(0, step, &decay, rule.pairing);
            }
            if post_steps.contains(&step) {
                post.spike(0, step, &decay, rule.pairing);
            }
        }
        w[0]
    }

    fn close(a: f32, b: f64) -> bool {
        (f64::from(a) - b).abs() <= 1e-6 * b.abs().max(1.0)
    }

    #[test]
    fn single_pair_changes_weight_by_the_analytic_amount() {
        for pairing in [Pairing::AllToAll, Pairing::Nearest] {
            let r = rule(WeightDependence::Additive, pairing);
            for lag in [1u32, 10, 100, 400] {
                let e = (-f64::from(lag) * DT / TAU).exp();
                // pre then post: potentiation a_plus w_max exp(-lag/tau)
                let w = pair_run(&r, 5.0, &[100], &[100 + lag]);
                assert!(close(w, 5.0 + 0.01 * 10.0 * e), "lag {lag}: {w}");
                // post then pre: depression a_minus w_max exp(-lag/tau)
                let w = pair_run(&r, 5.0, &[100 + lag], &[100]);
                assert!(close(w, 5.0 - 0.012 * 10.0 * e), "lag {lag}: {w}");
            }
            // Same step: no pairing.
            assert_eq!(pair_run(&r, 5.0, &[100], &[100]), 5.0);
        }
    }

    #[test]
    fn multiplicative_rule_scales_with_distance_to_the_bound() {
        let r = rule(WeightDependence::Multiplicative, Pairing::AllToAll);
        let e = (-50.0 * DT / TAU).exp();
        let w = pair_run(&r, 4.0, &[10], &[60]);
        assert!(close(w, 4.0 + 0.01 * (10.0 - 4.0) * e));
        let w = pair_run(&r, 4.0, &[60], &[10]);
        assert!(close(w, 4.0 - 0.012 * (4.0 - 0.0) * e));
    }

    #[test]
    fn all_to_all_sums_and_nearest_keeps_the_latest() {
        // Two pre spikes 30 and 10 steps before one post spike.
        let (e30, e10) = ((-3.0 / TAU).exp(), (-1.0 / TAU).exp());
        let w = pair_run(&rule(WeightDependence::Additive, Pairing::AllToAll), 5.0, &[70, 90], &[100]);
        assert!(close(w, 5.0 + 0.1 * (e30 + e10)), "{w}");
        let w = pair_run(&rule(WeightDependence::Additive, Pairing::Nearest), 5.0, &[70, 90], &[100]);
        assert!(close(w, 5.0 + 0.1 * e10), "{w}");
    }

    #[test]
    fn bounds_hold() {
        let r = rule(WeightDependence::Additive, Pairing::AllToAll);
        let pre: Vec<u32> = (0..200).map(|i| i * 500).collect();
        let post: Vec<u32> = pre.iter().map(|s| s + 1).collect();
        assert_eq!(pair_run(&r, 9.9, &pre, &post), 10.0);
        assert_eq!(pair_run(&r, 0.1, &post, &pre), 0.0);
    }

    #[test]
    fn decay_table_matches_exp_and_ends_at_zero() {
        let d = TraceDecay::new(TAU, DT);
        assert_eq!(d.after(0), 1.0);
        assert!(close(d.after(200), (-1.0f64).exp()));
        assert_eq!(d.after(1_000_000), 0.0);
    }
}
