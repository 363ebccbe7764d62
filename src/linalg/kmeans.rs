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

/// Squared distances `[.., n, k]` of rows `[.., n, d]` (squared norms `x2`, `[.., n, 1]`)
/// to centres `[.., k, d]`, clamped at 0 (rounding): 2-D, or batched over groups.
pub(super) fn sq_distances(x: &Tensor, x2: &Tensor, c: &Tensor) -> Result<Tensor> {
    let last = c.rank() - 1;
    let c2 = c.sqr()?.sum_keepdim(last)?.transpose(last - 1, last)?; // [.., 1, k]
    let xc = x.matmul(&c.transpose(last - 1, last)?)?; // [.., n, k]
    Ok(x2.broadcast_add(&c2)?.sub(&(xc * 2.0)?)?.relu()?)
}

/// Widest data for which the assignment multiplies `[x, 1]` by `[−2c, ‖c‖²]ᵀ` (one
/// matmul, at the cost of a copy of x with a column of ones); wider data adds `‖c‖²` to
/// `x·(−2c)ᵀ` instead. Clustering runs on a few projected dimensions, where the copy is
/// cheap and the saved operation is not (candle's per-op cost dominates small tensors).
const AUGMENT_MAX_WIDTH: usize = 64;

/// The groups of a padded batch still iterating, and their slices of the batch tensors.
struct Batch {
    /// Index of each batch entry among the fit's groups.
    groups: Vec<usize>,
    /// `[g, n_max, d]` centred, padded rows.
    x: Tensor,
    /// `[g, n_max, 1]` their squared norms.
    x2: Tensor,
    /// `[g, 1, n_max]` 1 for a real row, 0 for padding.
    live: Tensor,
    /// `[g, r·k, d]` every restart's centres.
    c: Tensor,
}

impl Batch {
    /// With narrow data, append the column the one-matmul assignment needs: 1 for a
    /// real row, 0 for padding, so that the one-hot sums also carry the counts.
    fn augment(&mut self, d: usize) -> Result<()> {
        if d <= AUGMENT_MAX_WIDTH {
            let live = self.live.transpose(1, 2)?.contiguous()?; // [g, n_max, 1]
            self.x = Tensor::cat(&[&self.x, &live], 2)?;
        }
        Ok(())
    }

    /// Per centre, the sum `[g, r·k, d]` and the count `[g, r·k, 1]` of the rows `onehot`
    /// assigns to it (padding rows are zero and counted by `live` as none).
    fn sums_counts(&self, onehot: &Tensor, d: usize) -> Result<(Tensor, Tensor)> {
        let s = onehot.transpose(1, 2)?.matmul(&self.x)?;
        if self.augmented()? {
            Ok((s.narrow(2, 0, d)?, s.narrow(2, d, 1)?))
        } else {
            // A matmul: a reduction over the rows walks memory a row at a time.
            Ok((s, self.live.matmul(onehot)?.transpose(1, 2)?))
        }
    }

    fn augmented(&self) -> Result<bool> {
        Ok(self.x.dim(2)? > self.c.dim(2)?)
    }

    /// `‖x − c‖² − ‖x‖²` for every row and centre, `[g, n_max, r·k]`.
    fn scores(&self) -> Result<Tensor> {
        let c2 = self.c.sqr()?.sum_keepdim(2)?; // [g, r·k, 1]
        if self.augmented()? {
            let ca = Tensor::cat(&[(&self.c * -2.0)?, c2], 2)?;
            Ok(self.x.matmul(&ca.transpose(1, 2)?)?)
        } else {
            let xc = self.x.matmul(&(&self.c * -2.0)?.transpose(1, 2)?)?;
            Ok(xc.broadcast_add(&c2.transpose(1, 2)?)?)
        }
    }

    /// Keep only the batch entries `keep` (ascending).
    fn keep(&mut self, keep: &[usize]) -> Result<()> {
        let ids: Vec<u32> = keep.iter().map(|&i| i as u32).collect();
        let ids = Tensor::new(ids.as_slice(), self.x.device())?;
        self.groups = keep.iter().map(|&i| self.groups[i]).collect();
        self.x = self.x.index_select(&ids, 0)?;
        self.x2 = self.x2.index_select(&ids, 0)?;
        self.live = self.live.index_select(&ids, 0)?;
        self.c = self.c.index_select(&ids, 0)?;
        Ok(())
    }
}

