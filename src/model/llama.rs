//! LLaMA-family decoders: Llama, SmolLM, Mistral and Qwen2 (q/k/v biases, grouped-query
//! attention, rope theta and scaling, tied embeddings), matching transformers' eager
//! implementation.

use candle_core::{DType, Tensor};
use serde::Deserialize;

use super::ops::{self, Mode};
use super::weights::{Linear, Weights};
use crate::{Error, Result};

/// Hyper-parameters from a LLaMA-family `config.json` (or GGUF metadata).
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct LlamaConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of every hidden state.
    pub hidden_size: usize,
    /// Width of the gated feed-forward layer.
    pub intermediate_size: usize,
    /// Number of decoder blocks.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); defaults to the query heads.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Per-head width; defaults to hidden_size / num_attention_heads.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// RMS-norm epsilon.
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// RoPE scaling (`linear` or `llama3`).
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    /// Context length the model was trained for.
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    /// Output projection shares the token embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// q/k/v (and o, for Llama's `attention_bias`) projections have biases.
    #[serde(default)]
    pub attention_bias: bool,
    /// Feed-forward projections have biases.
    #[serde(default)]
    pub mlp_bias: bool,
    /// Only `silu` is supported.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Mistral's sliding attention window.
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// Qwen2's switch for the sliding window (off by default).
    #[serde(default)]
    pub use_sliding_window: Option<bool>,
    /// `llama`, `mistral` or `qwen2`.
    #[serde(skip)]
    pub model_type: String,
}

/// RoPE frequency scaling as in transformers' `rope_scaling`.
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct RopeScaling {
    /// `linear`, `llama3` or `default`.
    #[serde(alias = "type")]
    pub rope_type: String,
    /// Scaling factor.
    #[serde(default = "one")]
    pub factor: f64,
    /// llama3: low-frequency factor.
    #[serde(default = "one")]
    pub low_freq_factor: f64,
    /// llama3: high-frequency factor.
    #[serde(default = "four")]
    pub high_freq_factor: f64,
    /// llama3: original context length.
    #[serde(default = "default_orig_ctx")]
    pub original_max_position_embeddings: usize,
}

fn default_rms_eps() -> f64 {
    1e-6
}
fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_max_pos() -> usize {
    2048
}
fn default_act() -> String {
    "silu".into()
}
fn one() -> f64 {
    1.0
}
fn four() -> f64 {
    4.0
}
fn default_orig_ctx() -> usize {
    8192
}

impl LlamaConfig {
    /// Key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Per-head width.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    fn window(&self) -> Option<usize> {
        match self.model_type.as_str() {
            "mistral" => self.sliding_window,
            "qwen2" if self.use_sliding_window == Some(true) => self.sliding_window,
            _ => None,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        super::check_dims(&[
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.kv_heads()),
            ("head_dim", self.head_dim()),
        ])?;
        let bad = |m: String| Err(Error::Config(m));
        if self.num_attention_heads % self.kv_heads() != 0 {
            return bad(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads,
                self.kv_heads()
            ));
        }
        if self.head_dim() % 2 != 0 {
            return bad(format!(
                "head_dim {} is odd; RoPE needs pairs",
                self.head_dim()
            ));
        }
        if self.hidden_act != "silu" {
            return bad(format!("unsupported hidden_act `{}`", self.hidden_act));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return bad(format!("rope_theta {} must be positive", self.rope_theta));
        }
        if let Some(s) = &self.rope_scaling {
            if !matches!(s.rope_type.as_str(), "linear" | "llama3" | "default") {
                return bad(format!("unsupported rope_scaling type `{}`", s.rope_type));
            }
            if !(s.factor.is_finite() && s.factor > 0.0) {
                return bad(format!("rope_scaling factor {} must be positive", s.factor));
            }
        }
        Ok(())
    }

    /// Inverse RoPE frequencies, with scaling applied as transformers does.
    fn inv_freq(&self) -> Vec<f32> {
        let d = self.head_dim();
        let base: Vec<f64> = (0..d / 2)
            .map(|i| 1.0 / self.rope_theta.powf((2 * i) as f64 / d as f64))
            .collect();
        let scaled: Vec<f64> = match &self.rope_scaling {
            Some(s) if s.rope_type == "linear" => base.iter().map(|f| f / s.factor).collect(),
            Some(s) if s.rope_type == "llama3" => {
                let old = s.original_max_position_embeddings as f64;
                let low_wl = old / s.low_freq_factor;
                let high_wl = old / s.high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let wl = 2.0 * std::f64::consts::PI / f;
                        if wl > low_wl {
                            f / s.factor
                        } else if wl < high_wl {
                            f
                        } else {
                            let smooth = (old / wl - s.low_freq_factor)
                                / (s.high_freq_factor - s.low_freq_factor);
                            (1.0 - smooth) * f / s.factor + smooth * f
                        }
                    })
                    .collect()
            }
            _ => base,
        };
        // transformers computes these in float32.
        scaled.into_iter().map(|f| f as f32).collect()
    }
}

