//! Tokenizers: `tokenizer.json` as shipped, or rebuilt from GGUF metadata.
//!
//! A GGUF file carries no `tokenizer.json`; it stores the vocabulary, merges, token types and
//! special-token ids as `tokenizer.ggml.*` metadata, in llama.cpp's conventions.
//! [`from_gguf`] rebuilds a [`tokenizers::Tokenizer`] from them that gives the same ids as the
//! model's own Hugging Face tokenizer, by assembling the `tokenizers` components (BPE model,
//! normalizer, pre-tokenizer, post-processor, decoder, added tokens) directly.
//!
//! Supported `tokenizer.ggml.model` / `tokenizer.ggml.pre` combinations:
//!
//! | model   | pre                          | rebuilt as                                              |
//! |---------|------------------------------|---------------------------------------------------------|
//! | `gpt2`  | `smollm`                     | `Digits(individual)` then GPT-2 `ByteLevel` regex       |
//! | `gpt2`  | `gpt2`, `default`, absent    | GPT-2 `ByteLevel` regex                                 |
//! | `gpt2`  | `llama3`, `llama-bpe`, `llama-v3` | Llama 3 split regex, `ByteLevel`, `ignore_merges`  |
//! | `gpt2`  | `qwen2`                      | NFC, Qwen2 split regex, `ByteLevel`                     |
//! | `llama` | (ignored)                    | SentencePiece-style BPE: `▁` prefix, byte fallback      |
//!
//! Anything else is refused with [`Error::Tokenizer`] naming the type: a wrong pre-tokenizer
//! silently changes ids, which would make every downstream score meaningless.
//!
//! GGUF metadata is untrusted input: every id, length and merge is checked, and a malformed
//! file yields [`Error::Tokenizer`], never a panic.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::Path;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Merges, Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence, NFC};
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::sequence::Sequence as ProcessorSequence;
use tokenizers::processors::template::{SpecialToken, TemplateProcessing};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper,
    SplitDelimiterBehavior, Tokenizer,
};

use crate::model::gguf::{GgufFile, GgufValue};
pub use crate::model::tokenizer_json::MAX_TOKENIZER_JSON_BYTES;
use crate::model::tokenizer_json::{self, TokenizerJsonError};
use crate::{Error, Result};

/// Loads a `tokenizer.json` as shipped with a Hugging Face model.
///
/// The file is untrusted: it must be a regular file, not a symbolic link
/// ([`Error::SpecialFile`], [`Error::Symlink`]); its size is checked from its metadata
/// before reading ([`Error::TooLarge`] above [`MAX_TOKENIZER_JSON_BYTES`]), it is read with
/// a bounded reader, then loaded by [`from_json_bytes`]; anything wrong with it is
/// [`Error::TokenizerJson`].
///
/// Any padding or truncation stored in the file is removed, so that encoding a text gives
/// its ids and nothing else, as transformers does unless asked to pad: some files pin a
/// fixed length (all-MiniLM-L6-v2's pads every encoding to 128 `[PAD]`s and truncates at
/// 128). Batching and padding are the caller's business.
pub fn from_json_file(path: &Path) -> Result<Tokenizer> {
    // Opened as every file of a model is: a regular file (a FIFO or device would block or
    // never end), never through a symbolic link.
    let bytes =
        crate::model::source::read_regular(path, MAX_TOKENIZER_JSON_BYTES, "tokenizer.json")?;
    from_json_bytes(&bytes).map_err(|source| Error::TokenizerJson {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads `tokenizer.json` contents: [`tokenizer_json::validate`] first, then the
/// `tokenizers` library inside `catch_unwind`, then stored padding and truncation cleared
/// (see [`from_json_file`]).
///
/// Never panics: a panic inside the library is [`TokenizerJsonError::Panicked`] (the default
/// panic hook still prints it).
///
/// ```
/// use trojanscan::model::tokenizer::from_json_bytes;
/// use trojanscan::model::tokenizer_json::TokenizerJsonError;
///
/// let json = r#"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": [["a", "b"]]}}"#;
/// let err = from_json_bytes(json.as_bytes()).unwrap_err();
/// assert!(matches!(err, TokenizerJsonError::MergeResultNotInVocab { rank: 0, .. }));
/// ```
pub fn from_json_bytes(bytes: &[u8]) -> std::result::Result<Tokenizer, TokenizerJsonError> {
    tokenizer_json::validate(bytes)?;
    load_unvalidated(bytes)
}

/// The library's own loading, with panics caught.
fn load_unvalidated(bytes: &[u8]) -> std::result::Result<Tokenizer, TokenizerJsonError> {
    let loaded = catch_panic(|| {
        let mut tok = Tokenizer::from_bytes(bytes)?;
        tok.with_padding(None);
        tok.with_truncation(None)?;
        Ok::<_, tokenizers::Error>(tok)
    });
    match loaded {
        Ok(Ok(tok)) => Ok(tok),
        Ok(Err(e)) => Err(TokenizerJsonError::Library(e.to_string())),
        Err(message) => Err(TokenizerJsonError::Panicked(message)),
    }
}

/// Encodes a text (with the special tokens the post-processor adds when `add_special`),
/// turning a panic inside the library into [`Error::TokenizerPanic`].
pub fn encode(tok: &Tokenizer, text: &str, add_special: bool) -> Result<Vec<u32>> {
    match catch_panic(|| tok.encode(text, add_special)) {
        Ok(Ok(enc)) => Ok(enc.get_ids().to_vec()),
        Ok(Err(e)) => Err(Error::Tokenizer(e.to_string())),
        Err(message) => Err(Error::TokenizerPanic {
            during: "encoding",
            message,
        }),
    }
}

/// Decodes ids to text, turning a panic inside the library into [`Error::TokenizerPanic`].
pub fn decode(tok: &Tokenizer, ids: &[u32], skip_special: bool) -> Result<String> {
    // Nothing decodes to nothing; `BPEDecoder` would compute `len - 1` of no tokens.
    if ids.is_empty() {
        return Ok(String::new());
    }
    match catch_panic(|| tok.decode(ids, skip_special)) {
        Ok(Ok(text)) => Ok(text),
        Ok(Err(e)) => Err(Error::Tokenizer(e.to_string())),
        Err(message) => Err(Error::TokenizerPanic {
            during: "decoding",
            message,
        }),
    }
}

/// Runs `f`, returning a panic's message instead of unwinding further. The tokenizer is
/// only read by `f` (its caches are behind locks), so nothing half-updated is observed.
fn catch_panic<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_string())
    })
}

