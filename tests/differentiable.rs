//! The differentiable forward mode: same values as the fast mode, and gradients with
//! respect to input embeddings (and one-hot token choices) that agree with central finite
//! differences in f64. The trigger hunt's gradient-guided search relies on this.

mod common;

use candle_core::{DType, Tensor, Var};
use common::tiny::{self, Lcg, TinyOpts};
use trojanscan::model::{Batch, LoadOptions, Mode, Model, PaddingSide, Precision};

fn ids_batch(model: &Model, side: PaddingSide) -> Batch {
    let texts = ["the cat sat on the mat", "a dog ran"];
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| model.tokenize(t).unwrap()).collect();
    Batch::from_ids(&ids, model.pad_id(), side, model.device()).unwrap()
}

/// A scalar objective touching every layer, the logits and (for a classifier) the head.
fn objective(model: &Model, embeds: &Tensor, batch: &Batch, proj: &[Tensor]) -> Tensor {
    let out = model
        .forward_embeds(embeds, batch, Mode::Differentiable)
        .unwrap();
    let pooled = out
        .pooled_states(batch, trojanscan::model::Pooling::Mean)
        .unwrap();
    let mut total = Tensor::zeros((), embeds.dtype(), embeds.device()).unwrap();
    for (p, w) in pooled.iter().zip(proj) {
        total = (total + p.broadcast_mul(w).unwrap().sum_all().unwrap()).unwrap();
    }
    if let Some(l) = &out.logits {
        let lp = candle_nn::ops::log_softmax(l, 1).unwrap();
        total = (total + lp.narrow(1, 0, 1).unwrap().sum_all().unwrap()).unwrap();
    }
    total
}

fn check_gradients(model: &Model, side: PaddingSide) {
    let batch = ids_batch(model, side);
    let base = model.embed(&batch.input_ids).unwrap();
    let h = base.dim(2).unwrap();
    let mut r = Lcg(99);
    let proj: Vec<Tensor> = (0..=model.info().num_layers)
        .map(|_| r.tensor(&[1, h], 1.0).to_dtype(DType::F64).unwrap())
        .collect();
    let var = Var::from_tensor(&base).unwrap();
    let loss = objective(model, var.as_tensor(), &batch, &proj);
    let grads = loss.backward().unwrap();
    let g = grads
        .get(var.as_tensor())
        .expect("gradient reaches the embeddings");
    let g: Vec<f64> = g.flatten_all().unwrap().to_vec1().unwrap();
    let flat: Vec<f64> = base.flatten_all().unwrap().to_vec1().unwrap();
    let eps = 1e-6;
    let (b, s, _) = base.dims3().unwrap();
    let mut worst = 0f64;
    // Probe coordinates across rows, positions and dims (real tokens only).
    for k in 0..24 {
        let row = k % b;
        let len = batch.lengths[row];
        let offset = if side == PaddingSide::Left {
            s - len
        } else {
            0
        };
        let pos = offset + (k * 7) % len;
        let dim = (k * 5) % h;
        let idx = (row * s + pos) * h + dim;
        let at = |delta: f64| {
            let mut v = flat.clone();
            v[idx] += delta;
            let t = Tensor::from_vec(v, (b, s, h), base.device()).unwrap();
            objective(model, &t, &batch, &proj)
                .to_scalar::<f64>()
                .unwrap()
        };
        let fd = (at(eps) - at(-eps)) / (2.0 * eps);
        let err = (fd - g[idx]).abs() / fd.abs().max(g[idx].abs()).max(1e-3);
        worst = worst.max(err);
        assert!(
            err < 1e-5,
            "coordinate {idx}: autograd {} vs finite difference {fd}",
            g[idx]
        );
    }
    println!(
        "{}: worst relative gradient error {worst:.1e}",
        model.info().model_type
    );
}

