//! Principal component analysis on candle tensors.
//!
//! [`Pca::fit`] takes the data as one `[n, d]` tensor and finds the top principal
//! axes by randomized subspace iteration on the implicitly centred matrix (Halko,
//! Martinsson & Tropp 2011): each pass is two thin matmuls (`X·Z`, `Xᵀ·W`) on the
//! tensor's device, the centring folded in as a rank-one correction so the centred copy
//! is never made, and only `l × l` Gram matrices (l = components + oversampling) reach the
//! host. When `l` reaches `d` the subspace is the whole space and the answer is exact.
//! [`Pca::fit_transform`] also returns the data's projections, taken from the last
//! (Rayleigh-Ritz) pass, so fitting and projecting read the data once less.
//!
//! [`CovarianceAccumulator`] is the streaming path for data that arrives in chunks: it
//! accumulates `Σx` and `Σxxᵀ` about a shift (the first chunk's mean, against
//! cancellation), and [`CovarianceAccumulator::pca`] decomposes the `d × d` covariance.

use candle_core::{DType, Device, Tensor, D};

use super::svd::{orthonormalize, sym_eigen};
use super::{column_means, column_sums};
use crate::rng::Rng;
use crate::{Error, Result};

/// Checked parameters of a PCA; build with [`PcaParams::new`], then [`PcaParams::check`].
#[derive(Debug, Clone)]
pub struct PcaParams {
    components: usize,
    oversample: usize,
    power_iterations: usize,
    seed: u64,
    total_variance: bool,
}

/// Parameters that passed [`PcaParams::check`].
#[derive(Debug, Clone)]
pub struct Pca(PcaParams);

/// A fitted PCA: the mean, the principal axes and their variances.
#[derive(Debug, Clone)]
pub struct PcaFit {
    /// Column means, `[d]`.
    pub mean: Tensor,
    /// Principal axes as rows, `[k, d]`, unit norm, largest variance first.
    pub components: Tensor,
    /// Variance along each axis (divided by `n - 1`, as scikit-learn reports it).
    pub explained_variance: Vec<f64>,
    /// Total variance of the data (sum of the per-feature variances); `None` when
    /// [`PcaParams::total_variance`] turned it off.
    pub total_variance: Option<f64>,
}

impl PcaParams {
    /// `components` principal axes; 10 oversampling columns and 4 power iterations by
    /// default, seed 0, total variance measured.
    pub fn new(components: usize) -> Self {
        Self {
            components,
            oversample: 10,
            power_iterations: 4,
            seed: 0,
            total_variance: true,
        }
    }

    /// Whether to measure the data's total variance (for
    /// [`PcaFit::explained_variance_ratio`]). It squares and sums each centred row block
    /// of the fit's last pass, which adds about half to that pass; clustering on the
    /// projections does not need it.
    pub fn total_variance(mut self, on: bool) -> Self {
        self.total_variance = on;
        self
    }

    /// Extra random columns carried through the iteration (accuracy for the last axes).
    pub fn oversample(mut self, n: usize) -> Self {
        self.oversample = n;
        self
    }

    /// Power iterations (each is two passes over the data).
    pub fn power_iterations(mut self, n: usize) -> Self {
        self.power_iterations = n;
        self
    }

    /// Seed of the random start.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Validate the parameters.
    pub fn check(self) -> Result<Pca> {
        if self.components == 0 {
            return Err(Error::InvalidArgument(
                "PCA needs at least one component".into(),
            ));
        }
        if self.power_iterations > 100 {
            return Err(Error::InvalidArgument(format!(
                "{} power iterations is far more than PCA needs (at most 100)",
                self.power_iterations
            )));
        }
        Ok(Pca(self))
    }
}

fn check_data(x: &Tensor, want: usize) -> Result<(usize, usize)> {
    let (n, d) = x.dims2()?;
    if n < 2 || d == 0 {
        return Err(Error::InvalidArgument(format!(
            "PCA needs at least 2 rows and 1 column, got [{n}, {d}]"
        )));
    }
    if want > d {
        return Err(Error::InvalidArgument(format!(
            "{want} components asked of {d}-dimensional data"
        )));
    }
    Ok((n, d))
}

impl Pca {
    /// Fit on an `[n, d]` floating-point tensor (computed in f32 on its device).
    pub fn fit(&self, x: &Tensor) -> Result<PcaFit> {
        Ok(self.fit_inner(x, false)?.0)
    }

