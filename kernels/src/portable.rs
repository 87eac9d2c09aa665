//! Elementary functions that give the same bits on every backend.
//!
//! libm's `powf` and CUDA's `powf` are accurate to an ulp or so, but not to the same bits, so a
//! kernel that calls them cannot be bit-identical across the CPU and CUDA backends. The
//! functions here use only IEEE-754 `f64` addition, subtraction, multiplication and division
//! (each correctly rounded, never fused into a multiply-add), `floor`, and exact bit
//! manipulation, in a fixed order; their CUDA twins in `kernels/cuda/fum.cu` (`portable_ln`,
//! `portable_exp`, `portable_pow`) do the same operations with `__dadd_rn`-style intrinsics,
//! so both give the same bits.
//!
//! Accuracy: [`ln`] and [`exp`] are truncated series after an exact argument reduction, each
//! within a few `f64` ulps (truncation error below 3e-17 relative). [`pow`] computes
//! `exp(y ln x)`; the rounding of `ln x` (at most a few ulps of a value up to 745 in magnitude)
//! is multiplied by `y`, so for `x` in the range of `f32` and `0 <= y <= 1` the result is
//! within 1e-13 relative of the exact power (the tests check this against `f64::powf` over
//! the whole `f32` range), and [`powf_weight`], its `f32` rounding, is within half an `f32` ulp
//! plus 1e-13 relative: the correctly rounded `f32` power except where the exact value lies
//! within 1e-13 of a rounding boundary between two `f32`s (about one argument in 10^5; never off
//! by more than one ulp).

/// ln 2 split in two: the high part has 32 significant bits, so `k * LN2_HI` is exact for
/// |k| < 2^21 (fdlibm's split).
const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
/// 1 / ln 2, rounded.
const INV_LN2: f64 = f64::from_bits(0x3ff7_1547_652b_82fe);
/// sqrt(2), rounded.
const SQRT2: f64 = f64::from_bits(0x3ff6_a09e_667f_3bcd);

/// The natural logarithm of a positive, finite, normal `x` (every positive `f32` is one as an
/// `f64`).
///
/// `x = 2^e m` with `m` in [sqrt(1/2), sqrt(2)], taken from the bits; `ln m = 2 atanh(s)` with
/// `s = (m - 1) / (m + 1)`, |s| <= 0.1716, summed as `2 s (1 + s^2/3 + s^4/5 + ... + s^18/19)`:
/// the first term left out is below `s^20 / 21` < 2.3e-17 relative to `ln m`.
pub fn ln(x: f64) -> f64 {
    debug_assert!(x > 0.0 && x.is_finite() && x.is_normal(), "ln({x})");
    let bits = x.to_bits();
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    if m > SQRT2 {
        m *= 0.5;
        e += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let z = s * s;
    let series = 1.0 / 3.0
        + z * (1.0 / 5.0 + z * (1.0 / 7.0 + z * (1.0 / 9.0 + z * (1.0 / 11.0 + z * (1.0 / 13.0 + z * (1.0 / 15.0 + z * (1.0 / 17.0 + z * (1.0 / 19.0))))))));
    let ln_m = 2.0 * (s + s * (z * series));
    let e = e as f64;
    e * LN2_HI + (e * LN2_LO + ln_m)
}

/// e^y for |y| <= 700 (the result is then a normal `f64`).
///
/// `y = k ln 2 + r` with `k` the nearest integer to `y / ln 2` and |r| <= 0.3466 (Cody and
/// Waite's two-part ln 2, so `r` is exact to about 2^-60 absolute); `e^r` by its Taylor series to
/// `r^13 / 13!` (the first term left out, times e^r, is below 6e-18); `2^k` from the bits.
pub fn exp(y: f64) -> f64 {
    debug_assert!(y.abs() <= 700.0, "exp({y})");
    let k = (y * INV_LN2 + 0.5).floor();
    let r = (y - k * LN2_HI) - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (1.0 / 2.0
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0
                            + r * (1.0 / 720.0
                                + r * (1.0 / 5040.0
                                    + r * (1.0 / 40320.0
                                        + r * (1.0 / 362880.0 + r * (1.0 / 3628800.0 + r * (1.0 / 39916800.0 + r * (1.0 / 479001600.0 + r * (1.0 / 6227020800.0)))))))))))));
    p * f64::from_bits(((k as i64 + 1023) as u64) << 52)
}

