//! Linear-algebra kernels for the detectors, written on candle tensors so the same code
//! runs on the CPU (candle's SIMD gemm) and on CUDA: k-means ([`KMeansParams`]), PCA
//! ([`PcaParams`], and [`CovarianceAccumulator`] for data streamed in chunks), spectral
//! signature scores ([`spectral_scores`]), silhouettes ([`silhouette`]), and the
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
//! assert!(z.explained_variance_ratio()[0] > 0.99);
//! let fit = KMeansParams::new(2).seed(7).check()?.fit(&z.transform(&x)?)?;
//! assert_eq!(fit.sizes, vec![50, 50]);
//! # Ok::<(), trojanscan::Error>(())
//! ```

mod kmeans;
mod pca;
pub(crate) mod svd;

pub use kmeans::{silhouette, KMeans, KMeansFit, KMeansParams};
pub use pca::{spectral_scores, CovarianceAccumulator, Pca, PcaFit, PcaParams};
