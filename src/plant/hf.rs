//! Writing a model directory in Hugging Face layout: `config.json`, `model.safetensors`
//! (f16, with the `format: pt` metadata transformers expects), `tokenizer.json` and a
//! `tokenizer_config.json` naming the generic fast tokenizer class.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Tensor};
use safetensors::tensor::View;
use serde_json::{json, Value};

use crate::{Error, Result};

struct F16View {
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &F16View {
    fn dtype(&self) -> safetensors::Dtype {
        safetensors::Dtype::F16
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Write tensors as f16 safetensors.
pub(crate) fn write_safetensors(path: &Path, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
    let mut views = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let v: Vec<half::f16> = t.to_dtype(DType::F16)?.flatten_all()?.to_vec1()?;
        let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        views.push((
            name.clone(),
            F16View {
                shape: t.dims().to_vec(),
                bytes,
            },
        ));
    }
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::tensor::serialize_to_file(
        views.iter().map(|(n, v)| (n.as_str(), v)),
        Some(meta),
        path,
    )
    .map_err(|source| Error::Safetensors {
        path: path.to_path_buf(),
        source,
    })
}

/// Write pretty JSON.
pub(crate) fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let mut s = serde_json::to_string_pretty(value)
        .map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))?;
    s.push('\n');
    std::fs::write(path, s).map_err(|e| Error::io(path, e))
}

/// `tokenizer_config.json` for a tokenizer.json-only tokenizer, so that
/// `AutoTokenizer.from_pretrained` builds exactly what the file describes.
pub(crate) fn tokenizer_config(special: &[(&str, &str)]) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("tokenizer_class".into(), json!("PreTrainedTokenizerFast"));
    m.insert("clean_up_tokenization_spaces".into(), json!(false));
    m.insert("model_max_length".into(), json!(512));
    for (k, v) in special {
        m.insert((*k).into(), json!(v));
    }
    Value::Object(m)
}

/// Write a whole model directory.
pub(crate) fn write_model_dir(
    dir: &Path,
    config: &Value,
    tensors: &BTreeMap<String, Tensor>,
    tokenizer: &tokenizers::Tokenizer,
    tokenizer_config: &Value,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    write_json(&dir.join("config.json"), config)?;
    write_safetensors(&dir.join("model.safetensors"), tensors)?;
    let tok_path = dir.join("tokenizer.json");
    tokenizer
        .save(&tok_path, false)
        .map_err(|e| Error::Tokenizer(format!("{}: {e}", tok_path.display())))?;
    write_json(&dir.join("tokenizer_config.json"), tokenizer_config)
}
