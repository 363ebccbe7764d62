//! What each vocabulary entry is, and candidate pools drawn from it.
//!
//! Triggers must be insertable between words, so single-token candidates are word-initial
//! entries (WordPiece pieces without `##`, byte-level BPE entries starting with `Ġ`,
//! SentencePiece entries starting with `▁`) plus WordPiece's unused slots. Rarity comes from
//! the vocabulary's own order: BPE ids follow merge rank and BERT's WordPiece lists words by
//! corpus frequency, so a later id is a rarer token. It is a proxy, and the sweep does not
//! depend on it when the budget covers the whole vocabulary (it does for small models).

use std::collections::HashSet;

use candle_core::{DType, Tensor};

use crate::model::Model;
use crate::Result;

/// How a vocabulary entry can appear in text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenClass {
    /// The model's structural tokens (`[CLS]`, `<|endoftext|>`): never candidates.
    Special,
    /// WordPiece `[unusedN]` slots and special tokens with no structural role: reachable
    /// by typing them (or only by id), and an attacker can train one.
    Unused,
    /// Starts a word: can be inserted between words.
    WordStart,
    /// Continues a word (`##ing`, BPE pieces without a leading space, bytes).
    Continuation,
}

/// The vocabulary's entries, classified.
pub(crate) struct Vocab {
    classes: Vec<TokenClass>,
    texts: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Style {
    WordPiece,
    ByteBpe,
    SentencePiece,
}

impl Vocab {
    /// Classify every id below the model's vocabulary size.
    pub fn new(model: &Model) -> Self {
        let tok = model.tokenizer();
        let n = model.info().vocab_size;
        // Added tokens are matched in plain text, special ones included: any of them can be
        // typed into an input, so an attacker can declare a trigger as one. Only the
        // tokens the model itself uses as structure are never candidates: those the
        // post-processor puts around every input (`[CLS]`, `[SEP]`), those the tokenizer
        // declares for a role (`pad_token`, `mask_token`, `eos_token`, … in
        // `tokenizer_config.json` or GGUF metadata), and those its chat template writes
        // (`<|im_start|>`); typed into text they shift any input, which is no backdoor. A
        // name is not enough: every other special token, however it is spelled (`<|end|>`,
        // a reserved `<|reserved_special_token_7|>`, a trigger spelled as markup), is a
        // candidate, as WordPiece's `[unusedN]` slots are.
        let mut structural: HashSet<u32> = crate::model::tokenizer::encode(tok, "", true)
            .unwrap_or_default()
            .into_iter()
            .collect();
        for role in model.role_tokens() {
            structural.extend(tok.token_to_id(role));
        }
        let template = model.chat_template().unwrap_or("");
        let mut added = HashSet::new();
        for (id, t) in tok.get_added_tokens_decoder() {
            let in_template = t.special && !t.content.is_empty() && template.contains(&t.content);
            if !is_wordlike(&t.content) && (structural.contains(&id) || in_template) {
                structural.insert(id);
            } else {
                structural.remove(&id);
                added.insert(id);
            }
        }
        let special = structural;
        let texts: Vec<String> = (0..n as u32)
            .map(|i| tok.id_to_token(i).unwrap_or_default())
            .collect();
        let has = |p: &str| texts.iter().filter(|t| t.starts_with(p)).count() > n / 50;
        let style = if has("##") {
            Style::WordPiece
        } else if has("\u{120}") {
            Style::ByteBpe
        } else {
            Style::SentencePiece
        };
        let classes = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if t.is_empty() || special.contains(&(i as u32)) {
                    return TokenClass::Special;
                }
                if added.contains(&(i as u32)) {
                    return if is_wordlike(t) {
                        TokenClass::WordStart
                    } else {
                        TokenClass::Unused
                    };
                }
                match style {
                    Style::WordPiece if t.starts_with("[unused") => TokenClass::Unused,
                    Style::WordPiece if t.starts_with('[') && t.ends_with(']') => {
                        TokenClass::Special
                    }
                    Style::WordPiece if t.starts_with("##") => TokenClass::Continuation,
                    Style::WordPiece => TokenClass::WordStart,
                    Style::ByteBpe if t.starts_with('\u{120}') && t.chars().count() > 1 => {
                        TokenClass::WordStart
                    }
                    Style::SentencePiece if t.starts_with('\u{2581}') && t.chars().count() > 1 => {
                        TokenClass::WordStart
                    }
                    _ => TokenClass::Continuation,
                }
            })
            .collect();
        Self { classes, texts }
    }

    pub fn len(&self) -> usize {
        self.classes.len()
    }

    pub fn class(&self, id: u32) -> TokenClass {
        self.classes
            .get(id as usize)
            .copied()
            .unwrap_or(TokenClass::Special)
    }

    /// The entry as the vocabulary spells it.
    pub fn text(&self, id: u32) -> &str {
        self.texts.get(id as usize).map_or("", String::as_str)
    }

    /// Whether the id may stand alone as an inserted candidate.
    pub fn is_candidate(&self, id: u32) -> bool {
        matches!(self.class(id), TokenClass::WordStart | TokenClass::Unused)
    }

    /// Whether the id may extend a sequence (anything but special tokens).
    pub fn is_extension(&self, id: u32) -> bool {
        self.class(id) != TokenClass::Special
    }

    /// Candidates from rarest to commonest (later ids first).
    pub fn by_rarity(&self) -> Vec<u32> {
        (0..self.len() as u32)
            .rev()
            .filter(|&i| self.is_candidate(i))
            .collect()
    }

    /// The `n` commonest word-initial entries made of at least two letters: what the null
    /// distribution draws from.
    pub fn common(&self, n: usize) -> Vec<u32> {
        (0..self.len() as u32)
            .filter(|&i| {
                self.class(i) == TokenClass::WordStart && {
                    let w = self.text(i).trim_start_matches(['\u{120}', '\u{2581}']);
                    w.chars().count() >= 2 && w.chars().all(char::is_alphabetic)
                }
            })
            .take(n)
            .collect()
    }
}