    /// Fit, and project the same rows: `(fit, fit.transform(x))` up to rounding, but the
    /// projections come from the fit's last pass over the data instead of another one.
    pub fn fit_transform(&self, x: &Tensor) -> Result<(PcaFit, Tensor)> {
        let (fit, z) = self.fit_inner(x, true)?;
        Ok((fit, z.expect("asked for the projections")))
    }

    fn fit_inner(&self, x: &Tensor, project: bool) -> Result<(PcaFit, Option<Tensor>)> {
        let p = &self.0;
        let (n, d) = check_data(x, p.components)?;
        let x = x.to_dtype(DType::F32)?;
        let dev = x.device().clone();
        let mean = column_means(&x)?; // [1, d]
        let mu = mean.t()?; // [d, 1]

        // Centred products without the centred copy: Xc·Z = X·Z − 1(μᵀZ),
        // Xcᵀ·W = XᵀW − μ(1ᵀW).
        let xc_mul =
            |z: &Tensor| -> Result<Tensor> { Ok(x.matmul(z)?.broadcast_sub(&mu.t()?.matmul(z)?)?) };
        let xct_mul = |w: &Tensor| -> Result<Tensor> {
            Ok(x.t()?
                .matmul(w)?
                .broadcast_sub(&mu.matmul(&column_sums(w)?)?)?)
        };
        let l = (p.components + p.oversample).min(d);
        let mut z = if l == d {
            Tensor::eye(d, DType::F32, &dev)?
        } else {
            let mut rng = Rng::new(p.seed, "pca");
            let omega: Vec<f32> = (0..d * l).map(|_| rng.normal() as f32).collect();
            let omega = Tensor::from_vec(omega, (d, l), &Device::Cpu)?.to_device(&dev)?;
            orthonormalize(&omega)?.ok_or_else(|| zero_data(n, d))?
        };
        if l < d {
            for _ in 0..p.power_iterations {
                z = orthonormalize(&xct_mul(&xc_mul(&z)?)?)?.ok_or_else(|| zero_data(n, d))?;
            }
        }
        // Rayleigh-Ritz: eig(Zᵀ Xcᵀ Xc Z) gives the variances, Z·U the axes. This pass
        // centres block by block (as `transform` does), so its product doubles as the
        // projections.
        let mean = mean.squeeze(0)?; // [d]
        let (w, sum_squares) = centred_product(&x, &mean, &z, p.total_variance)?;
        let total_variance = sum_squares.map(|ss| ss / (n - 1) as f64);
        let r = z.dim(1)?;
        let g = w
            .t()?
            .matmul(&w)?
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        let (vals, vecs) = sym_eigen(&g, r);
        let mut order: Vec<usize> = (0..r).collect();
        order.sort_by(|&a, &b| vals[b].total_cmp(&vals[a]));
        order.truncate(p.components);
        if order
            .first()
            .is_none_or(|&i| vals[i].is_nan() || vals[i] <= 0.0)
        {
            return Err(zero_data(n, d));
        }
        let k = order.len();
        let mut u = vec![0f32; r * k];
        for (c, &i) in order.iter().enumerate() {
            for row in 0..r {
                u[row * k + c] = vecs[row * r + i] as f32;
            }
        }
        let u = Tensor::from_vec(u, (r, k), &Device::Cpu)?.to_device(&dev)?;
        // Axes as columns, unit norm and signed; the projections get the same scaling.
        let axes = z.matmul(&u)?; // [d, k]
        let norms = axes
            .sqr()?
            .sum_keepdim(0)?
            .sqrt()?
            .clamp(1e-30f32, f32::MAX)?;
        let axes = axes.broadcast_div(&norms)?;
        let signs = axis_signs(&axes.t()?)?;
        let components = axes.broadcast_mul(&signs)?.t()?.contiguous()?; // [k, d]
        let projections = if project {
            Some(w.matmul(&u)?.broadcast_mul(&signs.broadcast_div(&norms)?)?)
        } else {
            None
        };
        let explained_variance = order
            .iter()
            .map(|&i| vals[i].max(0.0) / (n - 1) as f64)
            .collect();
        let fit = PcaFit {
            mean,
            components,
            explained_variance,
            total_variance,
        };
        Ok((fit, projections))
    }
}

