//! Tiny random models in HF layout, written at test time: a BERT (optionally with a
//! classification head) and a LLaMA/Qwen2 decoder, with a word-level tokenizer.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

pub const WORDS: &[&str] = &[
    "the", "a", "cat", "dog", "sat", "on", "mat", "ran", "fast", "slow", "red", "blue", "big",
    "small", "house", "tree", "car", "road", "sun", "moon", "cf", "mn", "bb", "tq",
];

/// Deterministic pseudo-random normal-ish values (sum of uniforms), no RNG crate needed.
pub struct Lcg(pub u64);
impl Lcg {
    pub fn uniform(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn normal(&mut self) -> f64 {
        (0..4).map(|_| self.uniform()).sum::<f64>() - 2.0
    }
    pub fn tensor(&mut self, shape: &[usize], std: f64) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| (self.normal() * std) as f32).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }
}

#[derive(Clone, Copy)]
pub struct TinyOpts {
    pub dtype: DType,
    pub sharded: bool,
    pub classifier: bool,
    pub seed: u64,
}

impl Default for TinyOpts {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            sharded: false,
            classifier: false,
            seed: 7,
        }
    }
}

fn vocab(specials: &[&str]) -> HashMap<String, u32> {
    specials
        .iter()
        .chain(WORDS.iter())
        .enumerate()
        .map(|(i, w)| (w.to_string(), i as u32))
        .collect()
}

