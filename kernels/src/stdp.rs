//! Pair-based spike-timing-dependent plasticity with presynaptic and postsynaptic traces.
//!
//! Depression happens at presynaptic spikes (by the target's postsynaptic trace) and
//! potentiation at postsynaptic spikes (by the source's presynaptic trace), as in Song, Miller &
//! Abbott (2000) and Morrison, Diesmann & Gerstner (2008). By default pairing uses the spike
//! times at the neurons; a spike pairs with spikes of earlier steps only, so a pre and post
//! spike in the same step leave the weight unchanged. With [`StdpRule::dendritic`] the whole
//! delay of a synapse is dendritic, as in NEST's STDP synapses: a postsynaptic spike at `tp`
//! reaches a synapse of delay `d` at `tp + d`, a presynaptic spike at once (see
//! [`on_pre_row`]).
//!
//! Traces are evaluated lazily: a neuron stores its trace just after its last spike and the step
//! of that spike; the value at a later step is that times `exp(-elapsed / tau)`, read from a
//! table computed once on the host. No per-step sweep over all neurons, and the value is the
//! same bit for bit on every backend.
//!
//! Potentiation is applied lazily too, as NEST's `stdp_synapse` does: synapses are stored by
//! presynaptic row only (no transposed index), and a postsynaptic spike is only recorded in its
//! neuron's spike history ([`PostState`]). At the next presynaptic spike through a synapse, [`on_pre_row`]
//! first applies the potentiation of every postsynaptic spike since the previous presynaptic
//! spike, oldest first, then the depression. Each weight therefore sees exactly the float
//! operations of the eager scheme (potentiate at post spikes, depress at pre spikes), in the
//! same order, as long as no history overflows: a neuron firing more than `history_len` times
//! between two presynaptic spikes of a source loses the oldest pairings, and [`on_pre_row`]
//! counts each synapse where that happened. A weight read between presynaptic spikes lacks the
//! potentiation still pending.

use crate::delivery::{Ring, RowDelays, Target};
use crate::weight::Weight;

/// How a spike adds to its trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pairing {
    /// Every earlier spike of the partner counts: the trace jumps by 1 (x <- x + 1).
    AllToAll,
    /// Only the most recent spike of the partner counts: the trace is reset to 1 (x <- 1).
    Nearest,
}

/// How a weight change depends on the weight.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WeightDependence {
    /// dw = +a_plus w_max x (potentiation), -a_minus w_max y (depression).
    Additive,
    /// dw = +a_plus (w_max - w) x, -a_minus (w - w_min) y (soft bounds).
    Multiplicative,
    /// dw = +a_plus w^mu x, -a_minus w y: NEST's `stdp_pl_synapse_hom` (Morrison, Aertsen &
    /// Diesmann 2007), whose `lambda` is `a_plus` and `lambda * alpha` is `a_minus`. `w^mu` is
    /// [`portable::powf_weight`](crate::portable::powf_weight), the same bits on every backend.
    PowerLaw { mu: f32 },
}

/// One STDP rule, in the unit of the projection's weights.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StdpRule {
    /// Potentiation amplitude (NEST's `lambda` for [`WeightDependence::PowerLaw`]).
    pub a_plus: f32,
    /// Depression amplitude (NEST's `lambda * alpha` for [`WeightDependence::PowerLaw`]).
    pub a_minus: f32,
    pub w_min: f32,
    pub w_max: f32,
    pub dependence: WeightDependence,
    pub pairing: Pairing,
    /// The synapse's delay is dendritic (NEST's timing): spikes pair at the synapse, where a
    /// postsynaptic spike arrives one delay late. Otherwise they pair at the neurons.
    pub dendritic: bool,
}

impl StdpRule {
    /// The weight after a postsynaptic spike that sees presynaptic trace `x`.
    #[inline]
    pub fn potentiate(&self, w: f32, x: f32) -> f32 {
        let dw = match self.dependence {
            WeightDependence::Additive => self.a_plus * self.w_max * x,
            WeightDependence::Multiplicative => self.a_plus * (self.w_max - w) * x,
            WeightDependence::PowerLaw { mu } => self.a_plus * crate::portable::powf_weight(w, mu) * x,
        };
        (w + dw).clamp(self.w_min, self.w_max)
    }

