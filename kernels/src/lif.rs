//! Leaky integrate-and-fire neurons with exponential synapses.
//!
//! Both models keep the same per-neuron state (membrane potential, excitatory and inhibitory
//! synaptic variable, refractory counter) and follow NEST's order within a step:
//!
//! 1. integrate the membrane from the synaptic state at the start of the step
//!    (held at reset while refractory);
//! 2. decay the synaptic variables exactly and add the input arriving in this step;
//! 3. emit a spike and reset where the membrane reached threshold.
//!
//! `lif_cuba` is NEST's `iaf_psc_exp`: current-based synapses, integrated exactly with
//! propagators computed once on the host (Rotter & Diesmann 1999). `lif_coba` has conductance
//! synapses (Vogels-Abbott / Brette et al. 2007 benchmark 1) and integrates the membrane with the
//! exponential Euler step Brian2 uses: exact for the conductances frozen over the step; or, on
//! request, with forward Euler, as Brian2's COBA reference script does.

/// Host-computed constants of one population of `lif_cuba` neurons. Potentials in mV, currents
/// in pA. Inhibitory currents are kept as positive magnitudes and subtracted.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CubaPropagators {
    pub e_l: f32,
    pub v_th: f32,
    pub v_reset: f32,
    pub refractory_steps: u32,
    /// exp(-h / tau_m)
    pub p22: f32,
    /// tau_m / C_m * (1 - exp(-h / tau_m)): response of the membrane to a constant current.
    pub p20: f32,
    /// Response of the membrane to the excitatory / inhibitory current over one step.
    pub p21_ex: f32,
    pub p21_in: f32,
    /// exp(-h / tau_syn)
    pub p11_ex: f32,
    pub p11_in: f32,
}

/// Parameters of a LIF population as the model file gives them (ms, mV, pF, nS).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LifParameters {
    pub tau_m_ms: f64,
    pub c_m_pf: f64,
    pub e_l_mv: f64,
    pub v_th_mv: f64,
    pub v_reset_mv: f64,
    pub t_ref_ms: f64,
    pub tau_syn_ex_ms: f64,
    pub tau_syn_in_ms: f64,
}

impl LifParameters {
    /// Refractory period in whole steps (NEST rounds to the grid the same way).
    pub fn refractory_steps(&self, dt_ms: f64) -> u32 {
        (self.t_ref_ms / dt_ms).round() as u32
    }
}

/// Membrane response over one step `h` to a synaptic current decaying with `tau_syn`,
/// starting at 1 pA: tau_s tau_m / (C (tau_m - tau_s)) (exp(-h/tau_m) - exp(-h/tau_s)),
/// written with expm1 so it stays accurate when tau_m and tau_s are close; the limit at
/// tau_m == tau_s is h / C exp(-h / tau_m).
pub fn propagator_32(tau_syn: f64, tau_m: f64, c_m: f64, h: f64) -> f64 {
    let beta = 1.0 / tau_syn - 1.0 / tau_m;
    if beta.abs() < 1e-12 {
        return h / c_m * (-h / tau_m).exp();
    }
    // exp(-h/tau_m) - exp(-h/tau_s) = exp(-h/tau_m) * (1 - exp(-h beta)) = -exp(-h/tau_m) expm1(-h beta)
    let scale = tau_syn * tau_m / (c_m * (tau_m - tau_syn));
    -scale * (-h / tau_m).exp() * (-h * beta).exp_m1()
}

impl CubaPropagators {
    pub fn new(p: &LifParameters, dt_ms: f64) -> Self {
        let h = dt_ms;
        CubaPropagators {
            e_l: p.e_l_mv as f32,
            v_th: p.v_th_mv as f32,
            v_reset: p.v_reset_mv as f32,
            refractory_steps: p.refractory_steps(h),
            p22: (-h / p.tau_m_ms).exp() as f32,
            p20: (-p.tau_m_ms / p.c_m_pf * (-h / p.tau_m_ms).exp_m1()) as f32,
            p21_ex: propagator_32(p.tau_syn_ex_ms, p.tau_m_ms, p.c_m_pf, h) as f32,
            p21_in: propagator_32(p.tau_syn_in_ms, p.tau_m_ms, p.c_m_pf, h) as f32,
            p11_ex: (-h / p.tau_syn_ex_ms).exp() as f32,
            p11_in: (-h / p.tau_syn_in_ms).exp() as f32,
        }
    }
}

