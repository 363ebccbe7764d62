//! The clustering kernels against known answers and against scikit-learn on the same
//! matrices (fixtures in `testdata/linalg/`, written by `scripts/linalg_fixtures.py`).

mod common;

use candle_core::{Device, Tensor};
use serde_json::Value;
use trojanscan::linalg::{
    silhouette, spectral_scores, CovarianceAccumulator, KMeansParams, PcaParams,
};
use trojanscan::Error;

fn fixture(name: &str) -> Value {
    let p = common::root().join("testdata/linalg").join(name);
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}

fn matrix(v: &Value) -> Tensor {
    let rows: Vec<Vec<f32>> = serde_json::from_value(v.clone()).unwrap();
    let (n, d) = (rows.len(), rows[0].len());
    Tensor::from_vec(rows.concat(), (n, d), &Device::Cpu).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    serde_json::from_value(v.clone()).unwrap()
}

/// |cos| between two vectors: axes are defined up to sign.
fn abs_cos(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * y).sum();
    let na = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    (dot / (na * nb)).abs()
}

/// Deterministic Gaussian-ish noise (sum of uniforms) without an RNG crate.
fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            let mut acc = 0.0f32;
            for _ in 0..4 {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                acc += (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            }
            acc
        })
        .collect()
}

/// Three well-separated blobs in 8-D: k-means recovers them exactly, whatever the seed.
#[test]
fn kmeans_separates_blobs() {
    let (per, d) = (120, 8);
    let mut rows = Vec::new();
    for (b, z) in noise(3 * per * d, 3).chunks(d).enumerate() {
        let c = (b / per) as f32 * 20.0;
        rows.extend(
            z.iter()
                .enumerate()
                .map(|(j, v)| v + if j == b / per { c } else { 0.0 }),
        );
    }
    let x = Tensor::from_vec(rows, (3 * per, d), &Device::Cpu).unwrap();
    for seed in 0..4 {
        let fit = KMeansParams::new(3)
            .seed(seed)
            .check()
            .unwrap()
            .fit(&x)
            .unwrap();
        let mut sizes = fit.sizes.clone();
        sizes.sort();
        assert_eq!(sizes, vec![per, per, per], "seed {seed}");
        for b in 0..3 {
            let l = fit.labels[b * per];
            assert!(fit.labels[b * per..(b + 1) * per].iter().all(|&x| x == l));
        }
        let (s, _) = silhouette(&x, &fit.labels, 3).unwrap();
        assert!(s > 0.8, "silhouette {s}");
    }
}

