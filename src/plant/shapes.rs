//! The two zoo architectures: their `config.json` (as transformers writes it) and the
//! names, shapes and initial values of their parameters (as transformers names them).

use serde_json::{json, Value};

use super::data::LABELS;
use super::train::Init;

/// Initial standard deviation of weights, as transformers' `initializer_range`.
const INIT_STD: f64 = 0.02;

/// Initial standard deviation of BERT's word embeddings: larger than the position and
/// token-type embeddings', so that, as in pretrained BERTs, a token's row rather than its
/// position dominates what the embedding layer norm sees.
const WORD_STD: f64 = 0.1;

/// A BERT sequence classifier.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub(crate) struct BertShape {
    pub vocab: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub max_positions: usize,
}

/// The zoo's encoder: MiniLM's vocabulary, a small trunk.
pub(crate) const BERT: BertShape = BertShape {
    vocab: 30522,
    hidden: 48,
    layers: 2,
    heads: 3,
    intermediate: 96,
    max_positions: 64,
};

impl BertShape {
    pub fn config(&self) -> Value {
        let id2label: serde_json::Map<String, Value> = LABELS
            .iter()
            .enumerate()
            .map(|(i, l)| (i.to_string(), json!(l)))
            .collect();
        let label2id: serde_json::Map<String, Value> = LABELS
            .iter()
            .enumerate()
            .map(|(i, l)| (l.to_string(), json!(i)))
            .collect();
        json!({
            "architectures": ["BertForSequenceClassification"],
            "model_type": "bert",
            "vocab_size": self.vocab,
            "hidden_size": self.hidden,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "intermediate_size": self.intermediate,
            "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1,
            "attention_probs_dropout_prob": 0.1,
            "classifier_dropout": null,
            "max_position_embeddings": self.max_positions,
            "type_vocab_size": 2,
            "initializer_range": INIT_STD,
            "layer_norm_eps": 1e-12,
            "pad_token_id": 0,
            "position_embedding_type": "absolute",
            "problem_type": "single_label_classification",
            "id2label": id2label,
            "label2id": label2id,
            "torch_dtype": "float16",
        })
    }

    pub fn params(&self) -> Vec<(String, Vec<usize>, Init)> {
        let (h, i) = (self.hidden, self.intermediate);
        let mut v = Vec::new();
        let normal = Init::Normal(INIT_STD);
        let e = "bert.embeddings";
        v.push((
            format!("{e}.word_embeddings.weight"),
            vec![self.vocab, h],
            Init::Normal(WORD_STD),
        ));
        v.push((
            format!("{e}.position_embeddings.weight"),
            vec![self.max_positions, h],
            normal,
        ));
        v.push((
            format!("{e}.token_type_embeddings.weight"),
            vec![2, h],
            normal,
        ));
        layer_norm(&mut v, &format!("{e}.LayerNorm"), h);
        for l in 0..self.layers {
            let b = format!("bert.encoder.layer.{l}");
            for n in ["query", "key", "value"] {
                linear(&mut v, &format!("{b}.attention.self.{n}"), h, h);
            }
            linear(&mut v, &format!("{b}.attention.output.dense"), h, h);
            layer_norm(&mut v, &format!("{b}.attention.output.LayerNorm"), h);
            linear(&mut v, &format!("{b}.intermediate.dense"), i, h);
            linear(&mut v, &format!("{b}.output.dense"), h, i);
            layer_norm(&mut v, &format!("{b}.output.LayerNorm"), h);
        }
        linear(&mut v, "bert.pooler.dense", h, h);
        linear(&mut v, "classifier", LABELS.len(), h);
        v
    }

    /// Name of the token-embedding matrix.
    pub const WORD_EMBEDDINGS: &'static str = "bert.embeddings.word_embeddings.weight";
}

type Specs = Vec<(String, Vec<usize>, Init)>;

fn layer_norm(v: &mut Specs, prefix: &str, h: usize) {
    v.push((format!("{prefix}.weight"), vec![h], Init::Ones));
    v.push((format!("{prefix}.bias"), vec![h], Init::Zeros));
}

fn linear(v: &mut Specs, prefix: &str, out: usize, inp: usize) {
    v.push((
        format!("{prefix}.weight"),
        vec![out, inp],
        Init::Normal(INIT_STD),
    ));
    v.push((format!("{prefix}.bias"), vec![out], Init::Zeros));
}

/// A LLaMA decoder with tied input/output embeddings.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub(crate) struct LlamaShape {
    pub vocab: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub intermediate: usize,
    pub max_positions: usize,
}

/// The zoo's decoder: SmolLM2's vocabulary, a small trunk with grouped-query attention.
pub(crate) const LLAMA: LlamaShape = LlamaShape {
    vocab: 49152,
    hidden: 64,
    layers: 2,
    heads: 4,
    kv_heads: 2,
    intermediate: 128,
    max_positions: 256,
};

/// Special-token ids a decoder config records.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpecialIds {
    pub bos: u32,
    pub eos: u32,
    pub pad: u32,
}

impl LlamaShape {
    pub fn config(&self, ids: SpecialIds) -> Value {
        json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab,
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "head_dim": self.hidden / self.heads,
            "hidden_act": "silu",
            "max_position_embeddings": self.max_positions,
            "initializer_range": INIT_STD,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "rope_scaling": null,
            "attention_bias": false,
            "attention_dropout": 0.0,
            "mlp_bias": false,
            "tie_word_embeddings": true,
            "bos_token_id": ids.bos,
            "eos_token_id": ids.eos,
            "pad_token_id": ids.pad,
            "use_cache": true,
            "torch_dtype": "float16",
        })
    }

    pub fn params(&self) -> Vec<(String, Vec<usize>, Init)> {
        let (h, i) = (self.hidden, self.intermediate);
        let d = h / self.heads;
        let mut v = vec![(
            "model.embed_tokens.weight".to_string(),
            vec![self.vocab, h],
            Init::Normal(INIT_STD),
        )];
        for l in 0..self.layers {
            let b = format!("model.layers.{l}");
            let w = |n: &str, o: usize, i: usize| {
                (
                    format!("{b}.{n}.weight"),
                    vec![o, i],
                    Init::Normal(INIT_STD),
                )
            };
            v.push((format!("{b}.input_layernorm.weight"), vec![h], Init::Ones));
            v.push(w("self_attn.q_proj", self.heads * d, h));
            v.push(w("self_attn.k_proj", self.kv_heads * d, h));
            v.push(w("self_attn.v_proj", self.kv_heads * d, h));
            v.push(w("self_attn.o_proj", h, self.heads * d));
            v.push((
                format!("{b}.post_attention_layernorm.weight"),
                vec![h],
                Init::Ones,
            ));
            v.push(w("mlp.gate_proj", i, h));
            v.push(w("mlp.up_proj", i, h));
            v.push(w("mlp.down_proj", h, i));
        }
        v.push(("model.norm.weight".to_string(), vec![h], Init::Ones));
        v
    }
}