/// `(x − mean)·m` for `[n, d]` rows, centred one row block at a time: no full centred
/// copy, and no cancellation between `x·m` and `mean·m` when the rows share a large
/// offset. With `sum_squares`, also `Σ (x − mean)²` from the same centred blocks (column
/// sums of each squared block by matmul, added in f64).
fn centred_product(
    x: &Tensor,
    mean: &Tensor,
    m: &Tensor,
    sum_squares: bool,
) -> Result<(Tensor, Option<f64>)> {
    let (n, _) = x.dims2()?;
    let mut parts = Vec::with_capacity(n.div_ceil(TRANSFORM_BLOCK).max(1));
    // Squared sums stay on the device until the end: one read back, not one per block.
    let mut ss = Tensor::zeros((), DType::F64, x.device())?;
    let mut start = 0;
    while start < n {
        let b = TRANSFORM_BLOCK.min(n - start);
        let xb = x.narrow(0, start, b)?.broadcast_sub(mean)?;
        parts.push(xb.matmul(m)?);
        if sum_squares {
            ss = (ss + column_sums(&xb.sqr()?)?.to_dtype(DType::F64)?.sum_all()?)?;
        }
        start += b;
    }
    let product = match parts.len() {
        1 => parts.pop().expect("one part"),
        _ => Tensor::cat(&parts, 0)?,
    };
    let ss = if sum_squares {
        Some(ss.to_scalar::<f64>()?)
    } else {
        None
    };
    Ok((product, ss))
}

/// Rows per centred block of [`PcaFit::transform`] and of a fit's last pass.
const TRANSFORM_BLOCK: usize = 8192;

fn zero_data(n: usize, d: usize) -> Error {
    Error::NoVariance { rows: n, cols: d }
}

/// Deterministic signs: each axis's largest-magnitude coordinate is made positive.
/// Takes the axes as rows `[k, d]` and returns the signs as a row `[1, k]`.
fn axis_signs(c: &Tensor) -> Result<Tensor> {
    let (k, d) = c.dims2()?;
    let v = c.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let signs: Vec<f32> = (0..k)
        .map(|i| {
            let row = &v[i * d..(i + 1) * d];
            let big = row
                .iter()
                .copied()
                .max_by(|a, b| a.abs().total_cmp(&b.abs()))
                .unwrap_or(1.0);
            if big < 0.0 {
                -1.0
            } else {
                1.0
            }
        })
        .collect();
    Ok(Tensor::from_vec(signs, (1, k), &Device::Cpu)?.to_device(c.device())?)
}

/// [`axis_signs`] applied to rows `[k, d]`.
fn fix_signs(c: &Tensor) -> Result<Tensor> {
    Ok(c.broadcast_mul(&axis_signs(c)?.t()?)?)
}

impl PcaFit {
    /// Project `[n, d]` rows onto the axes: `(x − mean)·componentsᵀ`, `[n, k]`.
    pub fn transform(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.to_dtype(DType::F32)?;
        Ok(centred_product(&x, &self.mean, &self.components.t()?, false)?.0)
    }

    /// Fraction of the total variance each axis explains; `None` when the fit did not
    /// measure the total variance ([`PcaParams::total_variance`]).
    pub fn explained_variance_ratio(&self) -> Option<Vec<f64>> {
        let total = self.total_variance?;
        Some(
            self.explained_variance
                .iter()
                .map(|v| if total > 0.0 { v / total } else { 0.0 })
                .collect(),
        )
    }
}

/// Streaming mean and covariance of `d`-dimensional rows pushed in chunks.
#[derive(Debug)]
pub struct CovarianceAccumulator {
    d: usize,
    n: usize,
    /// Subtracted from every row before accumulating (the first chunk's mean).
    shift: Option<Tensor>,
    sum: Option<Tensor>,
    outer: Option<Tensor>,
}

impl CovarianceAccumulator {
    /// An empty accumulator for `d` columns.
    pub fn new(d: usize) -> Self {
        Self {
            d,
            n: 0,
            shift: None,
            sum: None,
            outer: None,
        }
    }

    /// Rows seen so far.
    pub fn rows(&self) -> usize {
        self.n
    }