/// Host-computed constants of one population of `lif_coba` neurons (mV, nS, pF, ms).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CobaConstants {
    pub e_l: f32,
    pub v_th: f32,
    pub v_reset: f32,
    pub refractory_steps: u32,
    pub e_ex: f32,
    pub e_in: f32,
    /// Leak conductance C_m / tau_m, nS.
    pub g_l: f32,
    /// -h / C_m, so that the membrane factor is exp(g_total * minus_h_over_c).
    pub minus_h_over_c: f32,
    pub p11_ex: f32,
    pub p11_in: f32,
    /// Forward Euler instead of exponential Euler for the membrane ([`coba_step`]).
    pub euler: bool,
}

impl CobaConstants {
    pub fn new(p: &LifParameters, e_ex_mv: f64, e_in_mv: f64, dt_ms: f64) -> Self {
        let h = dt_ms;
        CobaConstants {
            e_l: p.e_l_mv as f32,
            v_th: p.v_th_mv as f32,
            v_reset: p.v_reset_mv as f32,
            refractory_steps: p.refractory_steps(h),
            e_ex: e_ex_mv as f32,
            e_in: e_in_mv as f32,
            g_l: (p.c_m_pf / p.tau_m_ms) as f32,
            minus_h_over_c: (-h / p.c_m_pf) as f32,
            p11_ex: (-h / p.tau_syn_ex_ms).exp() as f32,
            p11_in: (-h / p.tau_syn_in_ms).exp() as f32,
            euler: false,
        }
    }
}

/// The state columns of a contiguous range of neurons of one population.
pub struct LifState<'a> {
    /// Membrane potential, mV.
    pub v: &'a mut [f32],
    /// Excitatory synaptic variable: current (pA, `lif_cuba`) or conductance (nS, `lif_coba`).
    pub syn_ex: &'a mut [f32],
    /// Inhibitory synaptic variable, a positive magnitude (pA or nS).
    pub syn_in: &'a mut [f32],
    /// Steps of refractoriness left.
    pub refractory: &'a mut [u32],
    /// Written by the update: 1 where the neuron fired in this step, else 0.
    pub fired: &'a mut [u8],
}

/// What arrives at these neurons in this step: synaptic input accumulated in fixed point
/// (see [`crate::delivery`]), consumed (zeroed) as it is read so the ring slot can be reused,
/// and a constant current, pA.
pub struct LifInput<'a> {
    pub arriving_ex: &'a mut [i64],
    pub arriving_in: &'a mut [i64],
    pub current_pa: f32,
}

/// Zero for subnormal values. A silent neuron's synaptic variable decays geometrically and
/// would reach the subnormal range within a second, where x86 arithmetic is ~100x slower;
/// flushing explicitly (rather than through FTZ flags) keeps CPU and GPU results identical.
#[inline(always)]
pub fn flush_subnormal(x: f32) -> f32 {
    if x.abs() < f32::MIN_POSITIVE { 0.0 } else { x }
}

/// The update is one pass without branches (selects only) so that it vectorises; spikes are
/// left in `fired` and listed afterwards by [`collect_spikes`]. This macro is the shared
/// body: `$integrate` computes the integrated membrane potential from `v`, `ex`, `inh`.
macro_rules! lif_pass {
    ($s:ident, $input:ident, $c:ident, |$v:ident, $ex:ident, $inh:ident| $integrate:expr) => {{
        let n = $s.v.len();
        let (syn_ex, syn_in, refractory, fired) = (&mut $s.syn_ex[..n], &mut $s.syn_in[..n], &mut $s.refractory[..n], &mut $s.fired[..n]);
        let (arriving_ex, arriving_in) = (&mut $input.arriving_ex[..n], &mut $input.arriving_in[..n]);
        for i in 0..n {
            let ($v, $ex, $inh, r) = ($s.v[i], syn_ex[i], syn_in[i], refractory[i]);
            let v = if r == 0 { $integrate } else { $v };
            syn_ex[i] = flush_subnormal($ex * $c.p11_ex) + crate::delivery::from_fixed(arriving_ex[i]);
            syn_in[i] = flush_subnormal($inh * $c.p11_in) + crate::delivery::from_fixed(arriving_in[i]);
            arriving_ex[i] = 0;
            arriving_in[i] = 0;
            let spike = v >= $c.v_th;
            $s.v[i] = if spike { $c.v_reset } else { v };
            refractory[i] = if spike { $c.refractory_steps } else { r.saturating_sub(1) };
            fired[i] = u8::from(spike);
        }
    }};
}

