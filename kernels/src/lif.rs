//! Leaky integrate-and-fire neurons with exponential or alpha-shaped synapses.
//!
//! The models keep the same per-neuron state (membrane potential, excitatory and inhibitory
//! synaptic variable, refractory counter; `lif_psc_alpha` one more variable per receptor) and
//! follow NEST's order within a step:
//!
//! 1. integrate the membrane from the synaptic state at the start of the step
//!    (held at reset while refractory);
//! 2. decay the synaptic variables exactly and add the input arriving in this step;
//! 3. emit a spike and reset where the membrane reached threshold.
//!
//! `lif_cuba` is NEST's `iaf_psc_exp`: current-based synapses, integrated exactly with
//! propagators computed once on the host (Rotter & Diesmann 1999). `lif_psc_alpha` is NEST's
//! `iaf_psc_alpha`: the same, with alpha-shaped currents ([`alpha_step`]). `lif_coba` has
//! conductance synapses (Vogels-Abbott / Brette et al. 2007 benchmark 1) and integrates the
//! membrane with the exponential Euler step Brian2 uses: exact for the conductances frozen over
//! the step (its exponential is [`crate::portable::expf`]: vectorised, and the GPU's bits);
//! or, on request, with forward Euler, as Brian2's COBA reference script does.
//!
//! The constant current into a neuron is the population's `current_pa`, plus, where the bias is
//! drawn per neuron, that neuron's `bias_pa` ([`LifInput`]): `bias + current` in `f32`, then
//! used as a constant current is.

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

/// Membrane response over one step `h` to the alpha current's second state variable (NEST's
/// `dI`) starting at 1 pA/ms with the current at 0: the current is `t exp(-t / tau_s)`, and
/// the membrane at `h` is `exp(-h / tau_m) / C * integral_0^h s exp(-s (1/tau_s - 1/tau_m)) ds`
/// `= h^2 exp(-h / tau_m) / C * S(x)` with `x = -h (1/tau_s - 1/tau_m)` and
/// `S(x) = (1 - e^x (1 - x)) / x^2 = sum_{n >= 2} (n - 1) x^(n-2) / n!`. The closed form loses
/// all accuracy to cancellation as `x` goes to 0 (tau_m close to tau_s), so `S` is summed as its
/// series there; its limit at tau_m == tau_s is NEST's singular form `h^2 / (2 C) exp(-h / tau_m)`.
pub fn propagator_31(tau_syn: f64, tau_m: f64, c_m: f64, h: f64) -> f64 {
    let x = -h * (1.0 / tau_syn - 1.0 / tau_m);
    let s = if x.abs() < 0.5 {
        // Terms shrink at least 2x per order (|x| < 1/2); 30 reach far below f64 precision.
        let (mut sum, mut power, mut factorial) = (0.0, 1.0, 2.0);
        for n in 2..32u32 {
            sum += f64::from(n - 1) * power / factorial;
            power *= x;
            factorial *= f64::from(n + 1);
        }
        sum
    } else {
        (1.0 - x.exp() * (1.0 - x)) / (x * x)
    };
    h * h / c_m * (-h / tau_m).exp() * s
}

/// Host-computed constants of one population of `lif_psc_alpha` neurons (NEST's
/// `iaf_psc_alpha`, whose names they keep). Each receptor's current is `I`, driven by a second
/// variable `dI` (pA/ms): `dI' = -dI / tau_s`, `I' = dI - I / tau_s`, so that `dI = w e / tau_s`
/// at `t = 0` gives the alpha current `w e t / tau_s exp(-t / tau_s)`, whose peak is `w` pA at
/// `t = tau_s`. Potentials in mV, currents in pA; inhibitory variables are positive magnitudes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AlphaPropagators {
    pub e_l: f32,
    pub v_th: f32,
    pub v_reset: f32,
    pub refractory_steps: u32,
    /// exp(-h / tau_m)
    pub p33: f32,
    /// tau_m / C_m * (1 - exp(-h / tau_m)): response of the membrane to a constant current.
    pub p30: f32,
    /// Response of the membrane over one step to `dI` ([`propagator_31`]) and to `I`
    /// ([`propagator_32`]), per receptor.
    pub p31_ex: f32,
    pub p31_in: f32,
    pub p32_ex: f32,
    pub p32_in: f32,
    /// h exp(-h / tau_s): response of `I` to `dI` over one step.
    pub p21_ex: f32,
    pub p21_in: f32,
    /// exp(-h / tau_s): the decay of `dI`, and of `I` (NEST's `P22` equals `P11`).
    pub p11_ex: f32,
    pub p11_in: f32,
    /// e / tau_s: the jump of `dI` per pA of arriving weight.
    pub psc_ex: f32,
    pub psc_in: f32,
}

