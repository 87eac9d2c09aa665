//! The in-degrees of a `fixed_total_number` projection, drawn for any range of its targets
//! without drawing the rest.
//!
//! NEST's `fixed_total_number` draws each of its `total` synapses' source and target uniformly
//! (multapses allowed; a drawn autapse, where excluded, is drawn again). The number of synapses
//! onto each target is then multinomial(total; 1/targets each), and given its in-degree a
//! target's sources are uniform draws: `fixed_indegree` with that in-degree, which is how the
//! builder draws them (per target, from the target's own connectivity stream).
//!
//! The in-degree vector comes from a fixed binary split tree over the targets: a range
//! `[lo, hi)` holding `k` synapses is cut at `mid = lo + (hi - lo) / 2`, and its left half gets
//! Binomial(k, (mid - lo) / (hi - lo)) of them, the right half the rest; a single target keeps
//! what reaches it. Each split draws from its own stream, keyed by the projection and `mid`
//! (every split of the tree has a different midpoint), so a shard walks down only the splits
//! whose range overlaps its targets: O(log targets + its targets) draws, the same numbers on
//! any shard, thread or rank.

use std::convert::Infallible;
use std::ops::Range;

use fum_kernels::rng::{Key, Purpose, Stream};
use rand_distr::{Binomial, Distribution};

/// The in-degrees of targets `posts` (population-local, within `0..targets`) of projection
/// `projection`, whose `total` synapses fall on `targets` targets, in the order of `posts`.
pub(super) fn indegrees(key: Key, projection: u16, total: u64, targets: u32, posts: Range<u32>) -> Vec<u64> {
    let mut out = vec![0; posts.len()];
    split(key, projection, total, 0..targets, &posts, &mut out);
    out
}

fn split(key: Key, projection: u16, k: u64, range: Range<u32>, posts: &Range<u32>, out: &mut [u64]) {
    if k == 0 || range.end <= posts.start || range.start >= posts.end {
        return;
    }
    if range.len() == 1 {
        out[(range.start - posts.start) as usize] = k;
        return;
    }
    let mid = range.start + (range.end - range.start) / 2;
    let share = f64::from(mid - range.start) / f64::from(range.end - range.start);
    let left = Binomial::new(k, share).expect("a share lies in (0, 1)").sample(&mut Words(&mut key.stream(Purpose::InDegrees, projection, mid)));
    split(key, projection, left, range.start..mid, posts, out);
    split(key, projection, k - left, mid..range.end, posts, out);
}

/// A Philox stream as the uniform source `rand_distr`'s samplers draw from: words in stream
/// order, a `u64` from two of them (low word first).
struct Words<'a>(&'a mut Stream);

impl rand_core::TryRng for Words<'_> {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(self.0.next_u32())
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        rand_core::utils::next_u64_via_u32(self)
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        rand_core::utils::fill_bytes_via_next_word(dst, || self.try_next_u32())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any cut of the targets into ranges gives the in-degrees of the whole, which sum to the
    /// total.
    #[test]
    fn in_degrees_of_any_range_are_those_of_the_whole() {
        let key = Key::from_seed(11);
        for (total, targets) in [(0u64, 5u32), (1, 1), (7, 1), (1, 1000), (12_345, 1000), (3_000_000, 777), (500, 65_537)] {
            let whole = indegrees(key, 3, total, targets, 0..targets);
            assert_eq!(whole.iter().sum::<u64>(), total, "{total} onto {targets}");
            for cuts in [2u32, 3, 7] {
                let mut pieces = Vec::new();
                for c in 0..cuts {
                    let (lo, hi) = (targets * c / cuts, targets * (c + 1) / cuts);
                    pieces.extend(indegrees(key, 3, total, targets, lo..hi));
                }
                assert_eq!(pieces, whole, "{total} onto {targets}, {cuts} pieces");
            }
            for post in [0, targets / 2, targets - 1] {
                assert_eq!(indegrees(key, 3, total, targets, post..post + 1), [whole[post as usize]]);
            }
        }
        assert_ne!(indegrees(key, 3, 12_345, 1000, 0..1000), indegrees(key, 4, 12_345, 1000, 0..1000), "projections draw apart");
    }

    /// Mean total / n and variance total p (1 - p) with p = 1 / n, as a multinomial's, and a
    /// covariance between neighbours of -total p^2 (small against the variance).
    #[test]
    fn in_degrees_are_multinomial() {
        let (total, n) = (2_000_000u64, 10_000u32);
        let d = indegrees(Key::from_seed(5), 0, total, n, 0..n);
        let p = 1.0 / f64::from(n);
        let mean = d.iter().sum::<u64>() as f64 / f64::from(n);
        let var = d.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / f64::from(n - 1);
        let want = total as f64 * p * (1.0 - p);
        assert_eq!(mean, 200.0);
        // The sample variance of 10,000 draws has a relative sd of about sqrt(2 / 10,000).
        assert!((var / want - 1.0).abs() < 5.0 * (2.0 / f64::from(n)).sqrt(), "variance {var}, multinomial {want}");
        // The halves of every split are balanced: the first and second half hold about half each.
        let first: u64 = d[..n as usize / 2].iter().sum();
        assert!((first as f64 - total as f64 / 2.0).abs() < 5.0 * (total as f64 / 4.0).sqrt(), "first half {first}");
    }

    /// Pinned draws: a change of the sampler (rand_distr's Binomial, its floating point) or of
    /// the streams changes every fixed_total_number network, so it must be seen.
    #[test]
    fn in_degrees_are_pinned() {
        // Splits of a million use BTPE, of twenty inversion (BINV).
        assert_eq!(indegrees(Key::from_seed(555), 2, 1_000_000, 8, 0..8), [125275, 125057, 125629, 125795, 124826, 124010, 124424, 124984]);
        assert_eq!(indegrees(Key::from_seed(555), 2, 20, 8, 0..8), [1, 0, 3, 3, 2, 1, 1, 9]);
    }
}
