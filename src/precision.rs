//! The float type a loss is computed in: float32 (mirrors the GPU) or float64 (the notebook).

use crate::math;
use crate::model::Activation;
use std::fmt::Debug;
use std::ops::{Add, Div, Mul, Sub};

/// Which float type the forward pass and loss use. Parameters are always stored as float32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    /// float32 everywhere, bit-for-bit the GPU's arithmetic.
    #[default]
    F32,
    /// float64 forward pass, loss and gradient with float32 parameter storage, as the book's NumPy
    /// notebook computes (its inputs are integer arrays, so NumPy promotes to float64).
    F64,
}

/// A float type the CPU evaluator and the trainer can compute losses in.
pub trait Real:
    Copy
    + Debug
    + PartialOrd
    + Send
    + Sync
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
{
    /// Additive identity.
    const ZERO: Self;
    /// Significand bits, the implicit one included (24 for float32, 53 for float64): the unit
    /// roundoff is `2^-MANTISSA_DIGITS`.
    const MANTISSA_DIGITS: u32;
    /// Widens (or keeps) a float32 parameter.
    fn from_f32(v: f32) -> Self;
    /// Converts a hyperparameter given as float64 (rounds to nearest for float32).
    fn from_f64(v: f64) -> Self;
    /// Rounds to float32 storage.
    fn to_f32(self) -> f32;
    /// Widens to float64 for reporting.
    fn to_f64(self) -> f64;
    /// Applies an activation: the twinned polynomials for float32, the platform libm for float64.
    fn activate(self, a: Activation) -> Self;
    /// Mean of `count` squared errors whose sum is `total`. float32 multiplies by the host-rounded
    /// reciprocal [`inv_count`] exactly as the shader does; float64 divides, as NumPy's `mean`.
    fn mean(total: Self, count: usize) -> Self;
    /// True unless NaN or infinite.
    fn is_finite(self) -> bool;
    /// Square root, correctly rounded (IEEE 754) in this type.
    fn sqrt(self) -> Self;
    /// `e^x`: [`math::exp_f32`] for float32 (the shader's twin), the platform libm for float64.
    fn exp_real(self) -> Self;
    /// Natural log: [`math::ln_f32`] for float32 (the shader's twin), the platform libm for
    /// float64.
    fn ln_real(self) -> Self;
}

/// Lanes of every loss reduction: lane t adds samples t, t + 256, …, then the lanes are summed
/// pairwise. The order the CPU reference and the reduce kernels (`REDUCE_LANES` in
/// `shaders/common.wgsl`, the `reduce_losses` workgroup size) share.
pub const REDUCE_LANES: usize = 256;

/// `1 / count` rounded to float32: the factor both the shader and the float32 reference use for the
/// mean (GPU division is not required to be correctly rounded; a shared factor is).
#[inline]
pub fn inv_count(count: usize) -> f32 {
    (1.0f64 / count as f64) as f32
}

impl Real for f32 {
    const ZERO: f32 = 0.0;
    const MANTISSA_DIGITS: u32 = f32::MANTISSA_DIGITS;
    #[inline]
    fn from_f32(v: f32) -> f32 {
        v
    }
    #[inline]
    fn from_f64(v: f64) -> f32 {
        v as f32
    }
    #[inline]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline]
    fn activate(self, a: Activation) -> f32 {
        match a {
            Activation::Identity => self,
            Activation::Sigmoid => math::sigmoid_f32(self),
            Activation::Tanh => math::tanh_f32(self),
            Activation::Relu => math::relu_f32(self),
        }
    }
    #[inline]
    fn mean(total: f32, count: usize) -> f32 {
        total * inv_count(count)
    }
    #[inline]
    fn is_finite(self) -> bool {
        f32::is_finite(self)
    }
    #[inline]
    fn sqrt(self) -> f32 {
        f32::sqrt(self)
    }
    #[inline]
    fn exp_real(self) -> f32 {
        math::exp_f32(self)
    }
    #[inline]
    fn ln_real(self) -> f32 {
        math::ln_f32(self)
    }
}

impl Real for f64 {
    const ZERO: f64 = 0.0;
    const MANTISSA_DIGITS: u32 = f64::MANTISSA_DIGITS;
    #[inline]
    fn from_f32(v: f32) -> f64 {
        v as f64
    }
    #[inline]
    fn from_f64(v: f64) -> f64 {
        v
    }
    #[inline]
    fn to_f32(self) -> f32 {
        self as f32
    }
    #[inline]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline]
    fn activate(self, a: Activation) -> f64 {
        match a {
            Activation::Identity => self,
            Activation::Sigmoid => 1.0 / (1.0 + (-self).exp()),
            Activation::Tanh => self.tanh(),
            Activation::Relu => {
                if self > 0.0 {
                    self
                } else {
                    0.0
                }
            }
        }
    }
    #[inline]
    fn mean(total: f64, count: usize) -> f64 {
        total / count as f64
    }
    #[inline]
    fn is_finite(self) -> bool {
        f64::is_finite(self)
    }
    #[inline]
    fn sqrt(self) -> f64 {
        f64::sqrt(self)
    }
    #[inline]
    fn exp_real(self) -> f64 {
        self.exp()
    }
    #[inline]
    fn ln_real(self) -> f64 {
        self.ln()
    }
}