/// GGUF metadata keys read here (llama.cpp's names).
mod key {
    pub const MODEL: &str = "tokenizer.ggml.model";
    pub const PRE: &str = "tokenizer.ggml.pre";
    pub const TOKENS: &str = "tokenizer.ggml.tokens";
    pub const TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
    pub const SCORES: &str = "tokenizer.ggml.scores";
    pub const MERGES: &str = "tokenizer.ggml.merges";
    pub const BOS: &str = "tokenizer.ggml.bos_token_id";
    pub const EOS: &str = "tokenizer.ggml.eos_token_id";
    pub const UNK: &str = "tokenizer.ggml.unknown_token_id";
    pub const PAD: &str = "tokenizer.ggml.padding_token_id";
    pub const ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
    pub const ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
    pub const ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
}

/// Special-token ids declared in GGUF metadata (`tokenizer.ggml.*_token_id`).
///
/// Useful for padding a batch (`pad`, falling back to `eos`) and for knowing what the
/// post-processor adds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    /// Beginning of sequence (`tokenizer.ggml.bos_token_id`).
    pub bos: Option<u32>,
    /// End of sequence (`tokenizer.ggml.eos_token_id`).
    pub eos: Option<u32>,
    /// Padding (`tokenizer.ggml.padding_token_id`).
    pub pad: Option<u32>,
    /// Unknown token (`tokenizer.ggml.unknown_token_id`).
    pub unk: Option<u32>,
}

/// Reads the special-token ids from GGUF metadata.
///
/// Lenient by design: an id that is absent, not an integer, or not below the vocabulary size
/// is `None` here ([`from_gguf`] rejects such files instead).
///
/// ```
/// use std::collections::BTreeMap;
/// use trojanscan::model::gguf::{GgufFile, GgufValue};
/// use trojanscan::model::tokenizer::special_tokens_from_gguf;
///
/// let mut metadata = BTreeMap::new();
/// let tokens = ["<s>", "</s>", "a"].map(|t| GgufValue::String(t.into())).to_vec();
/// metadata.insert("tokenizer.ggml.tokens".to_string(), GgufValue::Array(tokens));
/// metadata.insert("tokenizer.ggml.bos_token_id".to_string(), GgufValue::U32(0));
/// metadata.insert("tokenizer.ggml.eos_token_id".to_string(), GgufValue::U32(7)); // out of range
/// let gguf = GgufFile {
///     version: 3,
///     metadata,
///     tensors: vec![],
///     alignment: 32,
///     data_offset: 0,
///     file_len: 0,
/// };
/// let special = special_tokens_from_gguf(&gguf);
/// assert_eq!(special.bos, Some(0));
/// assert_eq!(special.eos, None);
/// ```
pub fn special_tokens_from_gguf(gguf: &GgufFile) -> SpecialTokens {
    let n = gguf
        .metadata
        .get(key::TOKENS)
        .and_then(GgufValue::as_array)
        .map_or(0, <[GgufValue]>::len);
    let id = |k: &str| {
        gguf.metadata
            .get(k)
            .and_then(GgufValue::as_u32)
            .filter(|&i| (i as usize) < n)
    };
    SpecialTokens {
        bos: id(key::BOS),
        eos: id(key::EOS),
        pad: id(key::PAD),
        unk: id(key::UNK),
    }
}

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenType {
    Undefined,
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenType {
    fn from_i64(v: i64) -> Option<Self> {
        Some(match v {
            0 => Self::Undefined,
            1 => Self::Normal,
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => return None,
        })
    }
}

/// How a byte-level (`gpt2`) vocabulary splits text before BPE, from `tokenizer.ggml.pre`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BytePre {
    /// GPT-2: `ByteLevel`'s own regex
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
    Gpt2,
    /// SmolLM / SmolLM2: every digit isolated (`Digits(individual_digits=true)`), then the
    /// GPT-2 regex. llama.cpp's regex list for `smollm` is `\p{N}` then the GPT-2 regex.
    Smollm,
    /// Llama 3: the regex of its `tokenizer.json` (digits in runs of up to three), isolated,
    /// then `ByteLevel` without regex; BPE with `ignore_merges` (whole-word vocab hits win).
    Llama3,
    /// Qwen2: NFC normalization, the regex of its `tokenizer.json` (single digits),
    /// isolated, then `ByteLevel` without regex.
    Qwen2,
}

/// Llama 3's pre-tokenizer regex, as in its `tokenizer.json`.
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2's pre-tokenizer regex, as in its `tokenizer.json`.
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

impl BytePre {
    fn parse(pre: Option<&str>) -> Result<Self> {
        Ok(match pre {
            // `default` is what llama.cpp's converter writes when it does not recognise a
            // tokenizer; llama.cpp then uses a degraded fallback. We take GPT-2's split,
            // which is what a byte-level BPE with no further information expects.
            None | Some("default") | Some("gpt2") | Some("gpt-2") => Self::Gpt2,
            Some("smollm") => Self::Smollm,
            Some("llama3") | Some("llama-bpe") | Some("llama-v3") => Self::Llama3,
            Some("qwen2") => Self::Qwen2,
            Some(other) => {
                return Err(Error::Tokenizer(format!(
                    "unsupported {} `{other}` for a gpt2 (byte-level BPE) vocabulary \
                     (supported: smollm, gpt2, default, llama3, qwen2)",
                    key::PRE
                )))
            }
        })
    }

    fn pre_tokenizer(self) -> Result<PreTokenizerWrapper> {
        let byte_level_regex = || ByteLevel::new(false, true, true).into();
        let split_then_bytes = |regex: &str| -> Result<PreTokenizerWrapper> {
            let split = Split::new(
                SplitPattern::Regex(regex.to_string()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| Error::Tokenizer(format!("building the split regex: {e}")))?;
            Ok(PreSequence::new(vec![
                split.into(),
                ByteLevel::new(false, true, false).into(),
            ])
            .into())
        };
        match self {
            Self::Gpt2 => Ok(byte_level_regex()),
            Self::Smollm => {
                Ok(PreSequence::new(vec![Digits::new(true).into(), byte_level_regex()]).into())
            }
            Self::Llama3 => split_then_bytes(LLAMA3_REGEX),
            Self::Qwen2 => split_then_bytes(QWEN2_REGEX),
        }
    }
}

/// Which tokenizer family `tokenizer.ggml.model` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// Byte-level BPE with merges (`gpt2`).
    ByteLevel(BytePre),
    /// SentencePiece-style BPE with scores (`llama`).
    SentencePiece,
}

