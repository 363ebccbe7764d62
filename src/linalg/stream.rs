//! Streaming k-means for activations that arrive in chunks (mini-batch k-means, Sculley
//! 2010), for data sets whose activations do not fit in memory at once.
//!
//! The first chunk seeds the centres with a full k-means ([`KMeansParams`], k-means++ and
//! restarts) on that chunk. Every later chunk is assigned to its nearest centres and each
//! centre moves to the running mean of every row ever assigned to it: `c ← (n·c + Σx) /
//! (n + m)`, Sculley's per-centre learning rate `1/n` applied to a whole chunk at once.
//! Assignment and the update are the same matmuls as [`KMeans`](super::KMeans)'s, so the
//! same code runs on CPU and CUDA; only `k` counts come to the host.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use trojanscan::linalg::StreamingKMeansParams;
//!
//! // Two blobs in 2-D, streamed in chunks of 50 rows.
//! let rows: Vec<f32> = (0..400)
//!     .flat_map(|i| {
//!         let c = if i % 4 == 0 { 8.0 } else { 0.0 };
//!         let j = (i % 9) as f32 * 0.05;
//!         [c + j, c - j]
//!     })
//!     .collect();
//! let x = Tensor::from_vec(rows, (400, 2), &Device::Cpu)?;
//! let mut km = StreamingKMeansParams::new(2).seed(1).check()?;
//! for start in (0..400).step_by(50) {
//!     km.push(&x.narrow(0, start, 50)?)?;
//! }
//! let mut sizes = km.counts().to_vec();
//! sizes.sort();
//! assert_eq!(sizes, vec![100, 300]);
//! assert!(km.inertia(&x)? < 20.0); // 400 rows, each about 0.033 (squared) from its centre
//! # Ok::<(), trojanscan::Error>(())
//! ```

use candle_core::{DType, Tensor};

use super::column_sums;
use super::kmeans::sq_distances;
use super::KMeansParams;
use crate::{Error, Result};

/// Checked parameters of streaming k-means; build with [`StreamingKMeansParams::new`],
/// then [`StreamingKMeansParams::check`].
#[derive(Debug, Clone)]
pub struct StreamingKMeansParams {
    k: usize,
    restarts: usize,
    seed: u64,
}

impl StreamingKMeansParams {
    /// `k` clusters; the first chunk is clustered with 4 restarts, seed 0.
    pub fn new(k: usize) -> Self {
        Self {
            k,
            restarts: 4,
            seed: 0,
        }
    }

    /// k-means++ restarts on the first chunk.
    pub fn restarts(mut self, n: usize) -> Self {
        self.restarts = n;
        self
    }

    /// Seed of the first chunk's clustering.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Validate the parameters: an empty clustering state ready for chunks.
    pub fn check(self) -> Result<StreamingKMeans> {
        // The first chunk's k-means checks k and restarts the same way.
        KMeansParams::new(self.k)
            .restarts(self.restarts)
            .seed(self.seed)
            .check()?;
        Ok(StreamingKMeans {
            params: self,
            centres: None,
            counts: Vec::new(),
        })
    }
}

/// Streaming k-means state: the centres and how many rows each has absorbed.
#[derive(Debug, Clone)]
pub struct StreamingKMeans {
    params: StreamingKMeansParams,
    centres: Option<Tensor>,
    counts: Vec<usize>,
}

impl StreamingKMeans {
    /// Absorb an `[m, d]` chunk (computed in f32 on its device). The first chunk needs at
    /// least `k` rows; every chunk must have the first one's width.
    pub fn push(&mut self, chunk: &Tensor) -> Result<()> {
        let (m, d) = chunk.dims2()?;
        if m == 0 {
            return Ok(());
        }
        let x = chunk.to_dtype(DType::F32)?.contiguous()?;
        let Some(c) = &self.centres else {
            let p = &self.params;
            if m < p.k {
                return Err(Error::InvalidArgument(format!(
                    "the first chunk has {m} rows; {} clusters need at least as many",
                    p.k
                )));
            }
            let fit = KMeansParams::new(p.k)
                .restarts(p.restarts)
                .seed(p.seed)
                .check()?
                .fit(&x)?;
            self.centres = Some(fit.centroids);
            self.counts = fit.sizes;
            return Ok(());
        };
        let (k, width) = c.dims2()?;
        if d != width {
            return Err(Error::InvalidArgument(format!(
                "chunk has {d} columns, the first chunk had {width}"
            )));
        }
        let labels = nearest(&x, c)?; // [m, 1]
        let ks = Tensor::arange(0u32, k as u32, x.device())?.unsqueeze(0)?;
        let onehot = labels.broadcast_eq(&ks)?.to_dtype(DType::F32)?; // [m, k]
        let added = column_sums(&onehot)?.squeeze(0)?.to_vec1::<f32>()?;
        let sums = onehot.t()?.matmul(&x)?; // [k, d]
        let old: Vec<f64> = self.counts.iter().map(|&n| n as f64).collect();
        let new: Vec<f64> = old
            .iter()
            .zip(&added)
            .map(|(n, a)| n + f64::from(*a))
            .collect();
        // c ← (n·c + Σx) / (n + m), per centre; a centre nothing ever joined (possible
        // when the first chunk repeats rows) keeps its place.
        let keep: Vec<f32> = old
            .iter()
            .zip(&new)
            .map(|(o, n)| if *n > 0.0 { (o / n) as f32 } else { 1.0 })
            .collect();
        let take: Vec<f32> = new
            .iter()
            .map(|n| if *n > 0.0 { (1.0 / n) as f32 } else { 0.0 })
            .collect();
        let keep = Tensor::from_vec(keep, (k, 1), x.device())?;
        let take = Tensor::from_vec(take, (k, 1), x.device())?;
        let next = (c.broadcast_mul(&keep)? + sums.broadcast_mul(&take)?)?;
        for (n, a) in self.counts.iter_mut().zip(&added) {
            *n += *a as usize;
        }
        self.centres = Some(next);
        Ok(())
    }