    /// The weight after a presynaptic spike that sees postsynaptic trace `y`.
    #[inline]
    pub fn depress(&self, w: f32, y: f32) -> f32 {
        let dw = match self.dependence {
            WeightDependence::Additive => self.a_minus * self.w_max * y,
            WeightDependence::Multiplicative => self.a_minus * (w - self.w_min) * y,
            WeightDependence::PowerLaw { .. } => self.a_minus * w * y,
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

/// The value at `step` of a trace that was `at_last_spike` just after the neuron's spike at
/// `last_spike_step` ([`NEVER`]: no spike yet, the trace is 0), before any spike of `step`.
#[inline]
pub fn trace_value(at_last_spike: f32, last_spike_step: u32, step: u32, decay: &TraceDecay) -> f32 {
    if last_spike_step == NEVER {
        return 0.0;
    }
    at_last_spike * decay.after(step - last_spike_step)
}

/// The trace just after a spike at `step` of a neuron whose trace is stored as
/// (`at_last_spike`, `last_spike_step`).
#[inline]
pub fn trace_after_spike(at_last_spike: f32, last_spike_step: u32, step: u32, decay: &TraceDecay, pairing: Pairing) -> f32 {
    match pairing {
        Pairing::AllToAll => trace_value(at_last_spike, last_spike_step, step, decay) + 1.0,
        Pairing::Nearest => 1.0,
    }
}

/// Counts a spike of neuron `i` at `step` in traces stored as two columns: the trace just
/// after each neuron's last spike, and the step of that spike.
#[inline]
pub fn count_spike(at_last_spike: &mut [f32], last_spike_step: &mut [u32], i: usize, step: u32, decay: &TraceDecay, pairing: Pairing) {
    at_last_spike[i] = trace_after_spike(at_last_spike[i], last_spike_step[i], step, decay, pairing);
    last_spike_step[i] = step;
}

/// What a plastic synapse reads of its target, one record per target neuron of a plastic
/// block: the postsynaptic trace just after the neuron's last spike and that spike's step, and
/// the count and floor of its spike history.
///
/// The history is a ring of `len` spike steps per neuron (`history[j * len..(j + 1) * len]`):
/// spike number `n` (from 0) sits at `n % len`, `count` spikes have been pushed (so the head is
/// `count % len`), and `floor` is the step of the most recently overwritten entry, or
/// [`NEVER`]. One 16-byte record, so that a GPU thread fetches it with one load; the host
/// keeps the same layout.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PostState {
    pub trace: f32,
    pub last: u32,
    pub count: u32,
    pub floor: u32,
}

impl PostState {
    /// A neuron that has not spiked.
    pub const SILENT: PostState = PostState { trace: 0.0, last: NEVER, count: 0, floor: NEVER };
}

/// A postsynaptic spike of a neuron at `step`: counted in its trace and pushed into its
/// `history` ring (the neuron's `len` entries), and the trace just after it into
/// `history_trace` (the same slots) if the rule is [`StdpRule::dendritic`] (else empty): a
/// dendritic synapse reads the trace as it was one delay ago.
#[inline]
pub fn on_post_spike(post: &mut PostState, history: &mut [u32], history_trace: &mut [f32], step: u32, decay: &TraceDecay, pairing: Pairing) {
    post.trace = trace_after_spike(post.trace, post.last, step, decay, pairing);
    post.last = step;
    let slot = post.count as usize % history.len();
    if post.count as usize >= history.len() {
        post.floor = history[slot];
    }
    history[slot] = step;
    if !history_trace.is_empty() {
        history_trace[slot] = post.trace;
    }
    post.count = post.count.wrapping_add(1);
}

/// A presynaptic spike: its step and its source's trace as it was before this step's spikes
/// are counted (the presynaptic traces are updated after delivery).
#[derive(Clone, Copy, Debug)]
pub struct PreSpike<'a> {
    pub step: u64,
    /// The source's previous spike step, or [`NEVER`].
    pub last_spike_step: u32,
    /// The source's trace just after that spike.
    pub at_last_spike: f32,
    pub decay: &'a TraceDecay,
}

impl<'a> PreSpike<'a> {
    /// The spike of source `i` at `step`, with traces stored as in [`count_spike`].
    #[inline]
    pub fn of(at_last_spike: &[f32], last_spike_step: &[u32], i: usize, step: u64, decay: &'a TraceDecay) -> Self {
        PreSpike { step, last_spike_step: last_spike_step[i], at_last_spike: at_last_spike[i], decay }
    }
}

/// What a plastic row reads about its targets (shard-local).
#[derive(Clone, Copy, Debug)]
pub struct Postsynaptic<'a> {
    pub post: &'a [PostState],
    pub decay: &'a TraceDecay,
    /// Spike history rings, `history_len` entries per neuron (see [`PostState`]).
    pub history: &'a [u32],
    /// The trace just after each history entry, for [`StdpRule::dendritic`] rules (else empty).
    pub history_trace: &'a [f32],
    pub history_len: usize,
    /// Spike bits of the current step (the neuron update runs before delivery).
    pub fired: &'a [u8],
}

/// One presynaptic row of plastic synapses.
#[derive(Debug)]
pub struct PlasticRow<'a, T, W> {
    pub target: &'a [T],
    pub delay: RowDelays<'a>,
    pub weight: &'a mut [W],
}

/// A presynaptic spike through a row of plastic synapses. Per synapse with target `j`, with
/// `t` the spike's step and `t_last`, `x_last` the source's previous spike and trace:
/// (a) potentiate by every postsynaptic spike `tp` of `j` with `t_last < tp < t`, oldest first,
/// by the presynaptic trace at `tp`, `x_last * decay(tp - t_last)`; (b) depress by the
/// postsynaptic trace of `j` at `t` and deliver the new weight (NEST's order); (c) if `j` fired
/// in this step, potentiate by the presynaptic trace at `t` (a same-step post spike pairs with
/// earlier pre spikes only, and the eager scheme applies it after delivery).
///
/// A [`StdpRule::dendritic`] rule shifts every postsynaptic spike by the synapse's delay `d`
/// (NEST's `stdp_synapse` and `stdp_pl_synapse_hom` count the whole delay as dendritic):
/// (a) potentiate by every `tp` with `t_last < tp + d <= t`, by `x_last * decay(tp + d - t_last)`;
/// (b) depress by the trace at `t - d` of the spikes before `t - d` (NEST's
/// `get_K_value(t - d)`) and deliver; no (c): spikes after `t - d` wait in the history for the
/// next presynaptic spike, as spikes after `t` do in the other timing.
///
/// The weight is rounded to its stored type once, at the end. Returns the number of synapses
/// whose target's history had lost spikes they needed (pairings dropped by an overflow).
#[inline]
pub fn on_pre_row<T: Target, W: Weight>(rule: &StdpRule, ring: &mut Ring<'_>, pre: &PreSpike<'_>, row: PlasticRow<'_, T, W>, post: &Postsynaptic<'_>) -> u64 {
    match row.delay {
        RowDelays::Constant(d) => plastic_row(rule, ring, pre, row.target, row.weight, post, |_| u32::from(d)),
        RowDelays::PerSynapse(delays) => plastic_row(rule, ring, pre, row.target, row.weight, post, |k| u32::from(delays[k])),
    }
}

#[inline(always)]
fn plastic_row<T: Target, W: Weight>(rule: &StdpRule, ring: &mut Ring<'_>, pre: &PreSpike<'_>, target: &[T], weight: &mut [W], post: &Postsynaptic<'_>, delay: impl Fn(usize) -> u32) -> u64 {
    let mut lost = 0;
    for (k, (&j, stored)) in target.iter().zip(weight.iter_mut()).enumerate() {
        let (j, d) = (j.index(), delay(k));
        let (delivered, w, dropped) = if rule.dendritic { dendritic_synapse(rule, pre, post, j, d, stored.get()) } else { somatic_synapse(rule, pre, post, j, stored.get()) };
        ring.add(pre.step, d, j, delivered);
        *stored = W::set(w);
        lost += u64::from(dropped);
    }
    lost
}

