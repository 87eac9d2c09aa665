//! Delayed synaptic delivery into per-neuron ring buffers, accumulated in fixed point.
//!
//! Strategy ("presynaptic row, owner computes"): every shard holds the synapses *into* its
//! neurons as CSR rows keyed by presynaptic neuron; for each spike it walks that neuron's row and
//! adds the weight into the ring-buffer slot `(step + delay) mod slots` of the target. Adds are
//! integer (fixed point, 2^-24 of the weight unit), so the sum does not depend on the order in
//! which spikes, rows or shards are processed: the same spikes for any thread or shard count.
//!
//! A synapse is a shard-local target ([`Target`]: `u16` in shards of at most
//! [`NARROW_SHARD_NEURONS`], `u32` in larger ones), a weight (`f32` or `f16`, see
//! [`crate::weight`]) and, only where a projection's delays are drawn per synapse, a `u16`
//! delay: 6 bytes (4 with `f16` weights) with narrow targets, 2 more with wide ones, 2 more with
//! per-synapse delays.

use crate::weight::Weight;

/// Largest shard with 2-byte (`u16`) targets. Larger shards store 4-byte targets: 2 bytes a
/// synapse more, but a spike then walks one row per projection and shard instead of one per
/// 65,536 target neurons (what a GPU pays for most; a CPU thread keeps a smaller shard's ring in
/// its cache).
pub const NARROW_SHARD_NEURONS: usize = 65_536;
/// Largest number of neurons a shard can hold: the CUDA delivery packs a target (22 bits) and a
/// delay ([`MAX_DELAY_STEPS`], 10 bits) into one register.
pub const MAX_SHARD_NEURONS: usize = 1 << 22;
/// Largest synaptic delay in steps (102.3 ms at dt = 0.1 ms).
pub const MAX_DELAY_STEPS: u32 = 1023;

/// Fixed-point scale: 2^24 units per pA (or nS).
pub const FIXED_SCALE: f64 = (1u64 << 24) as f64;

/// The 2^52 + 2^51 "magic number": adding it to an f64 below 2^51 in magnitude rounds the
/// value to an integer (ties to even, the default rounding mode) in the low mantissa bits.
const MAGIC: f64 = 6_755_399_441_055_744.0;

/// A weight in fixed point: `weight * 2^24` rounded to the nearest integer, ties to even
/// (CUDA: `__double2ll_rn`). The product with a power of two is exact; rounding is the only
/// step, done with the magic number because `f64::round` is a libm call on baseline x86-64.
/// Exact for weights below 2^27 (1.3e8 pA).
#[inline]
pub fn to_fixed(weight: f32) -> i64 {
    ((f64::from(weight) * FIXED_SCALE + MAGIC).to_bits() as i64).wrapping_sub(MAGIC.to_bits() as i64)
}

/// An accumulated fixed-point input back in the weight unit.
///
/// The integer is converted to f64 with the 2^52 + 2^51 "magic number" (exact for
/// |sum| < 2^51, i.e. up to 1.3e8 pA arriving at one neuron in one step) because, unlike
/// `as f64`, it vectorises without AVX-512; scaling by 2^-24 is exact.
#[inline]
pub fn from_fixed(sum: i64) -> f32 {
    let exact = f64::from_bits((sum.wrapping_add(MAGIC.to_bits() as i64)) as u64) - MAGIC;
    (exact * (1.0 / FIXED_SCALE)) as f32
}

/// The delays of one row of synapses, in steps.
#[derive(Clone, Copy, Debug)]
pub enum RowDelays<'a> {
    /// One delay for every synapse (a projection with a constant delay stores no per-synapse
    /// delay).
    Constant(u16),
    /// One delay per synapse, parallel to the row's targets.
    PerSynapse(&'a [u16]),
}

/// The ring buffers of one receptor for a shard's neurons, over its ring column: `slots` rows of
/// `neurons` fixed-point sums, slot-major so that the slot read by the neuron update is one
/// contiguous slice. `slots` is a power of two larger than the longest delay ([`ring_slots`]).
#[derive(Debug)]
pub struct Ring<'a> {
    pub neurons: usize,
    pub slots: usize,
    pub sums: &'a mut [i64],
}

/// Slots of a ring whose longest delay is `max_delay_steps`.
pub fn ring_slots(max_delay_steps: u32) -> usize {
    (max_delay_steps as usize + 1).next_power_of_two()
}

impl<'a> Ring<'a> {
    /// The ring of `neurons` neurons over `sums` (`slots * neurons` sums).
    pub fn new(neurons: usize, sums: &'a mut [i64]) -> Self {
        let slots = sums.len().checked_div(neurons).unwrap_or(1);
        debug_assert!(slots.is_power_of_two() && slots * neurons == sums.len(), "a ring is a power of two of slots");
        Ring { neurons, slots, sums }
    }

    /// The slot that step `step` reads.
    #[inline]
    pub fn slot(&self, step: u64) -> std::ops::Range<usize> {
        let s = (step as usize) & (self.slots - 1);
        s * self.neurons..(s + 1) * self.neurons
    }

    /// Adds `weight` to the input of `target` arriving `delay_steps` after `step`.
    #[inline]
    pub fn add(&mut self, step: u64, delay_steps: u32, target: usize, weight: f32) {
        let slot = (step as usize + delay_steps as usize) & (self.slots - 1);
        self.sums[slot * self.neurons + target] += to_fixed(weight);
    }
}

