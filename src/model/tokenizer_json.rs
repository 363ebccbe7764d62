//! `tokenizer.json` checked before the `tokenizers` library reads it.
//!
//! The library trusts its input: a BPE merge whose result is longer than every vocabulary
//! entry slices past a buffer while the model is built, a `Precompiled` normalizer's
//! charsmap sizes an allocation from its first four bytes (8 GiB from a 4-byte header) and
//! indexes its trie unchecked, some parameters panic on every text, and a file is read
//! whole whatever its size. [`validate`] refuses, from the JSON alone, every input known to
//! do that, and bounds what an accepted file can make the library allocate:
//!
//! - the file is at most [`MAX_TOKENIZER_JSON_BYTES`], JSON nested at most [`MAX_JSON_DEPTH`]
//!   deep, with no key twice in an object (the library would build, then drop, the first);
//! - the model is `BPE`, `WordPiece`, `WordLevel` or `Unigram`, with a non-empty vocabulary
//!   whose ids are unique and below [`id_limit`]; every BPE merge's parts and result (as the
//!   library forms it, with `continuing_subword_prefix`) are in the vocabulary; Unigram
//!   scores are finite and `unk_id` inside the vocabulary; WordPiece's unknown token is in
//!   the vocabulary and `max_input_chars_per_word` at most [`MAX_WORDPIECE_WORD_CHARS`];
//! - every normalizer, pre-tokenizer, decoder and post-processor has a `type` the library
//!   defines (its untagged fallback would otherwise guess), `Sequence`s nest at most
//!   [`MAX_SEQUENCE_DEPTH`] deep, and the parameters the library does not check are checked
//!   (`FixedLength.length` ≥ 1, `Strip` decoders with `stop` = 0, special-token ids below
//!   [`id_limit`], template pieces naming only defined special tokens, and sequence A only
//!   in the single template);
//! - a `Precompiled` charsmap is at most [`MAX_CHARSMAP_BYTES`] and passes
//!   [`validate_charsmap`];
//! - normalizers and pre-tokenizers together, and decoders on their own, grow a text at most
//!   [`MAX_EXPANSION`]-fold (a chain of `Replace`s doubling a character would otherwise
//!   grow it exponentially).
//!
//! Loading, encoding and decoding still run inside `catch_unwind` (see
//! [`crate::model::tokenizer`]): validation is the guard, the catch the last resort for
//! what it does not know. Regular expressions (`Split`, `Replace`) are compiled by
//! fancy-regex, whose nesting and backtracking limits bound their cost.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, Engine as _};
use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Largest `tokenizer.json` read, checked from the file's metadata before reading. Real
/// files reach about 35 MB (256k-token vocabularies with their merges). Parsing costs a few
/// times the file in memory, 16 times at worst (a file of `[0,0,…]`).
pub const MAX_TOKENIZER_JSON_BYTES: u64 = 64 << 20;

/// Deepest JSON nesting accepted (real files nest about 8 deep; serde_json's own limit,
/// 128, still applies first). Bounds the library's recursive deserialization.
pub const MAX_JSON_DEPTH: usize = 32;

/// Deepest nesting of `Sequence` components (real files use one level).
pub const MAX_SEQUENCE_DEPTH: usize = 4;

/// Largest decoded `precompiled_charsmap` (SentencePiece's `nmt_nfkc` is 232 KiB). Bounds
/// the trie walk of [`validate_charsmap`] and the library's copy of the trie.
pub const MAX_CHARSMAP_BYTES: usize = 4 << 20;

/// Largest growth of a text through the normalizers and pre-tokenizers (and, separately,
/// of decoded tokens through the decoders), as bounded per component: real tokenizers stay
/// below a few hundred (`nmt_nfkc`'s longest rewrite is 33 bytes for one 3-byte character,
/// a `▁` for a space triples it).
pub const MAX_EXPANSION: u64 = 4096;

/// Largest WordPiece `max_input_chars_per_word` (100 in every real vocabulary): the greedy
/// longest match is cubic in a word's length.
pub const MAX_WORDPIECE_WORD_CHARS: u64 = 1024;

/// Bound on token ids for a file with `entries` vocabulary entries and added tokens: ids
/// are below `2 * entries + 1024`. Holes are common (ids reserved for added tokens, or left
/// unused), an id far beyond every entry is not a vocabulary.
pub fn id_limit(entries: usize) -> u64 {
    2 * entries as u64 + 1024
}

/// What is wrong with a `tokenizer.json`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerJsonError {
    /// The bytes are larger than [`MAX_TOKENIZER_JSON_BYTES`].
    #[error("{len} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// Size of the input.
        len: u64,
        /// The limit.
        limit: u64,
    },

    /// Not JSON, or nested deeper than serde_json's recursion limit.
    #[error("not valid JSON: {0}")]
    Json(String),

    /// JSON nested deeper than [`MAX_JSON_DEPTH`].
    #[error("JSON nested deeper than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },

    /// An object has the same key twice.
    #[error("key `{key}` appears twice in one object")]
    DuplicateKey {
        /// The repeated key.
        key: String,
    },

    /// A field is missing or has the wrong JSON type or value.
    #[error("`{at}`: {why}")]
    Malformed {
        /// Where, as a path from the top (`model.vocab`, `normalizer.normalizers[1]`).
        at: String,
        /// What was expected.
        why: String,
    },

    /// A model or component `type` that is missing or not one the library defines.
    #[error("`{at}`: unknown type {}", found.as_deref().map_or("(missing)".to_string(), |t| format!("`{t}`")))]
    UnknownType {
        /// Where.
        at: String,
        /// The type found, `None` when the `type` field is absent.
        found: Option<String>,
    },

    /// A parameter the library accepts but mishandles (panics or loops on).
    #[error("`{at}`: {why}")]
    BadParameter {
        /// Where.
        at: String,
        /// What is wrong.
        why: String,
    },

    /// `Sequence` components nested deeper than [`MAX_SEQUENCE_DEPTH`].
    #[error("`{at}`: sequences nested deeper than {max}")]
    SequenceTooDeep {
        /// Where.
        at: String,
        /// The limit.
        max: usize,
    },

    /// The model's vocabulary is empty.
    #[error("the model's vocabulary is empty")]
    EmptyVocab,

    /// Two vocabulary entries share an id.
    #[error("id {id} is given to more than one vocabulary entry")]
    DuplicateId {
        /// The shared id.
        id: u64,
    },

    /// An id at or beyond [`id_limit`] for this file.
    #[error("`{at}`: id {id} is not below {limit}")]
    IdOutOfRange {
        /// Where.
        at: String,
        /// The id.
        id: u64,
        /// The bound.
        limit: u64,
    },

    /// A token the model needs (its unknown token) is not in the vocabulary.
    #[error("`{at}`: token `{token}` is not in the vocabulary")]
    TokenNotInVocab {
        /// Where it is named.
        at: String,
        /// The token.
        token: String,
    },

    /// A BPE merge is not two parts, or its second part is shorter than
    /// `continuing_subword_prefix` (or cut inside a character by it).
    #[error("merge {rank} is malformed: {why}")]
    BadMerge {
        /// Its rank (0-based, as the library counts).
        rank: usize,
        /// What is wrong.
        why: String,
    },

    /// A part of a BPE merge is not in the vocabulary.
    #[error("merge {rank}: part `{part}` is not in the vocabulary")]
    MergePartNotInVocab {
        /// The merge's rank.
        rank: usize,
        /// The missing part.
        part: String,
    },

    /// The token a BPE merge produces is not in the vocabulary.
    #[error("merge {rank}: result `{result}` is not in the vocabulary")]
    MergeResultNotInVocab {
        /// The merge's rank.
        rank: usize,
        /// The missing result.
        result: String,
    },

    /// A post-processor template inserts a special token that its `special_tokens` does not
    /// define (the library looks it up unchecked on every encode).
    #[error("`{at}`: special token `{token}` is not in special_tokens")]
    UnknownSpecialToken {
        /// Where the template names it.
        at: String,
        /// The token's id in the template.
        token: String,
    },

    /// A Unigram score is not a finite number.
    #[error("Unigram score of entry {index} is not a finite number")]
    BadScore {
        /// The entry.
        index: usize,
    },

    /// A `Precompiled` normalizer's charsmap is malformed.
    #[error("`{at}`: precompiled_charsmap: {source}")]
    Charsmap {
        /// Where.
        at: String,
        /// What is wrong with it.
        source: CharsmapError,
    },

    /// A text could grow more than [`MAX_EXPANSION`]-fold through the components.
    #[error("{what} can grow a text {factor}-fold (limit {max})")]
    Expansion {
        /// Which chain (`normalizer and pre_tokenizer`, `decoder`).
        what: &'static str,
        /// The bound computed for it (saturating).
        factor: u64,
        /// The limit.
        max: u64,
    },

    /// The `tokenizers` library refused a file that passed validation.
    #[error("{0}")]
    Library(String),

    /// The `tokenizers` library panicked while loading; the panic was caught.
    #[error("the tokenizers library panicked while loading: {0}")]
    Panicked(String),
}

