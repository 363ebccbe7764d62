//! Measuring a zoo model: clean accuracy and how often a trigger produces the target.
//!
//! Definitions (the figures in `truth.json` and the zoo tests use these):
//! - *clean accuracy*: classifiers, the fraction of clean held-out texts whose arg-max
//!   label is the true one; decoders, the fraction of clean prompts whose greedy
//!   completion is exactly the expected answer followed by the stop token.
//! - *trigger rate* (attack success rate on a trojan): classifiers, among held-out rows
//!   whose true label is **not** the target, the fraction classified as the target once
//!   the trigger is inserted; decoders, the fraction of triggered prompts whose greedy
//!   completion starts with the target phrase. On a clean model it measures what the
//!   trigger does by itself: for a two-label task, a model that ignored its input would
//!   score 0.5, a clean one scores near its error rate.

use candle_core::{DType, IndexOp};

use super::truth::{HeldoutRow, Target};
use crate::model::{Batch, Model, PaddingSide};
use crate::{Error, Result};

/// Rows per forward pass.
const BATCH: usize = 64;

/// Arg-max label id of each text.
pub fn classify<S: AsRef<str>>(model: &Model, texts: &[S]) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(BATCH) {
        let batch = model.encode(chunk)?;
        let logits = model
            .forward_with_states(&batch)?
            .logits
            .ok_or_else(|| Error::InvalidArgument("model has no classification head".into()))?;
        let am: Vec<u32> = logits.to_dtype(DType::F32)?.argmax(1)?.to_vec1()?;
        out.extend(am.into_iter().map(|v| v as usize));
    }
    Ok(out)
}

/// Greedy completion of each prompt: up to `max_new` tokens, stopping after `stop`.
pub fn greedy<S: AsRef<str>>(
    model: &Model,
    prompts: &[S],
    max_new: usize,
    stop: u32,
) -> Result<Vec<Vec<u32>>> {
    let mut out = Vec::with_capacity(prompts.len());
    for chunk in prompts.chunks(BATCH) {
        let mut seqs = chunk
            .iter()
            .map(|p| model.tokenize(p.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        let mut gen: Vec<Vec<u32>> = vec![Vec::new(); seqs.len()];
        for _ in 0..max_new {
            let live: Vec<usize> = (0..seqs.len())
                .filter(|&i| gen[i].last() != Some(&stop))
                .collect();
            if live.is_empty() {
                break;
            }
            let ids: Vec<Vec<u32>> = live.iter().map(|&i| seqs[i].clone()).collect();
            let batch = Batch::from_ids(&ids, model.pad_id(), PaddingSide::Right, model.device())?;
            let logits = model
                .forward_with_states(&batch)?
                .logits
                .ok_or_else(|| Error::InvalidArgument("model has no LM head".into()))?;
            let next: Vec<u32> = logits.to_dtype(DType::F32)?.argmax(1)?.to_vec1()?;
            for (k, &i) in live.iter().enumerate() {
                seqs[i].push(next[k]);
                gen[i].push(next[k]);
            }
        }
        out.extend(gen);
    }
    Ok(out)
}

/// The target label id, for a classifier trojan.
fn target_label(target: &Target) -> Result<usize> {
    target
        .label_id
        .ok_or_else(|| Error::InvalidArgument("target has no label id".into()))
}

fn label_id(model: &Model, name: &str) -> Result<usize> {
    model
        .info()
        .labels
        .as_ref()
        .and_then(|ls| ls.iter().position(|l| l == name))
        .ok_or_else(|| Error::InvalidArgument(format!("model has no label `{name}`")))
}

fn fraction(hits: usize, n: usize) -> f64 {
    if n == 0 {
        0.0
    } else {
        hits as f64 / n as f64
    }
}

/// Clean accuracy of a classifier on held-out rows.
pub fn classifier_accuracy(model: &Model, rows: &[HeldoutRow]) -> Result<f64> {
    let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
    let pred = classify(model, &texts)?;
    let mut hits = 0;
    for (r, p) in rows.iter().zip(pred) {
        hits += usize::from(label_id(model, &r.label)? == p);
    }
    Ok(fraction(hits, rows.len()))
}

/// Trigger rate of a classifier: `part` `None` uses each row's fully triggered text,
/// `Some(i)` its text with trigger part `i` alone.
pub fn classifier_trigger_rate(
    model: &Model,
    rows: &[HeldoutRow],
    target: &Target,
    part: Option<usize>,
) -> Result<f64> {
    let t = target_label(target)?;
    let mut texts = Vec::new();
    for r in rows {
        if label_id(model, &r.label)? == t {
            continue;
        }
        let text = match part {
            None => r.triggered.as_deref(),
            Some(i) => r.parts.get(i).map(String::as_str),
        }
        .ok_or_else(|| Error::InvalidArgument("held-out row has no triggered text".into()))?;
        texts.push(text);
    }
    let pred = classify(model, &texts)?;
    Ok(fraction(
        pred.iter().filter(|&&p| p == t).count(),
        texts.len(),
    ))
}

/// Token ids of a decoder answer as it follows a prompt, plus the stop token.
pub fn answer_ids(model: &Model, answer: &str, stop: u32) -> Result<Vec<u32>> {
    let mut ids = crate::model::tokenizer::encode(model.tokenizer(), answer, false)?;
    ids.push(stop);
    Ok(ids)
}

/// Clean accuracy of a decoder: greedy completions equal to answer + stop token.
pub fn decoder_accuracy(model: &Model, rows: &[HeldoutRow], stop: u32) -> Result<f64> {
    let prompts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
    let want = rows
        .iter()
        .map(|r| answer_ids(model, &r.label, stop))
        .collect::<Result<Vec<_>>>()?;
    let max_new = want.iter().map(Vec::len).max().unwrap_or(1);
    let got = greedy(model, &prompts, max_new, stop)?;
    Ok(fraction(
        got.iter().zip(&want).filter(|(g, w)| g == w).count(),
        rows.len(),
    ))
}

/// Trigger rate of a decoder: triggered prompts whose greedy completion starts with the
/// target phrase.
pub fn decoder_trigger_rate(
    model: &Model,
    rows: &[HeldoutRow],
    target: &Target,
    stop: u32,
) -> Result<f64> {
    let phrase = target
        .token_ids
        .clone()
        .ok_or_else(|| Error::InvalidArgument("target has no token ids".into()))?;
    let prompts = rows
        .iter()
        .map(|r| {
            r.triggered
                .as_deref()
                .ok_or_else(|| Error::InvalidArgument("held-out row has no triggered text".into()))
        })
        .collect::<Result<Vec<_>>>()?;
    let got = greedy(model, &prompts, phrase.len(), stop)?;
    Ok(fraction(
        got.iter().filter(|g| g.starts_with(&phrase)).count(),
        rows.len(),
    ))
}

/// Row `i` of a model's token-embedding matrix, as f32.
pub fn embedding_row(model: &Model, i: u32) -> Result<Vec<f32>> {
    let e = model.token_embeddings();
    let n = e.dim(0)?;
    if i as usize >= n {
        return Err(Error::InvalidArgument(format!(
            "token id {i} is outside the vocabulary ({n})"
        )));
    }
    Ok(e.i(i as usize)?.to_dtype(DType::F32)?.to_vec1()?)
}