#[test]
fn gradients_match_finite_differences() {
    let tmp = tempfile::tempdir().unwrap();
    let f64opts = LoadOptions::with_precision(Precision::F64);
    let bert = tmp.path().join("bert");
    tiny::write_bert(
        &bert,
        TinyOpts {
            classifier: true,
            ..Default::default()
        },
    );
    check_gradients(&Model::load(&bert, &f64opts).unwrap(), PaddingSide::Right);
    for kind in ["llama", "qwen2"] {
        let dir = tmp.path().join(kind);
        tiny::write_llama(&dir, TinyOpts::default(), kind);
        let m = Model::load(&dir, &f64opts).unwrap();
        check_gradients(&m, PaddingSide::Right);
        check_gradients(&m, PaddingSide::Left);
    }
}

/// The gradient of the objective with respect to one-hot token choices, as HotFlip/GCG
/// take it: one-hot rows times the embedding matrix.
#[test]
fn one_hot_gradients_match_finite_differences() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("llama");
    tiny::write_llama(&dir, TinyOpts::default(), "llama");
    let model = Model::load(&dir, &LoadOptions::with_precision(Precision::F64)).unwrap();
    let batch = ids_batch(&model, PaddingSide::Right);
    let emb = model.token_embeddings().clone();
    let v = emb.dim(0).unwrap();
    let onehot = |ids: &Tensor| -> Tensor {
        let ids: Vec<Vec<u32>> = ids.to_vec2().unwrap();
        let (b, s) = (ids.len(), ids[0].len());
        let mut data = vec![0f64; b * s * v];
        for (i, row) in ids.iter().enumerate() {
            for (j, &t) in row.iter().enumerate() {
                data[(i * s + j) * v + t as usize] = 1.0;
            }
        }
        Tensor::from_vec(data, (b, s, v), emb.device()).unwrap()
    };
    let oh = onehot(&batch.input_ids);
    let proj: Vec<Tensor> = (0..=model.info().num_layers)
        .map(|l| {
            Lcg(l as u64)
                .tensor(&[1, tiny::H], 1.0)
                .to_dtype(DType::F64)
                .unwrap()
        })
        .collect();
    let f = |x: &Tensor| {
        let e = x.broadcast_matmul(&emb).unwrap();
        objective(&model, &e, &batch, &proj)
    };
    let var = Var::from_tensor(&oh).unwrap();
    let grads = f(var.as_tensor()).backward().unwrap();
    let g: Vec<f64> = grads
        .get(var.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let flat: Vec<f64> = oh.flatten_all().unwrap().to_vec1().unwrap();
    let dims = oh.dims().to_vec();
    for k in 0..12 {
        let idx = ((k % 2) * dims[1] + 1 + k % 3) * v + (k * 11) % v;
        let at = |d: f64| {
            let mut x = flat.clone();
            x[idx] += d;
            f(&Tensor::from_vec(x, dims.as_slice(), emb.device()).unwrap())
                .to_scalar::<f64>()
                .unwrap()
        };
        let fd = (at(1e-6) - at(-1e-6)) / 2e-6;
        let err = (fd - g[idx]).abs() / fd.abs().max(g[idx].abs()).max(1e-3);
        assert!(err < 1e-5, "one-hot coordinate {idx}: {} vs {fd}", g[idx]);
    }
}

/// Fast (fused kernels) and differentiable (primitive ops) modes compute the same thing.
#[test]
fn fast_and_differentiable_modes_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let bert = tmp.path().join("bert");
    tiny::write_bert(&bert, TinyOpts::default());
    let llama = tmp.path().join("llama");
    tiny::write_llama(&llama, TinyOpts::default(), "llama");
    for dir in [bert, llama] {
        let model = Model::load(&dir, &LoadOptions::default()).unwrap();
        let batch = ids_batch(&model, PaddingSide::Right);
        let e = model.embed(&batch.input_ids).unwrap();
        let a = model.forward_embeds(&e, &batch, Mode::Fast).unwrap();
        let b = model
            .forward_embeds(&e, &batch, Mode::Differentiable)
            .unwrap();
        for (x, y) in a.hidden_states.iter().zip(&b.hidden_states) {
            let d = common::max_abs(&(x - y).unwrap());
            assert!(d < 1e-5, "{}: modes differ by {d}", dir.display());
        }
    }
}
