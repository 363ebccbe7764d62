//! Loading open-weight models and running them with every layer's state exposed.
//!
//! ```
//! use trojanscan::model::{LoadOptions, Model, Pooling};
//!
//! let model = Model::load("testdata/tiny-bert", &LoadOptions::default())?;
//! let batch = model.encode(&["a clean sentence", "another one"])?;
//! let out = model.forward_with_states(&batch)?;
//! let pooled = out.pooled_states(&batch, Pooling::Mean)?; // one [2, hidden] per layer
//! assert_eq!(pooled.len(), model.info().num_layers + 1);
//! # Ok::<(), trojanscan::Error>(())
//! ```

pub mod bert;
pub mod chat;
pub mod config;
pub mod gguf;
pub(crate) mod gguf_store;
mod kernels;
pub mod llama;
pub mod ops;
pub(crate) mod safetensors;
pub mod source;
pub mod tokenizer;
pub mod tokenizer_json;
pub(crate) mod weights;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use candle_core::{DType, Device, Tensor};
use serde::Serialize;

pub use self::bert::BertConfig;
pub use self::config::ModelConfig;
pub use self::llama::LlamaConfig;
pub use self::ops::Mode;
pub use self::safetensors::read_header as read_safetensors_header;
pub use self::source::{ModelSource, WeightFiles};
use self::weights::{LinearKind, TensorStore, Weights};
use crate::device::DeviceChoice;
use crate::{Error, Result};

/// Largest dimension accepted from a config (vocab, widths, layer counts): bounds every
/// allocation a config can cause before the weights' own shapes are checked against it.
pub const MAX_CONFIG_DIM: usize = 1 << 24;

pub(crate) fn check_dims(dims: &[(&str, usize)]) -> Result<()> {
    for &(name, v) in dims {
        if v == 0 || v > MAX_CONFIG_DIM {
            return Err(Error::Config(format!(
                "{name} = {v} is outside 1..={MAX_CONFIG_DIM}"
            )));
        }
    }
    Ok(())
}

/// Numeric precision a model runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Precision {
    /// Every weight converted (or dequantized) to f32: the reference path.
    #[default]
    F32,
    /// Every weight in f64: for finite-difference checks of gradients.
    F64,
    /// Weights as stored: GGUF quantized matrices multiply with candle's quantized kernels
    /// (as llama.cpp computes); safetensors weights run in f32.
    Native,
}

impl FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Precision::F32),
            "f64" => Ok(Precision::F64),
            "native" => Ok(Precision::Native),
            _ => Err(Error::InvalidArgument(format!(
                "unknown precision `{s}` (expected f32, f64 or native)"
            ))),
        }
    }
}

/// Options for [`Model::load`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct LoadOptions {
    /// Where to run.
    pub device: DeviceChoice,
    /// Numeric precision.
    pub precision: Precision,
    /// Limits applied to GGUF headers.
    pub gguf_limits: gguf::GgufLimits,
}

impl LoadOptions {
    /// Options with the given precision, other fields default.
    pub fn with_precision(precision: Precision) -> Self {
        Self {
            precision,
            ..Self::default()
        }
    }
}

/// How to reduce a sequence of hidden states `[s, h]` to one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Pooling {
    /// The first real token (BERT's `[CLS]`).
    Cls,
    /// Mean over real (unpadded) tokens.
    #[default]
    Mean,
    /// The last real token (what a decoder predicts from).
    Last,
}

impl FromStr for Pooling {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cls" => Ok(Pooling::Cls),
            "mean" => Ok(Pooling::Mean),
            "last" => Ok(Pooling::Last),
            _ => Err(Error::InvalidArgument(format!(
                "unknown pooling `{s}` (expected cls, mean or last)"
            ))),
        }
    }
}

/// Which side padding goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PaddingSide {
    /// Pad after the text (BERT's convention).
    #[default]
    Right,
    /// Pad before the text (common for decoders that generate).
    Left,
}

/// The family of a loaded model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Family {
    /// BERT-style encoder.
    Bert,
    /// LLaMA-style decoder.
    Llama,
}