/// One step of `lif_cuba` neurons. Compiled for AVX-512 and AVX2 as well as the baseline and
/// chosen at run time; every version gives the same bits (Rust never fuses multiply-adds).
#[multiversion::multiversion(targets("x86_64+avx512f+avx512dq+avx512bw+avx512vl", "x86_64+avx2+fma"))]
pub fn cuba_step(c: &CubaPropagators, s: LifState<'_>, input: LifInput<'_>) {
    let drive = input.current_pa * c.p20;
    lif_pass!(s, input, c, |v, ex, inh| c.e_l + (v - c.e_l) * c.p22 + ex * c.p21_ex - inh * c.p21_in + drive);
}

/// One step of `lif_coba` neurons; `input.current_pa` is added to the membrane current.
/// Exponential Euler relaxes the membrane towards its steady state `v_inf` by
/// `exp(-h g_total / C)`; forward Euler (`c.euler`) adds `h / C` times the membrane current,
/// with no exponential (`minus_h_over_c` is `-h / C`, so subtracting its product is adding
/// `h / C` times, to the bit).
#[multiversion::multiversion(targets("x86_64+avx512f+avx512dq+avx512bw+avx512vl", "x86_64+avx2+fma"))]
pub fn coba_step(c: &CobaConstants, s: LifState<'_>, input: LifInput<'_>) {
    let current = input.current_pa;
    if c.euler {
        lif_pass!(s, input, c, |v, ex, inh| {
            let g_total = c.g_l + ex + inh;
            let drive = c.g_l * c.e_l + ex * c.e_ex + inh * c.e_in + current;
            v - (drive - g_total * v) * c.minus_h_over_c
        });
    } else {
        lif_pass!(s, input, c, |v, ex, inh| {
            let g_total = c.g_l + ex + inh;
            let v_inf = (c.g_l * c.e_l + ex * c.e_ex + inh * c.e_in + current) / g_total;
            v_inf + (v - v_inf) * (g_total * c.minus_h_over_c).exp()
        });
    }
}