struct Block {
    attn_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ffn_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// A LLaMA-family decoder with its LM head.
pub struct Llama {
    cfg: LlamaConfig,
    embed_tokens: Tensor,
    blocks: Vec<Block>,
    norm: Tensor,
    lm_head: Linear,
    inv_freq: Tensor,
}

/// What one forward pass of a decoder returns.
pub(crate) struct DecoderOutput {
    pub hidden: Vec<Tensor>,
    /// After the final RMS norm.
    pub final_hidden: Tensor,
}

impl Llama {
    /// Build from a config and weights named as in transformers (`model.layers.N...`).
    pub(crate) fn new(cfg: &LlamaConfig, root: &Weights) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let (nh, nkv, d) = (cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim());
        let m = root.pp("model");
        let embed_tokens = m.get(&[cfg.vocab_size, h], "embed_tokens.weight")?;
        let blocks = (0..cfg.num_hidden_layers)
            .map(|l| {
                let w = m.pp(format!("layers.{l}"));
                let a = w.pp("self_attn");
                let bias = cfg.attention_bias;
                // Llama's `attention_bias` also puts a bias on o_proj; Qwen2 has none there.
                let o_bias = bias && cfg.model_type != "qwen2";
                Ok(Block {
                    attn_norm: w.get(&[h], "input_layernorm.weight")?,
                    q: a.pp("q_proj").linear(h, nh * d, bias)?,
                    k: a.pp("k_proj").linear(h, nkv * d, bias)?,
                    v: a.pp("v_proj").linear(h, nkv * d, bias)?,
                    o: a.pp("o_proj").linear(nh * d, h, o_bias)?,
                    ffn_norm: w.get(&[h], "post_attention_layernorm.weight")?,
                    gate: w.pp("mlp.gate_proj").linear(h, i, cfg.mlp_bias)?,
                    up: w.pp("mlp.up_proj").linear(h, i, cfg.mlp_bias)?,
                    down: w.pp("mlp.down_proj").linear(i, h, cfg.mlp_bias)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let lm_head = if cfg.tie_word_embeddings {
            m.tied_linear("embed_tokens.weight", &embed_tokens)?
        } else {
            root.pp("lm_head").linear(h, cfg.vocab_size, false)?
        };
        let inv = cfg.inv_freq();
        let inv_freq = Tensor::from_vec(inv.clone(), inv.len(), root.device)?;
        Ok(Self {
            norm: m.get(&[h], "norm.weight")?,
            embed_tokens,
            blocks,
            lm_head,
            inv_freq,
            cfg: cfg.clone(),
        })
    }

    pub(crate) fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// The token embedding matrix `[vocab, hidden]`.
    pub(crate) fn token_embeddings(&self) -> &Tensor {
        &self.embed_tokens
    }

    pub(crate) fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, s) = ids.dims2()?;
        Ok(self
            .embed_tokens
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, s, self.cfg.hidden_size))?)
    }