    /// The centres `[k, d]`, once a chunk has been pushed.
    pub fn centres(&self) -> Option<&Tensor> {
        self.centres.as_ref()
    }

    /// Rows absorbed by each centre.
    pub fn counts(&self) -> &[usize] {
        &self.counts
    }

    /// The nearest centre of every row of `[m, d]` `x`.
    pub fn predict(&self, x: &Tensor) -> Result<Vec<u32>> {
        let c = self.fitted()?;
        Ok(nearest(&x.to_dtype(DType::F32)?, c)?
            .squeeze(1)?
            .to_vec1::<u32>()?)
    }

    /// Sum of squared distances of the rows of `x` to their nearest centre (add it up over
    /// chunks for a whole data set).
    pub fn inertia(&self, x: &Tensor) -> Result<f64> {
        let c = self.fitted()?;
        let x = x.to_dtype(DType::F32)?;
        let x2 = x.sqr()?.sum_keepdim(1)?;
        Ok(sq_distances(&x, &x2, c)?
            .min_keepdim(1)?
            .to_dtype(DType::F64)?
            .sum_all()?
            .to_scalar::<f64>()?)
    }

    fn fitted(&self) -> Result<&Tensor> {
        self.centres
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("no chunk has been pushed yet".into()))
    }
}

/// Nearest centre of each row, `[m, 1]` u32.
fn nearest(x: &Tensor, c: &Tensor) -> Result<Tensor> {
    let x2 = x.sqr()?.sum_keepdim(1)?;
    Ok(sq_distances(x, &x2, c)?.argmin_keepdim(1)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use candle_core::Device;

    /// Three Gaussian blobs in 8-D, shuffled.
    fn blobs(n: usize, seed: u64) -> (Tensor, Vec<usize>) {
        let mut rng = Rng::new(seed, "blobs");
        let mut rows = Vec::with_capacity(n * 8);
        let mut truth = Vec::with_capacity(n);
        for _ in 0..n {
            let b = rng.below(3);
            truth.push(b);
            for j in 0..8 {
                let centre = if j == b { 6.0 } else { 0.0 };
                rows.push((centre + rng.normal()) as f32);
            }
        }
        (Tensor::from_vec(rows, (n, 8), &Device::Cpu).unwrap(), truth)
    }

    #[test]
    fn streaming_matches_full_kmeans_on_blobs() {
        let (x, truth) = blobs(6000, 3);
        let mut s = StreamingKMeansParams::new(3).check().unwrap();
        for start in (0..6000).step_by(500) {
            s.push(&x.narrow(0, start, 500).unwrap()).unwrap();
        }
        assert_eq!(s.counts().iter().sum::<usize>(), 6000);
        let full = KMeansParams::new(3).check().unwrap().fit(&x).unwrap();
        let (a, b) = (s.inertia(&x).unwrap(), full.inertia);
        assert!((a - b) / b < 1e-3, "streaming {a} vs full {b}");
        // Every blob maps to one cluster.
        let labels = s.predict(&x).unwrap();
        for blob in 0..3 {
            let mut seen: Vec<u32> = (0..6000)
                .filter(|&i| truth[i] == blob)
                .map(|i| labels[i])
                .collect();
            seen.dedup();
            seen.sort_unstable();
            seen.dedup();
            assert_eq!(seen.len(), 1, "blob {blob}: {seen:?}");
        }
    }

    #[test]
    fn bad_chunks_are_errors() {
        let mut s = StreamingKMeansParams::new(4).check().unwrap();
        let small = Tensor::zeros((3, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(s.push(&small).is_err());
        assert!(s.predict(&small).is_err());
        let (x, _) = blobs(100, 1);
        s.push(&x).unwrap();
        assert!(s.push(&small).is_err(), "width 2 after width 8");
        assert!(StreamingKMeansParams::new(0).check().is_err());
    }
}
