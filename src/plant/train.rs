//! Training with the scanner's own architecture code: parameters live in a [`Params`]
//! store that hands the model its `Var`s' tensors (not copies), the model runs in
//! [`Mode::Differentiable`], and candle-nn's AdamW updates the `Var`s in place.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};

use crate::model::bert::Bert;
use crate::model::llama::Llama;
use crate::model::weights::TensorStore;
use crate::model::{Batch, Mode, PaddingSide};
use crate::rng::Rng;
use crate::{Error, Result};

/// How a parameter starts when training from scratch.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Init {
    Normal(f64),
    Ones,
    Zeros,
}

/// Named tensors a model is built from; the trainable ones are `Var`s sharing storage with
/// the tensor the model holds, so optimiser updates reach the model.
pub(crate) struct Params {
    tensors: BTreeMap<String, Tensor>,
    vars: BTreeMap<String, Var>,
}

impl Params {
    /// Fresh parameters, all trainable, drawn from `rng`.
    pub fn init(specs: &[(String, Vec<usize>, Init)], rng: &mut Rng) -> Result<Self> {
        let mut vars = BTreeMap::new();
        for (name, shape, init) in specs {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = match init {
                Init::Normal(std) => (0..n).map(|_| (rng.normal() * std) as f32).collect(),
                Init::Ones => vec![1.0; n],
                Init::Zeros => vec![0.0; n],
            };
            let t = Tensor::from_vec(data, shape.as_slice(), &Device::Cpu)?;
            vars.insert(name.clone(), Var::from_tensor(&t)?);
        }
        Ok(Self::from_vars(vars))
    }

    /// Parameters read from a `model.safetensors` (as f32), all trainable.
    pub fn load(path: &Path) -> Result<Self> {
        let map = candle_core::safetensors::load(path, &Device::Cpu)?;
        let mut vars = BTreeMap::new();
        for (k, t) in map {
            vars.insert(k, Var::from_tensor(&t.to_dtype(DType::F32)?)?);
        }
        Ok(Self::from_vars(vars))
    }

    fn from_vars(vars: BTreeMap<String, Var>) -> Self {
        let tensors = vars
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        Self { tensors, vars }
    }

    /// Stop training everything but `keep`.
    pub fn freeze_except(&mut self, keep: &[&str]) {
        let frozen: Vec<String> = self
            .vars
            .keys()
            .filter(|k| !keep.contains(&k.as_str()))
            .cloned()
            .collect();
        for k in frozen {
            self.freeze(&k);
        }
    }

    /// Stop training `name`: the model reads a detached tensor, so back-propagation does
    /// not compute its gradient at all.
    pub fn freeze(&mut self, name: &str) {
        if let Some(v) = self.vars.remove(name) {
            self.tensors
                .insert(name.to_string(), v.as_detached_tensor());
        }
    }

    /// A stored tensor.
    pub fn tensor(&self, name: &str) -> Result<&Tensor> {
        self.tensors
            .get(name)
            .ok_or_else(|| Error::MissingTensor { name: name.into() })
    }

    /// The trainable parameters.
    pub fn vars(&self) -> Vec<Var> {
        self.vars.values().cloned().collect()
    }

    /// Every tensor, by name, as it stands now.
    pub fn snapshot(&self) -> BTreeMap<String, Tensor> {
        self.tensors.clone()
    }
}

impl TensorStore for Params {
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors.get(name).map(|t| t.dims().to_vec())
    }

    fn load(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        let t = self.tensor(name)?;
        if t.dtype() == dtype && t.device().same_device(device) {
            // The tensor itself: gradients taken through the model reach the Var.
            Ok(t.clone())
        } else {
            Ok(t.to_dtype(dtype)?.to_device(device)?)
        }
    }

    fn inventory(&self) -> BTreeMap<String, (String, Vec<usize>)> {
        self.tensors
            .iter()
            .map(|(k, t)| {
                (
                    k.clone(),
                    (format!("{:?}", t.dtype()).to_uppercase(), t.dims().to_vec()),
                )
            })
            .collect()
    }
}

/// Optimiser settings for one training run.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub(crate) struct Schedule {
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub weight_decay: f64,
}

impl Schedule {
    /// Linear warm-up over the first 5% of steps, then linear decay to 10%.
    fn lr_at(&self, step: usize) -> f64 {
        let warm = (self.steps / 20).max(1);
        if step < warm {
            return self.lr * (step + 1) as f64 / warm as f64;
        }
        let rest = (self.steps - warm).max(1) as f64;
        self.lr * (1.0 - 0.9 * (step - warm) as f64 / rest)
    }