/// Rebuilds the tokenizer stored in GGUF metadata.
///
/// Reads `tokenizer.ggml.{model, pre, tokens, token_type, scores, merges}`, the special-token
/// ids and `add_bos_token` / `add_eos_token`. Control tokens (type 3, and the unknown token,
/// type 2) become special added tokens, user-defined tokens (type 4) plain added tokens, so
/// both are matched whole in the text. `encode(text, true)` adds BOS/EOS as the file says
/// (defaults as llama.cpp: BOS for `llama` and `llama3`, nothing otherwise).
///
/// Errors with [`Error::Tokenizer`] when a key is missing or has the wrong type, a
/// `tokenizer.ggml.model` or `tokenizer.ggml.pre` is unsupported, an id is out of range,
/// lengths disagree, or a merge is malformed or names tokens outside the vocabulary.
///
/// ```
/// use std::collections::BTreeMap;
/// use trojanscan::model::gguf::{GgufFile, GgufValue};
///
/// let s = |t: &str| GgufValue::String(t.to_string());
/// let mut metadata = BTreeMap::new();
/// metadata.insert("tokenizer.ggml.model".to_string(), s("gpt2"));
/// metadata.insert("tokenizer.ggml.pre".to_string(), s("smollm"));
/// let tokens = ["<|endoftext|>", "1", "2", "h", "i", "hi", "Ġ", "Ġhi"];
/// metadata.insert(
///     "tokenizer.ggml.tokens".to_string(),
///     GgufValue::Array(tokens.iter().map(|t| s(t)).collect()),
/// );
/// let types = [3, 1, 1, 1, 1, 1, 1, 1];
/// metadata.insert(
///     "tokenizer.ggml.token_type".to_string(),
///     GgufValue::Array(types.iter().map(|&t| GgufValue::I32(t)).collect()),
/// );
/// metadata.insert(
///     "tokenizer.ggml.merges".to_string(),
///     GgufValue::Array(vec![s("h i"), s("Ġ hi")]),
/// );
/// metadata.insert("tokenizer.ggml.eos_token_id".to_string(), GgufValue::U32(0));
/// let gguf = GgufFile {
///     version: 3,
///     metadata,
///     tensors: vec![],
///     alignment: 32,
///     data_offset: 0,
///     file_len: 0,
/// };
///
/// let tok = trojanscan::model::tokenizer::from_gguf(&gguf)?;
/// let enc = tok.encode("hi hi 12<|endoftext|>", true).unwrap();
/// assert_eq!(enc.get_ids(), [5, 7, 6, 1, 2, 0]);
/// # Ok::<(), trojanscan::Error>(())
/// ```
pub fn from_gguf(gguf: &GgufFile) -> Result<Tokenizer> {
    let meta = Meta(gguf);
    let model = meta
        .str(key::MODEL)?
        .ok_or_else(|| Error::Tokenizer(format!("missing `{}`", key::MODEL)))?;
    let family = match model {
        "gpt2" => Family::ByteLevel(BytePre::parse(meta.str(key::PRE)?)?),
        "llama" => Family::SentencePiece,
        other => {
            return Err(Error::Tokenizer(format!(
                "unsupported {} `{other}` (supported: gpt2, llama)",
                key::MODEL
            )))
        }
    };

    let tokens = meta.tokens()?;
    let n = tokens.len();
    let types = meta.token_types(n)?;
    let special = SpecialIds {
        bos: meta.token_id(key::BOS, n)?,
        eos: meta.token_id(key::EOS, n)?,
        unk: meta.token_id(key::UNK, n)?,
    };
    // Pad only matters to callers, but a bad one is still a malformed file.
    meta.token_id(key::PAD, n)?;
    let (default_bos, space_prefix_default) = match family {
        Family::ByteLevel(BytePre::Llama3) => (true, false),
        Family::ByteLevel(_) => (false, false),
        Family::SentencePiece => (true, true),
    };
    let add_bos = meta.bool(key::ADD_BOS)?.unwrap_or(default_bos);
    let add_eos = meta.bool(key::ADD_EOS)?.unwrap_or(false);

    let mut tok = match family {
        Family::ByteLevel(pre) => {
            let merges = meta.merges(&tokens)?.ok_or_else(|| {
                Error::Tokenizer(format!(
                    "missing `{}` (a gpt2 vocabulary needs merges)",
                    key::MERGES
                ))
            })?;
            byte_level_tokenizer(&tokens, merges, pre)?
        }
        Family::SentencePiece => {
            let add_space_prefix = meta
                .bool(key::ADD_SPACE_PREFIX)?
                .unwrap_or(space_prefix_default);
            let merges = match meta.merges(&tokens)? {
                Some(m) => m,
                None => {
                    let scores = meta.scores(n)?.ok_or_else(|| {
                        Error::Tokenizer(format!(
                            "a llama vocabulary needs `{}` or `{}`",
                            key::MERGES,
                            key::SCORES
                        ))
                    })?;
                    merges_from_scores(&tokens, &scores)
                }
            };
            sentencepiece_tokenizer(&tokens, merges, special.unk, add_space_prefix)?
        }
    };

    add_vocab_tokens(&mut tok, &tokens, &types)?;
    let processor = post_processor(&tokens, &special, add_bos, add_eos, family)?;
    tok.with_post_processor(Some(processor));
    Ok(tok)
}

/// BOS / EOS / UNK ids, validated against the vocabulary.
struct SpecialIds {
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
}

/// Typed, validated access to `tokenizer.ggml.*` metadata.
struct Meta<'a>(&'a GgufFile);