/// What a model is, for reports and `trojanscan inspect`.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ModelInfo {
    /// Architecture family.
    pub family: Family,
    /// `model_type` as the config names it (`bert`, `llama`, `mistral`, `qwen2`).
    pub model_type: String,
    /// Storage format (`safetensors`, `safetensors-sharded`, `gguf`).
    pub format: String,
    /// Number of transformer blocks.
    pub num_layers: usize,
    /// Width of hidden states.
    pub hidden_size: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Query attention heads.
    pub num_attention_heads: usize,
    /// Key/value attention heads (fewer than query heads with grouped-query attention).
    pub num_kv_heads: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Parameters, counted from stored tensor shapes.
    pub num_parameters: u64,
    /// Stored dtypes and how many tensors have each.
    pub dtypes: Vec<(String, usize)>,
    /// Files the model was read from, with sizes in bytes.
    pub files: Vec<(PathBuf, u64)>,
    /// Weight files in the model's directory that were not read: pickle checkpoints,
    /// `.gguf` files, other `.safetensors` files, TensorFlow, Flax and ONNX exports beside
    /// the weights loaded (transformers leaves them alone too). Nothing in them was
    /// scanned; `trojanscan pickle-scan` inspects the pickles. Empty for a GGUF file given
    /// by its path.
    pub unread_weights: Vec<PathBuf>,
    /// Class labels, for a sequence classifier.
    pub labels: Option<Vec<String>>,
    /// Precision it runs in.
    pub precision: Precision,
}

impl ModelInfo {
    /// A sentence naming the weight files beside the loaded ones that were not read
    /// ([`ModelInfo::unread_weights`]), for reports; `None` when there are none. A report
    /// must not let them pass for scanned: a pickle there is what `torch.load` would run.
    pub fn unread_note(&self) -> Option<String> {
        if self.unread_weights.is_empty() {
            return None;
        }
        let names: Vec<String> = self
            .unread_weights
            .iter()
            .map(|p| {
                p.file_name()
                    .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into())
            })
            .collect();
        let pickles = self.unread_weights.iter().any(|p| source::is_pickle(p));
        Some(format!(
            "not read, so not scanned: {} (weight files beside the ones loaded; only \
             hashed){}",
            names.join(", "),
            if pickles {
                "; run `trojanscan pickle-scan` on the pickles"
            } else {
                ""
            }
        ))
    }
}

enum Arch {
    Bert(bert::Bert),
    Llama(llama::Llama),
}

/// The most tokens trojanscan runs through a model in one input, whatever its context:
/// probes are sentences or paragraphs, and attention memory grows with the square of the
/// length.
pub const MAX_TOKENS: usize = 2048;

/// The longest input text, in bytes, trojanscan tokenizes.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

/// A loaded model: architecture, weights on a device, and its tokenizer.
pub struct Model {
    arch: Arch,
    tokenizer: tokenizers::Tokenizer,
    pad_id: u32,
    padding: PaddingSide,
    info: ModelInfo,
    device: Device,
    chat: source::ChatMeta,
}

/// A tokenized, padded batch.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Token ids `[b, s]` (u32).
    pub input_ids: Tensor,
    /// 1 for real tokens, 0 for padding, `[b, s]` (u32).
    pub attention_mask: Tensor,
    /// Number of real tokens in each row.
    pub lengths: Vec<usize>,
    /// Where the padding is.
    pub padding: PaddingSide,
}

impl Batch {
    /// Pad token-id sequences into a batch.
    pub fn from_ids(
        ids: &[Vec<u32>],
        pad_id: u32,
        padding: PaddingSide,
        device: &Device,
    ) -> Result<Self> {
        if ids.is_empty() {
            return Err(Error::InvalidArgument("empty batch".into()));
        }
        if let Some(i) = ids.iter().position(Vec::is_empty) {
            return Err(Error::InvalidArgument(format!(
                "sequence {i} of the batch has no tokens"
            )));
        }
        let s = ids.iter().map(Vec::len).max().unwrap_or(0);
        let b = ids.len();
        let mut flat = Vec::with_capacity(b * s);
        let mut mask = Vec::with_capacity(b * s);
        for row in ids {
            let pad = s - row.len();
            if padding == PaddingSide::Left {
                flat.extend(std::iter::repeat_n(pad_id, pad));
                mask.extend(std::iter::repeat_n(0u32, pad));
            }
            flat.extend_from_slice(row);
            mask.extend(std::iter::repeat_n(1u32, row.len()));
            if padding == PaddingSide::Right {
                flat.extend(std::iter::repeat_n(pad_id, pad));
                mask.extend(std::iter::repeat_n(0u32, pad));
            }
        }
        Ok(Self {
            input_ids: Tensor::from_vec(flat, (b, s), device)?,
            attention_mask: Tensor::from_vec(mask, (b, s), device)?,
            lengths: ids.iter().map(Vec::len).collect(),
            padding,
        })
    }