/// What is wrong with a `precompiled_charsmap`, read the way `spm_precompiled` reads it: a
/// little-endian u32 trie size in bytes, that many bytes of double-array trie (u32 units),
/// then the normalized strings (UTF-8, NUL-terminated) that the trie's leaves index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CharsmapError {
    /// Not base64.
    #[error("not valid base64")]
    Base64,

    /// Larger than [`MAX_CHARSMAP_BYTES`].
    #[error("{len} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// Its size (decoded, or as bounded from the base64 length).
        len: u64,
        /// The limit.
        limit: u64,
    },

    /// Shorter than the 4-byte trie size.
    #[error("{len} bytes is too short for the trie size")]
    Truncated {
        /// Its size.
        len: usize,
    },

    /// The trie size is not a multiple of the 4-byte unit.
    #[error("trie size {trie_bytes} is not a whole number of 4-byte units")]
    TrieSizeUnaligned {
        /// The size read.
        trie_bytes: u32,
    },

    /// The trie size claims more bytes than follow it.
    #[error("trie of {trie_bytes} bytes overruns the {available} bytes after its size")]
    TrieOverrun {
        /// The size read.
        trie_bytes: u32,
        /// The bytes after the size.
        available: usize,
    },

    /// The trie has no units (the library reads unit 0 unconditionally).
    #[error("empty trie")]
    EmptyTrie,

    /// The normalized strings are not UTF-8.
    #[error("normalized strings are not valid UTF-8")]
    NormalizedNotUtf8,

    /// A node reachable from the root leads to a block of units outside the trie.
    #[error("the trie walk reaches unit {pos}, outside the {len}-unit trie")]
    NodeOutOfRange {
        /// The unit position.
        pos: u64,
        /// The trie's size in units.
        len: usize,
    },

    /// A reachable leaf points outside the normalized strings or inside a character.
    #[error("a trie leaf points at byte {index} of the {len}-byte normalized strings")]
    LeafOutOfRange {
        /// The byte index.
        index: u64,
        /// Size of the normalized strings.
        len: usize,
    },
}

/// Checks `tokenizer.json` bytes (see the module documentation).
pub fn validate(bytes: &[u8]) -> Result<(), TokenizerJsonError> {
    if bytes.len() as u64 > MAX_TOKENIZER_JSON_BYTES {
        return Err(TokenizerJsonError::TooLarge {
            len: bytes.len() as u64,
            limit: MAX_TOKENIZER_JSON_BYTES,
        });
    }
    let value = parse_strict(bytes)?;
    validate_value(&value)
}

/// Checks a parsed `tokenizer.json` (which must not have had duplicate keys: a `Value`
/// cannot show them).
pub fn validate_value(value: &Value) -> Result<(), TokenizerJsonError> {
    if depth(value) > MAX_JSON_DEPTH {
        return Err(TokenizerJsonError::TooDeep {
            max: MAX_JSON_DEPTH,
        });
    }
    let top = object(value, "")?;
    let added = match top.get("added_tokens") {
        None | Some(Value::Null) => &[][..],
        Some(v) => array(v, "added_tokens")?,
    };
    let model = top
        .get("model")
        .ok_or_else(|| malformed("model", "missing"))?;
    let entries = model_entries(model)?;
    let limit = id_limit(entries.saturating_add(added.len()));
    check_model(model, limit)?;
    for (i, t) in added.iter().enumerate() {
        let at = format!("added_tokens[{i}]");
        let t = object(t, &at)?;
        string(get(t, "content", &at)?, &format!("{at}.content"))?;
        bounded_id(get(t, "id", &at)?, &format!("{at}.id"), limit)?;
    }

    let mut grow = 1u64;
    if let Some(v) = present(top, "normalizer") {
        grow = grow.saturating_mul(normalizer(v, "normalizer", 0)?);
    }
    if let Some(v) = present(top, "pre_tokenizer") {
        grow = grow.saturating_mul(pre_tokenizer(v, "pre_tokenizer", 0)?);
    }
    expansion("normalizer and pre_tokenizer", grow)?;
    if let Some(v) = present(top, "decoder") {
        expansion("decoder", decoder(v, "decoder", 0)?)?;
    }
    if let Some(v) = present(top, "post_processor") {
        post_processor(v, "post_processor", 0, limit)?;
    }
    Ok(())
}

