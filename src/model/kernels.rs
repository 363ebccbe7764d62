//! Element-wise activation kernels for the CPU fast path.
//!
//! candle's CPU `gelu_erf` and `silu` call scalar libm `erf`/`exp` per element (~20 ns), which
//! made GELU alone a fifth of a MiniLM forward pass. These kernels use the same
//! approximations PyTorch's vectorised CPU kernels use (Abramowitz–Stegun 7.1.26 for erf,
//! max abs error 1.5e-7; a Cephes-style polynomial for exp), written branch-free so the
//! compiler vectorises them, compiled for AVX2+FMA with runtime detection, and split across
//! threads with rayon. On CUDA, or for other dtypes, candle's own ops run instead, so the same
//! call works on every device. None of these has a backward pass: `Mode::Differentiable`
//! uses candle's primitive ops.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Elements per rayon task: large enough to amortise scheduling.
const CHUNK: usize = 1 << 14;

#[inline(always)]
fn exp_fast(y: f32) -> f32 {
    // exp(y) = 2^n * exp(r), |r| <= ln2/2, clamped to the normal f32 range.
    let y = y.clamp(-87.3, 88.0);
    let v = y * std::f32::consts::LOG2_E;
    // Round to nearest by the 1.5 * 2^23 trick (vectorises on every x86 level).
    let n = (v + 12_582_912.0) - 12_582_912.0;
    let r = y - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[inline(always)]
fn gelu_erf1(x: f32) -> f32 {
    // 1 - erf(|z|) = poly(t) * exp(-z^2), t = 1 / (1 + p|z|): no cancellation for x < 0.
    let z = (x * std::f32::consts::FRAC_1_SQRT_2).abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152 + t * 1.061_405_4))));
    let r = poly * exp_fast(-z * z);
    if x >= 0.0 {
        0.5 * x * (2.0 - r)
    } else {
        0.5 * x * r
    }
}

#[inline(always)]
fn silu_mul1(g: f32, u: f32) -> f32 {
    g / (1.0 + exp_fast(-g)) * u
}

macro_rules! multiversion {
    ($name:ident, $body:ident, ($($arg:ident: $ty:ty),*)) => {
        fn $name(dst: &mut [f32], $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2(dst: &mut [f32], $($arg: $ty),*) {
                    $body(dst, $($arg),*)
                }
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU supports the features `avx2` was compiled for.
                    return unsafe { avx2(dst, $($arg),*) };
                }
            }
            $body(dst, $($arg),*)
        }
    };
}

#[inline(always)]
fn gelu_body(dst: &mut [f32], src: &[f32]) {
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = gelu_erf1(x);
    }
}

#[inline(always)]
fn silu_mul_body(dst: &mut [f32], g: &[f32], u: &[f32]) {
    for ((d, &a), &b) in dst.iter_mut().zip(g).zip(u) {
        *d = silu_mul1(a, b);
    }
}

multiversion!(gelu_slice, gelu_body, (src: &[f32]));
multiversion!(silu_mul_slice, silu_mul_body, (g: &[f32], u: &[f32]));

fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("kernel input must be contiguous"),
    }
}

struct GeluErf;

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "trojanscan-gelu-erf"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = contiguous_f32(s, l)?;
        let mut dst = vec![0f32; src.len()];
        dst.par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            .for_each(|(d, s)| gelu_slice(d, s));
        Ok((CpuStorage::F32(dst), l.shape().clone()))
    }
}

struct SiluMul;

impl CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "trojanscan-silu-mul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            candle_core::bail!(
                "silu_mul: shapes {:?} and {:?} differ",
                l1.shape(),
                l2.shape()
            );
        }
        let (g, u) = (contiguous_f32(s1, l1)?, contiguous_f32(s2, l2)?);
        let mut dst = vec![0f32; g.len()];
        dst.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)))
            .for_each(|(d, (g, u))| silu_mul_slice(d, g, u));
        Ok((CpuStorage::F32(dst), l1.shape().clone()))
    }
}

fn cpu_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

/// GELU with exact-erf semantics (`hidden_act = "gelu"`).
pub(crate) fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if cpu_f32(x) {
        x.contiguous()?.apply_op1_no_bwd(&GeluErf)
    } else {
        x.gelu_erf()
    }
}

/// `silu(gate) * up`, the LLaMA feed-forward gate, in one pass.
pub(crate) fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if cpu_f32(gate) && cpu_f32(up) {
        gate.contiguous()?
            .apply_op2_no_bwd(&up.contiguous()?, &SiluMul)
    } else {
        gate.silu()? * up
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// |got - want| <= tol·|want| + abs_per_x·|x|: the erf approximation's error is absolute
    /// (1.5e-7), so in GELU's negative tail it is bounded by 0.5·|x|·1.5e-7, not relatively.
    fn check(x: &Tensor, got: &Tensor, want: &Tensor, tol: f32, abs_per_x: f32) {
        let x: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
        let want: Vec<f32> = want.flatten_all().unwrap().to_vec1().unwrap();
        for ((g, w), x) in got.iter().zip(&want).zip(&x) {
            assert!(
                (g - w).abs() <= tol * w.abs() + abs_per_x * x.abs() + 1e-30,
                "x={x}: {g} vs {w}"
            );
        }
    }

    #[test]
    fn kernels_match_candle_reference_ops() {
        // A sweep well past both tails, plus odd lengths for the chunking.
        let v: Vec<f32> = (0..100_003).map(|i| (i as f32 - 50_000.0) * 4e-4).collect();
        let x = Tensor::from_vec(v, 100_003, &Device::Cpu).unwrap();
        check(
            &x,
            &gelu_erf(&x).unwrap(),
            &x.gelu_erf().unwrap(),
            2e-6,
            1e-7,
        );
        let u = (x.sin().unwrap() * 3.0).unwrap();
        check(
            &x,
            &silu_mul(&x, &u).unwrap(),
            &(x.silu().unwrap() * &u).unwrap(),
            2e-6,
            0.0,
        );
    }

    #[test]
    fn exp_fast_is_accurate_and_saturates() {
        for i in -2000..=2000 {
            let y = i as f32 * 0.04;
            let (g, w) = (exp_fast(y), y.exp());
            assert!((g - w).abs() / w < 3e-7, "exp({y}) = {g}, want {w}");
        }
        assert!(exp_fast(-1000.0) >= 0.0 && exp_fast(-1000.0) < 1e-37);
        assert!(exp_fast(1000.0).is_finite());
    }
}
