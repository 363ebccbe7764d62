//! Top singular values of a weight delta by randomized subspace iteration (Halko,
//! Martinsson & Tropp 2011) on candle tensors: every pass over the matrix is one batched
//! matmul with a thin `[n, l]` block; only `l x l` Gram matrices (l ≤ 32) come to the host,
//! where a Jacobi eigensolver orthonormalizes the block and reads off the spectrum. The
//! random start is drawn from a seed, so results are reproducible.

use candle_core::{DType, Device, Tensor};

use crate::rng::Rng;
use crate::Result;

/// Eigenvalues below this fraction of the largest are treated as numerical noise when
/// orthonormalizing a block computed in f32.
const EIG_FLOOR: f64 = 1e-6;

/// Eigen-decomposition of a symmetric `l x l` matrix (row-major) by cyclic Jacobi
/// rotations: eigenvalues and eigenvectors (columns of the returned row-major matrix).
pub(crate) fn sym_eigen(a: &[f64], l: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = vec![0.0; l * l];
    for i in 0..l {
        v[i * l + i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..l)
            .flat_map(|i| (0..l).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * l + j] * a[i * l + j])
            .sum();
        let scale: f64 = (0..l)
            .map(|i| a[i * l + i] * a[i * l + i])
            .sum::<f64>()
            .max(f64::MIN_POSITIVE);
        if off <= 1e-30 * scale {
            break;
        }
        for p in 0..l {
            for q in p + 1..l {
                let apq = a[p * l + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * l + q] - a[p * l + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..l {
                    let akp = a[k * l + p];
                    let akq = a[k * l + q];
                    a[k * l + p] = c * akp - s * akq;
                    a[k * l + q] = s * akp + c * akq;
                }
                for k in 0..l {
                    let apk = a[p * l + k];
                    let aqk = a[q * l + k];
                    a[p * l + k] = c * apk - s * aqk;
                    a[q * l + k] = s * apk + c * aqk;
                }
                for k in 0..l {
                    let vkp = v[k * l + p];
                    let vkq = v[k * l + q];
                    v[k * l + p] = c * vkp - s * vkq;
                    v[k * l + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..l).map(|i| a[i * l + i]).collect(), v)
}

pub(crate) fn gram(y: &Tensor) -> Result<(Vec<f64>, usize)> {
    let l = y.dim(1)?;
    let g = y
        .t()?
        .matmul(y)?
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    Ok((g, l))
}

/// Orthonormalize the columns of `y` `[m, l]`: `Y V Λ^{-1/2}` over the eigenpairs of
/// `YᵀY` above the noise floor. Returns `None` when the block is (numerically) zero.
pub(crate) fn orthonormalize(y: &Tensor) -> Result<Option<Tensor>> {
    let (g, l) = gram(y)?;
    let (vals, vecs) = sym_eigen(&g, l);
    let max = vals.iter().copied().fold(0.0f64, f64::max);
    if max <= 0.0 || !max.is_finite() {
        return Ok(None);
    }
    let keep: Vec<usize> = (0..l).filter(|&i| vals[i] > max * EIG_FLOOR).collect();
    let r = keep.len();
    let mut w = vec![0f32; l * r];
    for (c, &i) in keep.iter().enumerate() {
        let s = 1.0 / vals[i].sqrt();
        for row in 0..l {
            w[row * r + c] = (vecs[row * l + i] * s) as f32;
        }
    }
    let w = Tensor::from_vec(w, (l, r), y.device())?;
    Ok(Some(y.matmul(&w)?))
}

/// The `k` largest singular values of a 2-D f32 tensor, largest first, by randomized
/// subspace iteration with `oversample` extra columns and `power_iters` power steps.
pub(crate) fn top_singular_values(
    a: &Tensor,
    k: usize,
    oversample: usize,
    power_iters: usize,
    seed: u64,
) -> Result<Vec<f64>> {
    let (m, n) = a.dims2()?;
    // Work with the short side as columns: A is [m, n] with n <= m.
    let a = if n > m { a.t()? } else { a.clone() };
    let (_, n) = a.dims2()?;
    let l = (k + oversample).min(n).max(1);
    let mut rng = Rng::new(seed, "svd");
    let omega: Vec<f32> = (0..n * l).map(|_| rng.normal() as f32).collect();
    let omega = Tensor::from_vec(omega, (n, l), &Device::Cpu)?.to_device(a.device())?;
    let Some(mut q) = orthonormalize(&a.matmul(&omega)?)? else {
        return Ok(Vec::new());
    };
    for _ in 0..power_iters {
        let Some(z) = orthonormalize(&a.t()?.matmul(&q)?)? else {
            return Ok(Vec::new());
        };
        let Some(next) = orthonormalize(&a.matmul(&z)?)? else {
            return Ok(Vec::new());
        };
        q = next;
    }
    // B = Qᵀ A is [r, n]; its singular values approximate A's top ones: eig(B Bᵀ).
    let b = q.t()?.matmul(&a)?;
    let (g, r) = gram(&b.t()?)?;
    let (vals, _) = sym_eigen(&g, r);
    let mut sv: Vec<f64> = vals.into_iter().map(|v| v.max(0.0).sqrt()).collect();
    sv.sort_by(|x, y| y.total_cmp(x));
    sv.truncate(k);
    Ok(sv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_diagonalizes() {
        let a = [4.0, 1.0, 0.5, 1.0, 3.0, 0.2, 0.5, 0.2, 1.0];
        let (vals, v) = sym_eigen(&a, 3);
        // A v_i = λ_i v_i
        for i in 0..3 {
            for r in 0..3 {
                let av: f64 = (0..3).map(|c| a[r * 3 + c] * v[c * 3 + i]).sum();
                assert!((av - vals[i] * v[r * 3 + i]).abs() < 1e-10);
            }
        }
    }

    #[test]
    fn recovers_planted_spectrum() {
        // A = U diag(10, 5, 1) Vᵀ plus nothing else: 200 x 60.
        let mut rng = Rng::new(1, "test");
        let (m, n) = (200, 60);
        let mut rows = vec![0f32; m * n];
        for s in [10.0f64, 5.0, 1.0] {
            let u: Vec<f64> = (0..m).map(|_| rng.normal()).collect();
            let v: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
            // Orthogonality is approximate for random vectors; good to ~10% here, so use
            // well-separated values and a loose tolerance below.
            let nu = u.iter().map(|x| x * x).sum::<f64>().sqrt();
            let nv = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            for i in 0..m {
                for j in 0..n {
                    rows[i * n + j] += (s * u[i] / nu * v[j] / nv) as f32;
                }
            }
        }
        let a = Tensor::from_vec(rows, (m, n), &Device::Cpu).unwrap();
        let sv = top_singular_values(&a, 3, 8, 2, 0).unwrap();
        assert_eq!(sv.len(), 3);
        assert!((sv[0] - 10.0).abs() < 1.0, "{sv:?}");
        assert!((sv[1] - 5.0).abs() < 1.0, "{sv:?}");
        // Rank 1 is exact: one nonzero singular value.
        let r1 = Tensor::from_vec(
            (0..m * n)
                .map(|i| ((i / n) as f32 + 1.0) * ((i % n) as f32 - 3.0))
                .collect::<Vec<_>>(),
            (m, n),
            &Device::Cpu,
        )
        .unwrap();
        let fro = r1
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .sqrt() as f64;
        let sv = top_singular_values(&r1, 4, 8, 2, 0).unwrap();
        assert!((sv[0] - fro).abs() / fro < 1e-4, "{sv:?} vs {fro}");
        assert!(sv.len() < 2 || sv[1] < 1e-2 * fro, "{sv:?}");
        // Transposed input gives the same values.
        let svt = top_singular_values(&a.t().unwrap(), 3, 8, 2, 0).unwrap();
        assert!((svt[0] - top_singular_values(&a, 3, 8, 2, 0).unwrap()[0]).abs() < 1e-3);
    }
}
