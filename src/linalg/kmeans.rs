//! k-means on candle tensors: k-means++ seeding, Lloyd iterations whose distances are one
//! matmul (`‖x‖² − 2·X·Cᵀ + ‖c‖²`) and whose centre update is another (one-hot `ᵀ` · X),
//! several seeded restarts, the lowest inertia kept. Everything over the `n` rows runs
//! on the data's device; only `k`-sized vectors (cluster counts, the seeding
//! distribution's draws) come to the host.

use candle_core::{DType, Tensor};

use super::{column_sums, shifted_sum_squares};
use crate::rng::Rng;
use crate::{Error, Result};

/// Checked parameters of k-means; build with [`KMeansParams::new`], then
/// [`KMeansParams::check`].
#[derive(Debug, Clone)]
pub struct KMeansParams {
    k: usize,
    restarts: usize,
    max_iterations: usize,
    tolerance: f64,
    seed: u64,
}

/// Parameters that passed [`KMeansParams::check`].
#[derive(Debug, Clone)]
pub struct KMeans(KMeansParams);

/// A fitted clustering.
#[derive(Debug, Clone)]
pub struct KMeansFit {
    /// Cluster centres, `[k, d]`.
    pub centroids: Tensor,
    /// Cluster of each row.
    pub labels: Vec<u32>,
    /// Rows per cluster.
    pub sizes: Vec<usize>,
    /// Sum of squared distances of the rows to their centre.
    pub inertia: f64,
    /// Lloyd iterations of the kept restart.
    pub iterations: usize,
}

impl KMeansParams {
    /// `k` clusters; by default 4 restarts, at most 300 iterations, tolerance 1e-4
    /// (relative to the data's mean variance, as scikit-learn measures it), seed 0.
    pub fn new(k: usize) -> Self {
        Self {
            k,
            restarts: 4,
            max_iterations: 300,
            tolerance: 1e-4,
            seed: 0,
        }
    }

    /// Independent k-means++ starts; the lowest inertia wins.
    pub fn restarts(mut self, n: usize) -> Self {
        self.restarts = n;
        self
    }

    /// Lloyd iterations per start at most.
    pub fn max_iterations(mut self, n: usize) -> Self {
        self.max_iterations = n;
        self
    }

    /// Stop when the centres move less than this (squared, relative to the mean variance).
    pub fn tolerance(mut self, t: f64) -> Self {
        self.tolerance = t;
        self
    }

    /// Seed of the k-means++ draws.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Validate the parameters.
    pub fn check(self) -> Result<KMeans> {
        if self.k == 0 {
            return Err(Error::InvalidArgument("k-means needs k >= 1".into()));
        }
        if self.restarts == 0 || self.max_iterations == 0 {
            return Err(Error::InvalidArgument(
                "k-means needs at least one restart and one iteration".into(),
            ));
        }
        if !(self.tolerance.is_finite() && self.tolerance >= 0.0) {
            return Err(Error::InvalidArgument(format!(
                "k-means tolerance {} is not a non-negative number",
                self.tolerance
            )));
        }
        Ok(KMeans(self))
    }
}

/// Squared distances `[n, k]` of rows to centres, clamped at 0 (rounding).
pub(super) fn sq_distances(x: &Tensor, x2: &Tensor, c: &Tensor) -> Result<Tensor> {
    let c2 = c.sqr()?.sum_keepdim(1)?.t()?; // [1, k]
    let xc = x.matmul(&c.t()?)?; // [n, k]
    Ok(x2.broadcast_add(&c2)?.sub(&(xc * 2.0)?)?.relu()?)
}

