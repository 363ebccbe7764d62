//! Spectral-signature outliers (Tran et al. 2018) with a cut-off that adapts to the data.
//!
//! The reference implementation removes a fixed 1.5 × (expected poison fraction) of every
//! class, so it flags about a sixth of a clean class. Here each row's centred projection on
//! the class's top principal axis is compared with the projections' median in units of
//! their median absolute deviation (a robust z-score, [`robust_z`]: both stay put while
//! poison is under half the class), and a row is an outlier when it lies beyond the normal quantile
//! `1 − α / (2n)`: with Gaussian clean rows, about `α` false outliers per class whatever
//! its size (a Bonferroni bound), and none forced when there is no poison.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use trojanscan::linalg::SpectralParams;
//!
//! // 200 rows spread along x, 10 of them shifted far along it.
//! let rows: Vec<f32> = (0..200)
//!     .flat_map(|i| {
//!         let base = ((i * 37) % 101) as f32 / 50.0 - 1.0;
//!         let x = if i < 10 { base + 25.0 } else { base };
//!         [x, 0.1 * base]
//!     })
//!     .collect();
//! let x = Tensor::from_vec(rows, (200, 2), &Device::Cpu)?;
//! let s = SpectralParams::new().check()?.fit(&x)?;
//! assert_eq!(s.outliers, (0..10).collect::<Vec<_>>());
//! # Ok::<(), trojanscan::Error>(())
//! ```

use candle_core::Tensor;
use serde::Serialize;

use super::pca::spectral_projection;
use crate::{Error, Result};

/// Checked parameters of the spectral-signature detector; build with
/// [`SpectralParams::new`], then [`SpectralParams::check`].
#[derive(Debug, Clone)]
pub struct SpectralParams {
    alpha: f64,
    seed: u64,
}

/// Parameters that passed [`SpectralParams::check`].
#[derive(Debug, Clone)]
pub struct Spectral(SpectralParams);

/// Spectral-signature scores of one class and the rows beyond the cut-off.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct SpectralOutliers {
    /// `((x − μ)·v)²` per row (centred, as Tran et al. define it).
    pub scores: Vec<f64>,
    /// Robust z-score of each row's projection: distance from the median in units of
    /// 1.4826 × the median absolute deviation.
    pub robust_z: Vec<f64>,
    /// The z beyond which a row is an outlier.
    pub cutoff: f64,
    /// Rows beyond it, ascending.
    pub outliers: Vec<usize>,
}

impl Default for SpectralParams {
    fn default() -> Self {
        Self::new()
    }
}

impl SpectralParams {
    /// Family-wise false-outlier rate 0.05 per class, seed 0.
    pub fn new() -> Self {
        Self {
            alpha: 0.05,
            seed: 0,
        }
    }

    /// Expected false outliers per clean Gaussian class.
    pub fn alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
        self
    }

    /// Seed of the top-axis iteration.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Validate the parameters.
    pub fn check(self) -> Result<Spectral> {
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(Error::InvalidArgument(format!(
                "alpha {} is not in (0, 1)",
                self.alpha
            )));
        }
        Ok(Spectral(self))
    }
}

impl Spectral {
    /// Scores and outliers of the rows of an `[n, d]` tensor (one class).
    pub fn fit(&self, x: &Tensor) -> Result<SpectralOutliers> {
        let p = &self.0;
        let (_, proj) = spectral_projection(x, p.seed)?;
        let scores: Vec<f64> = proj.iter().map(|v| v * v).collect();
        let n = proj.len();
        let robust_z = robust_z(&proj);
        let cutoff = normal_quantile(1.0 - p.alpha / (2.0 * n as f64));
        let outliers = (0..n).filter(|&i| robust_z[i] > cutoff).collect();
        Ok(SpectralOutliers {
            scores,
            robust_z,
            cutoff,
            outliers,
        })
    }
}

/// Each value's distance from the median in robust standard deviations: 1.4826 × the
/// median absolute deviation, or, when more than half the values coincide (MAD 0),
/// 1.2533 × the mean absolute deviation; all 0 when every value is the same.
pub(crate) fn robust_z(v: &[f64]) -> Vec<f64> {
    let med = median(v.to_vec());
    let dev: Vec<f64> = v.iter().map(|x| (x - med).abs()).collect();
    let mut scale = 1.4826 * median(dev.clone());
    if scale <= 0.0 {
        scale = 1.2533 * dev.iter().sum::<f64>() / dev.len().max(1) as f64;
    }
    dev.iter()
        .map(|d| if scale > 0.0 { d / scale } else { 0.0 })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        0.5 * (v[m - 1] + v[m])
    }
}

/// The standard normal quantile (Acklam's rational approximation, relative error below
/// 1.2e-9 on (0, 1)).
pub(crate) fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use candle_core::Device;

    #[test]
    fn normal_quantiles_match_tables() {
        for (p, z) in [
            (0.5, 0.0),
            (0.975, 1.959_963_985),
            (0.999, 3.090_232_306),
            (1.0 - 2.5e-5, 4.055_626_981),
            (0.01, -2.326_347_874),
        ] {
            assert!(
                (normal_quantile(p) - z).abs() < 1e-6,
                "{p}: {}",
                normal_quantile(p)
            );
        }
    }

    fn gaussian(n: usize, d: usize, shifted: usize, shift: f64, seed: u64) -> Tensor {
        let mut rng = Rng::new(seed, "spectral");
        let v: Vec<f32> = (0..n * d)
            .map(|i| {
                let s = if i / d < shifted && i % d == 0 {
                    shift
                } else {
                    0.0
                };
                // Anisotropic noise, so the clean top axis is not the shift's.
                (rng.normal() * (1.0 + (i % d) as f64 * 0.1) + s) as f32
            })
            .collect();
        Tensor::from_vec(v, (n, d), &Device::Cpu).unwrap()
    }

    #[test]
    fn clean_classes_get_no_forced_outliers() {
        for seed in 0..4 {
            let x = gaussian(2000, 16, 0, 0.0, seed);
            let s = SpectralParams::new()
                .seed(seed)
                .check()
                .unwrap()
                .fit(&x)
                .unwrap();
            assert!(s.outliers.len() <= 1, "seed {seed}: {:?}", s.outliers);
            assert_eq!(s.scores.len(), 2000);
        }
    }

    #[test]
    fn a_shifted_minority_is_found() {
        let x = gaussian(2000, 16, 100, 12.0, 7);
        let s = SpectralParams::new().check().unwrap().fit(&x).unwrap();
        let hits = s.outliers.iter().filter(|&&i| i < 100).count();
        assert!(hits >= 95, "{hits} of 100");
        assert!(s.outliers.len() - hits <= 2, "{:?}", s.outliers);
        assert!(SpectralParams::new().alpha(0.0).check().is_err());
    }
}
