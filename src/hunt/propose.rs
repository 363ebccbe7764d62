//! Gradient proposals: which of the whole vocabulary the sweep should try first.
//!
//! The sweep can afford to measure a few hundred tokens of a real model's tens of
//! thousands, so the order it takes them in decides what a hunt can find. A first-order
//! (HotFlip) ranking scores every token at once: the gradient of the objective at an
//! inserted slot, dotted with every embedding row. Two things make it hold on real
//! fine-tuned models rather than only on small ones:
//!
//! - **where the slot is**: a trigger planted at the start of inputs acts most there, and
//!   one planted at the end there; the gradient is taken at the start, at the end and at
//!   one seeded random word boundary of the first 8 probe texts, one ranking each;
//! - **what fills it**: a transformer is far from linear, and a gradient taken with one
//!   common word in the slot ranks a planted trigger in the thousands. Averaged over several
//!   filler words, the trigger's gain adds up and the noise does not
//!   ([`Evaluator::smoothed_gradient`]).
//!
//! Each ranking is also read against each token's neighbourhood
//! (the mean gain of its nearest candidates by cosine): a task word's neighbours in embedding space gain as
//! much as it does, a planted token's do not. Rankings take turns, so the sweep meets the
//! best of each first.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::time::{Duration, Instant};

use candle_core::{DType, Tensor};

use super::objective::Evaluator;
use super::probes::{self, Frame, Insertion};
use super::vocab::{self, Vocab};
use super::Clock;
use crate::progress::Progress;
use crate::rng::Rng;
use crate::Result;

/// Filler words the gradient is averaged over.
pub(crate) const FILLERS: usize = 8;
/// Tokens whose neighbourhood contrast is computed per ranking (the rest of the vocabulary
/// gains too little to matter).
const CONTRAST_POOL: usize = 1000;
/// Neighbours a gain is compared with.
const NEIGHBOURS: usize = 8;
/// Tokens whose cosines to the whole vocabulary are held at once.
const NEIGHBOUR_BLOCK: usize = 128;
/// Probe texts a gradient is taken over (each with every filler: `FILLERS ×
/// GRADIENT_TEXTS` rows per ranking, in passes bounded by the evaluator).
const GRADIENT_TEXTS: usize = 8;

/// What the proposals need from the hunt.
pub(crate) struct Request<'a> {
    pub ev: &'a Evaluator<'a>,
    pub vocab: &'a Vocab,
    pub texts: &'a [String],
    /// The chat frame the probes are wrapped in, if any.
    pub frame: Option<&'a Frame>,
    /// Labels to push toward (`None` for objectives without labels).
    pub labels: &'a [Option<u32>],
    /// Words the gradient is averaged over.
    pub fillers: &'a [u32],
    /// Tokens that may be proposed.
    pub keep: &'a dyn Fn(u32) -> bool,
    /// Tokens per ranking.
    pub per_ranking: usize,
    pub seed: u64,
    /// No new ranking is started unless the last one's time still fits in this share of
    /// the hunt's budget (the first always runs).
    pub clock: &'a Clock<'a>,
    pub share: f64,
    pub progress: &'a dyn Progress,
}

/// Filler words for the smoothed gradient: common words drawn with the hunt's seed.
pub(crate) fn fillers(common: &[u32], seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed, "hunt-fillers");
    let mut pool = common.to_vec();
    rng.shuffle(&mut pool);
    pool.truncate(FILLERS);
    pool
}