/// The ring slot before `slot` in a ring of `len`.
#[inline(always)]
fn back(slot: usize, len: usize) -> usize {
    if slot == 0 { len - 1 } else { slot - 1 }
}

/// One synapse of [`on_pre_row`], pairing at the neurons: (weight delivered, weight kept,
/// whether pairings were lost).
#[inline(always)]
fn somatic_synapse(rule: &StdpRule, pre: &PreSpike<'_>, post: &Postsynaptic<'_>, j: usize, mut w: f32) -> (f32, f32, bool) {
    let t = pre.step as u32;
    let (t_last, x_last) = (pre.last_spike_step, pre.at_last_spike);
    let len = post.history_len;
    let target = post.post[j];
    let mut lost = false;
    // The newest history entry is the target's last spike in its trace (both are updated
    // together), so a target silent since t_last is skipped without touching the history.
    if t_last != NEVER && target.last != NEVER && target.last > t_last {
        let steps = &post.history[j * len..(j + 1) * len];
        let held = (target.count as usize).min(len);
        // Walk back from the newest entry over those after t_last (the ring is in time
        // order), then apply them oldest first.
        let mut slot = (target.count as usize + len - 1) % len;
        let mut pending = 0;
        while pending < held && steps[slot] > t_last {
            pending += 1;
            slot = back(slot, len);
        }
        for _ in 0..pending {
            slot = if slot + 1 == len { 0 } else { slot + 1 };
            let tp = steps[slot];
            if tp < t {
                w = rule.potentiate(w, x_last * pre.decay.after(tp - t_last));
            }
        }
        lost = target.floor != NEVER && target.floor > t_last;
    }
    w = rule.depress(w, trace_value(target.trace, target.last, t, post.decay));
    let delivered = w;
    if post.fired[j] == 1 && t_last != NEVER {
        w = rule.potentiate(w, x_last * pre.decay.after(t - t_last));
    }
    (delivered, w, lost)
}