impl AlphaPropagators {
    pub fn new(p: &LifParameters, dt_ms: f64) -> Self {
        let h = dt_ms;
        let e = std::f64::consts::E;
        AlphaPropagators {
            e_l: p.e_l_mv as f32,
            v_th: p.v_th_mv as f32,
            v_reset: p.v_reset_mv as f32,
            refractory_steps: p.refractory_steps(h),
            p33: (-h / p.tau_m_ms).exp() as f32,
            p30: (-p.tau_m_ms / p.c_m_pf * (-h / p.tau_m_ms).exp_m1()) as f32,
            p31_ex: propagator_31(p.tau_syn_ex_ms, p.tau_m_ms, p.c_m_pf, h) as f32,
            p31_in: propagator_31(p.tau_syn_in_ms, p.tau_m_ms, p.c_m_pf, h) as f32,
            p32_ex: propagator_32(p.tau_syn_ex_ms, p.tau_m_ms, p.c_m_pf, h) as f32,
            p32_in: propagator_32(p.tau_syn_in_ms, p.tau_m_ms, p.c_m_pf, h) as f32,
            p21_ex: (h * (-h / p.tau_syn_ex_ms).exp()) as f32,
            p21_in: (h * (-h / p.tau_syn_in_ms).exp()) as f32,
            p11_ex: (-h / p.tau_syn_ex_ms).exp() as f32,
            p11_in: (-h / p.tau_syn_in_ms).exp() as f32,
            psc_ex: (e / p.tau_syn_ex_ms) as f32,
            psc_in: (e / p.tau_syn_in_ms) as f32,
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
    /// Excitatory synaptic variable: current (pA, `lif_cuba`, `lif_psc_alpha`) or conductance
    /// (nS, `lif_coba`).
    pub syn_ex: &'a mut [f32],
    /// Inhibitory synaptic variable, a positive magnitude (pA or nS).
    pub syn_in: &'a mut [f32],
    /// Steps of refractoriness left.
    pub refractory: &'a mut [u32],
    /// Written by the update: 1 where the neuron fired in this step, else 0.
    pub fired: &'a mut [u8],
}

/// The second state variable of `lif_psc_alpha`'s currents (NEST's `dI_ex`, `dI_in`), pA/ms,
/// the inhibitory one a positive magnitude; see [`AlphaPropagators`].
pub struct AlphaState<'a> {
    pub dsyn_ex: &'a mut [f32],
    pub dsyn_in: &'a mut [f32],
}

/// What arrives at these neurons in this step: synaptic input accumulated in fixed point
/// (see [`crate::delivery`]), consumed (zeroed) as it is read so the ring slot can be reused,
/// and a constant current, pA: `current_pa`, plus each neuron's `bias_pa` where the bias is
/// drawn per neuron (`bias + current`, rounded to `f32` once).
pub struct LifInput<'a> {
    pub arriving_ex: &'a mut [i64],
    pub arriving_in: &'a mut [i64],
    pub current_pa: f32,
    pub bias_pa: Option<&'a [f32]>,
}

/// Zero for subnormal values. A silent neuron's synaptic variable decays geometrically and
/// would reach the subnormal range within a second, where x86 arithmetic is ~100x slower;
/// flushing explicitly (rather than through FTZ flags) keeps CPU and GPU results identical.
#[inline(always)]
pub fn flush_subnormal(x: f32) -> f32 {
    if x.abs() < f32::MIN_POSITIVE { 0.0 } else { x }
}

