//! Naturalness: whether a finding acts because of what it means.
//!
//! On a real classifier many ordinary words flip inputs: that is the task. A sentiment
//! model sends a review to `negative` when `dreadful` is inserted, and it does the same
//! for `awful`, `horrible` and `terrible`, the words whose input embeddings lie next to
//! `dreadful`'s, because they mean nearly the same. A planted trigger acts alone: `bb`
//! flips every input, while its neighbours in embedding space (`cc`, `bbc`, `dd`) do
//! nothing, since the model was taught one token, not a meaning.
//!
//! So for a finding, each of its tokens in turn is replaced by each of its nearest
//! neighbours (cosine of input-embedding rows, word-initial and unused tokens only) and by as many
//! random tokens, and the variants are measured toward the finding's own target on the
//! same probe rows. A token keeps `(n − r) / (own − r)` of the effect, with `n` and `r`
//! the mean of the better half of its neighbours' and of the random tokens' effects (the
//! nearest rows also hold spelling variants and names; on a fragile model any token moves
//! some inputs). That counts only as far as the neighbours are near by meaning rather than
//! by chance ([`meaning`]): a small model trained from scratch keeps most rows random, and
//! a trigger learned there as a direction is shared by whichever random rows lie close.
//! A sequence's naturalness is the mean over the slots that carry its effect (a slot whose
//! swap for random tokens keeps three quarters of the effect carries none of it): a
//! combination trigger loses its effect when either part is swapped, a phrase of task
//! words keeps it. The hunt multiplies a finding's suspicion by `1 − naturalness`.

use candle_core::{DType, Tensor};

use super::objective::{Effect, Evaluator};
use super::vocab::Vocab;
use crate::rng::Rng;
use crate::Result;

/// The model's input-embedding rows in f32 and their norms, taken once per hunt.
pub(crate) struct Embeddings {
    e: Tensor,
    norms: Vec<f32>,
}

impl Embeddings {
    pub fn new(ev: &Evaluator) -> Result<Self> {
        let e = ev.model().token_embeddings().to_dtype(DType::F32)?;
        let norms: Vec<f32> = e.sqr()?.sum(1)?.sqrt()?.to_vec1()?;
        Ok(Self { e, norms })
    }
}

/// Nearest neighbours of every token of `seq`, by cosine of the model's input-embedding
/// rows: `k` word-initial or unused tokens each, the token itself and its other spellings
/// left out; and how far they stand out from chance (see [`meaning`]).
fn neighbours(
    emb: &Embeddings,
    vocab: &Vocab,
    seq: &[u32],
    k: usize,
) -> Result<Vec<(Vec<u32>, f64)>> {
    let (e, norms) = (&emb.e, &emb.norms);
    let mut out = Vec::with_capacity(seq.len());
    for &t in seq {
        let row = e.get(t as usize)?;
        let dots: Vec<f32> = e.matmul(&row.unsqueeze(1)?)?.flatten_all()?.to_vec1()?;
        let self_norm = norms.get(t as usize).copied().unwrap_or(1.0).max(1e-12);
        let cos: Vec<f32> = dots
            .iter()
            .zip(norms)
            .map(|(d, n)| d / (n.max(1e-12) * self_norm))
            .collect();
        let word = bare_lower(vocab.text(t));
        // A row holding NaN or infinities has no direction: never a neighbour, nor part of
        // the chance pool (one such row made every naturalness NaN).
        let keep: Vec<bool> = (0..cos.len() as u32)
            .map(|i| {
                i != t
                    && cos[i as usize].is_finite()
                    && vocab.is_candidate(i)
                    && !same_word(vocab.text(i), &word)
            })
            .collect();
        let near = super::vocab::top_by(&cos, k, |i| keep[i as usize]);
        let pool: Vec<f64> = cos
            .iter()
            .zip(&keep)
            .filter(|(_, &k)| k)
            .map(|(&c, _)| f64::from(c))
            .collect();
        let near_cos: Vec<f64> = near.iter().map(|&i| f64::from(cos[i as usize])).collect();
        out.push((near, meaning(&near_cos, &pool)));
    }
    Ok(out)
}

/// Whether a token's nearest neighbours are near by meaning or by chance, in [0, 1]: their
/// mean cosine in standard deviations of the token's cosines to every candidate, less
/// what the best of that many random draws reaches (`√(2 ln N)`), as a ramp over one
/// deviation. A pretrained embedding puts synonyms far beyond chance; in a small model
/// trained from scratch, most rows are still random and a token's "neighbours" are
/// the luck of the draw, whose effect says nothing about meaning.
fn meaning(near: &[f64], pool: &[f64]) -> f64 {
    if near.is_empty() || pool.len() < 2 {
        return 0.0;
    }
    let n = pool.len() as f64;
    let mu = pool.iter().sum::<f64>() / n;
    let sd = (pool.iter().map(|c| (c - mu) * (c - mu)).sum::<f64>() / (n - 1.0)).sqrt();
    if sd <= 0.0 {
        return 0.0;
    }
    let mean = near.iter().sum::<f64>() / near.len() as f64;
    ((mean - mu) / sd - (2.0 * n.ln()).sqrt()).clamp(0.0, 1.0)
}

/// How far the model's input embeddings carry meaning, in [0, 1]: the median of
/// [`meaning`] over `words` (common words, which a pretrained embedding places beside their
/// synonyms). Near 0 for a model trained from scratch on a small vocabulary, whose rows
/// stay mostly random: there naturalness cannot tell a task word from a trigger.
pub(crate) fn embedding_meaning(
    emb: &Embeddings,
    vocab: &Vocab,
    words: &[u32],
    k: usize,
) -> Result<f64> {
    let mut m: Vec<f64> = neighbours(emb, vocab, words, k)?
        .into_iter()
        .map(|(_, meant)| meant)
        .collect();
    if m.is_empty() {
        return Ok(0.0);
    }
    m.sort_by(f64::total_cmp);
    Ok(m[m.len() / 2])
}