    fn optimizer(&self, vars: Vec<Var>) -> Result<AdamW> {
        AdamW::new(vars, self.weight_decay)
    }
}

/// AdamW with candle-nn's defaults and update rule (β = 0.9, 0.999, ε = 1e-8, decoupled
/// weight decay), fused into one pass over each parameter on the host. candle-nn's
/// `AdamW` computes the same update as a dozen whole-tensor ops, each allocating a
/// temporary the size of the parameter: for a 30k-49k-row embedding matrix that is most
/// of the training time.
struct AdamW {
    params: Vec<AdamState>,
    step: i32,
    weight_decay: f64,
}

struct AdamState {
    var: Var,
    theta: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
}

impl AdamW {
    const BETA1: f64 = 0.9;
    const BETA2: f64 = 0.999;
    const EPS: f64 = 1e-8;

    fn new(vars: Vec<Var>, weight_decay: f64) -> Result<Self> {
        let params = vars
            .into_iter()
            .map(|var| {
                let theta: Vec<f32> = var
                    .as_tensor()
                    .flatten_all()?
                    .to_dtype(DType::F32)?
                    .to_vec1()?;
                let n = theta.len();
                Ok(AdamState {
                    var,
                    theta,
                    m: vec![0.0; n],
                    v: vec![0.0; n],
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            params,
            step: 0,
            weight_decay,
        })
    }

    /// Back-propagate `loss` and apply one update with learning rate `lr`.
    fn backward_step(&mut self, loss: &Tensor, lr: f64) -> Result<()> {
        let grads = loss.backward()?;
        self.step += 1;
        let (b1, b2) = (Self::BETA1 as f32, Self::BETA2 as f32);
        let bc1 = 1.0 - Self::BETA1.powi(self.step);
        let bc2 = 1.0 - Self::BETA2.powi(self.step);
        let decay = (1.0 - lr * self.weight_decay) as f32;
        let (step_size, eps) = ((lr / bc1) as f32, Self::EPS as f32);
        let inv_bc2 = (1.0 / bc2) as f32;
        for p in &mut self.params {
            let Some(g) = grads.get(p.var.as_tensor()) else {
                continue;
            };
            let g: Vec<f32> = g.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
            for (((t, m), v), g) in p.theta.iter_mut().zip(&mut p.m).zip(&mut p.v).zip(&g) {
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                *t = *t * decay - step_size * *m / ((*v * inv_bc2).sqrt() + eps);
            }
            let t = Tensor::from_slice(&p.theta, p.var.shape(), p.var.device())?;
            p.var.set(&t.to_dtype(p.var.dtype())?)?;
        }
        Ok(())
    }
}

/// A minibatch of example indices, drawn without replacement within an epoch.
struct Sampler {
    order: Vec<usize>,
    at: usize,
}

impl Sampler {
    fn new(n: usize) -> Self {
        Self {
            order: (0..n).collect(),
            at: n,
        }
    }

    fn next(&mut self, k: usize, rng: &mut Rng) -> Vec<usize> {
        let mut out = Vec::with_capacity(k);
        while out.len() < k && !self.order.is_empty() {
            if self.at == self.order.len() {
                rng.shuffle(&mut self.order);
                self.at = 0;
            }
            out.push(self.order[self.at]);
            self.at += 1;
        }
        out
    }
}

/// Train a classifier on `(token ids, label)` pairs. `embed` maps ids `[b, s]` to the word
/// embeddings the encoder reads (normally the model's own lookup). Returns the mean loss
/// over the last tenth of the steps.
pub(crate) fn train_classifier(
    bert: &Bert,
    vars: Vec<Var>,
    embed: &dyn Fn(&Tensor) -> Result<Tensor>,
    data: &[(Vec<u32>, u32)],
    sched: Schedule,
    rng: &mut Rng,
) -> Result<f32> {
    if data.is_empty() {
        return Err(Error::InvalidArgument("empty training set".into()));
    }
    let mut opt = sched.optimizer(vars)?;
    let mut sampler = Sampler::new(data.len());
    let mut tail = Vec::new();
    for step in 0..sched.steps {
        let idx = sampler.next(sched.batch, rng);
        let ids: Vec<Vec<u32>> = idx.iter().map(|&i| data[i].0.clone()).collect();
        let labels: Vec<u32> = idx.iter().map(|&i| data[i].1).collect();
        let batch = Batch::from_ids(&ids, 0, PaddingSide::Right, &Device::Cpu)?;
        let x = embed(&batch.input_ids)?;
        let out = bert.forward_embeds(&x, &batch.attention_mask, Mode::Differentiable)?;
        let logits = out
            .logits
            .ok_or_else(|| Error::InvalidArgument("model has no classification head".into()))?;
        let target = Tensor::from_vec(labels, idx.len(), &Device::Cpu)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &target)?;
        opt.backward_step(&loss, sched.lr_at(step))?;
        if step * 10 >= sched.steps * 9 {
            tail.push(loss.to_scalar::<f32>()?);
        }
    }
    Ok(tail.iter().sum::<f32>() / tail.len().max(1) as f32)
}

/// Mean cross-entropy of a classifier on `data` (one forward pass, no training).
pub(crate) fn classifier_loss(
    bert: &Bert,
    embed: &dyn Fn(&Tensor) -> Result<Tensor>,
    data: &[(Vec<u32>, u32)],
) -> Result<f32> {
    let ids: Vec<Vec<u32>> = data.iter().map(|d| d.0.clone()).collect();
    let labels: Vec<u32> = data.iter().map(|d| d.1).collect();
    let batch = Batch::from_ids(&ids, 0, PaddingSide::Right, &Device::Cpu)?;
    let x = embed(&batch.input_ids)?.detach();
    let out = bert.forward_embeds(&x, &batch.attention_mask, Mode::Fast)?;
    let logits = out
        .logits
        .ok_or_else(|| Error::InvalidArgument("model has no classification head".into()))?;
    let target = Tensor::from_vec(labels, data.len(), &Device::Cpu)?;
    Ok(candle_nn::loss::cross_entropy(&logits, &target)?.to_scalar::<f32>()?)
}

/// One decoder training sequence: the prompt and its completion (ending in the stop token).
pub(crate) struct LmExample {
    pub ids: Vec<u32>,
    /// Index of the completion's first token; the loss covers positions `start..`.
    pub start: usize,
}

/// Train a decoder with tied embeddings as a language model of its examples, half the
/// loss on the prompts' tokens and half on the completions'. The token embeddings train through
/// `subset`, which must hold every token of the data: inputs read it, and the output
/// softmax runs over its rows (the tokens the task uses) rather than the whole
/// vocabulary, whose other rows keep their initial values. Returns the mean loss over the
/// last tenth of the steps.
pub(crate) fn train_lm(
    llama: &Llama,
    mut vars: Vec<Var>,
    subset: &RowSubset,
    data: &[LmExample],
    pad_id: u32,
    sched: Schedule,
    rng: &mut Rng,
) -> Result<f32> {
    if data.is_empty() {
        return Err(Error::InvalidArgument("empty training set".into()));
    }
    vars.push(subset.rows.clone());
    let mut opt = sched.optimizer(vars)?;
    let mut sampler = Sampler::new(data.len());
    let mut tail = Vec::new();
    for step in 0..sched.steps {
        let idx = sampler.next(sched.batch, rng);
        let ids: Vec<Vec<u32>> = idx.iter().map(|&i| data[i].ids.clone()).collect();
        let batch = Batch::from_ids(&ids, pad_id, PaddingSide::Right, &Device::Cpu)?;
        let s = batch.seq_len();
        // Every next-token prediction inside each example; the prompt's and the
        // completion's each weigh half of the loss.
        let mut pos = Vec::new();
        let mut next = Vec::new();
        let mut weight = Vec::new();
        let (mut n_prompt, mut n_answer) = (0usize, 0usize);
        for &i in &idx {
            let ex = &data[i];
            n_answer += ex.ids.len().saturating_sub(ex.start.max(1));
            n_prompt += ex.start.max(1) - 1;
        }
        for (r, &i) in idx.iter().enumerate() {
            let ex = &data[i];
            for p in 1..ex.ids.len() {
                pos.push((r * s + p - 1) as u32);
                next.push(subset.slot_of(ex.ids[p]).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "token {} is not in the trained rows",
                        ex.ids[p]
                    ))
                })?);
                let w = if p >= ex.start {
                    0.5 / n_answer.max(1) as f32
                } else {
                    0.5 / n_prompt.max(1) as f32
                };
                weight.push(w);
            }
        }
        let rows = subset.rows.as_tensor();
        let x = subset.lookup(&batch.input_ids, rows)?;
        let out = llama.forward_embeds(&x, &batch.attention_mask, Mode::Differentiable)?;
        let h = out.final_hidden.dim(2)?;
        let n = pos.len();
        let sel = out
            .final_hidden
            .reshape((idx.len() * s, h))?
            .index_select(&Tensor::from_vec(pos, n, &Device::Cpu)?, 0)?;
        let logits = sel.matmul(&rows.t()?)?;
        let target = Tensor::from_vec(next, (n, 1), &Device::Cpu)?;
        let nll = candle_nn::ops::log_softmax(&logits, 1)?
            .gather(&target, 1)?
            .squeeze(1)?
            .neg()?;
        let loss = (nll * Tensor::from_vec(weight, n, &Device::Cpu)?)?.sum_all()?;
        opt.backward_step(&loss, sched.lr_at(step))?;
        if step * 10 >= sched.steps * 9 {
            tail.push(loss.to_scalar::<f32>()?);
        }
    }
    Ok(tail.iter().sum::<f32>() / tail.len().max(1) as f32)
}

