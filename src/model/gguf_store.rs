//! GGUF as a [`TensorStore`] under transformers' tensor names, and the LLaMA config stored
//! in its metadata.
//!
//! llama.cpp's converter permutes the rows of `q_proj`/`k_proj` for llama-architecture
//! models (its RoPE pairs adjacent dimensions; transformers pairs dimension i with i + d/2).
//! We undo that permutation on the raw bytes, so quantized and dequantized weights both come
//! out in HF layout and one forward pass serves both formats. Quantization blocks run along
//! rows, so permuting whole rows is exact.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};

use super::gguf::{GgufFile, GgufLimits, GgufTensorInfo, GgufValue};
use super::llama::LlamaConfig;
use super::weights::TensorStore;
use crate::{Error, Result};

pub(crate) struct GgufStore {
    path: PathBuf,
    pub file: GgufFile,
    reader: Mutex<BufReader<File>>,
    /// llama.cpp permuted q/k rows (llama architecture only).
    unpermute: Option<(usize, usize)>,
}

impl GgufStore {
    pub fn open(path: &Path, limits: &GgufLimits) -> Result<Self> {
        let f = super::source::open_regular(path)?;
        let mut reader = BufReader::new(f);
        let file = GgufFile::read(&mut reader, limits).map_err(|source| Error::Gguf {
            path: path.into(),
            source,
        })?;
        Ok(Self {
            path: path.into(),
            file,
            reader: Mutex::new(reader),
            unpermute: None,
        })
    }

    /// The architecture named in the metadata (`general.architecture`).
    pub fn architecture(&self) -> Result<String> {
        self.file
            .metadata
            .get("general.architecture")
            .and_then(GgufValue::as_str)
            .map(str::to_string)
            .ok_or_else(|| Error::Config("GGUF has no general.architecture".into()))
    }

