//! Parity with PyTorch/transformers on the real models (reference values committed in
//! `testdata/reference/*_forward.json`, made by `scripts/reference_forward.py`).
//!
//! Tolerance: every compared row (16 dims at 3 positions, the token mean, per layer)
//! within 1e-4 of PyTorch relative to the row's largest magnitude, in f32.

mod common;

use candle_core::{DType, Tensor, D};
use serde::Deserialize;
use trojanscan::model::{Batch, LoadOptions, Model, PaddingSide, Precision};

const TOL: f64 = 1e-4;

#[derive(Deserialize)]
struct Reference {
    samples: Vec<Sample>,
    #[serde(default)]
    last_hidden_is_normed: bool,
}

#[derive(Deserialize)]
struct Sample {
    text: String,
    input_ids: Vec<u32>,
    hidden: Vec<Layer>,
    #[serde(default)]
    pooler: Option<Vec<f64>>,
    #[serde(default)]
    logits_last: Option<Logits>,
    #[serde(default)]
    final_norm: Option<Layer>,
}

#[derive(Deserialize)]
struct Layer {
    #[serde(default)]
    layer: usize,
    rows: std::collections::BTreeMap<String, Vec<f64>>,
    #[serde(default)]
    mean: Vec<f64>,
    #[serde(default)]
    norm: f64,
}

#[derive(Deserialize)]
struct Logits {
    top_ids: Vec<u32>,
    top_values: Vec<f64>,
    first: Vec<f64>,
}

fn reference(name: &str) -> Reference {
    let p = common::root().join("testdata/reference").join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

/// Row `pos` of `x[b]`, first `n` dims.
fn row(x: &Tensor, b: usize, pos: usize, n: usize) -> Vec<f32> {
    x.get(b)
        .unwrap()
        .get(pos)
        .unwrap()
        .narrow(0, 0, n)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Compare one layer of row `b` (real tokens at `offset..offset+len`) with the reference.
fn check_layer(what: &str, x: &Tensor, b: usize, offset: usize, len: usize, r: &Layer) -> f64 {
    let mut worst = 0f64;
    for (pos, want) in &r.rows {
        let pos: usize = pos.parse().unwrap();
        let got = row(x, b, offset + pos, want.len());
        let e = common::rel_err(&got, want);
        assert!(e < TOL, "{what} layer {} pos {pos}: rel err {e:e}", r.layer);
        worst = worst.max(e);
    }
    let real = x.get(b).unwrap().narrow(0, offset, len).unwrap();
    if !r.mean.is_empty() {
        let m: Vec<f32> = real
            .mean(0)
            .unwrap()
            .narrow(0, 0, r.mean.len())
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1()
            .unwrap();
        let e = common::rel_err(&m, &r.mean);
        assert!(e < TOL, "{what} layer {} mean: rel err {e:e}", r.layer);
        worst = worst.max(e);
    }
    let norm = real
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
        .sqrt();
    let e = (norm - r.norm).abs() / r.norm;
    assert!(
        e < TOL,
        "{what} layer {} norm {norm} vs {}: {e:e}",
        r.layer,
        r.norm
    );
    worst.max(e)
}

fn run_parity(model: &Model, refs: &Reference, side: PaddingSide) -> f64 {
    let ids: Vec<Vec<u32>> = refs.samples.iter().map(|s| s.input_ids.clone()).collect();
    for s in &refs.samples {
        assert_eq!(
            model.tokenize(&s.text).unwrap(),
            s.input_ids,
            "token ids of {:?}",
            s.text
        );
    }
    let mut worst = 0f64;
    // Each text alone, then all texts in one padded batch (masking must not leak).
    let mut runs: Vec<(Vec<usize>, Batch)> = refs
        .samples
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let b = Batch::from_ids(
                std::slice::from_ref(&s.input_ids),
                model.pad_id(),
                side,
                model.device(),
            )
            .unwrap();
            (vec![i], b)
        })
        .collect();
    let all = Batch::from_ids(&ids, model.pad_id(), side, model.device()).unwrap();
    runs.push(((0..ids.len()).collect(), all));
    for (which, batch) in &runs {
        let out = model.forward_with_states(batch).unwrap();
        for (row_i, &si) in which.iter().enumerate() {
            let s = &refs.samples[si];
            let len = s.input_ids.len();
            let offset = match side {
                PaddingSide::Right => 0,
                _ => batch.seq_len() - len,
            };
            let n_layers = out.hidden_states.len();
            for r in &s.hidden {
                // transformers' last hidden_states entry of a decoder is after the final norm.
                let x = if refs.last_hidden_is_normed && r.layer == n_layers - 1 {
                    out.final_hidden.as_ref().unwrap()
                } else {
                    &out.hidden_states[r.layer]
                };
                worst = worst.max(check_layer(&s.text, x, row_i, offset, len, r));
            }
            if let (Some(fr), Some(f)) = (&s.final_norm, &out.final_hidden) {
                worst = worst.max(check_layer(&s.text, f, row_i, offset, len, fr));
            }
            if let (Some(want), Some(p)) = (&s.pooler, &out.pooler_output) {
                let got: Vec<f32> = p
                    .get(row_i)
                    .unwrap()
                    .narrow(0, 0, want.len())
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let e = common::rel_err(&got, want);
                assert!(e < TOL, "pooler of {:?}: {e:e}", s.text);
                worst = worst.max(e);
            }
            if let Some(want) = &s.logits_last {
                let lg = out.logits.as_ref().unwrap().get(row_i).unwrap();
                let first: Vec<f32> = lg
                    .narrow(0, 0, want.first.len())
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let e = common::rel_err(&first, &want.first);
                assert!(e < TOL, "logits of {:?}: {e:e}", s.text);
                worst = worst.max(e);
                let top: Vec<u32> = lg
                    .arg_sort_last_dim(false)
                    .unwrap()
                    .narrow(D::Minus1, 0, want.top_ids.len())
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                // Ids must agree wherever the reference values are not near-ties.
                for (k, (g, w)) in top.iter().zip(&want.top_ids).enumerate() {
                    let tie = k + 1 < want.top_values.len()
                        && (want.top_values[k] - want.top_values[k + 1]).abs() < 1e-3;
                    assert!(
                        g == w || tie,
                        "top-{k} logit id of {:?}: {g} vs {w}",
                        s.text
                    );
                }
            }
        }
    }
    worst
}