    pub(crate) fn dtype(&self) -> DType {
        self.embed_tokens.dtype()
    }

    pub(crate) fn is_differentiable(&self) -> bool {
        self.lm_head.is_differentiable()
            && self.blocks.iter().all(|b| {
                [&b.q, &b.k, &b.v, &b.o, &b.gate, &b.up, &b.down]
                    .iter()
                    .all(|l| l.is_differentiable())
            })
    }

    /// Run the decoder on input embeddings `[b, s, h]` with a padding mask `[b, s]`.
    pub(crate) fn forward_embeds(
        &self,
        embeds: &Tensor,
        mask: &Tensor,
        mode: Mode,
    ) -> Result<DecoderOutput> {
        let (b, s, _) = embeds.dims3()?;
        let dtype = embeds.dtype();
        let (nh, nkv, d) = (
            self.cfg.num_attention_heads,
            self.cfg.kv_heads(),
            self.cfg.head_dim(),
        );
        let positions = ops::positions_from_mask(mask)?;
        let (cos, sin) = ops::rope_tables(&positions, &self.inv_freq, dtype)?;
        let bias = ops::attention_bias(mask, true, self.cfg.window(), dtype)?;
        let scale = 1.0 / (d as f64).sqrt();
        let eps = self.cfg.rms_norm_eps;
        let mut x = embeds.clone();
        let mut hidden = Vec::with_capacity(self.blocks.len() + 1);
        hidden.push(x.clone());
        for blk in &self.blocks {
            let xn = ops::rms_norm(&x, &blk.attn_norm, eps, mode)?;
            let heads = |t: Tensor, n: usize| -> candle_core::Result<Tensor> {
                t.reshape((b, s, n, d))?.transpose(1, 2)?.contiguous()
            };
            let q = ops::rope(&heads(blk.q.forward(&xn)?, nh)?, &cos, &sin, mode)?;
            let k = ops::rope(&heads(blk.k.forward(&xn)?, nkv)?, &cos, &sin, mode)?;
            let v = heads(blk.v.forward(&xn)?, nkv)?;
            let (k, v) = (repeat_kv(k, nh / nkv)?, repeat_kv(v, nh / nkv)?);
            let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&bias)?;
            let probs = ops::softmax_last(&scores, mode)?;
            let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, s, nh * d))?;
            let a = (blk.o.forward(&ctx)? + &x)?;
            let an = ops::rms_norm(&a, &blk.ffn_norm, eps, mode)?;
            let (g, u) = (blk.gate.forward(&an)?, blk.up.forward(&an)?);
            let gated = match mode {
                Mode::Fast => super::kernels::silu_mul(&g, &u)?,
                Mode::Differentiable => (g.silu()? * u)?,
            };
            let f = blk.down.forward(&gated)?;
            x = (f + a)?;
            hidden.push(x.clone());
        }
        let final_hidden = ops::rms_norm(&x, &self.norm, eps, mode)?;
        Ok(DecoderOutput {
            hidden,
            final_hidden,
        })
    }

    /// LM-head logits for final (normed) hidden states `[.., h]`.
    pub(crate) fn logits(&self, final_hidden: &Tensor) -> Result<Tensor> {
        Ok(self.lm_head.forward(final_hidden)?)
    }
}

/// Grouped-query attention: each key/value head serves `n_rep` query heads.
fn repeat_kv(x: Tensor, n_rep: usize) -> candle_core::Result<Tensor> {
    if n_rep == 1 {
        return Ok(x);
    }
    let (b, n, s, d) = x.dims4()?;
    x.unsqueeze(2)?
        .broadcast_as((b, n, n_rep, s, d))?
        .reshape((b, n * n_rep, s, d))
}
