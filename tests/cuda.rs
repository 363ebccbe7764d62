//! The same kernels and models on CUDA: compiled only with `--features cuda`, and then
//! they need a GPU (`cargo test --release --features cuda --test cuda`). Each check runs
//! on `cuda:0` and compares with the CPU path and with the same references the CPU tests
//! use (scikit-learn fixtures in `testdata/linalg/`, transformers' zoo logits).
#![cfg(feature = "cuda")]

mod common;

use std::path::Path;

use candle_core::{Device, Tensor};
use serde_json::Value;
use trojanscan::audit::{read_rows, AuditParams};
use trojanscan::device::DeviceChoice;
use trojanscan::linalg::{silhouette, spectral_scores, KMeansParams, PcaParams, SpectralParams};
use trojanscan::model::{LoadOptions, Model};

fn gpu() -> Device {
    DeviceChoice::Cuda(0)
        .open()
        .expect("the cuda tests need a CUDA device 0")
}

fn fixture(name: &str) -> Value {
    let p = common::root().join("testdata/linalg").join(name);
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}

fn matrix(v: &Value, dev: &Device) -> Tensor {
    let rows: Vec<Vec<f32>> = serde_json::from_value(v.clone()).unwrap();
    let (n, d) = (rows.len(), rows[0].len());
    Tensor::from_vec(rows.concat(), (n, d), dev).unwrap()
}

fn abs_cos(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x * *y)).sum();
    let n = |v: &[f32]| v.iter().map(|x| f64::from(x * x)).sum::<f64>().sqrt();
    (dot / (n(a) * n(b))).abs()
}

/// Rows on which `a` agrees with `b` under the label map taken from each `a` label's first
/// row (the partitions' agreement up to relabelling, when every label is used).
fn agreement(a: &[u32], b: &[u32]) -> usize {
    let mut map = std::collections::BTreeMap::new();
    a.iter()
        .zip(b)
        .filter(|(x, y)| *map.entry(**x).or_insert(**y) == **y)
        .count()
}

/// PCA, k-means, spectral scores and silhouettes on the GPU give the CPU's answers on the
/// scikit-learn fixtures (the CPU's own agreement with scikit-learn is `tests/linalg.rs`).
#[test]
fn linalg_kernels_on_cuda_match_the_cpu() {
    let dev = gpu();

    let f = fixture("pca.json");
    let k = f["n_components"].as_u64().unwrap() as usize;
    let pca = PcaParams::new(k).check().unwrap();
    let cpu = pca.fit(&matrix(&f["x"], &Device::Cpu)).unwrap();
    let cuda = pca.fit(&matrix(&f["x"], &dev)).unwrap();
    assert!(cuda.components.device().is_cuda());
    for i in 0..k {
        let a = cpu.components.get(i).unwrap().to_vec1::<f32>().unwrap();
        let b = cuda.components.get(i).unwrap().to_vec1::<f32>().unwrap();
        let c = abs_cos(&a, &b);
        assert!(c > 1.0 - 1e-5, "component {i}: |cos| {c}");
    }
    for (a, b) in cpu.explained_variance.iter().zip(&cuda.explained_variance) {
        assert!((a - b).abs() <= 1e-4 * a.abs(), "variance {a} vs {b}");
    }
    // The audit's path: projections from the fit's last pass, no total variance.
    let lean = PcaParams::new(k).total_variance(false).check().unwrap();
    let (fc, pc) = lean.fit_transform(&matrix(&f["x"], &Device::Cpu)).unwrap();
    let (fg, pg) = lean.fit_transform(&matrix(&f["x"], &dev)).unwrap();
    assert!(fg.total_variance.is_none() && pg.device().is_cuda());
    let want = fc.transform(&matrix(&f["x"], &Device::Cpu)).unwrap();
    let err = common::max_abs(&(&pg.to_device(&Device::Cpu).unwrap() - &want).unwrap());
    assert!(
        err <= 1e-4 * common::max_abs(&pc),
        "projections differ by {err}"
    );
    let (tc, tg) = (cpu.total_variance.unwrap(), cuda.total_variance.unwrap());
    assert!((tc - tg).abs() <= 1e-4 * tc, "total variance {tc} vs {tg}");

    let f = fixture("kmeans.json");
    let k = f["k"].as_u64().unwrap() as usize;
    let km = KMeansParams::new(k).restarts(10).check().unwrap();
    let (xc, xg) = (matrix(&f["x"], &Device::Cpu), matrix(&f["x"], &dev));
    let (cpu, cuda) = (km.fit(&xc).unwrap(), km.fit(&xg).unwrap());
    let want = f["inertia"].as_f64().unwrap();
    println!(
        "k-means inertia: cuda {} cpu {} scikit-learn {want}",
        cuda.inertia, cpu.inertia
    );
    assert!(cuda.inertia <= want * (1.0 + 1e-4));
    assert_eq!(agreement(&cuda.labels, &cpu.labels), cpu.labels.len());
    let (sc, _) = silhouette(&xc, &cpu.labels, k).unwrap();
    let (sg, _) = silhouette(&xg, &cuda.labels, k).unwrap();
    assert!((sc - sg).abs() < 1e-4, "silhouette cpu {sc} cuda {sg}");

    let f = fixture("spectral.json");
    let (xc, xg) = (matrix(&f["x"], &Device::Cpu), matrix(&f["x"], &dev));
    let (vc, sc) = spectral_scores(&xc, 0).unwrap();
    let (vg, sg) = spectral_scores(&xg, 0).unwrap();
    assert!(abs_cos(&vc, &vg) > 1.0 - 1e-5);
    for (a, b) in sc.iter().zip(&sg) {
        assert!((a - b).abs() <= 1e-3 * a.abs().max(1.0), "{a} vs {b}");
    }
    let sp = SpectralParams::new().check().unwrap();
    assert_eq!(sp.fit(&xc).unwrap().outliers, sp.fit(&xg).unwrap().outliers);
}