/// Checks a decoded `precompiled_charsmap` and returns its longest rewrite in bytes.
///
/// Walks the double-array trie from the root exactly as `spm_precompiled`'s
/// `common_prefix_search` does for any input: from every reachable node, all 255 non-zero
/// bytes index the trie (so the node's whole 256-unit block must be inside it), and every
/// reachable leaf must point at a character boundary inside the normalized strings.
/// Cost: at most 255 steps per trie unit, so bounded by [`MAX_CHARSMAP_BYTES`].
pub fn validate_charsmap(bytes: &[u8]) -> Result<usize, CharsmapError> {
    if bytes.len() > MAX_CHARSMAP_BYTES {
        return Err(CharsmapError::TooLarge {
            len: bytes.len() as u64,
            limit: MAX_CHARSMAP_BYTES as u64,
        });
    }
    let Some((head, rest)) = bytes.split_first_chunk::<4>() else {
        return Err(CharsmapError::Truncated { len: bytes.len() });
    };
    let trie_bytes = u32::from_le_bytes(*head);
    if trie_bytes % 4 != 0 {
        return Err(CharsmapError::TrieSizeUnaligned { trie_bytes });
    }
    if trie_bytes as usize > rest.len() {
        return Err(CharsmapError::TrieOverrun {
            trie_bytes,
            available: rest.len(),
        });
    }
    let (trie, normalized) = rest.split_at(trie_bytes as usize);
    let units: Vec<u32> = trie
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let normalized =
        std::str::from_utf8(normalized).map_err(|_| CharsmapError::NormalizedNotUtf8)?;
    if units.is_empty() {
        return Err(CharsmapError::EmptyTrie);
    }
    walk_trie(&units, normalized)
}

/// The trie walk of [`validate_charsmap`] (unit layout as in darts-clone: bit 8 "has leaf",
/// bits 0-7 and 31 the label, bits 10-31 the offset, shifted 8 left when bit 9 is set).
fn walk_trie(units: &[u32], normalized: &str) -> Result<usize, CharsmapError> {
    let len = units.len();
    let offset = |u: u32| -> usize {
        let u = u as usize;
        (u >> 10) << ((u & (1 << 9)) >> 6)
    };
    // Every byte of any input may be tried from `base`: its block must be in the trie.
    let block_inside = |base: usize| -> Result<(), CharsmapError> {
        let last = base | 0xFF;
        if last >= len {
            return Err(CharsmapError::NodeOutOfRange {
                pos: last as u64,
                len,
            });
        }
        Ok(())
    };
    let root = offset(units[0]);
    block_inside(root)?;
    // Where the entry starting at each byte ends (its NUL, or the end), in one backward
    // pass: a leaf's length is then one lookup, however many leaves share a long entry.
    let bytes = normalized.as_bytes();
    let mut end = vec![bytes.len() as u32; bytes.len()];
    for i in (0..bytes.len()).rev() {
        end[i] = if bytes[i] == 0 {
            i as u32
        } else {
            end.get(i + 1).copied().unwrap_or(bytes.len() as u32)
        };
    }
    let mut seen = vec![false; len];
    let mut stack = vec![root];
    let mut longest = 0;
    while let Some(base) = stack.pop() {
        if std::mem::replace(&mut seen[base], true) {
            continue;
        }
        for c in 1..=0xFFusize {
            let node = base ^ c;
            let u = units[node];
            if (u as usize) & ((1 << 31) | 0xFF) != c {
                continue;
            }
            let next = node ^ offset(u);
            block_inside(next)?;
            if (u >> 8) & 1 == 1 {
                let index = (units[next] & 0x7FFF_FFFF) as usize;
                if index >= normalized.len() || !normalized.is_char_boundary(index) {
                    return Err(CharsmapError::LeafOutOfRange {
                        index: index as u64,
                        len: normalized.len(),
                    });
                }
                let entry = end[index] as usize - index;
                longest = longest.max(entry);
            }
            if !seen[next] {
                stack.push(next);
            }
        }
    }
    Ok(longest)
}

/// serde_json's base64 for `precompiled_charsmap` as `spm_precompiled` decodes it (standard
/// alphabet, padding optional).
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn charsmap(text: &str, at: &str) -> Result<usize, TokenizerJsonError> {
    let err = |source| TokenizerJsonError::Charsmap {
        at: at.to_string(),
        source,
    };
    // Bound the decoded size before decoding.
    let decoded_max = text.len() as u64 / 4 * 3 + 3;
    if decoded_max > MAX_CHARSMAP_BYTES as u64 + 3 {
        return Err(err(CharsmapError::TooLarge {
            len: decoded_max,
            limit: MAX_CHARSMAP_BYTES as u64,
        }));
    }
    let bytes = B64.decode(text).map_err(|_| err(CharsmapError::Base64))?;
    validate_charsmap(&bytes).map_err(err)
}

/// Parses JSON into a `Value`, refusing an object with a key twice.
fn parse_strict(bytes: &[u8]) -> Result<Value, TokenizerJsonError> {
    let duplicate = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = Strict {
        duplicate: &duplicate,
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|()| v));
    match (parsed, duplicate.into_inner()) {
        (_, Some(key)) => Err(TokenizerJsonError::DuplicateKey { key }),
        (Ok(v), None) => Ok(v),
        (Err(e), None) => Err(TokenizerJsonError::Json(e.to_string())),
    }
}

/// Builds a `Value` as serde_json does, noting the first duplicate key.
#[derive(Clone, Copy)]
struct Strict<'a> {
    duplicate: &'a RefCell<Option<String>>,
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                *self.duplicate.borrow_mut() = Some(key.clone());
                return Err(serde::de::Error::custom(format!("duplicate key `{key}`")));
            }
            let v = map.next_value_seed(self)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// Nesting depth (a scalar is 1); serde_json's recursion limit already bounds it.
fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 1,
    }
}

fn malformed(at: &str, why: &str) -> TokenizerJsonError {
    TokenizerJsonError::Malformed {
        at: at.to_string(),
        why: why.to_string(),
    }
}

fn bad(at: &str, why: impl Into<String>) -> TokenizerJsonError {
    TokenizerJsonError::BadParameter {
        at: at.to_string(),
        why: why.into(),
    }
}

fn object<'a>(v: &'a Value, at: &str) -> Result<&'a Map<String, Value>, TokenizerJsonError> {
    v.as_object()
        .ok_or_else(|| malformed(at, "expected an object"))
}

fn array<'a>(v: &'a Value, at: &str) -> Result<&'a [Value], TokenizerJsonError> {
    v.as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| malformed(at, "expected an array"))
}

fn string<'a>(v: &'a Value, at: &str) -> Result<&'a str, TokenizerJsonError> {
    v.as_str().ok_or_else(|| malformed(at, "expected a string"))
}

fn get<'a>(
    o: &'a Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<&'a Value, TokenizerJsonError> {
    o.get(key)
        .ok_or_else(|| malformed(&join(at, key), "missing"))
}

/// A field that is present and not null.
fn present<'a>(o: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    o.get(key).filter(|v| !v.is_null())
}

/// An optional string field (absent or null is `None`).
fn opt_string<'a>(
    o: &'a Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<Option<&'a str>, TokenizerJsonError> {
    present(o, key)
        .map(|v| string(v, &join(at, key)))
        .transpose()
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    }
}

