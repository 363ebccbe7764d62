//! Criterion benches of the clustering kernels on a 10k x 384 activation-like matrix.

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use trojanscan::linalg::{
    silhouette, spectral_scores, CovarianceAccumulator, KMeansParams, PcaParams,
    StreamingKMeansParams,
};

fn data(n: usize, d: usize) -> Tensor {
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    let v: Vec<f32> = (0..n * d)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let shift = if i / d < n / 10 { 1.0 } else { 0.0 };
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5 + shift
        })
        .collect();
    Tensor::from_vec(v, (n, d), &Device::Cpu).unwrap()
}

fn kernels(c: &mut Criterion) {
    let x = data(10_000, 384);
    let pca = PcaParams::new(10).check().unwrap();
    let z = pca.fit(&x).unwrap().transform(&x).unwrap();
    let mut g = c.benchmark_group("linalg_10000x384");
    g.sample_size(10);
    g.bench_function("pca_10", |b| b.iter(|| pca.fit(&x).unwrap()));
    // The audit's path: projections from the fit's last pass, no total-variance pass.
    let lean = PcaParams::new(10).total_variance(false).check().unwrap();
    g.bench_function("pca_10_fit_transform_lean", |b| {
        b.iter(|| lean.fit_transform(&x).unwrap())
    });
    // Like for like: the same lean fit, then a separate projection pass.
    g.bench_function("pca_10_lean_fit_then_transform", |b| {
        b.iter(|| lean.fit(&x).unwrap().transform(&x).unwrap())
    });
    let km = KMeansParams::new(2).restarts(1).check().unwrap();
    g.bench_function("kmeans_2_on_pca10", |b| b.iter(|| km.fit(&z).unwrap()));
    g.bench_function("streaming_kmeans_2_on_pca10_chunks_of_1000", |b| {
        b.iter(|| {
            let mut s = StreamingKMeansParams::new(2).restarts(1).check().unwrap();
            for start in (0..10_000).step_by(1000) {
                s.push(&z.narrow(0, start, 1000).unwrap()).unwrap();
            }
            s
        })
    });
    g.bench_function("covariance_pca_10_chunks_of_1000", |b| {
        b.iter(|| {
            let mut acc = CovarianceAccumulator::new(384);
            for start in (0..10_000).step_by(1000) {
                acc.push(&x.narrow(0, start, 1000).unwrap()).unwrap();
            }
            acc.pca(10).unwrap()
        })
    });
    g.bench_function("spectral_scores", |b| {
        b.iter(|| spectral_scores(&x, 0).unwrap())
    });
    let labels = km.fit(&z).unwrap().labels;
    let z2 = z.narrow(0, 0, 2000).unwrap();
    g.bench_function("silhouette_2000", |b| {
        b.iter(|| silhouette(&z2, &labels[..2000], 2).unwrap())
    });
    g.finish();
}

/// The audit's shape: ten classes of 1 000 rows in 10 PCA dims, 2-means with four
/// restarts, one class at a time against all of them in one batch.
fn batched_classes(c: &mut Criterion) {
    let z = data(10_000, 10);
    let classes: Vec<Tensor> = (0..10)
        .map(|i| z.narrow(0, i * 1000, 1000).unwrap())
        .collect();
    let km = KMeansParams::new(2).restarts(4).check().unwrap();
    let mut g = c.benchmark_group("kmeans_10_classes_of_1000x10");
    g.sample_size(20);
    g.bench_function("one_class_at_a_time", |b| {
        b.iter(|| {
            classes
                .iter()
                .map(|x| km.fit(x).unwrap())
                .collect::<Vec<_>>()
        })
    });
    g.bench_function("batched", |b| b.iter(|| km.fit_batch(&classes).unwrap()));
    g.finish();
}

criterion_group!(benches, kernels, batched_classes);
criterion_main!(benches);