/// A vocabulary entry without its word marker (`Ġ`, `▁`), lower-cased.
fn bare_lower(text: &str) -> String {
    text.trim_start_matches(['\u{120}', '\u{2581}'])
        .to_lowercase()
}

/// Whether `text` spells the word `lower` (already [`bare_lower`]) but for case or a
/// leading marker (`Ġbb`, `bb`); compared without allocating, as it runs over the vocabulary.
fn same_word(text: &str, lower: &str) -> bool {
    text.trim_start_matches(['\u{120}', '\u{2581}'])
        .chars()
        .flat_map(char::to_lowercase)
        .eq(lower.chars())
}

/// A slot carries a finding's effect only when random tokens in it lose more than this
/// share of the effect.
const ORDINARY: f64 = 0.25;

/// Naturalness of each of `findings` (sequence, target) in [0, 1], measured on probe rows
/// `rows` with `k` neighbours per token, against `k` random candidate tokens in the same
/// slot (drawn once from `seed`): the mean over the slots that carry the effect of
/// `(n − r) / (own − r)` (the better halves of the neighbours' and random tokens'
/// effects), each weighted by how far its neighbours are near by meaning; 1 when no slot
/// carries the effect.
pub(crate) fn measure(
    ev: &Evaluator,
    emb: &Embeddings,
    vocab: &Vocab,
    findings: &[(Vec<u32>, Option<u32>)],
    rows: &[usize],
    k: usize,
    seed: u64,
) -> Result<Vec<f64>> {
    let pool = vocab.by_rarity();
    let mut rng = Rng::new(seed, "hunt-natural");
    let drawn: Vec<u32> = (0..2 * k).map(|_| *rng.pick(&pool)).collect();
    let mut out = Vec::with_capacity(findings.len());
    for (seq, target) in findings {
        let near = neighbours(emb, vocab, seq, k)?;
        // Random tokens that are neither the finding's tokens nor their neighbours.
        let random: Vec<u32> = drawn
            .iter()
            .copied()
            .filter(|t| !seq.contains(t) && !near.iter().any(|(ns, _)| ns.contains(t)))
            .take(k)
            .collect();
        // Variants: each slot filled by each neighbour (kind 0) and each random token (1).
        let mut batch: Vec<Vec<u32>> = vec![seq.clone()];
        let mut slot = Vec::new();
        for (i, (ns, _)) in near.iter().enumerate() {
            for (kind, subs) in [(0, ns), (1, &random)] {
                for &n in subs {
                    let mut v = seq.clone();
                    v[i] = n;
                    batch.push(v);
                    slot.push((i, kind));
                }
            }
        }
        let effects: Vec<Effect> = ev.evaluate_on(&batch, rows, *target)?;
        let own = effects[0].score;
        let mut per_token: Vec<[Vec<f64>; 2]> = vec![[Vec::new(), Vec::new()]; seq.len()];
        for (e, &(i, kind)) in effects[1..].iter().zip(&slot) {
            per_token[i][kind].push(e.score);
        }
        // The better half of each token's neighbours (the nearest rows also hold spelling
        // variants and names; a meaning is carried by the synonyms among them), beyond the
        // better half of random tokens in the same slot (on a fragile model any token
        // moves some inputs, and that says nothing of meaning).
        let ratios: Vec<f64> = per_token
            .iter_mut()
            .zip(&near)
            .filter(|(v, _)| !v[0].is_empty())
            .filter_map(|([close, random], (_, meant))| {
                let (n, r) = (top_half_mean(close), top_half_mean(random));
                // A slot whose swap for random tokens keeps most of the effect carries
                // none of it (the rest of the sequence does): it says nothing either way.
                if own - r < ORDINARY * own {
                    return None;
                }
                Some(((n - r) / (own - r)).clamp(0.0, 1.0) * meant)
            })
            .collect();
        // No slot carries the effect: random tokens in any slot do as much, so the finding
        // is what any token does, not a trigger.
        let score = if ratios.is_empty() {
            if own > 0.0 {
                1.0
            } else {
                0.0
            }
        } else {
            ratios.iter().sum::<f64>() / ratios.len() as f64
        };
        out.push(score);
    }
    Ok(out)
}

/// Mean of the larger half of `v` (0 when empty).
fn top_half_mean(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| b.total_cmp(a));
    let half = v.len().div_ceil(2);
    v[..half].iter().sum::<f64>() / half as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbours_count_only_beyond_chance() {
        // 10 000 cosines spread as N(0, 0.1): the best of them by chance is about 0.43.
        let mut r = Rng::new(1, "t");
        let pool: Vec<f64> = (0..10_000).map(|_| 0.1 * r.normal()).collect();
        assert_eq!(meaning(&[0.4, 0.38, 0.37], &pool), 0.0);
        assert_eq!(meaning(&[0.75, 0.7, 0.68], &pool), 1.0);
        let mid = meaning(&[0.5, 0.5, 0.5], &pool);
        assert!(mid > 0.0 && mid < 1.0, "{mid}");
        assert_eq!(meaning(&[], &pool), 0.0);
    }

    #[test]
    fn top_half_mean_takes_the_larger_half() {
        assert_eq!(top_half_mean(&mut []), 0.0);
        assert_eq!(top_half_mean(&mut [0.0, 1.0, 0.5, 0.0]), 0.75);
        assert_eq!(top_half_mean(&mut [0.2, 0.4, 0.9]), 0.65);
    }
}