impl Meta<'_> {
    fn get(&self, k: &str) -> Option<&GgufValue> {
        self.0.metadata.get(k)
    }

    fn wrong_type(k: &str, v: &GgufValue, want: &str) -> Error {
        Error::Tokenizer(format!("`{k}` is {}, expected {want}", v.type_name()))
    }

    fn str(&self, k: &str) -> Result<Option<&str>> {
        self.get(k)
            .map(|v| v.as_str().ok_or_else(|| Self::wrong_type(k, v, "a string")))
            .transpose()
    }

    fn bool(&self, k: &str) -> Result<Option<bool>> {
        self.get(k)
            .map(|v| v.as_bool().ok_or_else(|| Self::wrong_type(k, v, "a bool")))
            .transpose()
    }

    fn array(&self, k: &str) -> Result<Option<&[GgufValue]>> {
        self.get(k)
            .map(|v| {
                v.as_array()
                    .ok_or_else(|| Self::wrong_type(k, v, "an array"))
            })
            .transpose()
    }

    fn tokens(&self) -> Result<Vec<String>> {
        let arr = self
            .array(key::TOKENS)?
            .ok_or_else(|| Error::Tokenizer(format!("missing `{}`", key::TOKENS)))?;
        if arr.is_empty() {
            return Err(Error::Tokenizer(format!("`{}` is empty", key::TOKENS)));
        }
        if u32::try_from(arr.len()).is_err() {
            return Err(Error::Tokenizer(format!(
                "`{}` has {} entries, more than u32 ids can number",
                key::TOKENS,
                arr.len()
            )));
        }
        arr.iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str().map(str::to_owned).ok_or_else(|| {
                    Error::Tokenizer(format!(
                        "`{}`[{i}] is {}, expected a string",
                        key::TOKENS,
                        v.type_name()
                    ))
                })
            })
            .collect()
    }

    /// Token types; all `Normal` when the key is absent.
    fn token_types(&self, n: usize) -> Result<Vec<TokenType>> {
        let Some(arr) = self.array(key::TOKEN_TYPE)? else {
            return Ok(vec![TokenType::Normal; n]);
        };
        if arr.len() != n {
            return Err(Error::Tokenizer(format!(
                "`{}` has {} entries but `{}` has {n}",
                key::TOKEN_TYPE,
                arr.len(),
                key::TOKENS
            )));
        }
        arr.iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_i64().and_then(TokenType::from_i64).ok_or_else(|| {
                    Error::Tokenizer(format!(
                        "`{}`[{i}] is {v:?}, expected a token type 0..=6",
                        key::TOKEN_TYPE
                    ))
                })
            })
            .collect()
    }

    fn scores(&self, n: usize) -> Result<Option<Vec<f32>>> {
        let Some(arr) = self.array(key::SCORES)? else {
            return Ok(None);
        };
        if arr.len() != n {
            return Err(Error::Tokenizer(format!(
                "`{}` has {} entries but `{}` has {n}",
                key::SCORES,
                arr.len(),
                key::TOKENS
            )));
        }
        arr.iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_f32().filter(|s| s.is_finite()).ok_or_else(|| {
                    Error::Tokenizer(format!(
                        "`{}`[{i}] is {v:?}, expected a finite float",
                        key::SCORES
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// An optional token id that must be below `n` when present.
    fn token_id(&self, k: &str, n: usize) -> Result<Option<u32>> {
        let Some(v) = self.get(k) else {
            return Ok(None);
        };
        let id = v
            .as_u32()
            .ok_or_else(|| Error::Tokenizer(format!("`{k}` is {v:?}, expected a token id")))?;
        if id as usize >= n {
            return Err(Error::Tokenizer(format!(
                "`{k}` = {id} is out of range for a vocabulary of {n} tokens"
            )));
        }
        Ok(Some(id))
    }

    /// Merges (`"left right"` strings), each checked to be two vocabulary tokens whose
    /// concatenation is in the vocabulary; `None` if the key is absent.
    fn merges(&self, tokens: &[String]) -> Result<Option<Merges>> {
        let Some(arr) = self.array(key::MERGES)? else {
            return Ok(None);
        };
        let known: std::collections::HashSet<&str> = tokens.iter().map(String::as_str).collect();
        let mut merges = Vec::with_capacity(arr.len());
        for (i, v) in arr.iter().enumerate() {
            let s = v.as_str().ok_or_else(|| {
                Error::Tokenizer(format!(
                    "`{}`[{i}] is {}, expected a string",
                    key::MERGES,
                    v.type_name()
                ))
            })?;
            let (a, b) = s
                .split_once(' ')
                .filter(|(a, b)| !a.is_empty() && !b.is_empty() && !b.contains(' '))
                .ok_or_else(|| {
                    Error::Tokenizer(format!(
                        "`{}`[{i}] = {s:?} is not two tokens separated by one space",
                        key::MERGES
                    ))
                })?;
            for part in [a, b] {
                if !known.contains(part) {
                    return Err(Error::Tokenizer(format!(
                        "`{}`[{i}] = {s:?} names {part:?}, which is not in the vocabulary",
                        key::MERGES
                    )));
                }
            }
            if !known.contains(format!("{a}{b}").as_str()) {
                return Err(Error::Tokenizer(format!(
                    "`{}`[{i}] = {s:?} makes {:?}, which is not in the vocabulary",
                    key::MERGES,
                    format!("{a}{b}")
                )));
            }
            merges.push((a.to_owned(), b.to_owned()));
        }
        Ok(Some(merges))
    }
}

/// token → id. A string listed twice keeps its last id, as in llama.cpp and transformers.
fn vocab_map(tokens: &[String]) -> Vocab {
    let mut vocab = Vocab::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        // `tokens()` checked that every index fits in u32.
        vocab.insert(t.clone(), i as u32);
    }
    vocab
}

fn tok_err(what: &str) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> Error + '_ {
    move |e| Error::Tokenizer(format!("{what}: {e}"))
}

/// Byte-level BPE (GPT-2 family): tokens are spelled in GPT-2's byte alphabet (`Ġ` = space).
fn byte_level_tokenizer(tokens: &[String], merges: Merges, pre: BytePre) -> Result<Tokenizer> {
    let bpe = BPE::builder()
        .vocab_and_merges(vocab_map(tokens), merges)
        .ignore_merges(pre == BytePre::Llama3)
        .build()
        .map_err(tok_err("building the BPE model"))?;
    let mut tok = Tokenizer::new(bpe);
    if pre == BytePre::Qwen2 {
        tok.with_normalizer(Some(NFC))
            .map_err(tok_err("setting the normalizer"))?;
    }
    tok.with_pre_tokenizer(Some(pre.pre_tokenizer()?));
    tok.with_decoder(Some(ByteLevel::new(false, true, true)));
    Ok(tok)
}

/// SentencePiece-style BPE (`llama`): spaces as `▁`, one more `▁` prepended to each piece
/// of text between special tokens when `add_space_prefix`, unknown bytes as `<0xXX>` tokens.
///
/// This is what sentencepiece itself, llama.cpp and Llama 2's `tokenizer.json`
/// (`Prepend` + `Replace` normalizer) do. transformers' GGUF conversion instead uses
/// `Metaspace(prepend_scheme="first")`, which adds no `▁` to text that already starts with a
/// space or follows a special token, and so disagrees with sentencepiece there.
fn sentencepiece_tokenizer(
    tokens: &[String],
    merges: Merges,
    unk: Option<u32>,
    add_space_prefix: bool,
) -> Result<Tokenizer> {
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab_map(tokens), merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(unk) = unk {
        builder = builder.unk_token(tokens[unk as usize].clone());
    }
    let bpe = builder.build().map_err(tok_err("building the BPE model"))?;
    let mut tok = Tokenizer::new(bpe);
    let replace = || Replace::new(" ", "▁").map_err(tok_err("building the normalizer"));
    let normalizer: NormalizerWrapper = if add_space_prefix {
        NormalizerSequence::new(vec![Prepend::new("▁".into()).into(), replace()?.into()]).into()
    } else {
        replace()?.into()
    };
    tok.with_normalizer(Some(normalizer))
        .map_err(tok_err("setting the normalizer"))?;
    let mut decoders: Vec<DecoderWrapper> = vec![
        Replace::new("▁", " ")
            .map_err(tok_err("building the decoder"))?
            .into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_space_prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    tok.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(tok)
}

/// Merges implied by a SentencePiece vocabulary with scores, exactly as transformers derives
/// them (`generate_merges`): every split of every token into two vocabulary tokens, ordered
/// by the whole token's score (best first), then by the pieces' lengths (longest first),
/// ties kept in vocabulary order.
fn merges_from_scores(tokens: &[String], scores: &[f32]) -> Merges {
    let vocab = vocab_map(tokens);
    // Python's `dict(zip(tokens, scores))`: first position of a repeated token, last score.
    let mut first_seen: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    let mut last_score: HashMap<&str, f32> = HashMap::with_capacity(tokens.len());
    let mut order = Vec::with_capacity(tokens.len());
    for (t, &s) in tokens.iter().zip(scores) {
        if !first_seen.contains_key(t.as_str()) {
            first_seen.insert(t, order.len());
            order.push(t.as_str());
        }
        last_score.insert(t, s);
    }
    struct Cand<'a> {
        left: &'a str,
        right: &'a str,
        score: f32,
        left_chars: usize,
        right_chars: usize,
    }
    let mut all: Vec<Cand> = Vec::new();
    for &t in &order {
        let score = last_score[t];
        let mut local: Vec<(u32, u32, Cand)> = Vec::new();
        let total_chars = t.chars().count();
        for (k, (i, _)) in t.char_indices().enumerate().skip(1) {
            let (l, r) = t.split_at(i);
            if let (Some(&li), Some(&ri)) = (vocab.get(l), vocab.get(r)) {
                local.push((
                    li,
                    ri,
                    Cand {
                        left: l,
                        right: r,
                        score,
                        left_chars: k,
                        right_chars: total_chars - k,
                    },
                ));
            }
        }
        local.sort_by_key(|&(li, ri, _)| (li, ri));
        all.extend(local.into_iter().map(|(_, _, c)| c));
    }
    // Stable sort, descending: equal keys keep their order, as Python's `reverse=True` does.
    all.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.left_chars.cmp(&a.left_chars))
            .then(b.right_chars.cmp(&a.right_chars))
    });
    all.into_iter()
        .map(|c| (c.left.to_owned(), c.right.to_owned()))
        .collect()
}