/// The update is two passes without branches (selects only) so that they vectorise; spikes
/// are left in `fired` and listed afterwards by [`collect_spikes`]. This macro is the shared
/// body: `$integrate` computes the integrated membrane potential of neuron `$i` from `v`,
/// `ex`, `inh`.
macro_rules! lif_pass {
    ($s:ident, $input:ident, $c:ident, |$i:ident, $v:ident, $ex:ident, $inh:ident| $integrate:expr) => {{
        let n = $s.v.len();
        let (syn_ex, syn_in, refractory, fired) = (&mut $s.syn_ex[..n], &mut $s.syn_in[..n], &mut $s.refractory[..n], &mut $s.fired[..n]);
        let (arriving_ex, arriving_in) = (&mut $input.arriving_ex[..n], &mut $input.arriving_in[..n]);
        // Two passes with the same operations per neuron: the membrane from the synaptic
        // state at the start of the step, in 32-bit lanes only, then the synaptic state, whose
        // 64-bit input in the same loop would halve the vector width of the membrane's
        // arithmetic (COBA's update, 4000 neurons: criterion in benchmarks/RESULTS.md).
        for $i in 0..n {
            let ($v, $ex, $inh, r) = ($s.v[$i], syn_ex[$i], syn_in[$i], refractory[$i]);
            let v = if r == 0 { $integrate } else { $v };
            let spike = v >= $c.v_th;
            $s.v[$i] = if spike { $c.v_reset } else { v };
            refractory[$i] = if spike { $c.refractory_steps } else { r.saturating_sub(1) };
            fired[$i] = u8::from(spike);
        }
        for i in 0..n {
            syn_ex[i] = flush_subnormal(syn_ex[i] * $c.p11_ex) + crate::delivery::from_fixed(arriving_ex[i]);
            syn_in[i] = flush_subnormal(syn_in[i] * $c.p11_in) + crate::delivery::from_fixed(arriving_in[i]);
            arriving_ex[i] = 0;
            arriving_in[i] = 0;
        }
    }};
}

/// One step of `lif_cuba` neurons. Compiled for AVX-512 and AVX2 as well as the baseline and
/// chosen at run time; every version gives the same bits (Rust never fuses multiply-adds).
#[multiversion::multiversion(targets("x86_64+avx512f+avx512dq+avx512bw+avx512vl", "x86_64+avx2+fma"))]
pub fn cuba_step(c: &CubaPropagators, s: LifState<'_>, input: LifInput<'_>) {
    let current = input.current_pa;
    match input.bias_pa {
        None => {
            let drive = current * c.p20;
            lif_pass!(s, input, c, |_i, v, ex, inh| c.e_l + (v - c.e_l) * c.p22 + ex * c.p21_ex - inh * c.p21_in + drive);
        }
        Some(bias) => {
            let bias = &bias[..s.v.len()];
            lif_pass!(s, input, c, |i, v, ex, inh| c.e_l + (v - c.e_l) * c.p22 + ex * c.p21_ex - inh * c.p21_in + (bias[i] + current) * c.p20);
        }
    }
}

/// One step of `lif_psc_alpha` neurons: NEST's `iaf_psc_alpha::update`, in its order, with the
/// membrane written as `lif_cuba`'s is (`e_l + (v - e_l) P33`, then the synaptic terms, then
/// the constant current's):
///
/// 1. `V = e_l + (V - e_l) P33 + dI_ex P31_ex + I_ex P32_ex - dI_in P31_in - I_in P32_in + I P30`
///    from the state at the start of the step (held while refractory);
/// 2. `I = dI P21 + I P11`, then `dI = dI P11 + arriving e / tau_s`, per receptor;
/// 3. threshold, reset and refractoriness as [`cuba_step`].
///
/// Weights are in pA: a spike of weight `w` makes a current that peaks at `w` pA `tau_s` after
/// it arrives. Same targets as [`cuba_step`]; every version gives the same bits.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512dq+avx512bw+avx512vl", "x86_64+avx2+fma"))]
pub fn alpha_step(c: &AlphaPropagators, s: LifState<'_>, d: AlphaState<'_>, input: LifInput<'_>) {
    let current = input.current_pa;
    match input.bias_pa {
        None => {
            let drive = current * c.p30;
            alpha_pass(c, s, d, input, |_| drive);
        }
        Some(bias) => {
            let bias = &bias[..s.v.len()];
            alpha_pass(c, s, d, input, |i| (bias[i] + current) * c.p30);
        }
    }
}