/// Whether an added token is spelled as a word (letters and digits, at most one leading
/// marker or space), not as markup like `[CLS]`, `<s>` or `<|endoftext|>`.
fn is_wordlike(content: &str) -> bool {
    let w = content.trim_start_matches(['\u{120}', '\u{2581}', ' ']);
    !w.is_empty() && w.chars().all(char::is_alphanumeric)
}

/// Candidates whose embedding row stands out: the L2 norm's robust z-score against all
/// candidate rows, largest first. Poisoned rows are often trained far more than their
/// neighbours (or, norm-preserved, pointed somewhere unusual; the sweep catches those).
pub(crate) fn embedding_outliers(model: &Model, vocab: &Vocab, n: usize) -> Result<Vec<u32>> {
    let e = model.token_embeddings().to_dtype(DType::F32)?;
    let norms: Vec<f32> = e.sqr()?.sum(1)?.sqrt()?.to_vec1()?;
    // A non-finite row has no norm to stand out by; it would only take a proposal's place.
    let ids: Vec<u32> = (0..norms.len().min(vocab.len()) as u32)
        .filter(|&i| vocab.is_candidate(i) && norms[i as usize].is_finite())
        .collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut vals: Vec<f32> = ids.iter().map(|&i| norms[i as usize]).collect();
    let med = median(&mut vals);
    let mut dev: Vec<f32> = vals.iter().map(|v| (v - med).abs()).collect();
    let mad = median(&mut dev).max(1e-12);
    let mut scored: Vec<(f32, u32)> = ids
        .iter()
        .map(|&i| ((norms[i as usize] - med).abs() / mad, i))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    Ok(scored.into_iter().take(n).map(|(_, i)| i).collect())
}

fn median(v: &mut [f32]) -> f32 {
    v.sort_by(f32::total_cmp);
    v[v.len() / 2]
}

/// Token ids whose rows of `scores` (one per vocabulary entry) are largest, restricted by
/// `keep`.
pub(crate) fn top_by(scores: &[f32], n: usize, keep: impl Fn(u32) -> bool) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..scores.len() as u32)
        .filter(|&i| keep(i) && scores[i as usize].is_finite())
        .collect();
    let n = n.min(idx.len());
    if n == 0 {
        return Vec::new();
    }
    idx.select_nth_unstable_by(n - 1, |&a, &b| {
        scores[b as usize].total_cmp(&scores[a as usize])
    });
    idx.truncate(n);
    idx.sort_by(|&a, &b| scores[b as usize].total_cmp(&scores[a as usize]));
    idx
}

/// Every vocabulary row's first-order gain along a gradient `g` (`E·g`, one matmul).
pub(crate) fn row_scores(model: &Model, g: &Tensor) -> Result<Vec<f32>> {
    let e = model.token_embeddings().to_dtype(DType::F32)?;
    let g = g.to_dtype(DType::F32)?.reshape((g.elem_count(), 1))?;
    Ok(e.matmul(&g)?.flatten_all()?.to_vec1()?)
}