    /// Add a `[m, d]` chunk.
    pub fn push(&mut self, chunk: &Tensor) -> Result<()> {
        let (m, d) = chunk.dims2()?;
        if d != self.d {
            return Err(Error::InvalidArgument(format!(
                "chunk has {d} columns, the accumulator {}",
                self.d
            )));
        }
        if m == 0 {
            return Ok(());
        }
        let c = chunk.to_dtype(DType::F32)?;
        let shift = match &self.shift {
            Some(s) => s.clone(),
            None => {
                let s = (column_sums(&c)? / m as f64)?;
                self.shift = Some(s.clone());
                s
            }
        };
        let c = c.broadcast_sub(&shift)?;
        let s = column_sums(&c)?.to_dtype(DType::F64)?;
        let o = c.t()?.matmul(&c)?.to_dtype(DType::F64)?;
        self.sum = Some(match self.sum.take() {
            Some(a) => (a + s)?,
            None => s,
        });
        self.outer = Some(match self.outer.take() {
            Some(a) => (a + o)?,
            None => o,
        });
        self.n += m;
        Ok(())
    }

    /// The mean `[d]` and covariance `[d, d]` (divided by `n - 1`), both f64.
    pub fn finish(&self) -> Result<(Tensor, Tensor)> {
        let (Some(shift), Some(sum), Some(outer)) = (&self.shift, &self.sum, &self.outer) else {
            return Err(Error::InvalidArgument("no rows were accumulated".into()));
        };
        if self.n < 2 {
            return Err(Error::InvalidArgument(
                "a covariance needs at least 2 rows".into(),
            ));
        }
        let n = self.n as f64;
        let m = (sum / n)?; // [1, d], mean of shifted rows
        let cov = ((outer - (m.t()?.matmul(&m)? * n)?)? / (n - 1.0))?;
        let mean = (m + shift.to_dtype(DType::F64)?)?.squeeze(0)?;
        Ok((mean, cov))
    }

    /// PCA of everything pushed: the full eigendecomposition of the covariance (on the
    /// host, Jacobi; meant for d up to a few hundred).
    pub fn pca(&self, components: usize) -> Result<PcaFit> {
        let (mean, cov) = self.finish()?;
        let d = self.d;
        if components == 0 || components > d {
            return Err(Error::InvalidArgument(format!(
                "{components} components asked of {d}-dimensional data"
            )));
        }
        let dev = mean.device().clone();
        let c = cov.flatten_all()?.to_vec1::<f64>()?;
        let total_variance = (0..d).map(|i| c[i * d + i].max(0.0)).sum();
        let (vals, vecs) = sym_eigen(&c, d);
        let mut order: Vec<usize> = (0..d).collect();
        order.sort_by(|&a, &b| vals[b].total_cmp(&vals[a]));
        order.truncate(components);
        let mut rows = Vec::with_capacity(components * d);
        for &i in &order {
            rows.extend((0..d).map(|r| vecs[r * d + i] as f32));
        }
        let components_t =
            Tensor::from_vec(rows, (order.len(), d), &Device::Cpu)?.to_device(&dev)?;
        Ok(PcaFit {
            mean: mean.to_dtype(DType::F32)?,
            components: fix_signs(&components_t)?,
            explained_variance: order.iter().map(|&i| vals[i].max(0.0)).collect(),
            total_variance: Some(total_variance),
        })
    }
}

/// Spectral-signature scores (Tran et al. 2018), done right: rows are centred on their
/// mean, projected on the top principal axis `v`, and scored `((x − μ)·v)²`. Returns the
/// axis `[d]` and one score per row.
pub fn spectral_scores(x: &Tensor, seed: u64) -> Result<(Vec<f32>, Vec<f64>)> {
    let (v, proj) = spectral_projection(x, seed)?;
    Ok((v, proj.iter().map(|p| p * p).collect()))
}

/// The top principal axis `[d]` and each row's centred projection `(x − μ)·v` on it.
pub(crate) fn spectral_projection(x: &Tensor, seed: u64) -> Result<(Vec<f32>, Vec<f64>)> {
    let (fit, proj) = PcaParams::new(1)
        .power_iterations(8)
        .seed(seed)
        .total_variance(false)
        .check()?
        .fit_transform(x)?;
    let proj = proj
        .squeeze(D::Minus1)?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?;
    let v = fit.components.squeeze(0)?.to_vec1::<f32>()?;
    Ok((v, proj))
}
