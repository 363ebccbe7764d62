//! BERT-family encoders (`BertModel`, `BertForSequenceClassification`), matching
//! transformers' eager implementation.

use candle_core::{DType, Tensor};
use serde::Deserialize;

use super::ops::{self, Mode};
use super::weights::{Linear, Weights};
use crate::{Error, Result};

/// Hyper-parameters from a BERT `config.json`.
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct BertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of every hidden state.
    pub hidden_size: usize,
    /// Number of encoder blocks.
    pub num_hidden_layers: usize,
    /// Attention heads per block.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Activation of the feed-forward layer (`gelu`, `gelu_new`, `relu`).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Number of learned positions.
    pub max_position_embeddings: usize,
    /// Number of token types (segments).
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// Layer-norm epsilon.
    #[serde(default = "default_ln_eps")]
    pub layer_norm_eps: f64,
    /// Padding token id.
    #[serde(default)]
    pub pad_token_id: u32,
    /// Only `absolute` is supported.
    #[serde(default = "default_pos_type")]
    pub position_embedding_type: String,
    /// Labels of a classification head (`id2label`), if the config has one.
    #[serde(default)]
    pub id2label: Option<std::collections::BTreeMap<String, String>>,
    /// `architectures` from the config.
    #[serde(skip)]
    pub architectures: Vec<String>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_type_vocab() -> usize {
    2
}
fn default_ln_eps() -> f64 {
    1e-12
}
fn default_pos_type() -> String {
    "absolute".into()
}

impl BertConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        super::check_dims(&[
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ])?;
        if self.hidden_size % self.num_attention_heads != 0 {
            return bad(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.position_embedding_type != "absolute" {
            return bad(format!(
                "position_embedding_type `{}` is not supported (only `absolute`)",
                self.position_embedding_type
            ));
        }
        Activation::parse(&self.hidden_act)?;
        Ok(())
    }

    /// Whether the config declares a sequence-classification model.
    pub fn is_classifier(&self) -> bool {
        self.architectures
            .iter()
            .any(|a| a.ends_with("ForSequenceClassification"))
    }

    /// Class labels in id order (`LABEL_i` when the config names none).
    pub fn labels(&self) -> Vec<String> {
        let Some(map) = &self.id2label else {
            return vec!["LABEL_0".into(), "LABEL_1".into()];
        };
        let mut v: Vec<(usize, String)> = map
            .iter()
            .filter_map(|(k, v)| k.parse().ok().map(|k| (k, v.clone())))
            .collect();
        v.sort();
        v.into_iter().map(|(_, l)| l).collect()
    }
}

#[derive(Debug, Clone, Copy)]
enum Activation {
    GeluErf,
    GeluTanh,
    Relu,
}

impl Activation {
    fn parse(s: &str) -> Result<Self> {
        match s {
            "gelu" => Ok(Activation::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" => Ok(Activation::GeluTanh),
            "relu" => Ok(Activation::Relu),
            other => Err(Error::Config(format!("unsupported hidden_act `{other}`"))),
        }
    }

    fn apply(self, x: &Tensor, mode: Mode) -> candle_core::Result<Tensor> {
        match self {
            Activation::GeluErf if mode == Mode::Fast => super::kernels::gelu_erf(x),
            Activation::GeluErf => x.gelu_erf(),
            Activation::GeluTanh => x.gelu(),
            Activation::Relu => x.relu(),
        }
    }
}

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn new(size: usize, eps: f64, w: &Weights) -> Result<Self> {
        // Old checkpoints name these gamma/beta.
        let (wn, bn) = if w.contains("weight") {
            ("weight", "bias")
        } else {
            ("gamma", "beta")
        };
        Ok(Self {
            weight: w.get(&[size], wn)?,
            bias: w.get(&[size], bn)?,
            eps,
        })
    }

    fn forward(&self, x: &Tensor, mode: Mode) -> candle_core::Result<Tensor> {
        ops::layer_norm(x, &self.weight, &self.bias, self.eps, mode)
    }
}

struct Block {
    q: Linear,
    k: Linear,
    v: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    ffn_in: Linear,
    ffn_out: Linear,
    ffn_norm: LayerNorm,
}

impl Block {
    fn new(cfg: &BertConfig, w: &Weights) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let att = w.pp("attention");
        Ok(Self {
            q: att.pp("self.query").linear(h, h, true)?,
            k: att.pp("self.key").linear(h, h, true)?,
            v: att.pp("self.value").linear(h, h, true)?,
            attn_out: att.pp("output.dense").linear(h, h, true)?,
            attn_norm: LayerNorm::new(h, cfg.layer_norm_eps, &att.pp("output.LayerNorm"))?,
            ffn_in: w.pp("intermediate.dense").linear(h, i, true)?,
            ffn_out: w.pp("output.dense").linear(i, h, true)?,
            ffn_norm: LayerNorm::new(h, cfg.layer_norm_eps, &w.pp("output.LayerNorm"))?,
        })
    }
}

/// A BERT encoder with optional pooler and classification head.
pub struct Bert {
    cfg: BertConfig,
    act: Activation,
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    token_type_embeddings: Tensor,
    embed_norm: LayerNorm,
    blocks: Vec<Block>,
    pooler: Option<Linear>,
    classifier: Option<Linear>,
}