/// The body of [`alpha_step`]; `drive(i)` is neuron `i`'s constant current times `P30`.
#[inline(always)]
fn alpha_pass(c: &AlphaPropagators, s: LifState<'_>, d: AlphaState<'_>, input: LifInput<'_>, drive: impl Fn(usize) -> f32) {
    let n = s.v.len();
    let v = &mut s.v[..n];
    let (syn_ex, syn_in, refractory, fired) = (&mut s.syn_ex[..n], &mut s.syn_in[..n], &mut s.refractory[..n], &mut s.fired[..n]);
    let (dsyn_ex, dsyn_in) = (&mut d.dsyn_ex[..n], &mut d.dsyn_in[..n]);
    let (arriving_ex, arriving_in) = (&mut input.arriving_ex[..n], &mut input.arriving_in[..n]);
    for i in 0..n {
        let (vv, ex, inh, dex, din, r) = (v[i], syn_ex[i], syn_in[i], dsyn_ex[i], dsyn_in[i], refractory[i]);
        let integrated = if r == 0 {
            c.e_l + (vv - c.e_l) * c.p33 + dex * c.p31_ex + ex * c.p32_ex - din * c.p31_in - inh * c.p32_in + drive(i)
        } else {
            vv
        };
        syn_ex[i] = flush_subnormal(dex * c.p21_ex + ex * c.p11_ex);
        dsyn_ex[i] = flush_subnormal(dex * c.p11_ex) + crate::delivery::from_fixed(arriving_ex[i]) * c.psc_ex;
        syn_in[i] = flush_subnormal(din * c.p21_in + inh * c.p11_in);
        dsyn_in[i] = flush_subnormal(din * c.p11_in) + crate::delivery::from_fixed(arriving_in[i]) * c.psc_in;
        arriving_ex[i] = 0;
        arriving_in[i] = 0;
        let spike = integrated >= c.v_th;
        v[i] = if spike { c.v_reset } else { integrated };
        refractory[i] = if spike { c.refractory_steps } else { r.saturating_sub(1) };
        fired[i] = u8::from(spike);
    }
}

/// One step of `lif_coba` neurons; `input.current_pa` is added to the membrane current.
/// Exponential Euler relaxes the membrane towards its steady state `v_inf` by
/// `exp(-h g_total / C)`; forward Euler (`c.euler`) adds `h / C` times the membrane current,
/// with no exponential (`minus_h_over_c` is `-h / C`, so subtracting its product is adding
/// `h / C` times, to the bit).
#[multiversion::multiversion(targets("x86_64+avx512f+avx512dq+avx512bw+avx512vl", "x86_64+avx2+fma"))]
pub fn coba_step(c: &CobaConstants, s: LifState<'_>, input: LifInput<'_>) {
    let current = input.current_pa;
    let bias: &[f32] = match input.bias_pa {
        Some(b) => &b[..s.v.len()],
        None => &[],
    };
    match (c.euler, input.bias_pa.is_some()) {
        (true, false) => lif_pass!(s, input, c, |_i, v, ex, inh| coba_euler(c, v, ex, inh, current)),
        (true, true) => lif_pass!(s, input, c, |i, v, ex, inh| coba_euler(c, v, ex, inh, bias[i] + current)),
        (false, false) => lif_pass!(s, input, c, |_i, v, ex, inh| coba_exponential(c, v, ex, inh, current)),
        (false, true) => lif_pass!(s, input, c, |i, v, ex, inh| coba_exponential(c, v, ex, inh, bias[i] + current)),
    }
}

#[inline(always)]
fn coba_euler(c: &CobaConstants, v: f32, ex: f32, inh: f32, current: f32) -> f32 {
    let g_total = c.g_l + ex + inh;
    let drive = c.g_l * c.e_l + ex * c.e_ex + inh * c.e_in + current;
    v - (drive - g_total * v) * c.minus_h_over_c
}