/// `x` `[n, d]` padded with zeros to `[rows, cols]`.
fn pad(x: &Tensor, rows: usize, cols: usize) -> Result<Tensor> {
    let (n, d) = x.dims2()?;
    if (n, d) == (rows, cols) {
        return Ok(x.clone());
    }
    Ok(x.pad_with_zeros(1, 0, cols - d)?
        .pad_with_zeros(0, 0, rows - n)?)
}

/// Groups (by their row counts) batched so that padding to a batch's largest group at
/// most doubles any group: largest first, a group joins the open batch when it has at
/// least half the rows of the batch's first.
fn size_buckets(sizes: &[usize]) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by(|&a, &b| sizes[b].cmp(&sizes[a]).then(a.cmp(&b)));
    let mut buckets: Vec<Vec<usize>> = Vec::new();
    for i in order {
        match buckets.last_mut() {
            Some(b) if 2 * sizes[i] >= sizes[b[0]] => b.push(i),
            _ => buckets.push(vec![i]),
        }
    }
    buckets
}

impl KMeans {
    /// Cluster the rows of an `[n, d]` tensor (computed in f32 on its device).
    pub fn fit(&self, x: &Tensor) -> Result<KMeansFit> {
        let mut fits = self.fit_batch(std::slice::from_ref(x))?;
        Ok(fits.pop().expect("one fit per group"))
    }

    /// Cluster each of several `[n_g, d_g]` tensors on its own (one per class, say) in one
    /// batch. Each group's rows are centred, then the groups are stacked into
    /// `[G, n_max, d_max]` (shorter ones padded with rows that count for nothing, narrower
    /// ones with zero columns, which change no distance) and every restart's centres sit
    /// side by side, so each Lloyd step is two or three batched matmuls for all groups and
    /// restarts together instead of as many per group and restart. Each group's fit is
    /// the one [`KMeans::fit`] gives it alone (up to rounding): the same seeded starts; a
    /// restart stops moving once it has converged while the others go on, and a group
    /// whose restarts have all converged leaves the batch.
    ///
    /// Groups of very different sizes go in separate batches, so that padding never more
    /// than doubles a group.
    pub fn fit_batch(&self, xs: &[Tensor]) -> Result<Vec<KMeansFit>> {
        let sizes = xs
            .iter()
            .map(|x| x.dim(0))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let mut fits: Vec<Option<KMeansFit>> = vec![None; xs.len()];
        for bucket in size_buckets(&sizes) {
            let group: Vec<Tensor> = bucket.iter().map(|&i| xs[i].clone()).collect();
            for (i, f) in bucket.into_iter().zip(self.fit_padded(&group)?) {
                fits[i] = Some(f);
            }
        }
        Ok(fits.into_iter().flatten().collect())
    }