/// ln 2 in two parts for [`expf`] (Cephes'): the high part has 9 significant bits, so
/// `k * LN2_HI_F32` is exact for every `k` it meets.
const LN2_HI_F32: f32 = 0.693_359_4;
const LN2_LO_F32: f32 = -0.000_212_194_44;

/// e^y in `f32`, within one ulp, for any `y` (clamped to [-87, 88]: the result stays a normal
/// `f32`). Cephes' `expf`: `y = k ln 2 + r` with |r| <= 0.35, a degree-7 polynomial for e^r,
/// and `2^k` from the bits. Branch-free `f32` arithmetic in a fixed order, so loops over it
/// vectorise (libm's `expf` is a call per element) and the GPU twin (`portable_expf` in
/// fum.cu) gives the same bits.
#[inline(always)]
pub fn expf(y: f32) -> f32 {
    let y = y.max(-87.0).min(88.0);
    let k = (y * std::f32::consts::LOG2_E + 0.5).floor();
    let r = (y - k * LN2_HI_F32) - k * LN2_LO_F32;
    let p = ((((0.000_198_756_91 * r + 0.001_398_199_9) * r + 0.008_333_452) * r + 0.041_665_796) * r + 0.166_666_66) * r + 0.5;
    let e_r = (p * (r * r) + r) + 1.0;
    // Adding 1.5 * 2^23 leaves k (|k| <= 126) in the low bits of the mantissa; shifted into
    // the exponent field with the bias, they are 2^k, and the sum's own bits shift out.
    let two_k = f32::from_bits((k + 12_582_912.0).to_bits().wrapping_add(127) << 23);
    e_r * two_k
}

/// x^y for `x >= 0` (`x <= 0` counts as 0: the result is 0, or 1 where `y == 0`) and
/// `|y ln x| <= 700`, as `exp(y ln x)`; see the module's note on accuracy.
pub fn pow(x: f64, y: f64) -> f64 {
    if x <= 0.0 {
        return if y == 0.0 { 1.0 } else { 0.0 };
    }
    exp(y * ln(x))
}