/// One synapse of [`on_pre_row`] with a dendritic delay of `d` steps: (weight delivered,
/// weight kept, whether pairings were lost).
#[inline(always)]
fn dendritic_synapse(rule: &StdpRule, pre: &PreSpike<'_>, post: &Postsynaptic<'_>, j: usize, d: u32, mut w: f32) -> (f32, f32, bool) {
    let t = pre.step as u32;
    let (t_last, x_last) = (pre.last_spike_step, pre.at_last_spike);
    let len = post.history_len;
    let target = post.post[j];
    // The depression reads the trace just after the newest spike that reached the synapse
    // before t: the target's last spike (no history read) unless that one is still on its way.
    let (mut y_at, mut y_last) = (target.trace, target.last);
    let mut lost = false;
    let waiting = target.last != NEVER && target.last + d >= t;
    let pending = t_last != NEVER && target.last != NEVER && target.last + d > t_last;
    if waiting || pending {
        let (steps, traces) = (&post.history[j * len..(j + 1) * len], &post.history_trace[j * len..(j + 1) * len]);
        let held = (target.count as usize).min(len);
        let mut slot = (target.count as usize + len - 1) % len;
        let mut i = 0;
        // Newest first: spikes that reach the synapse after t, then one that reaches it at t
        // (potentiates, but is no part of the trace before t), then the anchor of the trace,
        // then the rest of those after t_last.
        while i < held && steps[slot] + d > t {
            i += 1;
            slot = back(slot, len);
        }
        let (newest_arrived, mut anchor, mut anchor_slot) = (slot, i, slot);
        if anchor < held && steps[anchor_slot] + d == t {
            anchor += 1;
            anchor_slot = back(anchor_slot, len);
        }
        if waiting {
            (y_at, y_last) = if anchor < held { (traces[anchor_slot], steps[anchor_slot]) } else { (0.0, NEVER) };
            // No held spike reached the synapse before t: if the ring wrapped, the anchor was
            // among the overwritten ones (the target fired more than `len` times in d steps).
            lost |= anchor == held && target.floor != NEVER;
        }
        if pending {
            let mut count = 0;
            let mut walk = newest_arrived;
            while i + count < held && steps[walk] + d > t_last {
                count += 1;
                walk = back(walk, len);
            }
            for _ in 0..count {
                walk = if walk + 1 == len { 0 } else { walk + 1 };
                w = rule.potentiate(w, x_last * pre.decay.after(steps[walk] + d - t_last));
            }
            lost |= target.floor != NEVER && target.floor + d > t_last;
        }
    }
    // y_last + d < t unless y_last is NEVER (then t - d is not read).
    w = rule.depress(w, trace_value(y_at, y_last, t.wrapping_sub(d), post.decay));
    (w, w, lost)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::ring_slots;
    use crate::rng::{Key, Purpose};

    /// Traces of a range of neurons as two columns (see [`count_spike`]).
    struct Traces {
        at_last_spike: Vec<f32>,
        last_spike_step: Vec<u32>,
    }

    impl Traces {
        fn new(neurons: usize) -> Self {
            Traces { at_last_spike: vec![0.0; neurons], last_spike_step: vec![NEVER; neurons] }
        }
        fn len(&self) -> usize {
            self.at_last_spike.len()
        }
        fn value(&self, i: usize, step: u32, decay: &TraceDecay) -> f32 {
            trace_value(self.at_last_spike[i], self.last_spike_step[i], step, decay)
        }
        fn spike(&mut self, i: usize, step: u32, decay: &TraceDecay, pairing: Pairing) {
            count_spike(&mut self.at_last_spike, &mut self.last_spike_step, i, step, decay, pairing);
        }
    }
    use half::f16;

    const DT: f64 = 0.1;
    const TAU: f64 = 20.0;

    fn rule(dependence: WeightDependence, pairing: Pairing) -> StdpRule {
        StdpRule { a_plus: 0.01, a_minus: 0.012, w_min: 0.0, w_max: 10.0, dependence, pairing, dendritic: false }
    }

    /// A plastic block driven step by step through the kernels, in the systems' order:
    /// presynaptic rows (delivery), then postsynaptic traces and histories, then presynaptic
    /// traces.
    struct Lazy<W> {
        rule: StdpRule,
        pre_decay: TraceDecay,
        post_decay: TraceDecay,
        row_ptr: Vec<usize>,
        target: Vec<u16>,
        delay: Vec<u16>,
        weight: Vec<W>,
        pre: Traces,
        post: Vec<PostState>,
        history_len: usize,
        history: Vec<u32>,
        history_trace: Vec<f32>,
        ring: Vec<i64>,
        lost: u64,
    }

    impl<W: Weight> Lazy<W> {
        fn new(rule: StdpRule, decays: (f64, f64), net: &Net, history_len: usize) -> Self {
            let n_post = net.n_post;
            Lazy {
                rule,
                pre_decay: TraceDecay::new(decays.0, DT),
                post_decay: TraceDecay::new(decays.1, DT),
                row_ptr: net.row_ptr.clone(),
                target: net.target.clone(),
                delay: net.delay.clone(),
                weight: net.weight.iter().map(|&w| W::set(w)).collect(),
                pre: Traces::new(net.row_ptr.len() - 1),
                post: vec![PostState::SILENT; n_post],
                history_len,
                history: vec![0; n_post * history_len],
                history_trace: vec![0.0; if rule.dendritic { n_post * history_len } else { 0 }],
                ring: vec![0; net.ring_slots() * n_post],
                lost: 0,
            }
        }

        fn step(&mut self, t: u32, pre_spikes: &[usize], fired: &[u8]) {
            let Lazy { rule, pre_decay, post_decay, row_ptr, target, delay, weight, pre, post, history_len, history, history_trace, ring, lost } = self;
            let n_post = post.len();
            let mut ring = Ring::new(n_post, ring);
            for &i in pre_spikes {
                let r = row_ptr[i]..row_ptr[i + 1];
                let postsynaptic = Postsynaptic {
                    post,
                    decay: post_decay,
                    history,
                    history_trace,
                    history_len: *history_len,
                    fired,
                };
                let row = PlasticRow { target: &target[r.clone()], delay: RowDelays::PerSynapse(&delay[r.clone()]), weight: &mut weight[r] };
                let spike = PreSpike::of(&pre.at_last_spike, &pre.last_spike_step, i, u64::from(t), pre_decay);
                *lost += on_pre_row(rule, &mut ring, &spike, row, &postsynaptic);
            }
            let len = *history_len;
            for (j, _) in fired.iter().enumerate().filter(|(_, f)| **f == 1) {
                let traces = if history_trace.is_empty() { &mut [][..] } else { &mut history_trace[j * len..(j + 1) * len] };
                on_post_spike(&mut post[j], &mut history[j * len..(j + 1) * len], traces, t, post_decay, rule.pairing);
            }
            for &i in pre_spikes {
                pre.spike(i, t, pre_decay, rule.pairing);
            }
        }
    }

    /// The eager reference (the scheme before lazy potentiation): depress and deliver at
    /// presynaptic spikes, then potentiate every incoming synapse of a spiking postsynaptic
    /// neuron, then count the spikes in the traces.
    ///
    /// With a [`StdpRule::dendritic`] rule each synapse keeps its own postsynaptic trace of
    /// its target's spikes as they arrive, one delay late, and is potentiated on arrival.
    struct Eager {
        rule: StdpRule,
        pre_decay: TraceDecay,
        post_decay: TraceDecay,
        row_ptr: Vec<usize>,
        target: Vec<u16>,
        delay: Vec<u16>,
        weight: Vec<f32>,
        pre: Traces,
        post: Traces,
        /// Dendritic: per synapse, the trace of the postsynaptic spikes that reached it.
        arrived: Traces,
        /// The spike bits of every step so far.
        fired: Vec<Vec<u8>>,
        ring: Vec<i64>,
    }

    impl Eager {
        fn new(rule: StdpRule, decays: (f64, f64), net: &Net) -> Self {
            Eager {
                rule,
                pre_decay: TraceDecay::new(decays.0, DT),
                post_decay: TraceDecay::new(decays.1, DT),
                row_ptr: net.row_ptr.clone(),
                target: net.target.clone(),
                delay: net.delay.clone(),
                weight: net.weight.clone(),
                pre: Traces::new(net.row_ptr.len() - 1),
                post: Traces::new(net.n_post),
                arrived: Traces::new(net.target.len()),
                fired: Vec::new(),
                ring: vec![0; net.ring_slots() * net.n_post],
            }
        }

        fn step(&mut self, t: u32, pre_spikes: &[usize], fired: &[u8]) {
            assert_eq!(t as usize, self.fired.len(), "the eager reference runs every step");
            self.fired.push(fired.to_vec());
            if self.rule.dendritic {
                return self.step_dendritic(t, pre_spikes);
            }
            for &i in pre_spikes {
                for k in self.row_ptr[i]..self.row_ptr[i + 1] {
                    let j = usize::from(self.target[k]);
                    self.weight[k] = self.rule.depress(self.weight[k], self.post.value(j, t, &self.post_decay));
                    Ring::new(self.post.len(), &mut self.ring).add(u64::from(t), u32::from(self.delay[k]), j, self.weight[k]);
                }
            }
            for i in 0..self.row_ptr.len() - 1 {
                for k in self.row_ptr[i]..self.row_ptr[i + 1] {
                    if fired[usize::from(self.target[k])] == 1 {
                        self.weight[k] = self.rule.potentiate(self.weight[k], self.pre.value(i, t, &self.pre_decay));
                    }
                }
            }
            for (j, _) in fired.iter().enumerate().filter(|(_, f)| **f == 1) {
                self.post.spike(j, t, &self.post_decay, self.rule.pairing);
            }
            for &i in pre_spikes {
                self.pre.spike(i, t, &self.pre_decay, self.rule.pairing);
            }
        }

        /// A step in NEST's timing: postsynaptic spikes that reach a synapse at `t` potentiate
        /// it (by the presynaptic trace before `t`), then presynaptic spikes depress (by the
        /// trace of spikes that arrived before `t`) and deliver, then the arrivals and the
        /// presynaptic spikes are counted.
        fn step_dendritic(&mut self, t: u32, pre_spikes: &[usize]) {
            let arrives = |k: usize| {
                let d = u32::from(self.delay[k]);
                t >= d && self.fired[(t - d) as usize][usize::from(self.target[k])] == 1
            };
            let arrivals: Vec<bool> = (0..self.target.len()).map(arrives).collect();
            for i in 0..self.row_ptr.len() - 1 {
                for k in (self.row_ptr[i]..self.row_ptr[i + 1]).filter(|&k| arrivals[k]) {
                    self.weight[k] = self.rule.potentiate(self.weight[k], self.pre.value(i, t, &self.pre_decay));
                }
            }
            for &i in pre_spikes {
                for k in self.row_ptr[i]..self.row_ptr[i + 1] {
                    let j = usize::from(self.target[k]);
                    self.weight[k] = self.rule.depress(self.weight[k], self.arrived.value(k, t, &self.post_decay));
                    Ring::new(self.post.len(), &mut self.ring).add(u64::from(t), u32::from(self.delay[k]), j, self.weight[k]);
                }
            }
            for k in (0..self.target.len()).filter(|&k| arrivals[k]) {
                self.arrived.spike(k, t, &self.post_decay, self.rule.pairing);
            }
            for &i in pre_spikes {
                self.pre.spike(i, t, &self.pre_decay, self.rule.pairing);
            }
        }
    }

    /// Synapses as CSR rows, and spike trains: `pre[t]` the sources spiking at step `t`,
    /// `post[t]` the spike bits of the targets.
    struct Net {
        n_post: usize,
        row_ptr: Vec<usize>,
        target: Vec<u16>,
        /// Per synapse, steps (1 unless [`Net::with_delays`]).
        delay: Vec<u16>,
        weight: Vec<f32>,
        pre: Vec<Vec<usize>>,
        post: Vec<Vec<u8>>,
    }

    impl Net {
        /// One synapse 0 -> 0 with weight `w0` and the given spike steps.
        fn pair(w0: f32, pre_steps: &[u32], post_steps: &[u32]) -> Net {
            let end = pre_steps.iter().chain(post_steps).max().copied().unwrap_or(0) as usize;
            let pre = (0..=end).map(|t| if pre_steps.contains(&(t as u32)) { vec![0] } else { vec![] }).collect();
            let post = (0..=end).map(|t| vec![u8::from(post_steps.contains(&(t as u32)))]).collect();
            Net { n_post: 1, row_ptr: vec![0, 1], target: vec![0], delay: vec![1], weight: vec![w0], pre, post }
        }

        /// `synapses` random synapses (multapses and all) from `n_pre` to `n_post` neurons,
        /// independent spike trains with per-step probabilities `p_pre`, `p_post`.
        fn random(seed: u64, n_pre: usize, n_post: usize, synapses: usize, (p_pre, p_post): (f64, f64), steps: usize, (w_min, w_max): (f32, f32)) -> Net {
            let mut s = Key::from_seed(seed).stream(Purpose::Connectivity, 0, 0);
            let mut pairs: Vec<(usize, u16, f32)> = (0..synapses)
                .map(|_| (s.below(n_pre as u32) as usize, s.below(n_post as u32) as u16, w_min + (w_max - w_min) * s.uniform() as f32))
                .collect();
            pairs.sort_by_key(|p| p.0);
            let mut row_ptr = vec![0; n_pre + 1];
            for p in &pairs {
                row_ptr[p.0 + 1] += 1;
            }
            for i in 0..n_pre {
                row_ptr[i + 1] += row_ptr[i];
            }
            let pre = (0..steps).map(|_| (0..n_pre).filter(|_| s.uniform() < p_pre).collect()).collect();
            let post = (0..steps).map(|_| (0..n_post).map(|_| u8::from(s.uniform() < p_post)).collect()).collect();
            Net { n_post, row_ptr, target: pairs.iter().map(|p| p.1).collect(), delay: vec![1; synapses], weight: pairs.iter().map(|p| p.2).collect(), pre, post }
        }

        /// The same network with delays drawn uniformly from 1..=max_delay steps.
        fn with_delays(mut self, seed: u64, max_delay: u32) -> Net {
            let mut s = Key::from_seed(seed).stream(Purpose::SynapseParameters, 0, 0);
            self.delay = self.delay.iter().map(|_| 1 + s.below(max_delay) as u16).collect();
            self
        }

        fn ring_slots(&self) -> usize {
            ring_slots(self.delay.iter().copied().max().map_or(1, u32::from))
        }

        fn steps(&self) -> u32 {
            self.pre.len() as u32
        }
    }

    /// One synapse 0 -> 0; pre and post spikes at the given steps, then a final presynaptic
    /// spike so late that the postsynaptic trace has decayed to an exact 0: it applies the
    /// pending potentiation and nothing else. Returns the final weight.
    fn pair_run(rule: &StdpRule, w0: f32, pre_steps: &[u32], post_steps: &[u32]) -> f32 {
        let net = Net::pair(w0, pre_steps, post_steps);
        let mut lazy = Lazy::<f32>::new(*rule, (TAU, TAU), &net, 64);
        for t in 0..net.steps() {
            lazy.step(t, &net.pre[t as usize], &net.post[t as usize]);
        }
        let late = net.steps() + 12 * TraceDecay::new(TAU, DT).table.len() as u32;
        lazy.step(late, &[0], &[0]);
        assert_eq!(lazy.lost, 0);
        lazy.weight[0]
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
    fn potentiation_waits_for_the_next_presynaptic_spike() {
        let r = rule(WeightDependence::Additive, Pairing::AllToAll);
        let net = Net::pair(5.0, &[100], &[150]);
        let mut lazy = Lazy::<f32>::new(r, (TAU, TAU), &net, 64);
        for t in 0..net.steps() {
            lazy.step(t, &net.pre[t as usize], &net.post[t as usize]);
        }
        assert_eq!(lazy.weight[0], 5.0, "read between presynaptic spikes, the weight lacks pending potentiation");
        assert_eq!(pair_run(&r, 5.0, &[100], &[150]), r.potentiate(5.0, (-50.0 * DT / TAU).exp() as f32));
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

    /// NEST's `stdp_pl_synapse_hom` as in its `hpc_benchmark` (lambda 0.1, alpha 0.0513, mu 0.4,
    /// tau_plus 15 ms), with a tau_minus of 30 ms; no upper bound, as in NEST.
    fn nest_power_law(pairing: Pairing) -> StdpRule {
        StdpRule { a_plus: 0.1, a_minus: (0.1f64 * 0.0513) as f32, w_min: 0.0, w_max: f32::MAX, dependence: WeightDependence::PowerLaw { mu: 0.4 }, pairing, dendritic: false }
    }

    /// [`pair_run`] with the time constants (tau_plus, tau_minus) of the traces.
    fn pair_run_with(rule: &StdpRule, taus: (f64, f64), w0: f32, pre_steps: &[u32], post_steps: &[u32]) -> f32 {
        pair_run_delayed(rule, taus, w0, pre_steps, post_steps, 1)
    }

    /// [`pair_run_with`] through a synapse of `delay` steps. The history holds 256 spikes,
    /// more than any test's train puts between two presynaptic spikes.
    fn pair_run_delayed(rule: &StdpRule, taus: (f64, f64), w0: f32, pre_steps: &[u32], post_steps: &[u32], delay: u16) -> f32 {
        let net = Net { delay: vec![delay], ..Net::pair(w0, pre_steps, post_steps) };
        let mut lazy = Lazy::<f32>::new(*rule, taus, &net, 256);
        for t in 0..net.steps() {
            lazy.step(t, &net.pre[t as usize], &net.post[t as usize]);
        }
        let late = net.steps() + 12 * TraceDecay::new(taus.0.max(taus.1), DT).table.len() as u32;
        lazy.step(late, &[0], &[0]);
        assert_eq!(lazy.lost, 0);
        lazy.weight[0]
    }

    #[test]
    fn power_law_single_pair_changes_weight_by_nests_closed_form() {
        let (lambda, alpha, mu, tau_plus, tau_minus) = (0.1, 0.0513, 0.4, 15.0, 30.0);
        for pairing in [Pairing::AllToAll, Pairing::Nearest] {
            let r = nest_power_law(pairing);
            for w0 in [0.5f32, 45.61, 300.0] {
                let w = f64::from(w0);
                for lag in [1u32, 10, 150, 400] {
                    let dt = f64::from(lag) * DT;
                    // pre then post: facilitate_, w + lambda w^mu K+ with K+ = exp(-dt / tau_plus)
                    let got = pair_run_with(&r, (tau_plus, tau_minus), w0, &[100], &[100 + lag]);
                    let nest = w + lambda * w.powf(mu) * (-dt / tau_plus).exp();
                    assert!(close(got, nest), "w0 {w0}, lag {lag}: {got} vs {nest}");
                    // post then pre: depress_, w - lambda alpha w K- with K- = exp(-dt / tau_minus)
                    let got = pair_run_with(&r, (tau_plus, tau_minus), w0, &[100 + lag], &[100]);
                    let nest = w - lambda * alpha * w * (-dt / tau_minus).exp();
                    assert!(close(got, nest), "w0 {w0}, lag {lag}: {got} vs {nest}");
                }
                assert_eq!(pair_run_with(&r, (tau_plus, tau_minus), w0, &[100], &[100]), w0, "same step: no pairing");
            }
            // NEST clips depression at 0 (`depress_`), and so does w_min = 0.
            let strong = StdpRule { a_minus: 1.5, ..r };
            assert_eq!(pair_run_with(&strong, (tau_plus, tau_minus), 45.61, &[101], &[100]), 0.0);
            // From 0 the power law cannot potentiate (0^mu = 0).
            assert_eq!(pair_run_with(&r, (tau_plus, tau_minus), 0.0, &[100], &[101]), 0.0);
        }
    }

    /// NEST's `stdp_pl_synapse_hom::send` in `f64`, for one synapse whose dendritic delay is
    /// `d` steps (0: fum's pairing at the neurons): at each presynaptic spike at t, facilitate by
    /// every postsynaptic spike tp with t_last < tp + d <= t, oldest first, then depress by the
    /// postsynaptic trace at t - d of spikes strictly before it (`get_K_value(t - d)`); traces K+
    /// and K- sum all earlier spikes.
    fn nest_send_loop(pre: &[u32], post: &[u32], w0: f64, (tau_plus, tau_minus): (f64, f64), d: u32) -> f64 {
        let (lambda, alpha, mu) = (0.1, 0.0513, 0.4);
        let ms = |step: u32| f64::from(step) * DT;
        // The archiving node's history: (step, K- just after the spike). Times are compared in
        // steps (NEST compares them with a tolerance, stdp_eps, to the same effect).
        let mut history: Vec<(u32, f64)> = Vec::new();
        for &tp in post {
            let k = history.last().map_or(0.0, |&(t, k)| k * ((ms(t) - ms(tp)) / tau_minus).exp());
            history.push((tp, k + 1.0));
        }
        let (mut w, mut k_plus, mut t_last) = (w0, 0.0, None::<u32>);
        for &t in pre {
            for &(tp, _) in history.iter().filter(|&&(tp, _)| t_last.is_some_and(|tl| tl < tp + d) && tp + d <= t) {
                w += lambda * w.powf(mu) * k_plus * ((ms(t_last.unwrap()) - ms(tp + d)) / tau_plus).exp();
            }
            let k_minus = history.iter().rev().find(|&&(tp, _)| tp + d < t).map_or(0.0, |&(tp, k)| k * ((ms(tp + d) - ms(t)) / tau_minus).exp());
            w = (w - lambda * alpha * w * k_minus).max(0.0);
            k_plus = t_last.map_or(0.0, |tl| k_plus * ((ms(tl) - ms(t)) / tau_plus).exp()) + 1.0;
            t_last = Some(t);
        }
        w
    }

    #[test]
    fn power_law_follows_nests_send_loop_over_random_trains() {
        let taus = (15.0, 30.0);
        let mut s = Key::from_seed(13).stream(Purpose::Connectivity, 0, 0);
        let mut moved = 0.0;
        for trial in 0..40 {
            // Up to a few hundred spikes each in 2000 steps, with no pre and post spike in one step
            // (fum pairs those after the depression, NEST before: see docs/model-format.md).
            let (p_pre, p_post) = (0.002 + 0.05 * s.uniform(), 0.002 + 0.05 * s.uniform());
            let pre: Vec<u32> = (0..2000).filter(|_| s.uniform() < p_pre).collect();
            let post: Vec<u32> = (0..2000).filter(|t| s.uniform() < p_post && !pre.contains(t)).collect();
            let w0 = 1.0 + 100.0 * s.uniform();
            let late = 2000 + 12 * TraceDecay::new(30.0, DT).table.len() as u32;
            let nest = nest_send_loop(&[pre.clone(), vec![late]].concat(), &post, w0, taus, 0);
            let got = pair_run_with(&nest_power_law(Pairing::AllToAll), taus, w0 as f32, &pre, &post);
            assert!((f64::from(got) - nest).abs() <= 1e-5 * nest.max(1.0), "trial {trial} ({} pre, {} post spikes): {got} vs {nest}", pre.len(), post.len());
            moved += (nest - w0).abs() / w0;
        }
        assert!(moved / 40.0 > 0.05, "weights should change: mean relative change {}", moved / 40.0);
    }

    #[test]
    fn dendritic_delay_pairs_a_postsynaptic_spike_one_delay_late() {
        let r = StdpRule { dendritic: true, ..rule(WeightDependence::Additive, Pairing::AllToAll) };
        let e = |steps: f64| (-steps * DT / TAU).exp();
        let d = 15;
        // Post 5 steps before pre: at the synapse it comes 10 steps after: potentiation.
        let w = pair_run_delayed(&r, (TAU, TAU), 5.0, &[100], &[95], d);
        assert!(close(w, 5.0 + 0.01 * 10.0 * e(10.0)), "{w}");
        // Post 20 steps before pre: at the synapse 5 steps before: depression.
        let w = pair_run_delayed(&r, (TAU, TAU), 5.0, &[100], &[80], d);
        assert!(close(w, 5.0 - 0.012 * 10.0 * e(5.0)), "{w}");
        // Post after pre: potentiation over the gap plus the delay.
        let w = pair_run_delayed(&r, (TAU, TAU), 5.0, &[100], &[130], d);
        assert!(close(w, 5.0 + 0.01 * 10.0 * e(45.0)), "{w}");
        // Arriving with the presynaptic spike: facilitated by the trace before it (none).
        assert_eq!(pair_run_delayed(&r, (TAU, TAU), 5.0, &[100], &[85], d), 5.0);
        // The same spikes at the neurons: depression.
        let somatic = StdpRule { dendritic: false, ..r };
        let w = pair_run_delayed(&somatic, (TAU, TAU), 5.0, &[100], &[95], d);
        assert!(close(w, 5.0 - 0.012 * 10.0 * e(5.0)), "{w}");
    }

    #[test]
    fn dendritic_power_law_follows_nests_send_loop_over_random_trains() {
        let taus = (15.0, 30.0);
        let rule = StdpRule { dendritic: true, ..nest_power_law(Pairing::AllToAll) };
        let mut s = Key::from_seed(17).stream(Purpose::Connectivity, 0, 0);
        for d in [1u32, 15, 40] {
            for trial in 0..30 {
                // Same-step pre and post spikes allowed: at the synapse they are a delay apart.
                let (p_pre, p_post) = (0.002 + 0.05 * s.uniform(), 0.002 + 0.05 * s.uniform());
                let pre: Vec<u32> = (0..2000).filter(|_| s.uniform() < p_pre).collect();
                let post: Vec<u32> = (0..2000).filter(|_| s.uniform() < p_post).collect();
                let w0 = 1.0 + 100.0 * s.uniform();
                let late = 2000 + 12 * TraceDecay::new(30.0, DT).table.len() as u32;
                let nest = nest_send_loop(&[pre.clone(), vec![late]].concat(), &post, w0, taus, d);
                let got = pair_run_delayed(&rule, taus, w0 as f32, &pre, &post, d as u16);
                assert!((f64::from(got) - nest).abs() <= 1e-5 * nest.max(1.0), "delay {d}, trial {trial}: {got} vs {nest}");
                let somatic = nest_send_loop(&[pre.clone(), vec![late]].concat(), &post, w0, taus, 0);
                assert!(post.is_empty() || pre.is_empty() || (somatic - nest).abs() > 1e-9, "delay {d}, trial {trial}: the timing should matter");
            }
        }
    }

    /// Amplitudes above 1, so that both bounds clip (the multiplicative rule too, where a trace
    /// near 1 overshoots); different time constants for the two traces, so that a mix-up shows.
    fn strong_rules() -> Vec<StdpRule> {
        let mut rules = Vec::new();
        for dependence in [WeightDependence::Additive, WeightDependence::Multiplicative, WeightDependence::PowerLaw { mu: 0.4 }] {
            for pairing in [Pairing::AllToAll, Pairing::Nearest] {
                for dendritic in [false, true] {
                    rules.push(StdpRule { a_plus: 1.1, a_minus: 1.2, w_min: 0.5, w_max: 2.0, dependence, pairing, dendritic });
                }
            }
        }
        rules
    }

    #[test]
    fn lazy_potentiation_equals_the_eager_reference_bit_for_bit() {
        for (seed, rule) in strong_rules().into_iter().enumerate() {
            let net = Net::random(seed as u64, 20, 15, 300, (0.03, 0.03), 3000, (0.5, 2.0)).with_delays(seed as u64, 40);
            let mut lazy = Lazy::<f32>::new(rule, (15.0, 25.0), &net, 64);
            let mut eager = Eager::new(rule, (15.0, 25.0), &net);
            let mut compared = 0;
            for t in 0..net.steps() {
                let (pre, post) = (&net.pre[t as usize], &net.post[t as usize]);
                lazy.step(t, pre, post);
                eager.step(t, pre, post);
                for &i in pre {
                    for k in net.row_ptr[i]..net.row_ptr[i + 1] {
                        assert_eq!(lazy.weight[k].to_bits(), eager.weight[k].to_bits(), "{rule:?}: synapse {k} after the spike of {i} at step {t}");
                        compared += 1;
                    }
                }
            }
            assert!(lazy.ring == eager.ring, "{rule:?}: delivered weights differ");
            assert_eq!(lazy.lost, 0);
            assert!(compared > 10_000, "{compared}");
            for bound in [rule.w_min, rule.w_max] {
                assert!(eager.weight.contains(&bound), "{rule:?}: no weight clipped at {bound}");
            }
        }
    }

    #[test]
    fn f16_weights_are_the_f32_results_rounded_once_per_presynaptic_spike() {
        for rule in strong_rules() {
            let net = Net::random(7, 20, 15, 300, (0.03, 0.03), 2000, (0.5, 2.0)).with_delays(7, 40);
            let mut half = Lazy::<f16>::new(rule, (15.0, 25.0), &net, 64);
            let mut full = Lazy::<f32>::new(rule, (15.0, 25.0), &net, 64);
            full.weight.iter_mut().for_each(|w| *w = f16::set(*w).get());
            for t in 0..net.steps() {
                let (pre, post) = (&net.pre[t as usize], &net.post[t as usize]);
                half.step(t, pre, post);
                full.step(t, pre, post);
                for &i in pre {
                    for k in net.row_ptr[i]..net.row_ptr[i + 1] {
                        full.weight[k] = f16::set(full.weight[k]).get();
                    }
                }
            }
            assert!(half.weight.iter().zip(&full.weight).all(|(h, f)| h.get() == *f), "{rule:?}");
            assert!(half.ring == full.ring, "{rule:?}: f16 rows deliver the unrounded f32 weight");
        }
    }

    /// Post spikes of each synapse's target strictly between consecutive presynaptic spikes.
    fn pending_counts(net: &Net) -> Vec<(usize, usize)> {
        let mut last = vec![None; net.row_ptr.len() - 1];
        let mut out = Vec::new();
        for t in 0..net.pre.len() {
            for &i in &net.pre[t] {
                if let Some(t_last) = last[i] {
                    for k in net.row_ptr[i]..net.row_ptr[i + 1] {
                        let j = usize::from(net.target[k]);
                        out.push((k, (t_last + 1..t).filter(|&tp| net.post[tp][j] == 1).count()));
                    }
                }
                last[i] = Some(t);
            }
        }
        out
    }

    #[test]
    fn an_overflowing_history_counts_exactly_the_synapses_that_lost_pairings() {
        let rule = strong_rules()[0];
        for history_len in [1, 3, 8] {
            let net = Net::random(11, 20, 15, 300, (0.01, 0.1), 3000, (0.5, 2.0));
            let expected = pending_counts(&net).iter().filter(|(_, n)| *n > history_len).count() as u64;
            let mut lazy = Lazy::<f32>::new(rule, (15.0, 25.0), &net, history_len);
            for t in 0..net.steps() {
                lazy.step(t, &net.pre[t as usize], &net.post[t as usize]);
            }
            assert_eq!(lazy.lost, expected, "history of {history_len}");
            assert!(expected > 0, "history of {history_len}: the test should overflow");
        }
        // A history long enough for every gap loses nothing, and matches the eager reference.
        let net = Net::random(11, 20, 15, 300, (0.01, 0.1), 3000, (0.5, 2.0));
        let longest = pending_counts(&net).iter().map(|(_, n)| *n).max().unwrap();
        let mut lazy = Lazy::<f32>::new(rule, (15.0, 25.0), &net, longest);
        let mut eager = Eager::new(rule, (15.0, 25.0), &net);
        for t in 0..net.steps() {
            lazy.step(t, &net.pre[t as usize], &net.post[t as usize]);
            eager.step(t, &net.pre[t as usize], &net.post[t as usize]);
        }
        assert_eq!(lazy.lost, 0);
        assert!(lazy.ring == eager.ring);
        // With a dendritic delay, a short history loses pairings too, and a long one none.
        let rule = StdpRule { dendritic: true, ..rule };
        let net = Net::random(11, 20, 15, 300, (0.01, 0.1), 3000, (0.5, 2.0)).with_delays(11, 40);
        let run = |history_len| {
            let mut lazy = Lazy::<f32>::new(rule, (15.0, 25.0), &net, history_len);
            for t in 0..net.steps() {
                lazy.step(t, &net.pre[t as usize], &net.post[t as usize]);
            }
            lazy
        };
        assert!(run(3).lost > 0);
        let (lazy, mut eager) = (run(256), Eager::new(rule, (15.0, 25.0), &net));
        for t in 0..net.steps() {
            eager.step(t, &net.pre[t as usize], &net.post[t as usize]);
        }
        assert_eq!(lazy.lost, 0);
        assert!(lazy.ring == eager.ring, "delivered weights differ");
    }

    #[test]
    fn decay_table_matches_exp_and_ends_at_zero() {
        let d = TraceDecay::new(TAU, DT);
        assert_eq!(d.after(0), 1.0);
        assert!(close(d.after(200), (-1.0f64).exp()));
        assert_eq!(d.after(1_000_000), 0.0);
    }
}