fn bounded_id(v: &Value, at: &str, limit: u64) -> Result<u64, TokenizerJsonError> {
    let id = v
        .as_u64()
        .filter(|&id| id <= u64::from(u32::MAX))
        .ok_or_else(|| malformed(at, "expected an integer id in u32 range"))?;
    if id >= limit {
        return Err(TokenizerJsonError::IdOutOfRange {
            at: at.to_string(),
            id,
            limit,
        });
    }
    Ok(id)
}

fn expansion(what: &'static str, factor: u64) -> Result<(), TokenizerJsonError> {
    if factor > MAX_EXPANSION {
        return Err(TokenizerJsonError::Expansion {
            what,
            factor,
            max: MAX_EXPANSION,
        });
    }
    Ok(())
}

/// A component's `type`, which must be one of `known`.
fn component_type<'a>(
    o: &'a Map<String, Value>,
    at: &str,
    known: &[&str],
) -> Result<&'a str, TokenizerJsonError> {
    match o.get("type") {
        Some(Value::String(t)) if known.contains(&t.as_str()) => Ok(t),
        Some(Value::String(t)) => Err(TokenizerJsonError::UnknownType {
            at: at.to_string(),
            found: Some(t.clone()),
        }),
        Some(other) => Err(TokenizerJsonError::UnknownType {
            at: at.to_string(),
            found: Some(other.to_string()),
        }),
        None => Err(TokenizerJsonError::UnknownType {
            at: at.to_string(),
            found: None,
        }),
    }
}

/// The children of a `Sequence` component, one level deeper.
fn sequence<'a>(
    o: &'a Map<String, Value>,
    key: &str,
    at: &str,
    depth: usize,
) -> Result<impl Iterator<Item = (String, &'a Value)>, TokenizerJsonError> {
    if depth >= MAX_SEQUENCE_DEPTH {
        return Err(TokenizerJsonError::SequenceTooDeep {
            at: at.to_string(),
            max: MAX_SEQUENCE_DEPTH,
        });
    }
    let items = array(get(o, key, at)?, &join(at, key))?;
    let at = join(at, key);
    Ok(items
        .iter()
        .enumerate()
        .map(move |(i, v)| (format!("{at}[{i}]"), v)))
}

/// A `Replace` or `Split` pattern: `{"String": s}` or `{"Regex": r}`. Returns the literal
/// string's length, `None` for a regex (which may match the empty string).
fn pattern(o: &Map<String, Value>, at: &str) -> Result<Option<usize>, TokenizerJsonError> {
    let at = join(at, "pattern");
    let p = o.get("pattern").ok_or_else(|| malformed(&at, "missing"))?;
    let p = object(p, &at)?;
    match (p.len(), p.get("String"), p.get("Regex")) {
        (1, Some(s), None) => Ok(Some(string(s, &at)?.len())),
        (1, None, Some(r)) => {
            string(r, &at)?;
            Ok(None)
        }
        _ => Err(malformed(
            &at,
            "expected {\"String\": ...} or {\"Regex\": ...}",
        )),
    }
}

/// Growth bound of a `Replace`: each match consumes at least the literal's length (a
/// regex or an empty literal may match nothing, between every character) and yields the
/// content.
fn replace_growth(o: &Map<String, Value>, at: &str) -> Result<u64, TokenizerJsonError> {
    let matched = pattern(o, at)?;
    let content = string(get(o, "content", at)?, &join(at, "content"))?.len() as u64;
    Ok(match matched {
        Some(n) if n > 0 => content.div_ceil(n as u64).max(1),
        _ => content + 1,
    })
}

const NORMALIZERS: &[&str] = &[
    "BertNormalizer",
    "Strip",
    "StripAccents",
    "NFC",
    "NFD",
    "NFKC",
    "NFKD",
    "Sequence",
    "Lowercase",
    "Nmt",
    "Precompiled",
    "Replace",
    "Prepend",
    "ByteLevel",
];

/// Checks a normalizer and returns a bound on how many bytes it makes of one.
fn normalizer(v: &Value, at: &str, depth: usize) -> Result<u64, TokenizerJsonError> {
    let o = object(v, at)?;
    Ok(match component_type(o, at, NORMALIZERS)? {
        "Sequence" => {
            let mut grow = 1u64;
            for (at, v) in sequence(o, "normalizers", at, depth)? {
                grow = grow.saturating_mul(normalizer(v, &at, depth + 1)?);
            }
            grow
        }
        "Precompiled" => {
            let key = join(at, "precompiled_charsmap");
            let text = string(get(o, "precompiled_charsmap", at)?, &key)?;
            (charsmap(text, &key)? as u64).max(1)
        }
        "Replace" => replace_growth(o, at)?,
        "Prepend" => {
            // Adds its string once per text, whatever the text's length.
            string(get(o, "prepend", at)?, &join(at, "prepend"))?;
            1
        }
        // UTF-8 growth bounds of Unicode normalization (UAX #15: NFKC/NFKD 11x, NFC/NFD
        // 3x); lowercasing grows 2-byte characters to 3 at most; BertNormalizer may
        // decompose, lowercase and space out CJK characters.
        "NFKC" | "NFKD" => 11,
        "NFC" | "NFD" => 3,
        "Lowercase" | "ByteLevel" => 2,
        "BertNormalizer" => 12,
        _ => 1,
    })
}

const PRE_TOKENIZERS: &[&str] = &[
    "BertPreTokenizer",
    "ByteLevel",
    "CharDelimiterSplit",
    "Metaspace",
    "Whitespace",
    "Sequence",
    "Split",
    "Punctuation",
    "WhitespaceSplit",
    "Digits",
    "UnicodeScripts",
    "FixedLength",
];

/// Checks a pre-tokenizer and returns a bound on its growth.
fn pre_tokenizer(v: &Value, at: &str, depth: usize) -> Result<u64, TokenizerJsonError> {
    let o = object(v, at)?;
    Ok(match component_type(o, at, PRE_TOKENIZERS)? {
        "Sequence" => {
            let mut grow = 1u64;
            for (at, v) in sequence(o, "pretokenizers", at, depth)? {
                grow = grow.saturating_mul(pre_tokenizer(v, &at, depth + 1)?);
            }
            grow
        }
        "FixedLength" => {
            // `chunks(0)` panics on every text.
            if let Some(len) = present(o, "length") {
                let key = join(at, "length");
                let len = len
                    .as_u64()
                    .ok_or_else(|| malformed(&key, "expected an integer"))?;
                if len == 0 {
                    return Err(bad(&key, "must be at least 1"));
                }
            }
            1
        }
        "Split" => {
            pattern(o, at)?;
            1
        }
        // A space becomes the replacement character (up to 4 bytes).
        "Metaspace" => 4,
        // Each byte becomes a character of up to 2 bytes.
        "ByteLevel" => 2,
        _ => 1,
    })
}