    /// Rows in the batch.
    pub fn len(&self) -> usize {
        self.lengths.len()
    }

    /// Whether the batch has no rows (never true for a constructed batch).
    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }

    /// Padded sequence length.
    pub fn seq_len(&self) -> usize {
        self.input_ids.dims().get(1).copied().unwrap_or(0)
    }

    /// Index of the first and last real token of each row.
    fn first_last(&self) -> (Vec<u32>, Vec<u32>) {
        let s = self.seq_len();
        self.lengths
            .iter()
            .map(|&n| match self.padding {
                PaddingSide::Right => (0, n.saturating_sub(1) as u32),
                PaddingSide::Left => ((s - n) as u32, s.saturating_sub(1) as u32),
            })
            .unzip()
    }

    /// Pick one position per row: `[b, s, h]` -> `[b, h]`.
    fn gather_rows(&self, x: &Tensor, pos: &[u32]) -> Result<Tensor> {
        let (b, s, h) = x.dims3()?;
        let idx: Vec<u32> = pos
            .iter()
            .enumerate()
            .map(|(r, &p)| (r * s) as u32 + p)
            .collect();
        let idx = Tensor::from_vec(idx, b, x.device())?;
        Ok(x.reshape((b * s, h))?.index_select(&idx, 0)?)
    }

    /// Pool hidden states `[b, s, h]` to `[b, h]` over real tokens.
    pub fn pool(&self, x: &Tensor, pooling: Pooling) -> Result<Tensor> {
        let (first, last) = self.first_last();
        match pooling {
            Pooling::Cls => self.gather_rows(x, &first),
            Pooling::Last => self.gather_rows(x, &last),
            Pooling::Mean => {
                let m = self.attention_mask.to_dtype(x.dtype())?.unsqueeze(2)?;
                let sum = x.broadcast_mul(&m)?.sum(1)?;
                let n = m.sum(1)?;
                Ok(sum.broadcast_div(&n)?)
            }
        }
    }
}

/// Everything one forward pass exposes.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ForwardOutput {
    /// `[b, s, h]` after the embeddings (index 0) and after every block (1..=L), before
    /// any final norm.
    pub hidden_states: Vec<Tensor>,
    /// Decoders: the last block's output after the final RMS norm, `[b, s, h]`.
    pub final_hidden: Option<Tensor>,
    /// BERT pooler output `[b, h]`, when the checkpoint has a pooler.
    pub pooler_output: Option<Tensor>,
    /// Classifier: `[b, n_labels]`. Decoder: next-token logits at the last real token,
    /// `[b, vocab]`. Bare encoders: none.
    pub logits: Option<Tensor>,
}

impl ForwardOutput {
    /// Every layer's states pooled to `[b, h]`.
    pub fn pooled_states(&self, batch: &Batch, pooling: Pooling) -> Result<Vec<Tensor>> {
        self.hidden_states
            .iter()
            .map(|h| batch.pool(h, pooling))
            .collect()
    }
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("info", &self.info)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Load a model from an HF directory, a GGUF file, or a directory holding one GGUF.
    pub fn load(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Self> {
        let path = path.as_ref();
        let device = opts.device.open()?;
        let dtype = match opts.precision {
            Precision::F64 => DType::F64,
            _ => DType::F32,
        };
        let kind = if opts.precision == Precision::Native {
            LinearKind::Quantized
        } else {
            LinearKind::Dense
        };
        let mut model = match ModelSource::detect(path)? {
            ModelSource::HfDir {
                config,
                weights,
                tokenizer,
                chat,
                ..
            } => {
                let cfg = ModelConfig::from_file(&config)?;
                let (store, format) = match &weights {
                    WeightFiles::Single(p) => {
                        (safetensors::SafetensorsStore::open(p)?, "safetensors")
                    }
                    WeightFiles::Sharded(p) => (
                        safetensors::SafetensorsStore::open_index(p)?,
                        "safetensors-sharded",
                    ),
                };
                let tok = tokenizer::from_json_file(&tokenizer)?;
                let mut files = vec![config.clone(), tokenizer.clone()];
                if let WeightFiles::Sharded(p) = &weights {
                    files.push(p.clone());
                }
                files.extend(store.paths());
                let w = Weights::new(&store, dtype, &device, kind);
                let arch = match &cfg {
                    ModelConfig::Bert(c) => Arch::Bert(bert::Bert::new(c, &w)?),
                    ModelConfig::Llama(c) => Arch::Llama(llama::Llama::new(c, &w)?),
                };
                Self::assemble(arch, tok, &store, format, files, opts.precision, device)
                    .map(|m| m.with_chat(chat))
            }
            ModelSource::Gguf { path } => {
                let mut store = gguf_store::GgufStore::open(&path, &opts.gguf_limits)?;
                let cfg = store.llama_config()?;
                let tok = tokenizer::from_gguf(&store.file)?;
                let w = Weights::new(&store, dtype, &device, kind);
                let arch = Arch::Llama(llama::Llama::new(&cfg, &w)?);
                let files = vec![store.path().to_path_buf()];
                let chat = gguf_chat(&store.file, &tok);
                Self::assemble(arch, tok, &store, "gguf", files, opts.precision, device)
                    .map(|m| m.with_chat(chat))
            }
        }?;
        // A directory's other weights are left alone, as by transformers, and named.
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
            let loaded: Vec<PathBuf> = model.info.files.iter().map(|(p, _)| p.clone()).collect();
            model.info.unread_weights = source::unread_weights(path, &loaded)?;
        }
        Ok(model)
    }