    /// [`KMeans::fit_batch`] on one batch, padded to its largest group.
    fn fit_padded(&self, xs: &[Tensor]) -> Result<Vec<KMeansFit>> {
        let p = &self.0;
        let (k, r) = (p.k, p.restarts);
        let Some(first) = xs.first() else {
            return Ok(Vec::new());
        };
        let dev = first.device().clone();
        let (mut sizes, mut widths, mut means) = (Vec::new(), Vec::new(), Vec::new());
        let (mut groups, mut tols, mut starts) = (Vec::new(), Vec::new(), Vec::new());
        for x in xs {
            let (n, d) = x.dims2()?;
            if n < k {
                return Err(Error::InvalidArgument(format!(
                    "{n} rows cannot make {k} clusters"
                )));
            }
            if d == 0 {
                return Err(Error::InvalidArgument("k-means on 0 columns".into()));
            }
            let x = x.to_dtype(DType::F32)?.to_device(&dev)?.contiguous()?;
            let mean = (column_sums(&x)? / n as f64)?; // [1, d]
            tols.push(p.tolerance * shifted_sum_squares(&x, &mean)? / (n * d) as f64);
            // k-means does not see a translation; centred rows keep the f32 distances
            // accurate when the data share a large offset.
            let x = x.broadcast_sub(&mean)?;
            let x2 = x.sqr()?.sum_keepdim(1)?; // [n, 1]
                                               // Each group draws from its own stream, as a fit of it alone would.
            let mut rng = Rng::new(p.seed, "kmeans");
            let cs = (0..r)
                .map(|_| self.seed_centres(&x, &x2, &mut rng))
                .collect::<Result<Vec<_>>>()?;
            starts.push(Tensor::cat(&cs, 0)?); // [r·k, d]
            sizes.push(n);
            widths.push(d);
            means.push(mean);
            groups.push(x);
        }
        let g = groups.len();
        let n_max = sizes.iter().copied().max().unwrap_or(0);
        let d = widths.iter().copied().max().unwrap_or(0);
        let padded = groups
            .iter()
            .map(|x| pad(x, n_max, d))
            .collect::<Result<Vec<_>>>()?;
        let x = if g == 1 {
            padded[0].unsqueeze(0)? // no copy
        } else {
            Tensor::stack(&padded, 0)?
        }; // [g, n_max, d]
        let x2 = x.sqr()?.sum_keepdim(2)?; // [g, n_max, 1]
        let live: Vec<f32> = sizes
            .iter()
            .flat_map(|&n| (0..n_max).map(move |i| f32::from(u8::from(i < n))))
            .collect();
        let live = Tensor::from_vec(live, (g, 1, n_max), &dev)?;
        let ks = Tensor::arange(0u32, k as u32, &dev)?.reshape((1, 1, 1, k))?;
        let starts = starts
            .iter()
            .map(|c| pad(c, r * k, d))
            .collect::<Result<Vec<_>>>()?;
        // The groups still iterating, and the batch tensors holding just them: a group
        // whose restarts have all converged leaves the batch with its centres.
        let mut run = Batch {
            groups: (0..g).collect(),
            x: x.clone(),
            x2: x2.clone(),
            live,
            c: Tensor::stack(&starts, 0)?, // [g, r·k, d]
        };
        run.augment(d)?;
        let mut done: Vec<Option<Tensor>> = vec![None; g];
        let mut active = vec![vec![true; r]; g];
        let mut iterations = vec![vec![0usize; r]; g];
        for _ in 0..p.max_iterations {
            let ga = run.groups.len();
            let c = &run.c;
            let d2 = run.scores()?; // [ga, n_max, r·k], less ‖x‖²
            let labels = d2.reshape((ga, n_max, r, k))?.argmin_keepdim(3)?;
            // Padding rows are zero, so they add nothing to the sums; `live` keeps them
            // out of the counts.
            let onehot =
                labels
                    .broadcast_eq(&ks)?
                    .to_dtype(DType::F32)?
                    .reshape((ga, n_max, r * k))?;
            let (sums, counts) = run.sums_counts(&onehot, d)?;
            let mut next = sums.broadcast_div(&counts.clamp(1f32, f32::MAX)?)?;
            let cnt = counts.squeeze(2)?.to_vec2::<f32>()?;
            let running: Vec<&Vec<bool>> = run.groups.iter().map(|&gi| &active[gi]).collect();
            let empty = cnt.iter().zip(&running).any(|(row, on)| {
                (0..r).any(|ri| on[ri] && row[ri * k..(ri + 1) * k].contains(&0.0))
            });
            if empty {
                let n: Vec<usize> = run.groups.iter().map(|&gi| sizes[gi]).collect();
                let full = d2.broadcast_add(&run.x2)?;
                let x = run.x.narrow(2, 0, d)?;
                next = self.refill_empty(&next, &full, &x, &cnt, &n, &running)?;
            }
            let shift = (&next - c)?
                .sqr()?
                .reshape((ga, r, k * d))?
                .sum(2)?
                .to_vec2::<f32>()?;
            // Converged restarts keep their centres (exactly, as a lone fit would stop).
            let keep: Vec<u8> = running
                .iter()
                .flat_map(|a| {
                    a.iter()
                        .flat_map(|&on| std::iter::repeat_n(u8::from(on), k))
                })
                .collect();
            let keep = Tensor::from_vec(keep, (ga, r * k, 1), &dev)?.broadcast_as(c.shape())?;
            run.c = keep.where_cond(&next, c)?;
            let mut still = Vec::with_capacity(ga);
            for (ai, &gi) in run.groups.iter().enumerate() {
                for ri in 0..r {
                    if active[gi][ri] {
                        iterations[gi][ri] += 1;
                        active[gi][ri] = f64::from(shift[ai][ri]) > tols[gi];
                    }
                }
                if active[gi].iter().any(|&a| a) {
                    still.push(ai);
                } else {
                    done[gi] = Some(run.c.get(ai)?);
                }
            }
            if still.is_empty() {
                break;
            }
            if still.len() < ga {
                run.keep(&still)?;
            }
        }
        for (ai, &gi) in run.groups.iter().enumerate() {
            if done[gi].is_none() {
                done[gi] = Some(run.c.get(ai)?);
            }
        }
        let c = Tensor::stack(&done.into_iter().flatten().collect::<Vec<_>>(), 0)?;
        // Final assignment against the final centres; each group keeps its best restart
        // (the first of equals, as a lone fit would).
        let d2 = sq_distances(&x, &x2, &c)?.reshape((g, n_max, r, k))?;
        let mins = d2.min(3)?.to_dtype(DType::F64)?.to_vec3::<f64>()?; // [g, n_max, r]
        let labels = d2.argmin(3)?.to_vec3::<u32>()?;
        let mut fits = Vec::with_capacity(g);
        for gi in 0..g {
            let n = sizes[gi];
            let inertia: Vec<f64> = (0..r)
                .map(|ri| mins[gi][..n].iter().map(|row| row[ri]).sum())
                .collect();
            let best = (0..r).fold(0, |b, ri| if inertia[ri] < inertia[b] { ri } else { b });
            let lab: Vec<u32> = labels[gi][..n].iter().map(|row| row[best]).collect();
            let mut counts = vec![0usize; k];
            for &l in &lab {
                counts[l as usize] += 1;
            }
            fits.push(KMeansFit {
                centroids: c
                    .get(gi)?
                    .narrow(0, best * k, k)?
                    .narrow(1, 0, widths[gi])?
                    .broadcast_add(&means[gi])?,
                labels: lab,
                sizes: counts,
                inertia: inertia[best],
                iterations: iterations[gi][best],
            });
        }
        Ok(fits)
    }

