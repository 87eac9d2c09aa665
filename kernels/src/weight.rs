//! How a synaptic weight is stored: `f32`, or `f16` to halve the weight column.
//!
//! Arithmetic is always `f32`: a kernel reads a stored weight with [`Weight::get`], computes,
//! and rounds once with [`Weight::set`] when it stores the result. `f16` rounds to nearest,
//! ties to even (`half::f16::from_f32`, CUDA's `__float2half_rn`), so both backends store the
//! same bits.

/// A stored weight.
pub trait Weight: bytemuck::Pod + Send + Sync {
    /// The stored weight as `f32` (exact).
    fn get(self) -> f32;
    /// `w` rounded to the stored type.
    fn set(w: f32) -> Self;
}

impl Weight for f32 {
    #[inline]
    fn get(self) -> f32 {
        self
    }
    #[inline]
    fn set(w: f32) -> Self {
        w
    }
}

impl Weight for half::f16 {
    /// Exact, and branch-free so that row loops vectorise (`half`'s own conversion checks for
    /// F16C at run time on every call): the magnitude bits shifted into an f32 and scaled by
    /// 2^112 (the difference of the exponent biases; exact for normal and subnormal values),
    /// infinities and NaNs given the f32 all-ones exponent, then the sign.
    #[inline]
    fn get(self) -> f32 {
        let h = u32::from(self.to_bits());
        let scaled = f32::from_bits((h & 0x7fff) << 13) * f32::from_bits(0x7780_0000);
        let magnitude = if h & 0x7c00 == 0x7c00 { 0x7f80_0000 | ((h & 0x03ff) << 13) } else { scaled.to_bits() };
        f32::from_bits(magnitude | ((h & 0x8000) << 16))
    }
    #[inline]
    fn set(w: f32) -> Self {
        half::f16::from_f32(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    #[test]
    fn f16_reads_exactly_as_half_converts() {
        for bits in 0..=u16::MAX {
            let h = f16::from_bits(bits);
            let (ours, theirs) = (h.get(), h.to_f32());
            if theirs.is_nan() {
                assert!(ours.is_nan(), "{bits:#06x}");
            } else {
                assert_eq!(ours.to_bits(), theirs.to_bits(), "{bits:#06x}");
            }
        }
    }

    #[test]
    fn f16_rounds_to_nearest_even() {
        // 2049 lies halfway between the f16 neighbours 2048 and 2050: ties go to the even one.
        assert_eq!(f16::set(2049.0).get(), 2048.0);
        assert_eq!(f16::set(2051.0).get(), 2052.0);
        assert_eq!(f16::set(0.1).get(), 0.099975586);
        assert_eq!(f16::set(1e6).get(), f32::INFINITY);
        for w in [0.0f32, 1.0, 16.2, 32.4, 87.8, 1000.0] {
            assert_eq!(f16::set(f16::set(w).get()), f16::set(w), "{w}");
            assert_eq!(f32::set(w).get(), w);
        }
    }
}