/// The batched k-means (the audit's per-class path) on the GPU: groups of different sizes
/// and widths in one call get the CPU's partitions.
#[test]
fn batched_kmeans_on_cuda_matches_the_cpu() {
    let dev = gpu();
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    // Two blobs per group, a 10% minority, widths 10 and 80 (the augmented and the
    // broadcast distance paths).
    let shapes = [(900, 10), (700, 10), (500, 80), (1000, 10)];
    let groups: Vec<Vec<f32>> = shapes
        .iter()
        .map(|&(n, d)| {
            (0..n * d)
                .map(|i| next() + if (i / d) % 10 == 0 { 3.0 } else { 0.0 })
                .collect()
        })
        .collect();
    let on = |dev: &Device| -> Vec<Tensor> {
        groups
            .iter()
            .zip(shapes)
            .map(|(r, s)| Tensor::from_vec(r.clone(), s, dev).unwrap())
            .collect()
    };
    let km = KMeansParams::new(2).restarts(4).seed(3).check().unwrap();
    let cpu = km.fit_batch(&on(&Device::Cpu)).unwrap();
    let cuda = km.fit_batch(&on(&dev)).unwrap();
    for (i, (a, b)) in cpu.iter().zip(&cuda).enumerate() {
        assert_eq!(agreement(&b.labels, &a.labels), a.labels.len(), "group {i}");
        let mut sizes = b.sizes.clone();
        sizes.sort();
        assert_eq!(sizes[0], shapes[i].0 / 10, "group {i}: the minority");
        assert!(
            (a.inertia - b.inertia).abs() <= 1e-4 * a.inertia,
            "group {i}: inertia cpu {} cuda {}",
            a.inertia,
            b.inertia
        );
    }
}

fn load(dir: &Path, device: DeviceChoice) -> Model {
    let mut opts = LoadOptions::default();
    opts.device = device;
    Model::load(dir, &opts).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// Every zoo model (BERT classifiers and llama decoders) on the GPU gives transformers'
/// logits, within the CPU test's tolerance.
#[test]
fn zoo_logits_on_cuda_match_transformers() {
    let zoo = common::root().join("testdata/zoo");
    let text = std::fs::read_to_string(zoo.join("reference_logits.json")).unwrap();
    let reference: Value = serde_json::from_str(&text).unwrap();
    let models = reference["models"].as_object().unwrap();
    assert!(!models.is_empty());
    for (name, r) in models {
        let m = load(&zoo.join(name), DeviceChoice::Cuda(0));
        assert!(m.device().is_cuda());
        let texts: Vec<String> = serde_json::from_value(r["texts"].clone()).unwrap();
        let indices: Vec<Vec<usize>> = serde_json::from_value(r["logit_indices"].clone()).unwrap();
        let want: Vec<Vec<f64>> = serde_json::from_value(r["logits"].clone()).unwrap();
        let mut worst = 0f64;
        for (i, t) in texts.iter().enumerate() {
            let logits = common::logits(&m, t);
            let got: Vec<f32> = indices[i].iter().map(|&j| logits[j]).collect();
            worst = worst.max(common::rel_err(&got, &want[i]));
        }
        println!("{name} on cuda: max relative logit error vs transformers {worst:.2e}");
        assert!(worst < 1e-4, "{name}: {worst:.2e}");
    }
}

/// The dataset audit with the model on the GPU flags the rows it flags on the CPU, and
/// finds the planted poison: precision and recall of at least 0.95 on the trojan's set,
/// nothing flagged on the clean one.
#[test]
fn audit_on_cuda_flags_what_the_cpu_flags() {
    for name in ["badnets-s0", "clean-finetune-s0"] {
        let dir = common::root().join("testdata/zoo").join(name);
        let rows = read_rows(dir.join("train.jsonl")).unwrap();
        let poisoned: Vec<usize> = common::poisoned_rows(&dir.join("train.jsonl"))
            .iter()
            .enumerate()
            .filter_map(|(i, &p)| p.then_some(i))
            .collect();
        let audit = AuditParams::default().check().unwrap();
        let cpu = audit.run(&load(&dir, DeviceChoice::Cpu), &rows).unwrap();
        let cuda = audit
            .run(&load(&dir, DeviceChoice::Cuda(0)), &rows)
            .unwrap();
        println!(
            "{name}: cuda flags {} rows, cpu {}; suspicion cuda {:.3} cpu {:.3}",
            cuda.flagged.len(),
            cpu.flagged.len(),
            cuda.suspicion,
            cpu.suspicion
        );
        assert_eq!(cuda.flagged, cpu.flagged, "{name}");
        let hits = cuda
            .flagged
            .iter()
            .filter(|i| poisoned.binary_search(i).is_ok())
            .count() as f64;
        if poisoned.is_empty() {
            assert!(cuda.flagged.is_empty(), "{name}: a clean set flagged");
        } else {
            let (p, r) = (
                hits / cuda.flagged.len().max(1) as f64,
                hits / poisoned.len() as f64,
            );
            assert!(p >= 0.95 && r >= 0.95, "{name}: precision {p} recall {r}");
        }
        assert!((cuda.suspicion - cpu.suspicion).abs() < 1e-3, "{name}");
    }
}