/// What one forward pass of an encoder returns.
pub(crate) struct EncoderOutput {
    pub hidden: Vec<Tensor>,
    pub pooled: Option<Tensor>,
    pub logits: Option<Tensor>,
}

impl Bert {
    /// Build from a config and weights (names as in transformers; a `bert.` prefix, as
    /// `BertForSequenceClassification` saves them, is detected).
    pub(crate) fn new(cfg: &BertConfig, root: &Weights) -> Result<Self> {
        let base = if root.contains("bert.embeddings.word_embeddings.weight") {
            root.pp("bert")
        } else {
            root.clone()
        };
        let h = cfg.hidden_size;
        let emb = base.pp("embeddings");
        let blocks = (0..cfg.num_hidden_layers)
            .map(|i| Block::new(cfg, &base.pp(format!("encoder.layer.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let pooler = if base.contains("pooler.dense.weight") {
            Some(base.pp("pooler.dense").linear(h, h, true)?)
        } else {
            None
        };
        let classifier = if root.contains("classifier.weight") {
            let n = cfg.labels().len();
            if pooler.is_none() {
                return Err(Error::MissingTensor {
                    name: "pooler.dense.weight".into(),
                });
            }
            Some(root.pp("classifier").linear(h, n, true)?)
        } else if cfg.is_classifier() {
            return Err(Error::MissingTensor {
                name: "classifier.weight".into(),
            });
        } else {
            None
        };
        Ok(Self {
            act: Activation::parse(&cfg.hidden_act)?,
            word_embeddings: emb.get(&[cfg.vocab_size, h], "word_embeddings.weight")?,
            position_embeddings: emb.get(
                &[cfg.max_position_embeddings, h],
                "position_embeddings.weight",
            )?,
            token_type_embeddings: emb
                .get(&[cfg.type_vocab_size, h], "token_type_embeddings.weight")?,
            embed_norm: LayerNorm::new(h, cfg.layer_norm_eps, &emb.pp("LayerNorm"))?,
            blocks,
            pooler,
            classifier,
            cfg: cfg.clone(),
        })
    }

    pub(crate) fn config(&self) -> &BertConfig {
        &self.cfg
    }

    pub(crate) fn has_classifier(&self) -> bool {
        self.classifier.is_some()
    }

    /// The token embedding matrix `[vocab, hidden]`.
    pub(crate) fn token_embeddings(&self) -> &Tensor {
        &self.word_embeddings
    }

    /// Run the encoder on word embeddings `[b, s, h]` (before positions/types are added).
    pub(crate) fn forward_embeds(
        &self,
        embeds: &Tensor,
        mask: &Tensor,
        mode: Mode,
    ) -> Result<EncoderOutput> {
        let (b, s, h) = embeds.dims3()?;
        if s > self.cfg.max_position_embeddings {
            return Err(Error::InvalidArgument(format!(
                "sequence of {s} tokens exceeds max_position_embeddings {}",
                self.cfg.max_position_embeddings
            )));
        }
        let dtype = embeds.dtype();
        let pos = self.position_embeddings.narrow(0, 0, s)?.unsqueeze(0)?;
        let typ = self.token_type_embeddings.narrow(0, 0, 1)?.unsqueeze(0)?;
        let x = embeds.broadcast_add(&pos)?.broadcast_add(&typ)?;
        let mut x = self.embed_norm.forward(&x, mode)?;
        let bias = ops::attention_bias(mask, false, None, dtype)?;
        let heads = self.cfg.num_attention_heads;
        let d = h / heads;
        let scale = 1.0 / (d as f64).sqrt();
        let mut hidden = Vec::with_capacity(self.blocks.len() + 1);
        hidden.push(x.clone());
        for blk in &self.blocks {
            let split = |t: Tensor| -> candle_core::Result<Tensor> {
                t.reshape((b, s, heads, d))?.transpose(1, 2)?.contiguous()
            };
            let q = split(blk.q.forward(&x)?)?;
            let k = split(blk.k.forward(&x)?)?;
            let v = split(blk.v.forward(&x)?)?;
            let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&bias)?;
            let probs = ops::softmax_last(&scores, mode)?;
            let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, s, h))?;
            let a = blk
                .attn_norm
                .forward(&(blk.attn_out.forward(&ctx)? + &x)?, mode)?;
            let f = self.act.apply(&blk.ffn_in.forward(&a)?, mode)?;
            x = blk
                .ffn_norm
                .forward(&(blk.ffn_out.forward(&f)? + &a)?, mode)?;
            hidden.push(x.clone());
        }
        let pooled = match &self.pooler {
            Some(p) => Some(p.forward(&x.narrow(1, 0, 1)?.squeeze(1)?)?.tanh()?),
            None => None,
        };
        let logits = match (&self.classifier, &pooled) {
            (Some(c), Some(p)) => Some(c.forward(p)?),
            _ => None,
        };
        Ok(EncoderOutput {
            hidden,
            pooled,
            logits,
        })
    }

    /// Word embeddings for ids `[b, s]`.
    pub(crate) fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, s) = ids.dims2()?;
        let flat = ids.flatten_all()?;
        Ok(self
            .word_embeddings
            .index_select(&flat, 0)?
            .reshape((b, s, self.cfg.hidden_size))?)
    }

    pub(crate) fn dtype(&self) -> DType {
        self.word_embeddings.dtype()
    }
}
