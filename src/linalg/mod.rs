//! Linear-algebra kernels for the detectors, written on candle tensors so the same code
//! runs on the CPU (candle's SIMD gemm) and on CUDA: k-means ([`KMeansParams`], and
//! [`StreamingKMeansParams`] for data streamed in chunks), PCA
//! ([`PcaParams`], and [`CovarianceAccumulator`] for data streamed in chunks), spectral
//! signature scores and outliers with an adaptive cut-off ([`spectral_scores`],
//! [`SpectralParams`]), silhouettes ([`silhouette`]), and the
//! randomized top singular values weight forensics uses. Every random choice comes from a
//! seed, so results are reproducible.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use trojanscan::linalg::{KMeansParams, PcaParams};
//!
//! // Two blobs in 3-D, 50 rows each.
//! let rows: Vec<f32> = (0..100)
//!     .flat_map(|i| {
//!         let c = if i < 50 { 0.0 } else { 10.0 };
//!         let j = (i % 7) as f32 * 0.1;
//!         [c + j, c - j, c + 0.5 * j]
//!     })
//!     .collect();
//! let x = Tensor::from_vec(rows, (100, 3), &Device::Cpu)?;
//! let z = PcaParams::new(2).check()?.fit(&x)?;
//! assert!(z.explained_variance_ratio().unwrap()[0] > 0.99);
//! let fit = KMeansParams::new(2).seed(7).check()?.fit(&z.transform(&x)?)?;
//! assert_eq!(fit.sizes, vec![50, 50]);
//! # Ok::<(), trojanscan::Error>(())
//! ```

use candle_core::{DType, Tensor};

use crate::Result;

mod kmeans;
mod pca;
mod spectral;
mod stream;
pub(crate) mod svd;

/// Rows per block of the column reductions below.
const REDUCE_BLOCK: usize = 16_384;

/// Column sums `[1, d]` (f32) of a 2-D f32 tensor, as `1ᵀX` matmuls over row blocks
/// added in f64. candle's dim-0 reductions walk memory with a stride of a row and run an
/// order of magnitude slower than the gemm (0.5 s against 0.04 s for 100k × 768 on two
/// cores); the blocks also keep the f32 accumulation short.
pub(crate) fn column_sums(x: &Tensor) -> Result<Tensor> {
    let (n, d) = x.dims2()?;
    let dev = x.device();
    let ones = Tensor::ones((1, n.clamp(1, REDUCE_BLOCK)), DType::F32, dev)?;
    let mut acc = Tensor::zeros((1, d), DType::F64, dev)?;
    let mut start = 0;
    while start < n {
        let b = REDUCE_BLOCK.min(n - start);
        let part = ones.narrow(1, 0, b)?.matmul(&x.narrow(0, start, b)?)?;
        acc = (acc + part.to_dtype(DType::F64)?)?;
        start += b;
    }
    Ok(acc.to_dtype(DType::F32)?)
}

/// `Σ (x − shift)` over the rows of a 2-D f32 tensor, or `Σ (x − shift)²` with `square`,
/// as `[1, d]` f64: row blocks are shifted (and squared), each block's columns summed by a
/// `1ᵀ·block` matmul in f32 (at most a block's rows), and the blocks added in f64.
fn shifted_column_sums(x: &Tensor, shift: &Tensor, square: bool) -> Result<Tensor> {
    let (n, d) = x.dims2()?;
    let dev = x.device();
    let ones = Tensor::ones((1, n.clamp(1, REDUCE_BLOCK)), DType::F32, dev)?;
    let mut acc = Tensor::zeros((1, d), DType::F64, dev)?;
    let mut start = 0;
    while start < n {
        let b = REDUCE_BLOCK.min(n - start);
        let mut c = x.narrow(0, start, b)?.broadcast_sub(shift)?;
        if square {
            c = c.sqr()?;
        }
        acc = (acc + ones.narrow(1, 0, b)?.matmul(&c)?.to_dtype(DType::F64)?)?;
        start += b;
    }
    Ok(acc)
}

/// Column means of a 2-D f32 tensor, `[1, d]`, summed about the first row:
/// `s + Σ(x − s)/n`. Rows that share a large offset then lose no precision to it (a
/// constant column's mean comes out exact); summing `x` itself in f32 leaves an error of
/// many ulps of the offset, which centring would turn into a spurious axis.
pub(crate) fn column_means(x: &Tensor) -> Result<Tensor> {
    let (n, _) = x.dims2()?;
    let shift = x.narrow(0, 0, 1.min(n))?;
    let sums = shifted_column_sums(x, &shift, false)?;
    let mean = ((sums / n.max(1) as f64)? + shift.to_dtype(DType::F64)?)?;
    Ok(mean.to_dtype(DType::F32)?)
}

/// `Σ (x − shift)²` over every element of a 2-D f32 tensor (`shift` is `[1, d]`), by
/// [`shifted_column_sums`]; one read back to the host.
pub(crate) fn shifted_sum_squares(x: &Tensor, shift: &Tensor) -> Result<f64> {
    Ok(shifted_column_sums(x, shift, true)?
        .sum_all()?
        .to_scalar::<f64>()?)
}

pub use kmeans::{silhouette, KMeans, KMeansFit, KMeansParams};
pub use pca::{spectral_scores, CovarianceAccumulator, Pca, PcaFit, PcaParams};
pub use spectral::{Spectral, SpectralOutliers, SpectralParams};
pub use stream::{StreamingKMeans, StreamingKMeansParams};