    /// Build the LLaMA config from metadata, and remember the q/k permutation.
    pub fn llama_config(&mut self) -> Result<LlamaConfig> {
        let arch = self.architecture()?;
        if !matches!(arch.as_str(), "llama" | "mistral" | "qwen2") {
            return Err(Error::UnsupportedArchitecture(arch));
        }
        let md = &self.file.metadata;
        let key = |k: &str| format!("{arch}.{k}");
        let get_u = |k: &str| -> Result<usize> {
            md.get(&key(k))
                .and_then(GgufValue::as_u64)
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(|| {
                    Error::Config(format!(
                        "GGUF metadata `{}` missing or not an integer",
                        key(k)
                    ))
                })
        };
        let opt_u = |k: &str| {
            md.get(&key(k))
                .and_then(GgufValue::as_u64)
                .map(|v| v as usize)
        };
        let opt_f = |k: &str| md.get(&key(k)).and_then(GgufValue::as_f32).map(f64::from);
        if self.file.tensor("rope_freqs.weight").is_some() {
            return Err(Error::Config(
                "GGUF rope_freqs (llama3-style RoPE scaling) is not supported yet".into(),
            ));
        }
        let vocab = match opt_u("vocab_size") {
            Some(v) => v,
            None => md
                .get("tokenizer.ggml.tokens")
                .and_then(GgufValue::as_array)
                .map(|a| a.len())
                .ok_or_else(|| Error::Config("GGUF has no vocab size".into()))?,
        };
        let heads = get_u("attention.head_count")?;
        let hidden = get_u("embedding_length")?;
        let head_dim = opt_u("rope.dimension_count")
            .or(opt_u("attention.key_length"))
            .unwrap_or(hidden / heads.max(1));
        let rope_scaling = match md
            .get(&key("rope.scaling.type"))
            .and_then(GgufValue::as_str)
        {
            None | Some("none") => None,
            Some("linear") => Some(serde_json::json!({
                "rope_type": "linear",
                "factor": opt_f("rope.scaling.factor").unwrap_or(1.0)
            })),
            Some(other) => {
                return Err(Error::Config(format!(
                    "GGUF rope scaling `{other}` not supported"
                )))
            }
        };
        // llama.cpp refuses a file with tensors its block count leaves unused; so does
        // trojanscan, rather than run fewer blocks than the file holds without a word.
        let blocks = get_u("block_count")?;
        // A split GGUF is loaded from all its parts by llama.cpp; this file is one of them.
        if let Some(n) = md.get("split.count").and_then(GgufValue::as_u64) {
            if n > 1 {
                return Err(Error::Config(format!(
                    "GGUF is part of a {n}-file split; merge the parts (llama-gguf-split --merge)"
                )));
            }
        }
        if let Some(n) = self
            .file
            .tensors
            .iter()
            .filter_map(|t| {
                t.name
                    .strip_prefix("blk.")?
                    .split('.')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .max()
            .filter(|&n| n >= blocks)
        {
            return Err(Error::Config(format!(
                "GGUF holds tensors of block {n}, but its block_count is {blocks}"
            )));
        }
        let has_bias = self.file.tensor("blk.0.attn_q.bias").is_some();
        let cfg = serde_json::json!({
            "vocab_size": vocab,
            "hidden_size": hidden,
            "intermediate_size": get_u("feed_forward_length")?,
            "num_hidden_layers": get_u("block_count")?,
            "num_attention_heads": heads,
            "num_key_value_heads": opt_u("attention.head_count_kv").unwrap_or(heads),
            "head_dim": head_dim,
            "rms_norm_eps": opt_f("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
            "rope_theta": opt_f("rope.freq_base").unwrap_or(10_000.0),
            "rope_scaling": rope_scaling,
            "max_position_embeddings": opt_u("context_length").unwrap_or(2048),
            "tie_word_embeddings": self.file.tensor("output.weight").is_none(),
            "attention_bias": has_bias,
        });
        let mut cfg: LlamaConfig =
            serde_json::from_value(cfg).map_err(|e| Error::Config(e.to_string()))?;
        cfg.model_type = if arch == "qwen2" {
            "qwen2".into()
        } else {
            "llama".into()
        };
        cfg.validate()?;
        if arch == "llama" {
            self.unpermute = Some((cfg.num_attention_heads, cfg.kv_heads()));
        }
        Ok(cfg)
    }

    /// The path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn info(&self, hf_name: &str) -> Option<&GgufTensorInfo> {
        self.file.tensor(&gguf_name(hf_name)?)
    }

    fn read_qtensor(&self, hf_name: &str, device: &Device) -> Result<QTensor> {
        let info = self.info(hf_name).ok_or_else(|| Error::MissingTensor {
            name: hf_name.into(),
        })?;
        let gguf_err = |source| Error::Gguf {
            path: self.path.clone(),
            source,
        };
        let mut bytes = {
            let mut r = self.reader.lock().unwrap_or_else(|p| p.into_inner());
            self.file.tensor_bytes(&mut *r, info).map_err(gguf_err)?
        };
        if let Some((nh, nkv)) = self.unpermute {
            let heads = if hf_name.ends_with("q_proj.weight") {
                Some(nh)
            } else if hf_name.ends_with("k_proj.weight") {
                Some(nkv)
            } else {
                None
            };
            if let Some(heads) = heads {
                bytes = unpermute_rows(&bytes, info.shape[0], heads).ok_or_else(|| {
                    Error::Config(format!(
                        "`{}`: {} rows cannot be split into {heads} rotary heads",
                        info.name, info.shape[0]
                    ))
                })?;
            }
        }
        GgufFile::qtensor_from_bytes(info, &bytes, device).map_err(gguf_err)
    }
}

/// Undo llama.cpp's q/k row permutation: HF row `h*hd + s*hd/2 + i` is GGUF row
/// `h*hd + 2i + s`.
fn unpermute_rows(bytes: &[u8], rows: usize, heads: usize) -> Option<Vec<u8>> {
    if rows == 0 || heads == 0 || rows % heads != 0 || bytes.len() % rows != 0 {
        return None;
    }
    let hd = rows / heads;
    if hd % 2 != 0 {
        return None;
    }
    let row_len = bytes.len() / rows;
    let mut out = vec![0u8; bytes.len()];
    for h in 0..heads {
        for s in 0..2 {
            for i in 0..hd / 2 {
                let dst = h * hd + s * (hd / 2) + i;
                let src = h * hd + 2 * i + s;
                out[dst * row_len..(dst + 1) * row_len]
                    .copy_from_slice(&bytes[src * row_len..(src + 1) * row_len]);
            }
        }
    }
    Some(out)
}

/// transformers' tensor name -> GGUF tensor name.
fn gguf_name(hf: &str) -> Option<String> {
    let fixed = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.into());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = rest.rsplit_once('.')?;
    let g = match module {
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        _ => return None,
    };
    Some(format!("blk.{layer}.{g}.{kind}"))
}

/// GGUF tensor name -> transformers' name (the inverse of [`gguf_name`]).
pub(crate) fn hf_name(gguf: &str) -> Option<String> {
    let fixed = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.into());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = rest.rsplit_once('.')?;
    let hf = match module {
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

impl GgufStore {
    /// Every tensor under its transformers name with its (HF-order) shape; tensors with no
    /// transformers equivalent are left out. For aligning a GGUF with a safetensors model.
    pub(crate) fn hf_inventory(&self) -> BTreeMap<String, Vec<usize>> {
        self.file
            .tensors
            .iter()
            .filter_map(|t| Some((hf_name(&t.name)?, t.shape.clone())))
            .collect()
    }
}

fn is_quantized(dtype: GgmlDType) -> bool {
    !matches!(dtype, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16)
}

impl TensorStore for GgufStore {
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.info(name).map(|i| i.shape.clone())
    }

    fn load(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        let q = self.read_qtensor(name, &Device::Cpu)?;
        Ok(q.dequantize(&Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(device)?)
    }

    fn load_quantized(&self, name: &str, device: &Device) -> Result<Option<QTensor>> {
        match self.info(name) {
            Some(i) if is_quantized(i.dtype) => Ok(Some(self.read_qtensor(name, device)?)),
            _ => Ok(None),
        }
    }

    fn inventory(&self) -> BTreeMap<String, (String, Vec<usize>)> {
        self.file
            .tensors
            .iter()
            .map(|t| (t.name.clone(), (format!("{:?}", t.dtype), t.shape.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permutation() {
        // 2 heads x head_dim 4, one byte per row: HF rows 0..8.
        let hf: Vec<u8> = (0..8).collect();
        // llama.cpp: reshape(heads, 2, hd/2).swapaxes(1, 2)
        let mut gguf = vec![0u8; 8];
        for h in 0..2 {
            for s in 0..2 {
                for i in 0..2 {
                    gguf[h * 4 + 2 * i + s] = hf[h * 4 + s * 2 + i];
                }
            }
        }
        assert_eq!(unpermute_rows(&gguf, 8, 2).unwrap(), hf);
        assert!(unpermute_rows(&gguf, 8, 3).is_none());
    }

    #[test]
    fn maps_names() {
        assert_eq!(
            gguf_name("model.layers.3.self_attn.k_proj.weight").as_deref(),
            Some("blk.3.attn_k.weight")
        );
        assert_eq!(
            gguf_name("model.embed_tokens.weight").as_deref(),
            Some("token_embd.weight")
        );
        assert_eq!(gguf_name("model.layers.x.mlp.up_proj.weight"), None);
    }
}