/// Appends `base + i` for every `i` with `fired[i] != 0`, ascending. Scans eight flags at a
/// time: spikes are rare, so most words are zero.
pub fn collect_spikes(fired: &[u8], base: u32, out: &mut Vec<u32>) {
    let mut words = fired.chunks_exact(8);
    let mut offset = base;
    for w in &mut words {
        let mut bits = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        while bits != 0 {
            out.push(offset + bits.trailing_zeros() / 8);
            bits &= bits - 1;
        }
        offset += 8;
    }
    for (i, &f) in words.remainder().iter().enumerate() {
        if f != 0 {
            out.push(offset + i as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::to_fixed;

    const DT: f64 = 0.1;

    fn params() -> LifParameters {
        LifParameters {
            tau_m_ms: 10.0,
            c_m_pf: 250.0,
            e_l_mv: -70.0,
            v_th_mv: -55.0,
            v_reset_mv: -70.0,
            t_ref_ms: 2.0,
            tau_syn_ex_ms: 2.0,
            tau_syn_in_ms: 5.0,
        }
    }

    struct One {
        v: [f32; 1],
        ex: [f32; 1],
        inh: [f32; 1],
        r: [u32; 1],
        fired: [u8; 1],
    }

    impl One {
        fn at(v: f32) -> Self {
            One { v: [v], ex: [0.0], inh: [0.0], r: [0], fired: [0] }
        }
        fn state(&mut self) -> LifState<'_> {
            LifState { v: &mut self.v, syn_ex: &mut self.ex, syn_in: &mut self.inh, refractory: &mut self.r, fired: &mut self.fired }
        }
        fn cuba(&mut self, c: &CubaPropagators, arriving_ex: f32, current: f32) -> bool {
            let (mut a, mut b) = ([to_fixed(arriving_ex)], [0]);
            cuba_step(c, self.state(), LifInput { arriving_ex: &mut a, arriving_in: &mut b, current_pa: current });
            self.fired[0] == 1
        }
        fn coba(&mut self, c: &CobaConstants) {
            coba_step(c, self.state(), LifInput { arriving_ex: &mut [0], arriving_in: &mut [0], current_pa: 0.0 });
        }
    }

    #[test]
    fn collect_spikes_lists_flags_in_order() {
        let mut fired = vec![0u8; 37];
        for i in [0, 7, 8, 20, 36] {
            fired[i] = 1;
        }
        let mut out = vec![99];
        collect_spikes(&fired, 100, &mut out);
        assert_eq!(out, vec![99, 100, 107, 108, 120, 136]);
    }

    #[test]
    fn free_decay_matches_exponential() {
        let p = params();
        let c = CubaPropagators::new(&p, DT);
        let mut n = One::at(-60.0);
        for step in 1..=500 {
            n.cuba(&c, 0.0, 0.0);
            let t = step as f64 * DT;
            let exact = p.e_l_mv + 10.0 * (-t / p.tau_m_ms).exp();
            assert!((f64::from(n.v[0]) - exact).abs() < 1e-4, "step {step}: {} vs {exact}", n.v[0]);
        }
    }

    #[test]
    fn constant_current_approaches_steady_state() {
        let p = params();
        let c = CubaPropagators::new(&p, DT);
        let current = 300.0; // pA: steady state e_l + I tau / C = -58 mV, below threshold
        // The potential is an absolute f32 near -60 mV (ulp 3.8e-6 mV); the rounding of each step
        // is damped by p22, so the error stays below ulp / (1 - p22), about 4e-4 mV.
        let mut n = One::at(p.e_l_mv as f32);
        for step in 1..=1000 {
            n.cuba(&c, 0.0, current);
            let t = step as f64 * DT;
            let exact = p.e_l_mv + f64::from(current) * p.tau_m_ms / p.c_m_pf * (1.0 - (-t / p.tau_m_ms).exp());
            assert!((f64::from(n.v[0]) - exact).abs() < 2e-3, "step {step}: {} vs {exact}", n.v[0]);
        }
    }

    #[test]
    fn synaptic_current_response_is_exact() {
        // A current jump w at t=0 decaying with tau_s gives
        // v(t) - e_l = w tau_s tau_m / (C (tau_m - tau_s)) (exp(-t/tau_m) - exp(-t/tau_s)).
        let p = params();
        let c = CubaPropagators::new(&p, DT);
        let mut n = One::at(p.e_l_mv as f32);
        let w = 100.0f32;
        n.cuba(&c, w, 0.0); // arrives at the end of step 0: the membrane sees it from step 1
        for step in 1..=300 {
            n.cuba(&c, 0.0, 0.0);
            let t = step as f64 * DT;
            let (tm, ts) = (p.tau_m_ms, p.tau_syn_ex_ms);
            let exact = p.e_l_mv
                + f64::from(w) * ts * tm / (p.c_m_pf * (tm - ts)) * ((-t / tm).exp() - (-t / ts).exp());
            assert!((f64::from(n.v[0]) - exact).abs() < 1e-4, "step {step}: {} vs {exact}", n.v[0]);
        }
    }

    #[test]
    fn threshold_crossing_at_the_analytic_step_then_refractory() {
        // With I = 400 pA the membrane heads for e_l + 16 mV and crosses -55 mV at
        // t* = -tau ln(1 - 15/16) = 27.726 ms, i.e. during step 277 (t in (27.6, 27.7]).
        let p = params();
        let c = CubaPropagators::new(&p, DT);
        let mut n = One::at(p.e_l_mv as f32);
        let t_star = -p.tau_m_ms * (1.0 - 15.0 / 16.0f64).ln();
        let expected_step = (t_star / DT).ceil() as u32;
        let mut first = None;
        for step in 1..=400u32 {
            if n.cuba(&c, 0.0, 400.0) && first.is_none() {
                first = Some(step);
                assert_eq!(n.v[0], p.v_reset_mv as f32);
                assert_eq!(n.r[0], 20);
                // Held at reset for the 20 refractory steps, then integrating again.
                for _ in 0..20 {
                    assert!(!n.cuba(&c, 0.0, 400.0));
                    assert_eq!(n.v[0], p.v_reset_mv as f32);
                }
                n.cuba(&c, 0.0, 400.0);
                assert!(n.v[0] > p.v_reset_mv as f32);
                break;
            }
        }
        assert_eq!(first, Some(expected_step));
    }

    #[test]
    fn silent_synapses_decay_to_zero_not_subnormals() {
        let c = CubaPropagators::new(&params(), DT);
        let mut n = One::at(-70.0);
        n.ex[0] = 100.0;
        for _ in 0..20_000 {
            n.cuba(&c, 0.0, 0.0);
            assert!(n.ex[0] == 0.0 || n.ex[0].is_normal());
        }
        assert_eq!(n.ex[0], 0.0);
    }

    #[test]
    fn propagator_limit_is_continuous() {
        let a = propagator_32(10.0, 10.0, 250.0, 0.1);
        let b = propagator_32(10.0 + 1e-7, 10.0, 250.0, 0.1);
        assert!((a - b).abs() / a < 1e-6);
    }

    #[test]
    fn coba_free_decay_and_reversal() {
        let p = LifParameters { e_l_mv: -60.0, v_th_mv: -50.0, v_reset_mv: -60.0, tau_m_ms: 20.0, c_m_pf: 200.0, ..params() };
        let c = CobaConstants::new(&p, 0.0, -80.0, DT);
        // Free decay with zero conductances is exact.
        let mut n = One::at(-55.0);
        for step in 1..=200 {
            n.coba(&c);
            let exact = -60.0 + 5.0 * (-(step as f64) * DT / 20.0).exp();
            assert!((f64::from(n.v[0]) - exact).abs() < 1e-4);
        }
        // A large inhibitory conductance pulls the membrane towards E_in, never past it.
        n.inh[0] = 1000.0;
        for _ in 0..50 {
            n.coba(&c);
            assert!(n.v[0] >= -80.0 && n.v[0] < -60.0);
        }
    }

    /// Forward Euler's free decay is the geometric sequence (1 - h / tau_m)^n of its own
    /// recurrence, which lies within O(h) of the exact exponential; with a conductance held
    /// constant, it approaches the same steady state as exponential Euler.
    #[test]
    fn coba_forward_euler_decays_geometrically_towards_the_same_steady_state() {
        let p = LifParameters { e_l_mv: -60.0, v_th_mv: -50.0, v_reset_mv: -60.0, tau_m_ms: 20.0, c_m_pf: 200.0, ..params() };
        let c = CobaConstants { euler: true, ..CobaConstants::new(&p, 0.0, -80.0, DT) };
        let mut n = One::at(-55.0);
        for step in 1..=200 {
            n.coba(&c);
            let euler = -60.0 + 5.0 * (1.0 - DT / 20.0).powi(step);
            let exact = -60.0 + 5.0 * (-f64::from(step) * DT / 20.0).exp();
            assert!((f64::from(n.v[0]) - euler).abs() < 1e-4, "step {step}: {} against {euler}", n.v[0]);
            assert!((euler - exact).abs() < 5.0 * DT / 20.0 * 0.5, "within O(h) of exact");
        }
        // Steady state under a constant inhibitory conductance (p11 = 1 holds it): g_l E_l + g_in
        // E_in over g_l + g_in, for both integrators.
        let hold = |euler: bool| {
            let c = CobaConstants { p11_in: 1.0, euler, ..CobaConstants::new(&p, 0.0, -80.0, DT) };
            let mut n = One::at(-60.0);
            n.inh[0] = 10.0;
            for _ in 0..20_000 {
                n.coba(&c);
            }
            n.v[0]
        };
        let steady = (10.0 * -60.0 + 10.0 * -80.0) / 20.0;
        for euler in [false, true] {
            assert!((hold(euler) - steady).abs() < 1e-3, "euler {euler}: {} against {steady}", hold(euler));
        }
    }
}