    /// An empty cluster of a running restart takes the row of its group farthest from
    /// that restart's centres (rare, so done on the host).
    fn refill_empty(
        &self,
        next: &Tensor,
        d2: &Tensor,
        x: &Tensor,
        counts: &[Vec<f32>],
        sizes: &[usize],
        active: &[&Vec<bool>],
    ) -> Result<Tensor> {
        let k = self.0.k;
        let shape = next.shape().clone();
        let mut rows = next.to_vec3::<f32>()?;
        for (gi, cnt) in counts.iter().enumerate() {
            for (ri, on) in active[gi].iter().enumerate() {
                let empty: Vec<usize> = (0..k).filter(|&j| cnt[ri * k + j] == 0.0).collect();
                if !on || empty.is_empty() {
                    continue;
                }
                let far = d2
                    .get(gi)?
                    .narrow(0, 0, sizes[gi])?
                    .narrow(1, ri * k, k)?
                    .min(1)?
                    .argmax(0)?
                    .to_scalar::<u32>()? as usize;
                let row = x.get(gi)?.get(far)?.to_vec1::<f32>()?;
                for j in empty {
                    rows[gi][ri * k + j].clone_from(&row);
                }
            }
        }
        let flat: Vec<f32> = rows.into_iter().flatten().flatten().collect();
        Ok(Tensor::from_vec(flat, shape, next.device())?)
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

#[cfg(test)]
mod tests {
    use super::size_buckets;

    #[test]
    fn buckets_keep_padding_below_the_rows_held() {
        assert!(size_buckets(&[]).is_empty());
        assert_eq!(size_buckets(&[5, 5, 5]), vec![vec![0, 1, 2]]);
        // One large class and many small ones: the small ones go together, apart.
        let sizes = [20, 100_000, 30, 25, 40, 19];
        let b = size_buckets(&sizes);
        assert_eq!(b, vec![vec![1], vec![4, 2, 3, 0], vec![5]]);
        for bucket in &b {
            assert!(bucket.iter().all(|&i| 2 * sizes[i] >= sizes[bucket[0]]));
        }
        let mut all: Vec<usize> = b.concat();
        all.sort();
        assert_eq!(all, vec![0, 1, 2, 3, 4, 5]);
    }
}
