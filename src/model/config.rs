//! `config.json` → which architecture, with which hyper-parameters.

use std::path::Path;

use serde::Deserialize;

use super::bert::BertConfig;
use super::llama::LlamaConfig;
use crate::{Error, Result};

/// Cap on the size of a `config.json` we are willing to parse.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// A parsed model configuration.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ModelConfig {
    /// BERT family encoder, optionally with a sequence-classification head.
    Bert(BertConfig),
    /// LLaMA family decoder (Llama, SmolLM, Mistral, Qwen2).
    Llama(LlamaConfig),
}

#[derive(Deserialize)]
struct Probe {
    model_type: Option<String>,
    #[serde(default)]
    auto_map: Option<serde_json::Value>,
    #[serde(default)]
    architectures: Vec<String>,
}

impl ModelConfig {
    /// Read and parse a model's `config.json`; one with `auto_map` (code shipped with the
    /// model, run by transformers) is [`Error::CustomCode`].
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = super::safetensors::read_small_file(path, MAX_CONFIG_BYTES)?;
        let probe: Probe =
            serde_json::from_slice(&bytes).map_err(|e| Error::Config(e.to_string()))?;
        if probe.auto_map.is_some() {
            return Err(Error::CustomCode {
                path: path.into(),
                key: "auto_map".into(),
            });
        }
        Self::from_json(&bytes)
    }

    /// Parse the text of a `config.json`.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let probe: Probe =
            serde_json::from_slice(bytes).map_err(|e| Error::Config(e.to_string()))?;
        let model_type = probe
            .model_type
            .or_else(|| probe.architectures.first().map(|a| a.to_ascii_lowercase()))
            .ok_or_else(|| Error::Config("no `model_type` or `architectures`".into()))?;
        let parse_err = |e: serde_json::Error| Error::Config(format!("{model_type}: {e}"));
        match model_type.as_str() {
            "bert" => {
                let mut c: BertConfig = serde_json::from_slice(bytes).map_err(parse_err)?;
                c.architectures = probe.architectures;
                c.validate()?;
                Ok(ModelConfig::Bert(c))
            }
            "llama" | "mistral" | "qwen2" => {
                let mut c: LlamaConfig = serde_json::from_slice(bytes).map_err(parse_err)?;
                c.model_type = model_type.clone();
                if model_type == "qwen2" {
                    // Qwen2 always has q/k/v biases; its config does not say so.
                    c.attention_bias = true;
                }
                c.validate()?;
                Ok(ModelConfig::Llama(c))
            }
            other => Err(Error::UnsupportedArchitecture(other.to_string())),
        }
    }
}