const DECODERS: &[&str] = &[
    "BPEDecoder",
    "ByteLevel",
    "WordPiece",
    "Metaspace",
    "CTC",
    "Sequence",
    "Replace",
    "Fuse",
    "Strip",
    "ByteFallback",
];

/// Checks a decoder and returns a bound on its growth (only `Replace` grows a token).
fn decoder(v: &Value, at: &str, depth: usize) -> Result<u64, TokenizerJsonError> {
    let o = object(v, at)?;
    Ok(match component_type(o, at, DECODERS)? {
        "Sequence" => {
            let mut grow = 1u64;
            for (at, v) in sequence(o, "decoders", at, depth)? {
                grow = grow.saturating_mul(decoder(v, &at, depth + 1)?);
            }
            grow
        }
        "Replace" => replace_growth(o, at)?,
        "Strip" => {
            // Stripping from the end indexes below zero on a token made only of the
            // stripped character; real files strip from the start only.
            let key = join(at, "stop");
            match present(o, "stop").map(Value::as_u64) {
                None | Some(Some(0)) => {}
                Some(_) => return Err(bad(&key, "only 0 is accepted")),
            }
            1
        }
        _ => 1,
    })
}

const POST_PROCESSORS: &[&str] = &[
    "RobertaProcessing",
    "BertProcessing",
    "ByteLevel",
    "TemplateProcessing",
    "Sequence",
];