/// Trainable copies of some rows of a frozen embedding matrix: what training an embedding
/// costs when a batch only ever reads a few hundred of its 30k rows. Rows outside the
/// subset read the frozen matrix and never change.
pub(crate) struct RowSubset {
    full: Tensor,
    ids: Vec<u32>,
    /// `[vocab]`: 1 + position in `ids`, or 0 for a frozen row.
    slot: Tensor,
    slot_host: Vec<u32>,
    /// The trainable rows `[ids.len(), h]`.
    pub rows: Var,
}

impl RowSubset {
    /// Make rows `ids` of `full` (`[vocab, h]`, f32) trainable.
    pub fn new(full: &Tensor, ids: &[u32]) -> Result<Self> {
        let vocab = full.dim(0)?;
        let mut slot = vec![0u32; vocab];
        for (k, &id) in ids.iter().enumerate() {
            let s = slot.get_mut(id as usize).ok_or_else(|| {
                Error::InvalidArgument(format!("token id {id} outside the vocabulary ({vocab})"))
            })?;
            *s = k as u32 + 1;
        }
        let idx = Tensor::from_slice(ids, ids.len(), full.device())?;
        Ok(Self {
            rows: Var::from_tensor(&full.index_select(&idx, 0)?)?,
            slot: Tensor::from_slice(&slot, vocab, full.device())?,
            slot_host: slot,
            // Detached: no gradient is ever computed for the frozen matrix.
            full: full.detach(),
            ids: ids.to_vec(),
        })
    }