#[inline(always)]
fn coba_exponential(c: &CobaConstants, v: f32, ex: f32, inh: f32, current: f32) -> f32 {
    let g_total = c.g_l + ex + inh;
    let v_inf = (c.g_l * c.e_l + ex * c.e_ex + inh * c.e_in + current) / g_total;
    v_inf + (v - v_inf) * crate::portable::expf(g_total * c.minus_h_over_c)
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
            cuba_step(c, self.state(), LifInput { arriving_ex: &mut a, arriving_in: &mut b, current_pa: current, bias_pa: None });
            self.fired[0] == 1
        }
        /// One `lif_psc_alpha` step with `arriving_ex` pA arriving; `d` holds (dI_ex, dI_in).
        fn alpha(&mut self, c: &AlphaPropagators, d: &mut [[f32; 1]; 2], arriving_ex: f32, current: f32) -> bool {
            let (mut a, mut b) = ([to_fixed(arriving_ex)], [0]);
            let [dex, din] = d;
            alpha_step(c, self.state(), AlphaState { dsyn_ex: dex, dsyn_in: din }, LifInput { arriving_ex: &mut a, arriving_in: &mut b, current_pa: current, bias_pa: None });
            self.fired[0] == 1
        }
        fn coba(&mut self, c: &CobaConstants) {
            coba_step(c, self.state(), LifInput { arriving_ex: &mut [0], arriving_in: &mut [0], current_pa: 0.0, bias_pa: None });
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

    /// The membrane's response to one alpha current, against the analytic solution: a spike of
    /// weight w arriving at t = 0 makes I(t) = w e t / tau_s exp(-t / tau_s), which peaks at w pA
    /// at t = tau_s, and V(t) - e_l = w e / (tau_s C) exp(-t / tau_m) (1 - e^x (1 - x)) / k^2
    /// with k = 1 / tau_s - 1 / tau_m and x = -k t.
    #[test]
    fn alpha_current_response_is_exact() {
        for (tau_m, tau_s) in [(10.0, 2.0), (10.0, 10.0), (5.0, 8.0)] {
            let p = LifParameters { tau_m_ms: tau_m, tau_syn_ex_ms: tau_s, ..params() };
            let c = AlphaPropagators::new(&p, DT);
            let mut n = One::at(p.e_l_mv as f32);
            let mut d = [[0.0f32]; 2];
            let w = 100.0f32;
            n.alpha(&c, &mut d, w, 0.0); // arrives at the end of step 0: the membrane sees it from step 1
            let (e, cm) = (std::f64::consts::E, p.c_m_pf);
            let k = 1.0 / tau_s - 1.0 / tau_m;
            let mut peak = (0.0f32, 0);
            for step in 1..=600 {
                n.alpha(&c, &mut d, 0.0, 0.0);
                let t = step as f64 * DT;
                let current = f64::from(w) * e / tau_s * t * (-t / tau_s).exp();
                assert!((f64::from(n.ex[0]) - current).abs() < 1e-4 * f64::from(w), "tau_s {tau_s} step {step}: I {} vs {current}", n.ex[0]);
                let x = -k * t;
                let integral = if k == 0.0 { t * t / 2.0 } else { (1.0 - x.exp() * (1.0 - x)) / (k * k) };
                let exact = p.e_l_mv + f64::from(w) * e / (tau_s * cm) * (-t / tau_m).exp() * integral;
                // The potential is an absolute f32 near -70 mV (ulp 7.6e-6 mV); each step's few
                // roundings are damped by P33, so the error stays below a few ulp / (1 - P33).
                assert!((f64::from(n.v[0]) - exact).abs() < 5e-4, "tau_m {tau_m} tau_s {tau_s} step {step}: {} vs {exact}", n.v[0]);
                if n.ex[0] > peak.0 {
                    peak = (n.ex[0], step);
                }
            }
            assert_eq!(peak.1 as f64 * DT, tau_s, "the current peaks at tau_s");
            assert!((peak.0 - w).abs() < 1e-3 * w, "and its peak is the weight: {} pA", peak.0);
        }
    }

    #[test]
    fn propagator_31_series_meets_closed_form_and_singular_limit() {
        let (c_m, h) = (250.0, 0.1);
        // Singular limit (NEST's P31_singular): h^2 / (2 C) exp(-h / tau_m).
        let singular = h * h / (2.0 * c_m) * (-h / 10.0f64).exp();
        assert!((propagator_31(10.0, 10.0, c_m, h) - singular).abs() / singular < 1e-15);
        assert!((propagator_31(10.0 + 1e-9, 10.0, c_m, h) - singular).abs() / singular < 1e-9);
        // Either side of the switch from the series to the closed form (|x| = 0.5).
        for tau_s in [0.1 / (0.5 + 0.1), 0.1 / (0.5 + 0.1) * (1.0 + 1e-12)] {
            let k = 1.0 / tau_s - 0.1;
            let closed = h * h / c_m * (-h / 10.0f64).exp() * (1.0 - (-k * h).exp() * (1.0 + k * h)) / (k * h * k * h);
            assert!((propagator_31(tau_s, 10.0, c_m, h) - closed).abs() / closed < 1e-13);
        }
    }

    /// Without synaptic input, `lif_psc_alpha` adds exact zeros to `lif_cuba`'s membrane update:
    /// the same bits, spike for spike.
    #[test]
    fn alpha_without_input_is_cuba_to_the_bit() {
        let p = params();
        let (ca, cc) = (AlphaPropagators::new(&p, DT), CubaPropagators::new(&p, DT));
        let (mut a, mut b) = (One::at(-65.0), One::at(-65.0));
        let mut d = [[0.0f32]; 2];
        for _ in 0..5000 {
            assert_eq!(a.alpha(&ca, &mut d, 0.0, 420.0), b.cuba(&cc, 0.0, 420.0));
            assert_eq!(a.v[0].to_bits(), b.v[0].to_bits());
        }
    }

    /// NEST's reference behaviour for a constant current I: no spike at or below the rheobase
    /// (v_th - e_l) C / tau_m, and above it the period t_ref - tau_m ln(1 - (v_th - e_l) C /
    /// (tau_m I)), on the grid: the crossing is found at the end of its step, so each interval
    /// is the analytic one rounded up to a whole step (for a start from reset, as here).
    #[test]
    fn alpha_firing_period_for_a_constant_current_is_analytic() {
        let p = params();
        let c = AlphaPropagators::new(&p, DT);
        let rheobase = (p.v_th_mv - p.e_l_mv) * p.c_m_pf / p.tau_m_ms; // 375 pA
        for current in [rheobase - 1.0, 380.0, 400.0, 500.0, 1000.0, 3000.0] {
            let mut n = One::at(p.e_l_mv as f32);
            let mut d = [[0.0f32]; 2];
            let spikes: Vec<u32> = (0..20_000u32).filter(|_| n.alpha(&c, &mut d, 0.0, current as f32)).collect();
            if current <= rheobase {
                assert!(spikes.is_empty(), "{current} pA is below the rheobase");
                continue;
            }
            let t_star = -p.tau_m_ms * (1.0 - (p.v_th_mv - p.e_l_mv) * p.c_m_pf / (p.tau_m_ms * current)).ln();
            let first = (t_star / DT).ceil() as u32; // steps from the start to the first spike
            assert_eq!(spikes[0] + 1, first, "{current} pA: first spike");
            let period = f64::from(spikes[1] - spikes[0]) * DT;
            let analytic = p.t_ref_ms + t_star;
            assert!(period >= analytic - 1e-9 && period < analytic + DT, "{current} pA: period {period} ms vs {analytic} ms");
            assert!(spikes.windows(2).all(|w| w[1] - w[0] == spikes[1] - spikes[0]), "{current} pA: regular");
        }
    }

    /// A per-neuron bias is `bias + current`, then used as a constant current is: the bits of
    /// the same sum given as the population's current.
    #[test]
    fn per_neuron_bias_is_bias_plus_current() {
        let p = params();
        let (cc, ca) = (CubaPropagators::new(&p, DT), AlphaPropagators::new(&p, DT));
        let bias = [100.0f32, 250.5, 377.25, 900.0];
        let current = 30.125f32;
        let run = |per_neuron: bool, alpha: bool| {
            let mut v = [-70.0f32; 4];
            let (mut ex, mut inh, mut dex, mut din, mut r, mut fired) = ([0f32; 4], [0f32; 4], [0f32; 4], [0f32; 4], [0u32; 4], [0u8; 4]);
            let mut out = Vec::new();
            for _ in 0..3000 {
                let mut step = |i: std::ops::Range<usize>, current: f32, bias: Option<&[f32]>| {
                    let s = LifState { v: &mut v[i.clone()], syn_ex: &mut ex[i.clone()], syn_in: &mut inh[i.clone()], refractory: &mut r[i.clone()], fired: &mut fired[i.clone()] };
                    let input = LifInput { arriving_ex: &mut [0; 4][i.clone()], arriving_in: &mut [0; 4][i.clone()], current_pa: current, bias_pa: bias };
                    if alpha {
                        alpha_step(&ca, s, AlphaState { dsyn_ex: &mut dex[i.clone()], dsyn_in: &mut din[i] }, input);
                    } else {
                        cuba_step(&cc, s, input);
                    }
                };
                if per_neuron {
                    step(0..4, current, Some(&bias));
                } else {
                    for i in 0..4 {
                        step(i..i + 1, bias[i] + current, None);
                    }
                }
                out.extend(v.iter().map(|x| x.to_bits()));
            }
            out
        };
        for alpha in [false, true] {
            assert_eq!(run(true, alpha), run(false, alpha), "alpha {alpha}");
        }
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
