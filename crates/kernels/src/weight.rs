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
    #[inline]
    fn get(self) -> f32 {
        self.to_f32()
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