/// `w^mu` for a weight `w >= 0` and an exponent `0 <= mu <= 1` (the power-law STDP rule's):
/// [`pow`] in `f64`, rounded once to `f32`.
#[inline]
pub fn powf_weight(w: f32, mu: f32) -> f32 {
    pow(f64::from(w), f64::from(mu)) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Key, Purpose};

    fn relative_error(a: f64, exact: f64) -> f64 {
        if exact == 0.0 { a.abs() } else { ((a - exact) / exact).abs() }
    }

    /// Weights spread log-uniformly over the positive `f32`s, subnormals included, and
    /// exponents uniform in [0, 1], with the ends.
    fn arguments(n: usize) -> Vec<(f32, f32)> {
        let mut s = Key::from_seed(5).stream(Purpose::Connectivity, 0, 0);
        let mut args: Vec<(f32, f32)> = (0..n).map(|_| ((2.0f64).powf(-149.0 + 276.9 * s.uniform()) as f32, s.uniform() as f32)).collect();
        for w in [f32::MIN_POSITIVE, 1e-45, 1e-30, 0.5, 1.0, 1.0 + f32::EPSILON, 1.5, 2.0, 45.61, 1e6, 3e38, f32::MAX] {
            for mu in [0.0, 1e-7, 0.4, 0.5, 0.9999999, 1.0] {
                args.push((w, mu));
            }
        }
        args
    }

    #[test]
    fn ln_and_exp_agree_with_libm_to_a_few_ulps() {
        let mut s = Key::from_seed(4).stream(Purpose::Connectivity, 0, 0);
        for _ in 0..200_000 {
            let x = (2.0f64).powf(-160.0 + 320.0 * s.uniform());
            assert!(relative_error(ln(x), x.ln()) <= 4e-16 || (ln(x) - x.ln()).abs() <= 4e-16, "ln({x}) = {} vs {}", ln(x), x.ln());
            let y = -700.0 + 1400.0 * s.uniform();
            assert!(relative_error(exp(y), y.exp()) <= 1e-15 * (1.0 + y.abs()), "exp({y}) = {} vs {}", exp(y), y.exp());
            let y = -1.0 + 2.0 * s.uniform();
            assert!(relative_error(exp(y), y.exp()) <= 4e-16, "exp({y}) = {} vs {}", exp(y), y.exp());
        }
        assert_eq!(ln(1.0), 0.0);
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn expf_is_within_one_ulp_of_the_exact_exponential() {
        let ulps = |y: f32| {
            let exact = f64::from(y).exp();
            let got = expf(y);
            let ulp = f64::from(f32::from_bits((exact as f32).to_bits() + 1)) - f64::from(exact as f32);
            (f64::from(got) - exact).abs() / ulp
        };
        let mut s = Key::from_seed(6).stream(Purpose::Connectivity, 0, 0);
        let mut worst: f64 = 0.0;
        // The whole range, then densely where lif_coba's membrane factor lives (-h g / C).
        for _ in 0..200_000 {
            for y in [-87.0 + 175.0 * s.uniform(), -2.0 * s.uniform()] {
                worst = worst.max(ulps(y as f32));
            }
        }
        assert!(worst <= 1.0, "{worst} ulps");
        assert!(worst > 0.0, "the test should see rounding");
        assert_eq!(expf(0.0), 1.0);
        assert_eq!(expf(-1e30), expf(-87.0));
        assert!(expf(-87.0).is_normal() && expf(1e30).is_finite());
    }

    #[test]
    fn pow_is_within_1e_13_of_f64_powf_over_the_f32_range() {
        let mut worst: f64 = 0.0;
        for (w, mu) in arguments(500_000) {
            let (x, y) = (f64::from(w), f64::from(mu));
            let error = relative_error(pow(x, y), x.powf(y));
            worst = worst.max(error);
            assert!(error <= 1e-13, "{w}^{mu}: {} vs {}", pow(x, y), x.powf(y));
        }
        assert!(worst > 0.0, "the test should see rounding");
    }

    #[test]
    fn powf_weight_is_the_rounded_power_but_for_rare_near_ties() {
        let (mut off, mut n) = (0, 0);
        for (w, mu) in arguments(500_000) {
            let exact = f64::from(w).powf(f64::from(mu));
            let rounded = exact as f32;
            let got = powf_weight(w, mu);
            n += 1;
            if got != rounded {
                off += 1;
                assert_eq!(got.to_bits().abs_diff(rounded.to_bits()), 1, "{w}^{mu}: {got} vs {rounded}");
            }
        }
        assert!(off * 10_000 < n, "{off} of {n} powers are not the correctly rounded f32");
    }

    #[test]
    fn exact_cases() {
        for w in [0.0f32, 1e-45, 0.3, 1.0, 7.0, 45.61, f32::MAX] {
            assert_eq!(powf_weight(w, 1.0), w, "{w}^1");
            assert_eq!(powf_weight(w, 0.0), 1.0, "{w}^0");
        }
        assert_eq!(powf_weight(0.0, 0.4), 0.0);
        assert_eq!(powf_weight(-0.0, 0.4), 0.0);
        assert_eq!(powf_weight(4.0, 0.5), 2.0);
        assert_eq!(powf_weight(1.0, 0.4), 1.0);
        assert_eq!(powf_weight(65536.0, 0.25), 16.0);
    }
}