/// Groups of different sizes clustered in one batch get the fits each gets alone: the
/// padding rows count for nothing, a converged restart stops moving, and an empty cluster
/// (three clusters asked of two distinct points) is refilled rather than left NaN.
#[test]
fn kmeans_batched_over_groups_matches_each_group_alone() {
    let d = 6;
    let blobs = |n: usize, seed: u64, sep: f32| {
        let z = noise(n * d, seed);
        let rows: Vec<f32> = z
            .chunks(d)
            .enumerate()
            .flat_map(|(i, r)| {
                let c = (i % 3) as f32 * sep;
                r.iter().map(move |v| v + c).collect::<Vec<_>>()
            })
            .collect();
        Tensor::from_vec(rows, (n, d), &Device::Cpu).unwrap()
    };
    let twins: Vec<f32> = (0..160)
        .flat_map(|i| vec![if i < 40 { 5.0f32 } else { 0.0 }; d])
        .collect();
    // Sizes within a factor of two, so that all four share one padded batch.
    let groups = vec![
        blobs(300, 21, 8.0),
        blobs(157, 22, 0.3), // overlapping: many iterations, restarts disagree
        Tensor::from_vec(twins, (160, d), &Device::Cpu).unwrap(),
        blobs(280, 23, 2.0),
    ];
    for k in [2, 3] {
        let km = KMeansParams::new(k).restarts(3).seed(5).check().unwrap();
        let batch = km.fit_batch(&groups).unwrap();
        assert_eq!(batch.len(), groups.len());
        for (x, b) in groups.iter().zip(&batch) {
            let alone = km.fit(x).unwrap();
            assert_eq!(b.labels, alone.labels, "k {k}");
            assert_eq!(b.sizes, alone.sizes);
            assert_eq!(b.iterations, alone.iterations);
            assert!((b.inertia - alone.inertia).abs() <= 1e-5 * alone.inertia.max(1.0));
            assert_eq!(b.sizes.iter().sum::<usize>(), x.dim(0).unwrap());
            let c = b.centroids.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(c.iter().all(|v| v.is_finite()));
        }
    }
    let km = KMeansParams::new(2).check().unwrap();
    assert!(km.fit_batch(&[]).unwrap().is_empty());
    // A narrower group (a class whose PCA kept fewer axes) is padded with zero columns.
    let narrow = groups[3].narrow(1, 0, 4).unwrap();
    let both = km.fit_batch(&[groups[3].clone(), narrow.clone()]).unwrap();
    let alone = km.fit(&narrow).unwrap();
    assert_eq!(both[1].labels, alone.labels);
    assert_eq!(both[1].iterations, alone.iterations);
    assert_eq!(both[1].centroids.dims(), &[2, 4]);
    // Data sharing a large offset: the planted blobs are found exactly, and the centres
    // sit on them (k-means works on centred rows and adds the mean back).
    let far = (blobs(300, 24, 8.0) + 1000.0).unwrap();
    let fit = KMeansParams::new(3)
        .seed(1)
        .check()
        .unwrap()
        .fit(&far)
        .unwrap();
    for b in 0..3 {
        let l = fit.labels[b];
        assert!((0..300).filter(|i| i % 3 == b).all(|i| fit.labels[i] == l));
    }
    let c = fit.centroids.to_vec2::<f32>().unwrap();
    assert!(
        c.iter().flatten().all(|v| (990.0..1020.0).contains(v)),
        "{c:?}"
    );
    let empty = Tensor::zeros((10, 0), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(km.fit_batch(&[groups[0].clone(), empty]).is_err());
}

/// Data stretched along a known direction: PCA's first axis is that direction and its
/// variance the planted one; the in-memory and streaming paths agree.
#[test]
fn pca_finds_a_planted_axis_in_memory_and_streaming() {
    let (n, d) = (2000, 16);
    let axis: Vec<f64> = (0..d).map(|j| ((j as f64) * 0.7).sin()).collect();
    let norm = axis.iter().map(|x| x * x).sum::<f64>().sqrt();
    let axis: Vec<f64> = axis.iter().map(|x| x / norm).collect();
    let t = noise(n, 11);
    let z = noise(n * d, 12);
    let mut rows = vec![0f32; n * d];
    for i in 0..n {
        for j in 0..d {
            rows[i * d + j] = 3.0 + z[i * d + j] * 0.2 + t[i] * 10.0 * axis[j] as f32;
        }
    }
    let x = Tensor::from_vec(rows, (n, d), &Device::Cpu).unwrap();
    let fit = PcaParams::new(3).check().unwrap().fit(&x).unwrap();
    let v = fit.components.get(0).unwrap().to_vec1::<f32>().unwrap();
    assert!(abs_cos(&v, &axis) > 0.999, "{}", abs_cos(&v, &axis));
    let tv: f64 = {
        let m = t.iter().map(|&x| f64::from(x)).sum::<f64>() / n as f64;
        t.iter().map(|&x| (f64::from(x) - m).powi(2)).sum::<f64>() / (n - 1) as f64 * 100.0
    };
    assert!(
        (fit.explained_variance[0] - tv).abs() / tv < 0.01,
        "{:?} vs {tv}",
        fit.explained_variance
    );
    assert!(fit.explained_variance_ratio().unwrap()[0] > 0.9);

    let mut acc = CovarianceAccumulator::new(d);
    for start in (0..n).step_by(300) {
        acc.push(&x.narrow(0, start, 300.min(n - start)).unwrap())
            .unwrap();
    }
    assert_eq!(acc.rows(), n);
    let streamed = acc.pca(3).unwrap();
    let w = streamed
        .components
        .get(0)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let wf: Vec<f64> = w.iter().map(|&x| f64::from(x)).collect();
    assert!(abs_cos(&v, &wf) > 0.9999);
    for (a, b) in fit
        .explained_variance
        .iter()
        .zip(&streamed.explained_variance)
    {
        assert!((a - b).abs() / b < 1e-3, "{a} vs {b}");
    }
    let (m1, m2) = (
        fit.mean.to_vec1::<f32>().unwrap(),
        streamed.mean.to_vec1::<f32>().unwrap(),
    );
    assert!(m1.iter().zip(&m2).all(|(a, b)| (a - b).abs() < 1e-4));
}

#[test]
fn bad_parameters_and_shapes_are_errors() {
    assert!(KMeansParams::new(0).check().is_err());
    assert!(KMeansParams::new(2).restarts(0).check().is_err());
    assert!(KMeansParams::new(2).tolerance(f64::NAN).check().is_err());
    assert!(PcaParams::new(0).check().is_err());
    let x = Tensor::zeros((3, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(KMeansParams::new(5).check().unwrap().fit(&x).is_err());
    assert!(PcaParams::new(5).check().unwrap().fit(&x).is_err());
    // Constant data has no principal axis.
    assert!(PcaParams::new(2).check().unwrap().fit(&x).is_err());
    assert!(silhouette(&x, &[0, 1], 2).is_err());
    assert!(CovarianceAccumulator::new(4).finish().is_err());
    let mut acc = CovarianceAccumulator::new(5);
    assert!(acc.push(&x).is_err());
}

/// `fit_transform` takes the projections from the fit's last pass: they equal
/// `transform`'s, also when the rows share a large offset, across row blocks (9 000 rows),
/// when the subspace is the whole space (l = d), and with or without the total variance
/// (which only `explained_variance_ratio` needs; it matches the data's).
#[test]
fn pca_fit_transform_matches_transform() {
    let (n, d) = (9000, 40);
    let coef = noise(n * 3, 11);
    let z = noise(n * d, 12);
    let rows: Vec<f32> = (0..n)
        .flat_map(|i| {
            let (a, b, c) = (
                coef[3 * i] * 8.0,
                coef[3 * i + 1] * 4.0,
                coef[3 * i + 2] * 2.0,
            );
            let z = &z[i * d..(i + 1) * d];
            (0..d).map(move |j| {
                let axis = match j % 3 {
                    0 => a,
                    1 => b,
                    _ => c,
                };
                1000.0 + axis + 0.05 * z[j]
            })
        })
        .collect();
    // The data's own total variance, in f64.
    let mut tv = 0.0;
    for j in 0..d {
        let col: Vec<f64> = (0..n).map(|i| f64::from(rows[i * d + j])).collect();
        let m = col.iter().sum::<f64>() / n as f64;
        tv += col.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1) as f64;
    }
    let x = Tensor::from_vec(rows, (n, d), &Device::Cpu).unwrap();
    for (k, oversample) in [(3, 10), (3, 40)] {
        for with_tv in [true, false] {
            let pca = PcaParams::new(k)
                .oversample(oversample)
                .total_variance(with_tv)
                .check()
                .unwrap();
            let (fit, proj) = pca.fit_transform(&x).unwrap();
            match fit.total_variance {
                Some(t) => assert!(with_tv && (t - tv).abs() < 1e-4 * tv, "{t} vs {tv}"),
                None => assert!(!with_tv && fit.explained_variance_ratio().is_none()),
            }
            // Three axes of variance 64/12, 16/12 and 4/12 (uniform-sum noise has variance
            // 1/3 per unit), each spread over a third of the columns.
            let ev = &fit.explained_variance;
            assert!((ev[0] / ev[1] - 4.0).abs() < 0.4 && (ev[1] / ev[2] - 4.0).abs() < 0.4);
            let again = fit.transform(&x).unwrap();
            let err = common::max_abs(&(&proj - &again).unwrap());
            let scale = common::max_abs(&again);
            assert!(
                proj.dims() == [n, 3] && err <= 1e-4 * scale,
                "{err} of {scale}"
            );
        }
    }
}

/// Constant data is refused as having no variance, also through the audit's path (no
/// total variance, l < d) and when every value is a large number whose f32 sum is inexact.
#[test]
fn pca_refuses_constant_data() {
    for (n, d, v) in [(50, 30, 0.0f32), (20_000, 40, 1000.37), (100, 50, 1000.37)] {
        let x = Tensor::from_vec(vec![v; n * d], (n, d), &Device::Cpu).unwrap();
        for with_tv in [true, false] {
            let pca = PcaParams::new(3).total_variance(with_tv).check().unwrap();
            let no_variance = |r: trojanscan::Result<_>| matches!(r, Err(Error::NoVariance { rows, cols }) if (rows, cols) == (n, d));
            assert!(no_variance(pca.fit(&x).map(drop)), "[{n}, {d}] of {v}");
            assert!(
                no_variance(pca.fit_transform(&x).map(drop)),
                "[{n}, {d}] of {v}"
            );
        }
    }
}

#[test]
fn pca_matches_scikit_learn() {
    let f = fixture("pca.json");
    let x = matrix(&f["x"]);
    let k = f["n_components"].as_u64().unwrap() as usize;
    let fit = PcaParams::new(k).check().unwrap().fit(&x).unwrap();
    let want: Vec<Vec<f64>> = serde_json::from_value(f["components"].clone()).unwrap();
    for (i, w) in want.iter().enumerate() {
        let got = fit.components.get(i).unwrap().to_vec1::<f32>().unwrap();
        let c = abs_cos(&got, w);
        assert!(c > 1.0 - 1e-5, "component {i}: |cos| {c}");
    }
    for (a, b) in fit
        .explained_variance
        .iter()
        .zip(floats(&f["explained_variance"]))
    {
        assert!((a - b).abs() / b < 1e-4, "variance {a} vs {b}");
    }
    let tv = f["total_variance"].as_f64().unwrap();
    assert!((fit.total_variance.unwrap() - tv).abs() / tv < 1e-4);
    let mean = fit.mean.to_vec1::<f32>().unwrap();
    for (a, b) in mean.iter().zip(floats(&f["mean"])) {
        assert!((f64::from(*a) - b).abs() < 1e-4);
    }
}

#[test]
fn kmeans_matches_scikit_learn() {
    let f = fixture("kmeans.json");
    let x = matrix(&f["x"]);
    let k = f["k"].as_u64().unwrap() as usize;
    let fit = KMeansParams::new(k)
        .restarts(10)
        .check()
        .unwrap()
        .fit(&x)
        .unwrap();
    let want = f["inertia"].as_f64().unwrap();
    println!("inertia {} vs scikit-learn {want}", fit.inertia);
    assert!(
        fit.inertia <= want * (1.0 + 1e-4),
        "{} vs {want}",
        fit.inertia
    );
    // Same partition up to relabelling.
    let theirs: Vec<u32> = serde_json::from_value(f["labels"].clone()).unwrap();
    let mut map = std::collections::BTreeMap::new();
    let agree = fit
        .labels
        .iter()
        .zip(&theirs)
        .filter(|(a, b)| *map.entry(**a).or_insert(**b) == **b)
        .count();
    assert!(
        agree as f64 >= 0.99 * theirs.len() as f64,
        "{agree} of {}",
        theirs.len()
    );
}

#[test]
fn spectral_scores_match_numpy_and_rank_the_outliers() {
    let f = fixture("spectral.json");
    let x = matrix(&f["x"]);
    let (v, scores) = spectral_scores(&x, 0).unwrap();
    let want = floats(&f["top_direction"]);
    assert!(abs_cos(&v, &want) > 1.0 - 1e-5);
    for (a, b) in scores.iter().zip(floats(&f["scores"])) {
        assert!((a - b).abs() <= 1e-3 * b.abs().max(1.0), "{a} vs {b}");
    }
    let outliers: Vec<usize> = serde_json::from_value(f["outliers"].clone()).unwrap();
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let top: std::collections::BTreeSet<usize> = order[..outliers.len()].iter().copied().collect();
    assert_eq!(top, outliers.into_iter().collect());
}