/// Rankings of single tokens, best first: at the start, the end and random places of the
/// probes, for every label, raw and against the neighbourhood. The sweep lets them
/// [`take_turns`].
pub(crate) fn gradient_rankings(r: &Request) -> Result<Vec<Vec<u32>>> {
    let model = r.ev.model();
    let mut rankings: Vec<Vec<u32>> = Vec::new();
    if r.labels.is_empty() || r.fillers.is_empty() || r.texts.is_empty() {
        return Ok(rankings);
    }
    let texts: Vec<String> = r.texts.iter().take(GRADIENT_TEXTS).cloned().collect();
    let mut near = Neighbours::new(r.ev, r.vocab)?;
    let places = [Insertion::Start, Insertion::End, Insertion::Random];
    r.progress
        .begin("proposals", Some((places.len() * r.labels.len()) as u64));
    // A ranking costs seconds and runs no rows of the sweep's: start one only when the
    // last one's time says it ends inside the share (the first always runs).
    let mut cost = Duration::ZERO;
    for ins in places {
        if !rankings.is_empty() && !r.clock.fits(r.share, cost) {
            break;
        }
        let placed = probes::build(model, r.vocab, &texts, &[ins], 1, r.seed, r.frame)?;
        let ev = r.ev.with_probes(placed)?;
        for &label in r.labels {
            if !rankings.is_empty() && !r.clock.fits(r.share, cost) {
                break;
            }
            let t = Instant::now();
            let g = ev.smoothed_gradient(r.fillers, label)?;
            let scores = vocab::row_scores(model, &g)?;
            rankings.push(vocab::top_by(&scores, r.per_ranking, r.keep));
            let pool = vocab::top_by(&scores, CONTRAST_POOL, r.keep);
            let mut contrast: Vec<(u32, f32)> = pool
                .iter()
                .zip(near.of(&pool)?)
                .map(|(&t, n)| {
                    let around = n.iter().map(|&i| scores[i as usize]).sum::<f32>();
                    (t, scores[t as usize] - around / n.len().max(1) as f32)
                })
                .collect();
            contrast.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            rankings.push(contrast.iter().take(r.per_ranking).map(|c| c.0).collect());
            cost = t.elapsed();
            r.progress.advance(1);
        }
    }
    r.progress.finish();
    Ok(rankings)
}

/// Nearest candidate tokens by cosine of input-embedding rows, computed once per token:
/// the rankings of one hunt share most of their pools.
struct Neighbours<'a> {
    unit: Tensor,
    vocab: &'a Vocab,
    known: HashMap<u32, Vec<u32>>,
}

impl<'a> Neighbours<'a> {
    fn new(ev: &Evaluator, vocab: &'a Vocab) -> Result<Self> {
        let e = ev.model().token_embeddings().to_dtype(DType::F32)?;
        let norms = e.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f32::MAX)?;
        Ok(Self {
            unit: e.broadcast_div(&norms)?,
            vocab,
            known: HashMap::new(),
        })
    }

    /// The `NEIGHBOURS` nearest candidates of each of `ids` (never the token itself).
    fn of(&mut self, ids: &[u32]) -> Result<Vec<&[u32]>> {
        let missing: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|t| !self.known.contains_key(t))
            .collect();
        // In blocks, so a large vocabulary never needs more than a block's rows of
        // cosines at once.
        for block in missing.chunks(NEIGHBOUR_BLOCK) {
            let idx = Tensor::from_vec(block.to_vec(), block.len(), self.unit.device())?;
            let cos: Vec<Vec<f32>> = self
                .unit
                .index_select(&idx, 0)?
                .matmul(&self.unit.t()?)?
                .to_vec2()?;
            for (&t, row) in block.iter().zip(&cos) {
                let near = vocab::top_by(row, NEIGHBOURS, |i| i != t && self.vocab.is_candidate(i));
                self.known.insert(t, near);
            }
        }
        Ok(ids.iter().map(|t| self.known[t].as_slice()).collect())
    }
}

/// The rankings' first entries, then their second ones, and so on, each entry once, with
/// the ranking that put it first.
pub(crate) fn take_turns<T: Copy + Eq + Hash>(rankings: &[Vec<T>]) -> Vec<(T, usize)> {
    let mut seen = HashSet::new();
    let longest = rankings.iter().map(Vec::len).max().unwrap_or(0);
    let mut out = Vec::new();
    for i in 0..longest {
        for (k, r) in rankings.iter().enumerate() {
            if let Some(&t) = r.get(i) {
                if seen.insert(t) {
                    out.push((t, k));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rankings_take_turns_and_repeat_nothing() {
        let r = vec![vec![5, 1, 2], vec![5, 7], vec![9]];
        assert_eq!(take_turns(&r), vec![(5, 0), (9, 2), (1, 0), (7, 1), (2, 0)]);
        assert!(take_turns::<u32>(&[]).is_empty());
    }
}