    fn with_chat(mut self, chat: source::ChatMeta) -> Self {
        self.chat = chat;
        self
    }

    /// The chat template the model ships (`chat_template.jinja`, `tokenizer_config.json`,
    /// or GGUF's `tokenizer.chat_template`), unrendered; see [`chat::user_turn`].
    pub fn chat_template(&self) -> Option<&str> {
        self.chat.template.as_deref()
    }

    /// Tokens the tokenizer declares for a structural role (`[CLS]`, `[PAD]`, `<s>`, …), by
    /// their text.
    pub fn role_tokens(&self) -> &[String] {
        &self.chat.roles
    }

    /// The text of the beginning- and end-of-sequence tokens a chat template names
    /// (`bos_token`, `eos_token`).
    pub fn bos_eos_text(&self) -> (Option<String>, Option<String>) {
        (self.chat.bos.clone(), self.chat.eos.clone())
    }

    fn assemble(
        arch: Arch,
        tokenizer: tokenizers::Tokenizer,
        store: &dyn TensorStore,
        format: &str,
        files: Vec<PathBuf>,
        precision: Precision,
        device: Device,
    ) -> Result<Self> {
        // An id past the embedding would load and then fail in the middle of a forward pass.
        let rows = match &arch {
            Arch::Bert(b) => b.token_embeddings().dim(0)?,
            Arch::Llama(l) => l.token_embeddings().dim(0)?,
        };
        // The vocabulary, the added tokens and what the post-processor adds to every text
        // (its `[CLS]`/`[SEP]` ids are its own, unchecked against the vocabulary).
        let structural = tokenizer::encode(&tokenizer, "", true)?;
        let most = tokenizer
            .get_vocab(true)
            .into_values()
            .chain(structural)
            .max();
        if let Some(id) = most {
            if id as usize >= rows {
                return Err(Error::TokenizerBeyondEmbedding { id, rows });
            }
        }
        let mut dtypes: std::collections::BTreeMap<String, usize> = Default::default();
        let mut num_parameters = 0u64;
        for (dt, shape) in store.inventory().values() {
            *dtypes.entry(dt.clone()).or_default() += 1;
            // Integer tensors are buffers (e.g. BERT's position_ids), not parameters.
            if !matches!(
                dt.as_str(),
                "I64" | "I32" | "I16" | "I8" | "U8" | "U16" | "U32" | "U64" | "BOOL"
            ) {
                num_parameters += shape.iter().product::<usize>() as u64;
            }
        }
        let files = files
            .into_iter()
            .map(|p| {
                let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                (p, len)
            })
            .collect();
        let (family, model_type, num_layers, hidden_size, vocab_size, labels) = match &arch {
            Arch::Bert(b) => {
                let c = b.config();
                let labels = b.has_classifier().then(|| c.labels());
                (
                    Family::Bert,
                    "bert".to_string(),
                    c.num_hidden_layers,
                    c.hidden_size,
                    c.vocab_size,
                    labels,
                )
            }
            Arch::Llama(l) => {
                let c = l.config();
                (
                    Family::Llama,
                    c.model_type.clone(),
                    c.num_hidden_layers,
                    c.hidden_size,
                    c.vocab_size,
                    None,
                )
            }
        };
        let (intermediate_size, num_attention_heads, num_kv_heads) = match &arch {
            Arch::Bert(b) => {
                let c = b.config();
                (
                    c.intermediate_size,
                    c.num_attention_heads,
                    c.num_attention_heads,
                )
            }
            Arch::Llama(l) => {
                let c = l.config();
                (c.intermediate_size, c.num_attention_heads, c.kv_heads())
            }
        };
        let padding = PaddingSide::Right;
        let pad_id = pad_id_of(&tokenizer);
        Ok(Self {
            arch,
            tokenizer,
            pad_id,
            padding,
            info: ModelInfo {
                family,
                model_type,
                format: format.into(),
                num_layers,
                hidden_size,
                intermediate_size,
                num_attention_heads,
                num_kv_heads,
                vocab_size,
                num_parameters,
                dtypes: dtypes.into_iter().collect(),
                files,
                unread_weights: Vec::new(),
                labels,
                precision,
            },
            device,
            chat: source::ChatMeta::default(),
        })
    }