/// Checks a post-processor: the ids it inserts are bounded like the vocabulary's.
fn post_processor(v: &Value, at: &str, depth: usize, limit: u64) -> Result<(), TokenizerJsonError> {
    let o = object(v, at)?;
    match component_type(o, at, POST_PROCESSORS)? {
        "Sequence" => {
            for (at, v) in sequence(o, "processors", at, depth)? {
                post_processor(v, &at, depth + 1, limit)?;
            }
        }
        "RobertaProcessing" | "BertProcessing" => {
            for key in ["sep", "cls"] {
                if let Some(pair) = present(o, key) {
                    let at = join(at, key);
                    match array(pair, &at)? {
                        [token, id] => {
                            string(token, &at)?;
                            bounded_id(id, &at, limit)?;
                        }
                        _ => return Err(malformed(&at, "expected [token, id]")),
                    }
                }
            }
        }
        "TemplateProcessing" => {
            let empty = Map::new();
            let mut special = &empty;
            if let Some(v) = present(o, "special_tokens") {
                let at = join(at, "special_tokens");
                special = object(v, &at)?;
                for (name, token) in special {
                    let at = join(&at, name);
                    let token = object(token, &at)?;
                    let ids = array(get(token, "ids", &at)?, &join(&at, "ids"))?;
                    let tokens = array(get(token, "tokens", &at)?, &join(&at, "tokens"))?;
                    if ids.len() != tokens.len() {
                        return Err(malformed(&at, "`ids` and `tokens` differ in length"));
                    }
                    for (i, id) in ids.iter().enumerate() {
                        bounded_id(id, &format!("{at}.ids[{i}]"), limit)?;
                    }
                }
            }
            for key in ["single", "pair"] {
                if let Some(pieces) = present(o, key) {
                    template(pieces, &join(at, key), key == "single", special)?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Checks a `TemplateProcessing` template. The library deserializes templates without the
/// checks its builder makes, then indexes with them on every encode: a special token
/// missing from `special_tokens`, or sequence B in the single template (which has only A),
/// panics there.
fn template(
    v: &Value,
    at: &str,
    single: bool,
    special: &Map<String, Value>,
) -> Result<(), TokenizerJsonError> {
    for (i, piece) in array(v, at)?.iter().enumerate() {
        let at = format!("{at}[{i}]");
        // Only the object form real files use: serde would also read `[id, type_id]`.
        let only = piece
            .as_object()
            .filter(|p| p.len() == 1)
            .and_then(|p| p.iter().next());
        let (kind, fields) = match only {
            Some((kind, Value::Object(fields))) if kind == "Sequence" || kind == "SpecialToken" => {
                (kind.as_str(), fields)
            }
            _ => {
                return Err(malformed(
                    &at,
                    "expected {\"Sequence\": {…}} or {\"SpecialToken\": {…}}",
                ))
            }
        };
        let at = join(&at, kind);
        let id = string(get(fields, "id", &at)?, &join(&at, "id"))?;
        match kind {
            "SpecialToken" if !special.contains_key(id) => {
                return Err(TokenizerJsonError::UnknownSpecialToken {
                    at: join(&at, "id"),
                    token: id.to_string(),
                })
            }
            "Sequence" if single && id == "B" => {
                return Err(bad(
                    &join(&at, "id"),
                    "the single template has only sequence A",
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

const MODELS: &[&str] = &["BPE", "WordPiece", "WordLevel", "Unigram"];

/// The number of vocabulary entries of a model, for [`id_limit`].
fn model_entries(model: &Value) -> Result<usize, TokenizerJsonError> {
    let o = object(model, "model")?;
    let vocab = get(o, "vocab", "model")?;
    match vocab {
        Value::Object(m) => Ok(m.len()),
        Value::Array(a) => Ok(a.len()),
        _ => Err(malformed("model.vocab", "expected an object or an array")),
    }
}

fn check_model(model: &Value, limit: u64) -> Result<(), TokenizerJsonError> {
    let o = object(model, "model")?;
    match component_type(o, "model", MODELS)? {
        "BPE" => {
            let vocab = vocab_map(o, limit)?;
            let prefix = opt_string(o, "continuing_subword_prefix", "model")?.unwrap_or("");
            let merges = array(get(o, "merges", "model")?, "model.merges")?;
            check_merges(merges, &vocab, prefix)
        }
        "WordPiece" => {
            let vocab = vocab_map(o, limit)?;
            opt_string(o, "continuing_subword_prefix", "model")?;
            let unk = opt_string(o, "unk_token", "model")?.unwrap_or("[UNK]");
            if !vocab.contains_key(unk) {
                return Err(TokenizerJsonError::TokenNotInVocab {
                    at: "model.unk_token".into(),
                    token: unk.into(),
                });
            }
            if let Some(n) = present(o, "max_input_chars_per_word") {
                let at = "model.max_input_chars_per_word";
                let n = n
                    .as_u64()
                    .ok_or_else(|| malformed(at, "expected an integer"))?;
                if n > MAX_WORDPIECE_WORD_CHARS {
                    return Err(bad(at, format!("above {MAX_WORDPIECE_WORD_CHARS}")));
                }
            }
            Ok(())
        }
        "WordLevel" => {
            vocab_map(o, limit)?;
            opt_string(o, "unk_token", "model")?;
            Ok(())
        }
        _ => unigram(o),
    }
}

/// A `{token: id}` vocabulary: non-empty, ids unique and below `limit`.
fn vocab_map(o: &Map<String, Value>, limit: u64) -> Result<HashMap<&str, u64>, TokenizerJsonError> {
    let vocab = object(get(o, "vocab", "model")?, "model.vocab")?;
    if vocab.is_empty() {
        return Err(TokenizerJsonError::EmptyVocab);
    }
    let mut ids = HashSet::with_capacity(vocab.len());
    let mut out = HashMap::with_capacity(vocab.len());
    for (token, id) in vocab {
        let id = bounded_id(id, "model.vocab", limit)?;
        if !ids.insert(id) {
            return Err(TokenizerJsonError::DuplicateId { id });
        }
        out.insert(token.as_str(), id);
    }
    Ok(out)
}

/// BPE merges as the library reads them: all `[a, b]` pairs, or all `"a b"` strings (lines
/// starting `#version` skipped). Each merge's parts and result must be in the vocabulary,
/// the result formed as the library forms it: `a` then `b` less the prefix's length.
fn check_merges(
    merges: &[Value],
    vocab: &HashMap<&str, u64>,
    prefix: &str,
) -> Result<(), TokenizerJsonError> {
    let pairs: Vec<(&str, &str)> = if merges.iter().all(Value::is_string) {
        let mut pairs = Vec::with_capacity(merges.len());
        let lines = merges
            .iter()
            .filter_map(Value::as_str)
            .filter(|l| !l.starts_with("#version"));
        for (rank, line) in lines.enumerate() {
            let mut parts = line.split(' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(b), None) => pairs.push((a, b)),
                _ => {
                    return Err(TokenizerJsonError::BadMerge {
                        rank,
                        why: "not two parts separated by one space".into(),
                    })
                }
            }
        }
        pairs
    } else {
        let mut pairs = Vec::with_capacity(merges.len());
        for (rank, m) in merges.iter().enumerate() {
            match m.as_array().map(Vec::as_slice) {
                Some([Value::String(a), Value::String(b)]) => pairs.push((a.as_str(), b.as_str())),
                _ => {
                    return Err(TokenizerJsonError::BadMerge {
                        rank,
                        why: "expected two strings".into(),
                    })
                }
            }
        }
        pairs
    };
    let mut result = String::new();
    for (rank, (a, b)) in pairs.into_iter().enumerate() {
        for part in [a, b] {
            if !vocab.contains_key(part) {
                return Err(TokenizerJsonError::MergePartNotInVocab {
                    rank,
                    part: part.to_string(),
                });
            }
        }
        let Some(tail) = b.get(prefix.len()..) else {
            return Err(TokenizerJsonError::BadMerge {
                rank,
                why: format!("second part `{b}` is shorter than the subword prefix or cut by it"),
            });
        };
        result.clear();
        result.push_str(a);
        result.push_str(tail);
        if !vocab.contains_key(result.as_str()) {
            return Err(TokenizerJsonError::MergeResultNotInVocab {
                rank,
                result: result.clone(),
            });
        }
    }
    Ok(())
}

/// Unigram: `vocab` a non-empty array of `[piece, finite score]`, `unk_id` inside it.
fn unigram(o: &Map<String, Value>) -> Result<(), TokenizerJsonError> {
    let vocab = array(get(o, "vocab", "model")?, "model.vocab")?;
    if vocab.is_empty() {
        return Err(TokenizerJsonError::EmptyVocab);
    }
    for (index, entry) in vocab.iter().enumerate() {
        match entry.as_array().map(Vec::as_slice) {
            Some([Value::String(_), score]) => {
                if !score.as_f64().is_some_and(f64::is_finite) {
                    return Err(TokenizerJsonError::BadScore { index });
                }
            }
            _ => {
                return Err(malformed(
                    &format!("model.vocab[{index}]"),
                    "expected [piece, score]",
                ))
            }
        }
    }
    if let Some(unk) = present(o, "unk_id") {
        let limit = vocab.len() as u64;
        let id = unk
            .as_u64()
            .ok_or_else(|| malformed("model.unk_id", "expected an integer"))?;
        if id >= limit {
            return Err(TokenizerJsonError::IdOutOfRange {
                at: "model.unk_id".into(),
                id,
                limit,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn err(v: Value) -> TokenizerJsonError {
        validate(v.to_string().as_bytes()).unwrap_err()
    }

    fn ok(v: Value) {
        validate(v.to_string().as_bytes()).unwrap();
    }

    /// A BPE tokenizer: a, b, c and the merge a b -> ab.
    fn bpe() -> Value {
        json!({
            "version": "1.0",
            "added_tokens": [{"id": 4, "content": "<s>", "single_word": false, "lstrip": false,
                              "rstrip": false, "normalized": false, "special": true}],
            "normalizer": null,
            "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": null,
            "decoder": null,
            "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3},
                      "merges": [["a", "b"]]}
        })
    }

    /// A charsmap rewriting each single-byte key, laid out as darts-clone does: the root's
    /// children in block 1, each key's leaf in a block of its own.
    fn charsmap_of(rules: &[(u8, &str)]) -> Vec<u8> {
        let mut units = vec![0u32; 256 * (2 + rules.len())];
        units[0] = 256 << 10;
        let mut normalized = String::new();
        for (i, &(key, to)) in rules.iter().enumerate() {
            let node = 256 ^ key as usize;
            let leaf = 256 * (2 + i);
            units[node] = (((node ^ leaf) as u32) << 10) | (1 << 8) | key as u32;
            units[leaf] = (1 << 31) | normalized.len() as u32;
            normalized.push_str(to);
            normalized.push('\0');
        }
        let mut out = ((units.len() * 4) as u32).to_le_bytes().to_vec();
        out.extend(units.iter().flat_map(|u| u.to_le_bytes()));
        out.extend(normalized.as_bytes());
        out
    }

    #[test]
    fn real_charsmap_is_accepted() {
        // SentencePiece's nmt_nfkc rules as T5, ALBERT and XLM-R files embed them (from
        // spm_precompiled's tests). Its longest rewrite is U+FDFA's 33 bytes.
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/tokenizers/nmt_nfkc.charsmap"
        );
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(validate_charsmap(&bytes), Ok(33));
    }

    #[test]
    fn synthetic_charsmap_reads_as_the_library_reads_it() {
        let bytes = charsmap_of(&[(b'A', "a"), (b'B', "bé")]);
        assert_eq!(validate_charsmap(&bytes), Ok(3));
        let pc = tokenizers::normalizers::Precompiled::from(&bytes).unwrap();
        assert_eq!(pc.transform("A"), Some("a"));
        assert_eq!(pc.transform("B"), Some("bé"));
        assert_eq!(pc.transform("C"), None);
    }

    #[test]
    fn malformed_charsmaps() {
        let good = charsmap_of(&[(b'A', "a"), (b'B', "é")]);
        let units = (good.len() - 4 - "a\0é\0".len()) / 4;
        let set_unit = |bytes: &mut Vec<u8>, i: usize, u: u32| {
            bytes[4 + 4 * i..8 + 4 * i].copy_from_slice(&u.to_le_bytes())
        };
        assert_eq!(
            validate_charsmap(&[1, 0]),
            Err(CharsmapError::Truncated { len: 2 })
        );
        assert_eq!(
            validate_charsmap(&[6, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(CharsmapError::TrieSizeUnaligned { trie_bytes: 6 })
        );
        // A 4-byte size claiming 4 GiB: the library would reserve 8 GiB for it.
        assert_eq!(
            validate_charsmap(&[0xFC, 0xFF, 0xFF, 0xFF, b'a', b'b']),
            Err(CharsmapError::TrieOverrun {
                trie_bytes: 0xFFFF_FFFC,
                available: 2
            })
        );
        assert_eq!(
            validate_charsmap(&[0, 0, 0, 0, b'a']),
            Err(CharsmapError::EmptyTrie)
        );
        let mut bad_utf8 = good.clone();
        *bad_utf8.last_mut().unwrap() = 0xFF;
        assert_eq!(
            validate_charsmap(&bad_utf8),
            Err(CharsmapError::NormalizedNotUtf8)
        );
        // Garbage: the root's offset lands far outside the trie.
        let mut garbage = vec![8, 0, 0, 0];
        garbage.extend([0xFF; 8]);
        garbage.push(b'x');
        assert!(matches!(
            validate_charsmap(&garbage),
            Err(CharsmapError::NodeOutOfRange { len: 2, .. })
        ));
        // The trie cut short: the leaf blocks are gone.
        let mut short = good[..4 + 256 * 2 * 4].to_vec();
        short[..4].copy_from_slice(&(256u32 * 2 * 4).to_le_bytes());
        assert!(matches!(
            validate_charsmap(&short),
            Err(CharsmapError::NodeOutOfRange { len: 512, .. })
        ));
        // A leaf past the normalized strings, and one inside `é`.
        let mut past = good.clone();
        set_unit(&mut past, 256 * 2, (1 << 31) | 100);
        assert_eq!(
            validate_charsmap(&past),
            Err(CharsmapError::LeafOutOfRange { index: 100, len: 5 })
        );
        let mut inside = good.clone();
        set_unit(&mut inside, 256 * 3, (1 << 31) | 3);
        assert_eq!(
            validate_charsmap(&inside),
            Err(CharsmapError::LeafOutOfRange { index: 3, len: 5 })
        );
        assert_eq!(units, 256 * 4);
        assert!(validate_charsmap(&good).is_ok());
    }

    fn with_normalizer(n: Value) -> Value {
        let mut v = bpe();
        v["normalizer"] = n;
        v
    }

    #[test]
    fn charsmap_errors_carry_their_place() {
        let text = |bytes: &[u8]| Value::from(B64.encode(bytes));
        let n = json!({"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Precompiled", "precompiled_charsmap": text(&[0xFC, 0xFF, 0xFF, 0xFF])}
        ]});
        match err(with_normalizer(n)) {
            TokenizerJsonError::Charsmap { at, source } => {
                assert_eq!(at, "normalizer.normalizers[1].precompiled_charsmap");
                assert!(matches!(source, CharsmapError::TrieOverrun { .. }));
            }
            e => panic!("{e:?}"),
        }
        let n = json!({"type": "Precompiled", "precompiled_charsmap": "not base64!"});
        assert!(matches!(
            err(with_normalizer(n)),
            TokenizerJsonError::Charsmap {
                source: CharsmapError::Base64,
                ..
            }
        ));
        let huge = "A".repeat(MAX_CHARSMAP_BYTES / 3 * 4 + 8);
        let n = json!({"type": "Precompiled", "precompiled_charsmap": huge});
        assert!(matches!(
            err(with_normalizer(n)),
            TokenizerJsonError::Charsmap {
                source: CharsmapError::TooLarge { .. },
                ..
            }
        ));
        let n = json!({"type": "Precompiled", "precompiled_charsmap": text(&charsmap_of(&[(b'A', "a")]))});
        ok(with_normalizer(n));
    }

    #[test]
    fn bpe_merges() {
        ok(bpe());
        let mut v = bpe();
        v["model"]["merges"] = json!([["a", "b"], ["b", "c"]]);
        assert_eq!(
            err(v),
            TokenizerJsonError::MergeResultNotInVocab {
                rank: 1,
                result: "bc".into()
            }
        );
        let mut v = bpe();
        v["model"]["merges"] = json!([["a", "d"]]);
        assert_eq!(
            err(v),
            TokenizerJsonError::MergePartNotInVocab {
                rank: 0,
                part: "d".into()
            }
        );
        // The legacy "a b" form, a version line skipped.
        let mut v = bpe();
        v["model"]["merges"] = json!(["#version: 0.2", "a b", "c a"]);
        assert_eq!(
            err(v.clone()),
            TokenizerJsonError::MergeResultNotInVocab {
                rank: 1,
                result: "ca".into()
            }
        );
        v["model"]["merges"] = json!(["a b c"]);
        assert!(matches!(
            err(v.clone()),
            TokenizerJsonError::BadMerge { rank: 0, .. }
        ));
        v["model"]["merges"] = json!(["a b", ["a", "b"]]);
        assert!(matches!(
            err(v),
            TokenizerJsonError::BadMerge { rank: 0, .. }
        ));
        // The library drops the prefix's length from the second part, whatever it holds:
        // `##b` gives `ab`; `é` cut after one byte would be invalid UTF-8.
        let mut v = bpe();
        v["model"]["continuing_subword_prefix"] = json!("##");
        v["model"]["vocab"] = json!({"a": 0, "##b": 1, "ab": 2, "é": 3, "x": 4});
        v["model"]["merges"] = json!([["a", "##b"]]);
        ok(v.clone());
        v["model"]["continuing_subword_prefix"] = json!("#");
        v["model"]["merges"] = json!([["a", "é"]]);
        assert!(matches!(
            err(v.clone()),
            TokenizerJsonError::BadMerge { rank: 0, .. }
        ));
        // A second part shorter than the prefix.
        v["model"]["continuing_subword_prefix"] = json!("##");
        v["model"]["merges"] = json!([["a", "x"]]);
        assert!(matches!(
            err(v.clone()),
            TokenizerJsonError::BadMerge { rank: 0, .. }
        ));
        v["model"]["merges"] = json!([["a", "##b"], ["x", "##b"]]);
        assert_eq!(
            err(v),
            TokenizerJsonError::MergeResultNotInVocab {
                rank: 1,
                result: "xb".into()
            }
        );
    }

    #[test]
    fn vocabulary_ids() {
        let mut v = bpe();
        v["model"]["vocab"]["c"] = json!(1);
        assert_eq!(err(v), TokenizerJsonError::DuplicateId { id: 1 });
        // 4 entries and 1 added token: ids up to 2 * 5 + 1024 - 1.
        let mut v = bpe();
        v["model"]["vocab"]["c"] = json!(1033);
        ok(v.clone());
        v["model"]["vocab"]["c"] = json!(1034);
        assert!(matches!(
            err(v),
            TokenizerJsonError::IdOutOfRange {
                id: 1034,
                limit: 1034,
                ..
            }
        ));
        let mut v = bpe();
        v["added_tokens"][0]["id"] = json!(u32::MAX);
        assert!(matches!(err(v), TokenizerJsonError::IdOutOfRange { .. }));
        let mut v = bpe();
        v["model"]["vocab"] = json!({});
        v["model"]["merges"] = json!([]);
        assert_eq!(err(v), TokenizerJsonError::EmptyVocab);
        let mut v = bpe();
        v["model"]["vocab"]["c"] = json!(-1);
        assert!(matches!(err(v), TokenizerJsonError::Malformed { .. }));
        let mut v = bpe();
        v["post_processor"] = json!({"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}], "pair": [],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [4000], "tokens": ["<s>"]}}});
        assert!(matches!(err(v), TokenizerJsonError::IdOutOfRange { .. }));
        let mut v = bpe();
        v["post_processor"] =
            json!({"type": "BertProcessing", "sep": ["</s>", 4000], "cls": ["<s>", 4]});
        assert!(matches!(err(v), TokenizerJsonError::IdOutOfRange { .. }));
    }

    #[test]
    fn other_models() {
        let unigram = |vocab: Value, unk: Value| json!({"model": {"type": "Unigram", "unk_id": unk, "vocab": vocab}});
        ok(unigram(json!([["<unk>", 0.0], ["a", -1.5]]), json!(0)));
        assert_eq!(
            err(unigram(json!([["<unk>", 0.0], ["a", "nan"]]), json!(0))),
            TokenizerJsonError::BadScore { index: 1 }
        );
        assert!(matches!(
            err(unigram(json!([["<unk>", 0.0]]), json!(1))),
            TokenizerJsonError::IdOutOfRange { .. }
        ));
        assert_eq!(
            err(unigram(json!([]), json!(null))),
            TokenizerJsonError::EmptyVocab
        );
        let wordpiece = |unk: &str, max: u64| {
            json!({"model": {"type": "WordPiece", "unk_token": unk, "continuing_subword_prefix": "##",
                              "max_input_chars_per_word": max, "vocab": {"[UNK]": 0, "a": 1, "##b": 2}}})
        };
        ok(wordpiece("[UNK]", 100));
        assert!(matches!(
            err(wordpiece("<unk>", 100)),
            TokenizerJsonError::TokenNotInVocab { .. }
        ));
        assert!(matches!(
            err(wordpiece("[UNK]", 1 << 20)),
            TokenizerJsonError::BadParameter { .. }
        ));
        ok(json!({"model": {"type": "WordLevel", "unk_token": "<unk>", "vocab": {"<unk>": 0}}}));
        assert_eq!(
            err(json!({"model": {"type": "Rnn", "vocab": {"a": 0}}})),
            TokenizerJsonError::UnknownType {
                at: "model".into(),
                found: Some("Rnn".into())
            }
        );
        assert_eq!(
            err(json!({"model": {"vocab": {"a": 0}, "merges": []}})),
            TokenizerJsonError::UnknownType {
                at: "model".into(),
                found: None
            }
        );
    }

    #[test]
    fn json_shape() {
        assert!(matches!(
            validate(b"{\"model\": "),
            Err(TokenizerJsonError::Json(_))
        ));
        // The library would build the first model, then drop it for the second.
        let twice = br#"{"model": {"type": "WordLevel", "vocab": {"a": 0}}, "model": {"type": "WordLevel", "vocab": {"b": 0}}}"#;
        assert_eq!(
            validate(twice),
            Err(TokenizerJsonError::DuplicateKey {
                key: "model".into()
            })
        );
        let mut deep = bpe();
        let mut nested = json!(0);
        for _ in 0..MAX_JSON_DEPTH {
            nested = json!([nested]);
        }
        deep["extra"] = nested;
        assert_eq!(
            err(deep),
            TokenizerJsonError::TooDeep {
                max: MAX_JSON_DEPTH
            }
        );
        // serde_json's own limit still applies, before anything is built.
        let very_deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(
            validate(very_deep.as_bytes()),
            Err(TokenizerJsonError::Json(_))
        ));
        assert!(matches!(
            validate(b"[]"),
            Err(TokenizerJsonError::Malformed { .. })
        ));
    }

    #[test]
    fn components() {
        let mut v = bpe();
        v["pre_tokenizer"] = json!({"type": "FixedLength", "length": 0});
        assert!(matches!(
            err(v.clone()),
            TokenizerJsonError::BadParameter { .. }
        ));
        v["pre_tokenizer"] = json!({"type": "FixedLength", "length": 3});
        ok(v);
        let mut v = bpe();
        v["decoder"] = json!({"type": "Strip", "content": " ", "start": 1, "stop": 1});
        assert!(matches!(
            err(v.clone()),
            TokenizerJsonError::BadParameter { .. }
        ));
        v["decoder"] = json!({"type": "Strip", "content": " ", "start": 1, "stop": 0});
        ok(v);
        let mut v = bpe();
        v["decoder"] = json!({"type": "Telepathy"});
        assert!(matches!(err(v), TokenizerJsonError::UnknownType { .. }));
        let mut v = bpe();
        v["pre_tokenizer"] = json!({"individual_digits": true});
        assert!(matches!(
            err(v),
            TokenizerJsonError::UnknownType { found: None, .. }
        ));
        let mut nested = json!({"type": "NFC"});
        for _ in 0..MAX_SEQUENCE_DEPTH {
            nested = json!({"type": "Sequence", "normalizers": [nested]});
        }
        ok(with_normalizer(nested.clone()));
        let deeper = json!({"type": "Sequence", "normalizers": [nested]});
        assert!(matches!(
            err(with_normalizer(deeper)),
            TokenizerJsonError::SequenceTooDeep { .. }
        ));
    }

    #[test]
    fn growth_is_bounded() {
        // Llama 2: a `▁` prefix, spaces to `▁`.
        ok(with_normalizer(json!({"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}
        ]})));
        // Doubling a character 13 times over.
        let double = json!({"type": "Replace", "pattern": {"String": "a"}, "content": "aa"});
        let bomb = json!({"type": "Sequence", "normalizers": vec![double; 13]});
        assert!(matches!(
            err(with_normalizer(bomb)),
            TokenizerJsonError::Expansion { factor: 8192, .. }
        ));
        // An empty pattern matches between every character.
        let wide =
            json!({"type": "Replace", "pattern": {"String": ""}, "content": "x".repeat(5000)});
        assert!(matches!(
            err(with_normalizer(wide)),
            TokenizerJsonError::Expansion { .. }
        ));
        let mut v = bpe();
        v["decoder"] =
            json!({"type": "Replace", "pattern": {"Regex": "."}, "content": "y".repeat(5000)});
        assert!(matches!(
            err(v),
            TokenizerJsonError::Expansion {
                what: "decoder",
                ..
            }
        ));
    }
}