#[test]
fn minilm_matches_transformers() {
    let Some(dir) = common::minilm() else { return };
    let model = Model::load(&dir, &LoadOptions::default()).unwrap();
    let refs = reference("minilm_forward.json");
    let worst = run_parity(&model, &refs, PaddingSide::Right);
    println!("minilm: worst relative error vs PyTorch {worst:e}");
}

#[test]
fn smollm2_f32_matches_transformers() {
    let Some(path) = common::smollm2() else {
        return;
    };
    let model = Model::load(&path, &LoadOptions::default()).unwrap();
    let refs = reference("smollm2_forward.json");
    let worst_r = run_parity(&model, &refs, PaddingSide::Right);
    let worst_l = run_parity(&model, &refs, PaddingSide::Left);
    println!("smollm2 f32: worst relative error vs PyTorch {worst_r:e} (right pad), {worst_l:e} (left pad)");
}

/// The quantized path (GGUF weights as stored, ggml's activation rounding) against the
/// dequantized f32 path. Measured: see BENCHMARKS.md; the bound is what we guarantee.
#[test]
fn smollm2_native_close_to_dequantized() {
    let Some(path) = common::smollm2() else {
        return;
    };
    let f32m = Model::load(&path, &LoadOptions::default()).unwrap();
    let native = Model::load(&path, &LoadOptions::with_precision(Precision::Native)).unwrap();
    let refs = reference("smollm2_forward.json");
    let texts: Vec<&str> = refs.samples.iter().map(|s| s.text.as_str()).collect();
    let (a, b) = (f32m.encode(&texts).unwrap(), native.encode(&texts).unwrap());
    let (oa, ob) = (
        f32m.forward_with_states(&a).unwrap(),
        native.forward_with_states(&b).unwrap(),
    );
    let mut worst = 0f32;
    for (l, (x, y)) in oa.hidden_states.iter().zip(&ob.hidden_states).enumerate() {
        let px = a.pool(x, trojanscan::model::Pooling::Mean).unwrap();
        let py = b.pool(y, trojanscan::model::Pooling::Mean).unwrap();
        let scale = px.abs().unwrap().max_keepdim(1).unwrap();
        let err = (px - py)
            .unwrap()
            .abs()
            .unwrap()
            .broadcast_div(&scale)
            .unwrap();
        let e = err.max_all().unwrap().to_scalar::<f32>().unwrap();
        println!("layer {l:2}: native vs f32 mean-pooled rel err {e:.2e}");
        worst = worst.max(e);
    }
    let (la, lb) = (oa.logits.unwrap(), ob.logits.unwrap());
    let top_a: Vec<u32> = la.argmax(D::Minus1).unwrap().to_vec1().unwrap();
    let top_b: Vec<u32> = lb.argmax(D::Minus1).unwrap().to_vec1().unwrap();
    let lerr = common::max_abs(&(&la - &lb).unwrap()) / common::max_abs(&la);
    println!("native vs f32: worst pooled-state rel err {worst:.2e}, logits rel err {lerr:.2e}, top-1 {top_a:?} vs {top_b:?}");
    assert!(worst < 0.05, "quantized path drifted: {worst}");
    assert!(lerr < 0.05, "quantized logits drifted: {lerr}");
    let agree = top_a.iter().zip(&top_b).filter(|(x, y)| x == y).count();
    assert!(
        agree + 1 >= top_a.len(),
        "top-1 next tokens differ: {top_a:?} vs {top_b:?}"
    );
}