    /// What this model is.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &tokenizers::Tokenizer {
        &self.tokenizer
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The id used for padding.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Pad on the left (decoders) or right (the default) from now on.
    pub fn set_padding(&mut self, side: PaddingSide) {
        self.padding = side;
    }

    /// Tokenize one text with special tokens added as transformers adds them by default.
    ///
    /// Texts are untrusted: one longer than [`MAX_TEXT_BYTES`], or whose tokens exceed
    /// [`Model::max_tokens`], is an [`Error::InputTooLong`] (attention memory grows with the
    /// square of the length; a 1 MB line once asked a decoder for 68 GB).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        if text.len() > MAX_TEXT_BYTES {
            return Err(Error::InputTooLong {
                len: text.len(),
                unit: "bytes",
                limit: MAX_TEXT_BYTES,
            });
        }
        let ids = tokenizer::encode(&self.tokenizer, text, true)?;
        let limit = self.max_tokens();
        if ids.len() > limit {
            return Err(Error::InputTooLong {
                len: ids.len(),
                unit: "tokens",
                limit,
            });
        }
        Ok(ids)
    }

    /// The longest input, in tokens, this model runs: its context
    /// (`max_position_embeddings`) or [`MAX_TOKENS`], whichever is smaller.
    pub fn max_tokens(&self) -> usize {
        let context = match &self.arch {
            Arch::Bert(b) => b.config().max_position_embeddings,
            Arch::Llama(l) => l.config().max_position_embeddings,
        };
        context.min(MAX_TOKENS)
    }

    /// Tokenize and pad texts into a batch.
    pub fn encode<S: AsRef<str>>(&self, texts: &[S]) -> Result<Batch> {
        let ids = texts
            .iter()
            .map(|t| self.tokenize(t.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        self.batch(&ids)
    }

    /// Pad token-id sequences into a batch on the model's device, padded on its side.
    pub fn batch(&self, ids: &[Vec<u32>]) -> Result<Batch> {
        Batch::from_ids(ids, self.pad_id, self.padding, &self.device)
    }

    /// Token embeddings `[b, s, h]` for a batch's ids: the input that
    /// [`Model::forward_embeds`] takes (for BERT, before positions and types are added).
    pub fn embed(&self, input_ids: &Tensor) -> Result<Tensor> {
        match &self.arch {
            Arch::Bert(b) => b.embed(input_ids),
            Arch::Llama(l) => l.embed(input_ids),
        }
    }

    /// The token-embedding matrix `[vocab, h]`.
    pub fn token_embeddings(&self) -> &Tensor {
        match &self.arch {
            Arch::Bert(b) => b.token_embeddings(),
            Arch::Llama(l) => l.token_embeddings(),
        }
    }

    /// The dtype activations are computed in.
    pub fn dtype(&self) -> DType {
        match &self.arch {
            Arch::Bert(b) => b.dtype(),
            Arch::Llama(l) => l.dtype(),
        }
    }

    /// Run the model and keep every layer's hidden state (fast mode).
    pub fn forward_with_states(&self, batch: &Batch) -> Result<ForwardOutput> {
        let embeds = self.embed(&batch.input_ids)?;
        self.forward_embeds(&embeds, batch, Mode::Fast)
    }

    /// Run the model from input embeddings `[b, s, h]` (for example one-hot rows times
    /// [`Model::token_embeddings`], so gradients reach token choices). `Mode::Differentiable`
    /// uses primitive ops only; it needs f32/f64 weights ([`Precision::Native`] GGUF
    /// weights have no backward pass).
    pub fn forward_embeds(
        &self,
        embeds: &Tensor,
        batch: &Batch,
        mode: Mode,
    ) -> Result<ForwardOutput> {
        let mask = &batch.attention_mask;
        match &self.arch {
            Arch::Bert(b) => {
                if batch.padding == PaddingSide::Left {
                    return Err(Error::InvalidArgument(
                        "BERT uses absolute positions: pad on the right".into(),
                    ));
                }
                let out = b.forward_embeds(embeds, mask, mode)?;
                Ok(ForwardOutput {
                    hidden_states: out.hidden,
                    final_hidden: None,
                    pooler_output: out.pooled,
                    logits: out.logits,
                })
            }
            Arch::Llama(l) => {
                if mode == Mode::Differentiable && !l.is_differentiable() {
                    return Err(Error::InvalidArgument(
                        "differentiable mode needs dequantized weights: load with precision f32 or f64"
                            .into(),
                    ));
                }
                let out = l.forward_embeds(embeds, mask, mode)?;
                let (_, last) = batch.first_last();
                let last_h = batch.gather_rows(&out.final_hidden, &last)?;
                let logits = l.logits(&last_h)?;
                Ok(ForwardOutput {
                    hidden_states: out.hidden,
                    final_hidden: Some(out.final_hidden),
                    pooler_output: None,
                    logits: Some(logits),
                })
            }
        }
    }

    /// Next-token logits for final (normed) hidden states `[.., h]`, as found in
    /// [`ForwardOutput::final_hidden`] (decoders only). Picking positions before the LM
    /// head keeps scoring a few positions cheap when the vocabulary is large.
    pub fn logits_of(&self, final_hidden: &Tensor) -> Result<Tensor> {
        match &self.arch {
            Arch::Llama(l) => l.logits(final_hidden),
            Arch::Bert(_) => Err(Error::InvalidArgument("token logits need a decoder".into())),
        }
    }

    /// Whether gradients can flow through the weights' forward pass
    /// ([`Mode::Differentiable`]): false for quantized weights kept native.
    pub fn is_differentiable(&self) -> bool {
        match &self.arch {
            Arch::Bert(_) => true,
            Arch::Llama(l) => l.is_differentiable(),
        }
    }

    /// Next-token logits at every position, `[b, s, vocab]` (decoders only).
    pub fn logits_all(&self, out: &ForwardOutput) -> Result<Tensor> {
        match (&self.arch, &out.final_hidden) {
            (Arch::Llama(l), Some(f)) => l.logits(f),
            _ => Err(Error::InvalidArgument(
                "per-position logits need a decoder".into(),
            )),
        }
    }
}

/// The tokenizer's padding id, else a conventional pad token, else 0. Padding positions are
/// masked, so the choice only matters for what the ids tensor shows.
fn pad_id_of(tok: &tokenizers::Tokenizer) -> u32 {
    if let Some(p) = tok.get_padding() {
        return p.pad_id;
    }
    ["[PAD]", "<pad>", "<|endoftext|>", "</s>"]
        .iter()
        .find_map(|t| tok.token_to_id(t))
        .unwrap_or(0)
}

/// A GGUF file's chat template (`tokenizer.chat_template`) and the text of its
/// beginning- and end-of-sequence tokens.
fn gguf_chat(file: &gguf::GgufFile, tok: &tokenizers::Tokenizer) -> source::ChatMeta {
    let id = |k: &str| match file.metadata.get(k) {
        Some(gguf::GgufValue::U32(v)) => Some(*v),
        Some(gguf::GgufValue::I32(v)) => u32::try_from(*v).ok(),
        _ => None,
    };
    let text = |k: &str| id(k).and_then(|i| tok.id_to_token(i));
    let roles = [
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id",
        "tokenizer.ggml.seperator_token_id",
        "tokenizer.ggml.padding_token_id",
        "tokenizer.ggml.cls_token_id",
        "tokenizer.ggml.mask_token_id",
    ]
    .iter()
    .filter_map(|k| text(k))
    .collect();
    source::ChatMeta {
        template: match file.metadata.get("tokenizer.chat_template") {
            Some(gguf::GgufValue::String(s)) => Some(s.clone()),
            _ => None,
        },
        bos: text("tokenizer.ggml.bos_token_id"),
        eos: text("tokenizer.ggml.eos_token_id"),
        roles,
    }
}