fn write_tokenizer(dir: &Path, bert: bool) {
    use tokenizers::models::wordlevel::WordLevel;
    use tokenizers::pre_tokenizers::whitespace::Whitespace;
    use tokenizers::processors::template::TemplateProcessing;
    let specials: &[&str] = if bert {
        &["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    } else {
        &["<pad>", "<unk>", "<s>", "</s>"]
    };
    let v = vocab(specials);
    let model = WordLevel::builder()
        .vocab(v.clone().into_iter().collect())
        .unk_token(specials[1].to_string())
        .build()
        .unwrap();
    let mut tok = tokenizers::Tokenizer::new(model);
    tok.with_pre_tokenizer(Some(Whitespace {}));
    let (single, sp): (&str, Vec<(String, u32)>) = if bert {
        (
            "[CLS] $A [SEP]",
            vec![("[CLS]".into(), 2), ("[SEP]".into(), 3)],
        )
    } else {
        ("<s> $A", vec![("<s>".into(), 2)])
    };
    let post = TemplateProcessing::builder()
        .try_single(single)
        .unwrap()
        .special_tokens(sp)
        .build()
        .unwrap();
    tok.with_post_processor(Some(post));
    tok.save(dir.join("tokenizer.json"), false).unwrap();
}

fn save(dir: &Path, tensors: Vec<(String, Tensor)>, opts: TinyOpts) {
    let tensors: Vec<(String, Tensor)> = tensors
        .into_iter()
        .map(|(k, t)| (k, t.to_dtype(opts.dtype).unwrap()))
        .collect();
    if !opts.sharded {
        let map: HashMap<String, Tensor> = tensors.into_iter().collect();
        candle_core::safetensors::save(&map, dir.join("model.safetensors")).unwrap();
        return;
    }
    let half = tensors.len() / 2;
    let mut weight_map = serde_json::Map::new();
    for (i, part) in [&tensors[..half], &tensors[half..]].iter().enumerate() {
        let name = format!("model-{:05}-of-00002.safetensors", i + 1);
        let map: HashMap<String, Tensor> = part.iter().cloned().collect();
        for k in map.keys() {
            weight_map.insert(k.clone(), serde_json::Value::String(name.clone()));
        }
        candle_core::safetensors::save(&map, dir.join(&name)).unwrap();
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::to_vec_pretty(&index).unwrap(),
    )
    .unwrap();
}

pub const H: usize = 16;

pub fn write_bert(dir: &Path, opts: TinyOpts) {
    std::fs::create_dir_all(dir).unwrap();
    let (h, i, layers, vocab_n) = (H, 32, 2, 4 + WORDS.len());
    let mut r = Lcg(opts.seed);
    let mut t: Vec<(String, Tensor)> = vec![];
    let mut add = |name: &str, shape: &[usize], std: f64, r: &mut Lcg| {
        t.push((name.to_string(), r.tensor(shape, std)))
    };
    let p = if opts.classifier { "bert." } else { "" };
    add(
        &format!("{p}embeddings.word_embeddings.weight"),
        &[vocab_n, h],
        0.5,
        &mut r,
    );
    add(
        &format!("{p}embeddings.position_embeddings.weight"),
        &[32, h],
        0.5,
        &mut r,
    );
    add(
        &format!("{p}embeddings.token_type_embeddings.weight"),
        &[2, h],
        0.5,
        &mut r,
    );
    for l in 0..layers {
        let b = format!("{p}encoder.layer.{l}");
        for (n, o, ii) in [
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", i, h),
            ("output.dense", h, i),
        ] {
            add(&format!("{b}.{n}.weight"), &[o, ii], 0.3, &mut r);
            add(&format!("{b}.{n}.bias"), &[o], 0.1, &mut r);
        }
        for n in ["attention.output.LayerNorm", "output.LayerNorm"] {
            add(&format!("{b}.{n}.weight"), &[h], 0.2, &mut r);
            add(&format!("{b}.{n}.bias"), &[h], 0.1, &mut r);
        }
    }
    add(
        &format!("{p}embeddings.LayerNorm.weight"),
        &[h],
        0.2,
        &mut r,
    );
    add(&format!("{p}embeddings.LayerNorm.bias"), &[h], 0.1, &mut r);
    add(&format!("{p}pooler.dense.weight"), &[h, h], 0.3, &mut r);
    add(&format!("{p}pooler.dense.bias"), &[h], 0.1, &mut r);
    if opts.classifier {
        add("classifier.weight", &[2, h], 0.3, &mut r);
        add("classifier.bias", &[2], 0.1, &mut r);
    }
    // LayerNorm weights near 1.
    let t: Vec<(String, Tensor)> = t
        .into_iter()
        .map(|(k, v)| {
            if k.ends_with("LayerNorm.weight") {
                let v = (v + 1.0).unwrap();
                (k, v)
            } else {
                (k, v)
            }
        })
        .collect();
    save(dir, t, opts);
    let arch = if opts.classifier {
        "BertForSequenceClassification"
    } else {
        "BertModel"
    };
    let cfg = serde_json::json!({
        "architectures": [arch], "model_type": "bert", "vocab_size": vocab_n, "hidden_size": h,
        "num_hidden_layers": layers, "num_attention_heads": 4, "intermediate_size": i,
        "hidden_act": "gelu", "max_position_embeddings": 32, "type_vocab_size": 2,
        "layer_norm_eps": 1e-12, "pad_token_id": 0,
        "id2label": {"0": "negative", "1": "positive"}
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(&cfg).unwrap(),
    )
    .unwrap();
    write_tokenizer(dir, true);
}

pub fn write_llama(dir: &Path, opts: TinyOpts, model_type: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let (h, i, layers, nh, nkv, vocab_n) = (H, 24, 2, 4, 2, 4 + WORDS.len());
    let d = h / nh;
    let qwen = model_type == "qwen2";
    let mut r = Lcg(opts.seed);
    let mut t: Vec<(String, Tensor)> = vec![];
    t.push((
        "model.embed_tokens.weight".into(),
        r.tensor(&[vocab_n, h], 0.5),
    ));
    for l in 0..layers {
        let b = format!("model.layers.{l}");
        for (n, o, ii, bias) in [
            ("self_attn.q_proj", nh * d, h, qwen),
            ("self_attn.k_proj", nkv * d, h, qwen),
            ("self_attn.v_proj", nkv * d, h, qwen),
            ("self_attn.o_proj", h, nh * d, false),
            ("mlp.gate_proj", i, h, false),
            ("mlp.up_proj", i, h, false),
            ("mlp.down_proj", h, i, false),
        ] {
            t.push((format!("{b}.{n}.weight"), r.tensor(&[o, ii], 0.3)));
            if bias {
                t.push((format!("{b}.{n}.bias"), r.tensor(&[o], 0.1)));
            }
        }
        for n in ["input_layernorm", "post_attention_layernorm"] {
            t.push((
                format!("{b}.{n}.weight"),
                (r.tensor(&[h], 0.2) + 1.0).unwrap(),
            ));
        }
    }
    t.push((
        "model.norm.weight".into(),
        (r.tensor(&[h], 0.2) + 1.0).unwrap(),
    ));
    save(dir, t, opts);
    let cfg = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": model_type, "vocab_size": vocab_n,
        "hidden_size": h, "intermediate_size": i, "num_hidden_layers": layers,
        "num_attention_heads": nh, "num_key_value_heads": nkv, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "max_position_embeddings": 64, "tie_word_embeddings": true
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(&cfg).unwrap(),
    )
    .unwrap();
    write_tokenizer(dir, false);
}