impl KMeans {
    /// Cluster the rows of an `[n, d]` tensor (computed in f32 on its device).
    pub fn fit(&self, x: &Tensor) -> Result<KMeansFit> {
        let p = &self.0;
        let (n, d) = x.dims2()?;
        if n < p.k {
            return Err(Error::InvalidArgument(format!(
                "{n} rows cannot make {} clusters",
                p.k
            )));
        }
        if d == 0 {
            return Err(Error::InvalidArgument("k-means on 0 columns".into()));
        }
        let x = x.to_dtype(DType::F32)?.contiguous()?;
        let x2 = x.sqr()?.sum_keepdim(1)?; // [n, 1]
        let mean = (column_sums(&x)? / n as f64)?;
        let var = shifted_sum_squares(&x, &mean)? / (n * d) as f64;
        let tol = p.tolerance * var;
        let mut rng = Rng::new(p.seed, "kmeans");
        let mut best: Option<KMeansFit> = None;
        for _ in 0..p.restarts {
            let c = self.seed_centres(&x, &x2, &mut rng)?;
            let fit = self.lloyd(&x, &x2, c, tol)?;
            if best.as_ref().is_none_or(|b| fit.inertia < b.inertia) {
                best = Some(fit);
            }
        }
        Ok(best.expect("at least one restart"))
    }

    /// k-means++ (greedy, as scikit-learn: `2 + ln k` trials per centre, the one that
    /// lowers the potential most kept).
    fn seed_centres(&self, x: &Tensor, x2: &Tensor, rng: &mut Rng) -> Result<Tensor> {
        let k = self.0.k;
        let n = x.dim(0)?;
        let trials = 2 + (k as f64).ln() as usize;
        let first = rng.below(n);
        let mut chosen = vec![first];
        let mut closest = sq_distances(x, x2, &x.narrow(0, first, 1)?)?.squeeze(1)?; // [n]
        while chosen.len() < k {
            let d2 = closest.to_dtype(DType::F64)?.to_vec1::<f64>()?;
            let total: f64 = d2.iter().sum();
            let cands: Vec<u32> = (0..trials)
                .map(|_| {
                    if total <= 0.0 {
                        return rng.below(n) as u32;
                    }
                    let mut t = rng.uniform() * total;
                    for (i, v) in d2.iter().enumerate() {
                        t -= v;
                        if t <= 0.0 {
                            return i as u32;
                        }
                    }
                    (n - 1) as u32
                })
                .collect();
            let idx = Tensor::new(cands.as_slice(), x.device())?;
            let cand = x.index_select(&idx, 0)?; // [t, d]
                                                 // For each trial: the potential if it joined the centres.
            let merged = sq_distances(x, x2, &cand)?.broadcast_minimum(&closest.unsqueeze(1)?)?;
            let pot = column_sums(&merged)?
                .squeeze(0)?
                .to_dtype(DType::F64)?
                .to_vec1::<f64>()?;
            let bi = (0..pot.len())
                .min_by(|&a, &b| pot[a].total_cmp(&pot[b]))
                .unwrap_or(0);
            chosen.push(cands[bi] as usize);
            closest = merged.narrow(1, bi, 1)?.squeeze(1)?;
        }
        let idx: Vec<u32> = chosen.iter().map(|&i| i as u32).collect();
        Ok(x.index_select(&Tensor::new(idx.as_slice(), x.device())?, 0)?)
    }