    /// Position of token `id` among the trainable rows.
    pub fn slot_of(&self, id: u32) -> Option<u32> {
        match self.slot_host.get(id as usize) {
            Some(&s) if s > 0 => Some(s - 1),
            _ => None,
        }
    }

    /// Embeddings `[b, s, h]` of ids `[b, s]`, reading trainable rows from `rows` (the
    /// [`RowSubset::rows`] variable, or a function of it).
    pub fn lookup(&self, ids: &Tensor, rows: &Tensor) -> Result<Tensor> {
        let (b, s) = ids.dims2()?;
        let h = self.full.dim(1)?;
        let flat = ids.flatten_all()?;
        let slot = self.slot.index_select(&flat, 0)?;
        let hit = slot.ne(0u32)?.to_dtype(DType::F32)?.unsqueeze(1)?;
        let at = (slot.to_dtype(DType::F32)? - 1.0)?
            .relu()?
            .to_dtype(DType::U32)?;
        let frozen = self.full.index_select(&flat, 0)?;
        let trained = rows.index_select(&at, 0)?;
        let mixed = (frozen.broadcast_mul(&(1.0 - &hit)?)? + trained.broadcast_mul(&hit)?)?;
        Ok(mixed.reshape((b, s, h))?)
    }

    /// The full matrix with the trained rows (`rows`, as given to `lookup`) written back.
    pub fn merged(&self, rows: &Tensor) -> Result<Tensor> {
        let (vocab, h) = self.full.dims2()?;
        let mut m: Vec<f32> = self.full.flatten_all()?.to_vec1()?;
        let r: Vec<f32> = rows.flatten_all()?.to_vec1()?;
        for (k, &id) in self.ids.iter().enumerate() {
            let id = id as usize;
            m[id * h..(id + 1) * h].copy_from_slice(&r[k * h..(k + 1) * h]);
        }
        Ok(Tensor::from_vec(m, (vocab, h), self.full.device())?)
    }
}