/// A synapse's shard-local target index as stored: `u16` or `u32` (see [`NARROW_SHARD_NEURONS`]).
pub trait Target: bytemuck::Pod + Send + Sync {
    fn index(self) -> usize;
}

impl Target for u16 {
    #[inline(always)]
    fn index(self) -> usize {
        usize::from(self)
    }
}

impl Target for u32 {
    #[inline(always)]
    fn index(self) -> usize {
        self as usize
    }
}

/// Delivers one presynaptic spike emitted at `step` through its row of static synapses.
#[inline]
pub fn deliver_row<T: Target, W: Weight>(ring: &mut Ring<'_>, step: u64, target: &[T], delay: RowDelays<'_>, weight: &[W]) {
    match delay {
        RowDelays::Constant(d) => {
            for (&t, &w) in target.iter().zip(weight) {
                ring.add(step, u32::from(d), t.index(), w.get());
            }
        }
        RowDelays::PerSynapse(delays) => {
            for ((&t, &d), &w) in target.iter().zip(delays).zip(weight) {
                ring.add(step, u32::from(d), t.index(), w.get());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spike_arrives_exactly_delay_steps_later_with_its_weight() {
        let mut sums = vec![0; ring_slots(15) * 4];
        let mut ring = Ring::new(4, &mut sums);
        assert_eq!(ring.slots, 16);
        let (target, delay) = ([1u16, 3, 1], [1u16, 7, 15]);
        let weight = [0.5f32, -2.25, 100.125];
        deliver_row(&mut ring, 10, &target, RowDelays::PerSynapse(&delay), &weight);
        for step in 10..40u64 {
            let slot = ring.slot(step);
            let arrived: Vec<f32> = ring.sums[slot.clone()].iter().map(|&s| from_fixed(s)).collect();
            let expected = match step {
                11 => vec![0.0, 0.5, 0.0, 0.0],
                17 => vec![0.0, 0.0, 0.0, -2.25],
                25 => vec![0.0, 100.125, 0.0, 0.0],
                _ => vec![0.0; 4],
            };
            assert_eq!(arrived, expected, "step {step}");
            ring.sums[slot].fill(0); // the neuron update consumes the slot
        }
    }

    #[test]
    fn accumulation_is_order_independent() {
        let weights: Vec<f32> = (0..1000).map(|i| ((i * 7919) % 1000) as f32 * 0.0137 - 3.1).collect();
        let forward: i64 = weights.iter().map(|&w| to_fixed(w)).sum();
        let backward: i64 = weights.iter().rev().map(|&w| to_fixed(w)).sum();
        assert_eq!(forward, backward);
        let exact: f64 = weights.iter().map(|&w| f64::from(w)).sum();
        assert!((f64::from(from_fixed(forward)) - exact).abs() < 1e-3);
    }

    #[test]
    fn to_fixed_rounds_to_nearest_even() {
        for w in [0.0f32, 1.0, -1.0, 0.1, -0.1, 123.456, -98765.4, 1e-7, 3.0e7] {
            assert_eq!(to_fixed(w), (f64::from(w) * FIXED_SCALE).round_ties_even() as i64, "{w}");
        }
        // A tie: 2^-25 is half a fixed-point unit.
        assert_eq!(to_fixed(2f32.powi(-25)), 0);
        assert_eq!(to_fixed(3.0 * 2f32.powi(-25)), 2);
    }

    #[test]
    fn from_fixed_equals_the_plain_conversion() {
        for x in [0i64, 1, -1, 12345678901, -98765432109, (1 << 51) - 1, -(1 << 51) + 1] {
            assert_eq!(from_fixed(x), (x as f64 / FIXED_SCALE) as f32, "{x}");
        }
    }

    #[test]
    fn constant_delays_f16_weights_and_wide_targets_deliver_like_their_per_synapse_twin() {
        const N: usize = NARROW_SHARD_NEURONS;
        let target = [0u16, 2, 2, u16::MAX];
        let wide: Vec<u32> = target.iter().map(|&t| u32::from(t)).collect();
        let weight = [1.5f32, 0.1, 16.2, 3.0];
        let weight16: Vec<half::f16> = weight.iter().map(|&w| half::f16::set(w)).collect();
        let (mut sums_a, mut sums_b, mut sums_c) = (vec![0; ring_slots(15) * N], vec![0; ring_slots(15) * N], vec![0; ring_slots(15) * N]);
        let (mut a, mut b, mut c) = (Ring::new(N, &mut sums_a), Ring::new(N, &mut sums_b), Ring::new(N, &mut sums_c));
        deliver_row(&mut a, 3, &target, RowDelays::Constant(5), &weight16);
        let rounded: Vec<f32> = weight16.iter().map(|w| w.get()).collect();
        deliver_row(&mut b, 3, &target, RowDelays::PerSynapse(&[5; 4]), &rounded);
        deliver_row(&mut c, 3, &wide, RowDelays::Constant(5), &weight16);
        assert!(a.sums[..] == b.sums[..] && a.sums[..] == c.sums[..]);
        let slot = a.slot(8);
        assert_eq!(from_fixed(a.sums[slot.start + N - 1]), 3.0);
        assert_eq!(from_fixed(a.sums[slot.start + 2]), half::f16::set(0.1).get() + half::f16::set(16.2).get());
    }
}