    fn lloyd(&self, x: &Tensor, x2: &Tensor, mut c: Tensor, tol: f64) -> Result<KMeansFit> {
        let k = self.0.k;
        let dev = x.device();
        let ks = Tensor::arange(0u32, k as u32, dev)?.unsqueeze(0)?; // [1, k]
        let mut iterations = 0;
        for _ in 0..self.0.max_iterations {
            iterations += 1;
            let d2 = sq_distances(x, x2, &c)?;
            let labels = d2.argmin_keepdim(1)?; // [n, 1]
            let onehot = labels.broadcast_eq(&ks)?.to_dtype(DType::F32)?; // [n, k]
            let counts = column_sums(&onehot)?.squeeze(0)?; // [k]
            let sums = onehot.t()?.matmul(x)?; // [k, d]
            let cnt = counts.to_vec1::<f32>()?;
            let next = if cnt.iter().all(|&v| v > 0.0) {
                sums.broadcast_div(&counts.unsqueeze(1)?)?
            } else {
                // An empty cluster takes the row farthest from its centre.
                let far = d2
                    .min_keepdim(1)?
                    .squeeze(1)?
                    .argmax(0)?
                    .to_scalar::<u32>()?;
                let mut rows = Vec::with_capacity(k);
                for (j, &v) in cnt.iter().enumerate() {
                    rows.push(if v > 0.0 {
                        (sums.narrow(0, j, 1)? / f64::from(v))?
                    } else {
                        x.narrow(0, far as usize, 1)?
                    });
                }
                Tensor::cat(&rows, 0)?
            };
            let shift = f64::from((&next - &c)?.sqr()?.sum_all()?.to_scalar::<f32>()?);
            c = next;
            if shift <= tol {
                break;
            }
        }
        // Final assignment against the final centres.
        let d2 = sq_distances(x, x2, &c)?;
        let labels = d2.argmin_keepdim(1)?.squeeze(1)?.to_vec1::<u32>()?;
        let inertia = d2
            .min_keepdim(1)?
            .to_dtype(DType::F64)?
            .sum_all()?
            .to_scalar::<f64>()?;
        let mut sizes = vec![0usize; k];
        for &l in &labels {
            sizes[l as usize] += 1;
        }
        Ok(KMeansFit {
            centroids: c,
            labels,
            sizes,
            inertia,
            iterations,
        })
    }
}

/// Mean silhouette of a clustering of the rows of `x` (Euclidean), and each row's own
/// silhouette. Pairwise distances come from matmuls in row blocks, so memory is
/// `block × n`; rows whose cluster has a single member score 0 (scikit-learn's
/// convention).
pub fn silhouette(x: &Tensor, labels: &[u32], k: usize) -> Result<(f64, Vec<f64>)> {
    let (n, _) = x.dims2()?;
    if labels.len() != n {
        return Err(Error::InvalidArgument(format!(
            "{} labels for {n} rows",
            labels.len()
        )));
    }
    if labels.iter().any(|&l| l as usize >= k) || k < 2 {
        return Err(Error::InvalidArgument(format!(
            "silhouette needs labels in 0..{k} and k >= 2"
        )));
    }
    let x = x.to_dtype(DType::F32)?.contiguous()?;
    let dev = x.device();
    let x2 = x.sqr()?.sum_keepdim(1)?; // [n, 1]
    let ks = Tensor::arange(0u32, k as u32, dev)?.unsqueeze(0)?;
    let onehot = Tensor::new(labels, dev)?
        .unsqueeze(1)?
        .broadcast_eq(&ks)?
        .to_dtype(DType::F32)?; // [n, k]
    let mut sizes = vec![0f64; k];
    for &l in labels {
        sizes[l as usize] += 1.0;
    }
    const BLOCK: usize = 2048;
    let mut per_row = Vec::with_capacity(n);
    let mut start = 0;
    while start < n {
        let m = BLOCK.min(n - start);
        let xb = x.narrow(0, start, m)?;
        let d2 = x2
            .narrow(0, start, m)?
            .broadcast_add(&x2.t()?)?
            .sub(&(xb.matmul(&x.t()?)? * 2.0)?)?
            .relu()?
            .sqrt()?; // [m, n]
        let sums = d2.matmul(&onehot)?.to_dtype(DType::F64)?.to_vec2::<f64>()?; // [m, k]
        for (i, row) in sums.iter().enumerate() {
            let own = labels[start + i] as usize;
            if sizes[own] <= 1.0 {
                per_row.push(0.0);
                continue;
            }
            let a = row[own] / (sizes[own] - 1.0);
            let b = (0..k)
                .filter(|&j| j != own && sizes[j] > 0.0)
                .map(|j| row[j] / sizes[j])
                .fold(f64::INFINITY, f64::min);
            let s = if !b.is_finite() || a.max(b) <= 0.0 {
                0.0
            } else {
                (b - a) / a.max(b)
            };
            per_row.push(s);
        }
        start += m;
    }
    let mean = per_row.iter().sum::<f64>() / n as f64;
    Ok((mean, per_row))
}