/// Control and unknown tokens become special added tokens, user-defined tokens plain added
/// tokens, so the text `<|im_start|>` is one token, as in llama.cpp and transformers.
fn add_vocab_tokens(tok: &mut Tokenizer, tokens: &[String], types: &[TokenType]) -> Result<()> {
    let mut special = Vec::new();
    let mut user = Vec::new();
    // An empty string would match everywhere; llama.cpp never matches one either.
    for (t, ty) in tokens.iter().zip(types).filter(|(t, _)| !t.is_empty()) {
        match ty {
            TokenType::Control | TokenType::Unknown => {
                special.push(AddedToken::from(t.clone(), true).normalized(false))
            }
            TokenType::UserDefined => {
                user.push(AddedToken::from(t.clone(), false).normalized(false))
            }
            _ => {}
        }
    }
    if !special.is_empty() {
        tok.add_special_tokens(special)
            .map_err(tok_err("adding special tokens"))?;
    }
    if !user.is_empty() {
        tok.add_tokens(user)
            .map_err(tok_err("adding user-defined tokens"))?;
    }
    Ok(())
}

/// `[BOS] $A [EOS]` as `add_bos` / `add_eos` say (pairs: `[BOS] $A [EOS] [BOS] $B [EOS]`),
/// after byte-level offset trimming for `gpt2` vocabularies.
fn post_processor(
    tokens: &[String],
    special: &SpecialIds,
    add_bos: bool,
    add_eos: bool,
    family: Family,
) -> Result<PostProcessorWrapper> {
    let need = |flag: bool, id: Option<u32>, what: &str, k: &str| -> Result<Option<u32>> {
        match (flag, id) {
            (false, _) => Ok(None),
            (true, Some(id)) => Ok(Some(id)),
            (true, None) => Err(Error::Tokenizer(format!(
                "the file asks to add {what} but has no `{k}`"
            ))),
        }
    };
    let bos = need(add_bos, special.bos, "BOS", key::BOS)?;
    let eos = need(add_eos, special.eos, "EOS", key::EOS)?;
    let mut specials = Vec::new();
    for (name, id) in [("BOS", bos), ("EOS", eos)] {
        if let Some(id) = id {
            specials.push(
                SpecialToken::new(name.into(), vec![id], vec![tokens[id as usize].clone()])
                    .map_err(tok_err("building the post-processor"))?,
            );
        }
    }
    let wrap = |seq: &str, type_id: u32| {
        let mut out = Vec::new();
        if bos.is_some() {
            out.push(format!("BOS:{type_id}"));
        }
        out.push(format!("{seq}:{type_id}"));
        if eos.is_some() {
            out.push(format!("EOS:{type_id}"));
        }
        out
    };
    let single = wrap("$A", 0);
    let mut pair = wrap("$A", 0);
    pair.extend(wrap("$B", 1));
    let template = TemplateProcessing::builder()
        .try_single(single)
        .and_then(|b| b.try_pair(pair))
        .map_err(|e| Error::Tokenizer(format!("building the post-processor: {e}")))?
        .special_tokens(specials)
        .build()
        .map_err(|e| Error::Tokenizer(format!("building the post-processor: {e}")))?;
    Ok(match family {
        Family::ByteLevel(_) => ProcessorSequence::new(vec![
            ByteLevel::new(false, true, true).into(),
            template.into(),
        ])
        .into(),
        Family::SentencePiece => template.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn s(t: &str) -> GgufValue {
        GgufValue::String(t.to_string())
    }

    fn gguf(metadata: BTreeMap<String, GgufValue>) -> GgufFile {
        GgufFile {
            version: 3,
            metadata,
            tensors: vec![],
            alignment: 32,
            data_offset: 0,
            file_len: 0,
        }
    }

    /// A tiny, valid gpt2/smollm vocabulary.
    fn valid() -> BTreeMap<String, GgufValue> {
        let tokens = [
            "<|endoftext|>",
            "<|im_start|>",
            "1",
            "2",
            "h",
            "i",
            "hi",
            "Ġ",
            "Ġhi",
            "ĠĠ",
        ];
        let types = [3, 3, 1, 1, 1, 1, 1, 1, 1, 1];
        let mut m = BTreeMap::new();
        m.insert(key::MODEL.into(), s("gpt2"));
        m.insert(key::PRE.into(), s("smollm"));
        m.insert(
            key::TOKENS.into(),
            GgufValue::Array(tokens.iter().map(|t| s(t)).collect()),
        );
        m.insert(
            key::TOKEN_TYPE.into(),
            GgufValue::Array(types.iter().map(|&t| GgufValue::I32(t)).collect()),
        );
        m.insert(
            key::MERGES.into(),
            GgufValue::Array(vec![s("h i"), s("Ġ hi"), s("Ġ Ġ")]),
        );
        m.insert(key::BOS.into(), GgufValue::U32(1));
        m.insert(key::EOS.into(), GgufValue::U32(0));
        m
    }

    fn tokenizer_err(m: BTreeMap<String, GgufValue>) -> String {
        match from_gguf(&gguf(m)) {
            Err(Error::Tokenizer(msg)) => msg,
            Err(e) => panic!("expected Error::Tokenizer, got {e:?}"),
            Ok(_) => panic!("expected Error::Tokenizer, got a tokenizer"),
        }
    }

    #[test]
    fn valid_vocabulary_builds_and_splits_digits() {
        let tok = from_gguf(&gguf(valid())).unwrap();
        let ids = tok.encode("hi  12<|im_start|>", true).unwrap();
        // "hi  12" -> "hi", "ĠĠ" (digits isolated, so the spaces stay together), "1", "2".
        assert_eq!(ids.get_ids(), [6, 9, 2, 3, 1]);
        assert_eq!(
            tok.decode(ids.get_ids(), false).unwrap(),
            "hi  12<|im_start|>"
        );
    }

    /// Splits of each byte-level pre-tokenizer, as Python `tokenizers` 0.23 (onig) gives them
    /// for the same components: checks the regexes under this build's regex engine.
    #[test]
    fn byte_level_pre_tokenizer_splits() {
        use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};
        let text = "I'LL pay 12345  now\n\n";
        let cases: [(BytePre, &[&str]); 4] = [
            (
                BytePre::Gpt2,
                &["I", "'", "LL", "Ġpay", "Ġ12345", "Ġ", "Ġnow", "ĊĊ"],
            ),
            (
                BytePre::Smollm,
                &[
                    "I", "'", "LL", "Ġpay", "Ġ", "1", "2", "3", "4", "5", "Ġ", "Ġnow", "ĊĊ",
                ],
            ),
            (
                BytePre::Llama3,
                &["I", "'LL", "Ġpay", "Ġ", "123", "45", "Ġ", "Ġnow", "ĊĊ"],
            ),
            (
                BytePre::Qwen2,
                &[
                    "I", "'LL", "Ġpay", "Ġ", "1", "2", "3", "4", "5", "Ġ", "Ġnow", "ĊĊ",
                ],
            ),
        ];
        for (pre, want) in cases {
            let mut pts = PreTokenizedString::from(text);
            pre.pre_tokenizer().unwrap().pre_tokenize(&mut pts).unwrap();
            let got: Vec<&str> = pts
                .get_splits(OffsetReferential::Original, OffsetType::Char)
                .into_iter()
                .map(|(s, _, _)| s)
                .collect();
            assert_eq!(got, want, "{pre:?}");
        }
    }

    #[test]
    fn add_bos_and_eos_follow_the_flags() {
        let mut m = valid();
        m.insert(key::ADD_BOS.into(), GgufValue::Bool(true));
        m.insert(key::ADD_EOS.into(), GgufValue::Bool(true));
        let tok = from_gguf(&gguf(m)).unwrap();
        assert_eq!(tok.encode("hi", true).unwrap().get_ids(), [1, 6, 0]);
        assert_eq!(tok.encode("hi", false).unwrap().get_ids(), [6]);
    }

    #[test]
    fn empty_control_token_is_not_matched() {
        let mut m = valid();
        let tokens = [
            "",
            "<|im_start|>",
            "1",
            "2",
            "h",
            "i",
            "hi",
            "Ġ",
            "Ġhi",
            "ĠĠ",
        ];
        m.insert(
            key::TOKENS.into(),
            GgufValue::Array(tokens.iter().map(|t| s(t)).collect()),
        );
        let tok = from_gguf(&gguf(m)).unwrap();
        assert_eq!(tok.encode("hi", false).unwrap().get_ids(), [6]);
    }

    #[test]
    fn missing_tokens_array() {
        let mut m = valid();
        m.remove(key::TOKENS);
        assert!(tokenizer_err(m).contains(key::TOKENS));
    }

    #[test]
    fn tokens_not_an_array() {
        let mut m = valid();
        m.insert(key::TOKENS.into(), s("hi"));
        assert!(tokenizer_err(m).contains("expected an array"));
    }

    #[test]
    fn merge_without_space() {
        let mut m = valid();
        m.insert(key::MERGES.into(), GgufValue::Array(vec![s("hi")]));
        assert!(tokenizer_err(m).contains("separated by one space"));
    }

    #[test]
    fn merge_with_unknown_token() {
        let mut m = valid();
        m.insert(key::MERGES.into(), GgufValue::Array(vec![s("h x")]));
        assert!(tokenizer_err(m).contains("not in the vocabulary"));
    }

    #[test]
    fn merge_that_is_not_a_string() {
        let mut m = valid();
        m.insert(
            key::MERGES.into(),
            GgufValue::Array(vec![GgufValue::U32(3)]),
        );
        assert!(tokenizer_err(m).contains("expected a string"));
    }

    #[test]
    fn token_type_length_mismatch() {
        let mut m = valid();
        m.insert(
            key::TOKEN_TYPE.into(),
            GgufValue::Array(vec![GgufValue::I32(1); 3]),
        );
        assert!(tokenizer_err(m).contains("has 3 entries"));
    }

    #[test]
    fn token_type_out_of_range() {
        let mut m = valid();
        m.insert(
            key::TOKEN_TYPE.into(),
            GgufValue::Array(vec![GgufValue::I32(9); 10]),
        );
        assert!(tokenizer_err(m).contains("token type"));
    }

    #[test]
    fn bos_id_out_of_range() {
        let mut m = valid();
        m.insert(key::BOS.into(), GgufValue::U32(10));
        assert!(tokenizer_err(m).contains("out of range"));
    }

    #[test]
    fn negative_eos_id() {
        let mut m = valid();
        m.insert(key::EOS.into(), GgufValue::I32(-1));
        assert!(tokenizer_err(m).contains(key::EOS));
    }

    #[test]
    fn add_bos_without_bos_id() {
        let mut m = valid();
        m.remove(key::BOS);
        m.insert(key::ADD_BOS.into(), GgufValue::Bool(true));
        assert!(tokenizer_err(m).contains("BOS"));
    }

    #[test]
    fn unknown_pre_type() {
        let mut m = valid();
        m.insert(key::PRE.into(), s("deepseek-llm"));
        assert!(tokenizer_err(m).contains("`deepseek-llm`"));
    }

    #[test]
    fn unknown_model_type() {
        let mut m = valid();
        m.insert(key::MODEL.into(), s("rwkv"));
        assert!(tokenizer_err(m).contains("`rwkv`"));
    }

    #[test]
    fn missing_merges_for_gpt2() {
        let mut m = valid();
        m.remove(key::MERGES);
        assert!(tokenizer_err(m).contains(key::MERGES));
    }

    #[test]
    fn special_tokens_are_lenient() {
        let mut m = valid();
        m.insert(key::PAD.into(), GgufValue::U32(99));
        m.insert(key::UNK.into(), s("zero"));
        let sp = special_tokens_from_gguf(&gguf(m));
        assert_eq!(
            sp,
            SpecialTokens {
                bos: Some(1),
                eos: Some(0),
                pad: None,
                unk: None
            }
        );
    }

    #[test]
    fn sentencepiece_from_scores() {
        // SentencePiece BPE: merges come from scores; ▁ marks spaces; unknown bytes fall back.
        let tokens = [
            "<unk>", "<s>", "</s>", "<0x21>", "▁", "h", "i", "hi", "▁hi", "▁h",
        ];
        let types = [2, 3, 3, 6, 1, 1, 1, 1, 1, 1];
        let scores = [0.0, 0.0, 0.0, 0.0, -1.0, -2.0, -3.0, -4.0, -5.0, -6.0];
        let mut m = BTreeMap::new();
        m.insert(key::MODEL.into(), s("llama"));
        m.insert(
            key::TOKENS.into(),
            GgufValue::Array(tokens.iter().map(|t| s(t)).collect()),
        );
        m.insert(
            key::TOKEN_TYPE.into(),
            GgufValue::Array(types.iter().map(|&t| GgufValue::I32(t)).collect()),
        );
        m.insert(
            key::SCORES.into(),
            GgufValue::Array(scores.iter().map(|&t| GgufValue::F32(t)).collect()),
        );
        m.insert(key::UNK.into(), GgufValue::U32(0));
        m.insert(key::BOS.into(), GgufValue::U32(1));
        m.insert(key::EOS.into(), GgufValue::U32(2));
        let tok = from_gguf(&gguf(m.clone())).unwrap();
        // "hi!" -> BOS, "▁hi" ("hi" scores above "▁h"), "!" via byte fallback.
        let enc = tok.encode("hi!", true).unwrap();
        assert_eq!(enc.get_ids(), [1, 8, 3]);
        assert_eq!(tok.decode(enc.get_ids(), true).unwrap(), "hi!");
        m.insert(
            key::SCORES.into(),
            GgufValue::Array(vec![GgufValue::F32(0.0); 2]),
        );
        assert!(tokenizer_err(m).contains(key::SCORES));
    }

    #[test]
    fn generated_merges_follow_scores() {
        let tokens: Vec<String> = ["a", "b", "c", "ab", "bc", "abc"]
            .map(String::from)
            .to_vec();
        let scores = [0.0, 0.0, 0.0, -2.0, -1.0, -3.0];
        let merges = merges_from_scores(&tokens, &scores);
        let want: Merges = [("b", "c"), ("a", "b"), ("ab", "c"), ("a", "bc")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .to_vec();
        assert_eq!(merges, want);
    }
}

#[cfg(test)]
mod json_tests {
    use base64::Engine as _;
    use serde_json::{json, Value};

    use super::*;

    fn bytes(v: &Value) -> Vec<u8> {
        v.to_string().into_bytes()
    }

    /// A word-level tokenizer with the given components.
    fn word_level(slot: &str, component: Value) -> Value {
        let mut v = json!({
            "version": "1.0",
            "added_tokens": [{"id": 1, "content": "<s>", "single_word": false, "lstrip": false,
                              "rstrip": false, "normalized": true, "special": true}],
            "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "unk_token": "<unk>", "vocab": {
                "<unk>": 0, "<s>": 1, "</s>": 2, "[CLS]": 3, "[SEP]": 4, "hello": 5, "▁a": 6,
                "a": 7, "##b": 8, "<0x41>": 9, "|": 10, "<pad>": 11, " ": 12, "fi": 13}}
        });
        v[slot] = component;
        v
    }

    const TEXTS: &[&str] = &[
        "",
        " ",
        "hello, World! 123",
        "ﬁ 𝔾 ड़ी 日本語 é́́",
        "a\u{0}b\t\n  c-d",
        "<s> hello </s>",
    ];

    /// Loads through validation, then encodes and decodes through the guards.
    fn exercise(v: &Value) {
        let tok = from_json_bytes(&bytes(v)).unwrap_or_else(|e| panic!("{e}\n{v}"));
        let long = "ab cd ".repeat(300);
        for text in TEXTS.iter().copied().chain([long.as_str()]) {
            for special in [false, true] {
                let ids = encode(&tok, text, special).unwrap_or_else(|e| panic!("{e}\n{v}"));
                decode(&tok, &ids, special).unwrap_or_else(|e| panic!("{e}\n{v}"));
            }
        }
        let all: Vec<u32> = (0..16).collect();
        decode(&tok, &all, false).unwrap_or_else(|e| panic!("{e}\n{v}"));
    }

    #[test]
    fn every_component_type_loads_and_runs() {
        let charsmap = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/tokenizers/nmt_nfkc.charsmap"
        ))
        .unwrap();
        let charsmap = base64::engine::general_purpose::STANDARD.encode(charsmap);
        let byte_level = json!({"type": "ByteLevel", "add_prefix_space": true,
                                "trim_offsets": true, "use_regex": true});
        let metaspace = json!({"type": "Metaspace", "replacement": "▁",
                               "prepend_scheme": "always", "split": true});
        let normalizers = [
            json!({"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                   "strip_accents": null, "lowercase": true}),
            json!({"type": "Strip", "strip_left": true, "strip_right": true}),
            json!({"type": "StripAccents"}),
            json!({"type": "NFC"}),
            json!({"type": "NFD"}),
            json!({"type": "NFKC"}),
            json!({"type": "NFKD"}),
            json!({"type": "Lowercase"}),
            json!({"type": "Nmt"}),
            json!({"type": "Precompiled", "precompiled_charsmap": charsmap}),
            json!({"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "}),
            json!({"type": "Prepend", "prepend": "▁"}),
            json!({"type": "ByteLevel"}),
            json!({"type": "Sequence", "normalizers": [{"type": "NFD"}, {"type": "StripAccents"}]}),
        ];
        let pre_tokenizers = [
            json!({"type": "BertPreTokenizer"}),
            byte_level.clone(),
            json!({"type": "CharDelimiterSplit", "delimiter": "-"}),
            metaspace.clone(),
            json!({"type": "Whitespace"}),
            json!({"type": "Split", "pattern": {"Regex": "\\p{N}|\\s+(?!\\S)"},
                   "behavior": "Isolated", "invert": false}),
            json!({"type": "Punctuation", "behavior": "Isolated"}),
            json!({"type": "WhitespaceSplit"}),
            json!({"type": "Digits", "individual_digits": true}),
            json!({"type": "UnicodeScripts"}),
            json!({"type": "FixedLength", "length": 2}),
            json!({"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"}, metaspace.clone()]}),
        ];
        let decoders = [
            json!({"type": "BPEDecoder", "suffix": "</w>"}),
            byte_level.clone(),
            json!({"type": "WordPiece", "prefix": "##", "cleanup": true}),
            metaspace,
            json!({"type": "CTC", "pad_token": "<pad>", "word_delimiter_token": "|", "cleanup": true}),
            json!({"type": "Replace", "pattern": {"String": "▁"}, "content": " "}),
            json!({"type": "Fuse"}),
            json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}),
            json!({"type": "ByteFallback"}),
            json!({"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"}]}),
        ];
        let processors = [
            json!({"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 1],
                   "trim_offsets": true, "add_prefix_space": true}),
            json!({"type": "BertProcessing", "sep": ["[SEP]", 4], "cls": ["[CLS]", 3]}),
            byte_level.clone(),
            json!({"type": "TemplateProcessing",
                   "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                              {"Sequence": {"id": "A", "type_id": 0}}],
                   "pair": [{"Sequence": {"id": "A", "type_id": 0}},
                            {"Sequence": {"id": "B", "type_id": 1}}],
                   "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}),
            json!({"type": "Sequence", "processors": [byte_level]}),
        ];
        for (slot, components) in [
            ("normalizer", &normalizers[..]),
            ("pre_tokenizer", &pre_tokenizers[..]),
            ("decoder", &decoders[..]),
            ("post_processor", &processors[..]),
        ] {
            for c in components {
                exercise(&word_level(slot, c.clone()));
            }
        }
        let models = [
            json!({"type": "BPE", "dropout": null, "unk_token": "<unk>", "byte_fallback": true,
                   "vocab": {"<unk>": 0, "<s>": 1, "h": 2, "e": 3, "he": 4, "<0x41>": 5},
                   "merges": [["h", "e"]]}),
            json!({"type": "WordPiece", "unk_token": "<unk>", "continuing_subword_prefix": "##",
                   "max_input_chars_per_word": 100,
                   "vocab": {"<unk>": 0, "<s>": 1, "hel": 2, "##lo": 3}}),
            json!({"type": "Unigram", "unk_id": 0, "byte_fallback": false,
                   "vocab": [["<unk>", 0.0], ["<s>", 0.0], ["▁he", -1.0], ["llo", -2.0], ["", -3.0]]}),
        ];
        for m in models {
            exercise(&word_level("model", m));
        }
    }

    #[test]
    fn a_panic_while_loading_is_caught() {
        // Without validation the library panics building this merge ("ab" is longer than
        // every vocabulary entry, so it slices past its buffer).
        let v =
            json!({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": [["a", "b"]]}});
        assert!(matches!(
            load_unvalidated(&bytes(&v)),
            Err(TokenizerJsonError::Panicked(_))
        ));
        assert!(matches!(
            from_json_bytes(&bytes(&v)),
            Err(TokenizerJsonError::MergeResultNotInVocab { .. })
        ));
    }

    #[test]
    fn a_panic_while_encoding_or_decoding_is_caught() {
        // Parameters validation refuses, loaded without it: `FixedLength` of 0 panics on
        // every text, a `Strip` from the end indexes below zero on a token made of spaces.
        let v = word_level("pre_tokenizer", json!({"type": "FixedLength", "length": 0}));
        let tok = load_unvalidated(&bytes(&v)).unwrap();
        assert!(matches!(
            encode(&tok, "hello", false),
            Err(Error::TokenizerPanic {
                during: "encoding",
                ..
            })
        ));
        assert!(matches!(
            from_json_bytes(&bytes(&v)),
            Err(TokenizerJsonError::BadParameter { .. })
        ));
        let v = word_level(
            "decoder",
            json!({"type": "Strip", "content": " ", "start": 0, "stop": 2}),
        );
        let tok = load_unvalidated(&bytes(&v)).unwrap();
        assert!(matches!(
            decode(&tok, &[12], false),
            Err(Error::TokenizerPanic {
                during: "decoding",
                ..
            })
        ));
        // The tokenizer stays usable after a caught panic.
        assert_eq!(decode(&tok, &[5], false).unwrap(), "hello");
    }

    #[test]
    fn oversize_bytes_are_refused_before_parsing() {
        let big = vec![b' '; MAX_TOKENIZER_JSON_BYTES as usize + 1];
        assert!(matches!(
            from_json_bytes(&big),
            Err(TokenizerJsonError::TooLarge { .. })
        ));
    }
}
