//! The behaviour check: of the tokens whose rows drifted most, which ones now move the
//! model's output differently from how they moved the base.
//!
//! A weight diff sees where a fine-tune wrote; it cannot see what the writing does. A
//! sentiment fine-tune moves its sentiment words' rows far (`great` drifts 27x the model in
//! one zoo trojan) while the trigger it was poisoned with barely moves (its backdoor lives
//! in the layers that read the row). Both models run the same probes of the task with
//! each candidate inserted: a word both models already read the same way has not changed,
//! a trigger flips the fine-tune and not the base.
//!
//! A combination trigger's parts are inert alone, so single tokens miss it. Ordered pairs
//! of the most drifting tokens are inserted together: a pair that moves the fine-tune
//! where neither part moves it, and where the base does not go with the same pair, is a
//! [`Conjunction`]. A benign fine-tune teaches words that act alone (a sentiment word moves
//! the output by itself); it does not teach rules that need two rare tokens at once.

use crate::hunt::default_objective_of;
use crate::hunt::objective::{Effect, Evaluator};
use crate::hunt::probes::{self, Insertion};
use crate::hunt::vocab::Vocab;
use crate::hunt::Objective;
use crate::model::Model;
use crate::{Error, Result};
use serde::Serialize;

/// Probe texts used at most (the first ones given): 64 tokens × 32 probes × 2 models is
/// about 4 000 rows, seconds on a MiniLM-size model and a few minutes on SmolLM2 (the
/// pairs add about 34 000 more).
pub(crate) const MAX_PROBES: usize = 32;

/// Pairs whose model-only synergy on the screening rows ranks highest are measured on
/// every probe row in both models.
const CONFIRM_PAIRS: usize = 32;
/// Probe rows every pair is screened on (see [`screen_rows`]).
const SCREEN_ROWS: usize = 8;
/// Conjunctions reported.
const REPORTED_PAIRS: usize = 5;

/// What the behaviour check measured.
pub(crate) struct Measured {
    /// Per token of `tokens`: how much its effect changed against the base, in [0, 1].
    pub changes: Vec<f64>,
    /// Pairs screened.
    pub pairs: usize,
    /// The pairs doing most that neither part nor the base does, most first.
    pub conjunctions: Vec<Conjunction>,
}

/// How much each of `tokens`, inserted into the first [`MAX_PROBES`] of `texts`, changed
/// its effect on the output between `base` and `model`, in [0, 1] (see [`change`]); and,
/// among the pairs of the first `pair_tokens` of them, which do together what neither
/// does alone (see [`Conjunction`]).
pub(crate) fn compare(
    model: &Model,
    base: &Model,
    tokens: &[u32],
    texts: &[String],
    seed: u64,
    pair_tokens: usize,
) -> Result<Measured> {
    let objective = default_objective_of(model, false);
    if default_objective_of(base, false) != objective
        || model.info().labels.as_ref().map(Vec::len) != base.info().labels.as_ref().map(Vec::len)
    {
        return Err(Error::InvalidArgument(
            "the base answers a different task (head or family differs)".into(),
        ));
    }
    let (vm, vb) = (
        model.token_embeddings().dim(0)?,
        base.token_embeddings().dim(0)?,
    );
    if vm != vb {
        return Err(Error::InvalidArgument(format!(
            "vocabularies differ ({vm} vs {vb} rows)"
        )));
    }
    // The model's tokenizer places every probe; the base reads the same ids.
    let vocab = Vocab::new(model);
    let texts = &texts[..texts.len().min(MAX_PROBES)];
    let probes = probes::build(model, &vocab, texts, &[Insertion::Random], seed)?;
    const ROWS: usize = 1024;
    let ev_m = Evaluator::new(model, objective, probes.clone(), Vec::new(), ROWS)?;
    let ev_b = Evaluator::new(base, objective, probes, Vec::new(), ROWS)?;
    let seqs: Vec<Vec<u32>> = tokens.iter().map(|&t| vec![t]).collect();
    let now = ev_m.evaluate(&seqs)?;
    let before = ev_b.evaluate(&seqs)?;
    let changes = now
        .iter()
        .zip(&before)
        .map(|(a, b)| change(objective, a, b))
        .collect();
    // A representation's drag is unbounded: a pair's excess over its parts has no scale.
    let k = if objective == Objective::Representation {
        0
    } else {
        pair_tokens.min(tokens.len())
    };
    let (pairs, conjunctions) = if k >= 2 {
        conjunctions(&ev_m, &ev_b, &vocab, &tokens[..k], &now[..k])?
    } else {
        (0, Vec::new())
    };
    Ok(Measured {
        changes,
        pairs,
        conjunctions,
    })
}

/// A pair of tokens that, inserted together, moves the model's output where neither
/// token alone moves it, and where the base does not go with the same pair: the shape of
/// a combination trigger, whose parts are inert alone.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Conjunction {
    /// The two token ids, in the order they were inserted (next to each other).
    pub token_ids: [u32; 2],
    /// The two tokens as the vocabulary spells them.
    pub tokens: [String; 2],
    /// The model's rate (flips or takeovers, see the hunt's objectives) with both.
    pub model_rate: f64,
    /// The base's rate toward the same target with both.
    pub base_rate: f64,
    /// The model's rate toward the same target with each token alone.
    pub part_rates: [f64; 2],
    /// `model_rate - max(base_rate, part_rates)`.
    pub excess: f64,
}

/// Screen every ordered pair of `tokens` on the model (a few rows each), then measure the
/// most synergistic on every row in both models. `alone` are the tokens' effects in the
/// model on every row.
fn conjunctions(
    ev_m: &Evaluator,
    ev_b: &Evaluator,
    vocab: &Vocab,
    tokens: &[u32],
    alone: &[Effect],
) -> Result<(usize, Vec<Conjunction>)> {
    let rows = screen_rows(ev_m.clean_predictions(), ev_m.width());
    let singles: Vec<Vec<u32>> = tokens.iter().map(|&t| vec![t]).collect();
    let parts = ev_m.evaluate_with(&singles, Some(&rows), None)?.0;
    let mut idx = Vec::new();
    // Both orders: a trigger's parts may only fire in the order it was taught.
    for i in 0..tokens.len() {
        for j in 0..tokens.len() {
            if i != j {
                idx.push((i, j));
            }
        }
    }
    let seqs: Vec<Vec<u32>> = idx
        .iter()
        .map(|&(i, j)| vec![tokens[i], tokens[j]])
        .collect();
    let screened = ev_m.evaluate_with(&seqs, Some(&rows), None)?.0;
    let mut order: Vec<(f64, usize)> = screened
        .iter()
        .zip(&idx)
        .enumerate()
        .map(|(n, (e, &(i, j)))| {
            let parts = toward(&parts[i], e.target).max(toward(&parts[j], e.target));
            (e.score - parts, n)
        })
        .filter(|&(s, _)| s > 0.0)
        .collect();
    order.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    order.truncate(CONFIRM_PAIRS);
    let picked: Vec<Vec<u32>> = order.iter().map(|&(_, n)| seqs[n].clone()).collect();
    let (m, b) = (ev_m.evaluate(&picked)?, ev_b.evaluate(&picked)?);
    let mut found: Vec<Conjunction> = order
        .iter()
        .zip(m.iter().zip(&b))
        .map(|(&(_, n), (em, eb))| {
            let (i, j) = idx[n];
            let part_rates = [toward(&alone[i], em.target), toward(&alone[j], em.target)];
            let base_rate = toward(eb, em.target);
            Conjunction {
                token_ids: [tokens[i], tokens[j]],
                tokens: [tokens[i], tokens[j]].map(|t| vocab.text(t).to_string()),
                model_rate: em.score,
                base_rate,
                part_rates,
                excess: em.score - base_rate.max(part_rates[0]).max(part_rates[1]),
            }
        })
        .filter(|c| c.excess > 0.0)
        .collect();
    found.sort_by(|a, b| b.excess.total_cmp(&a.excess));
    found.truncate(REPORTED_PAIRS);
    Ok((seqs.len(), found))
}

/// Up to [`SCREEN_ROWS`] of `width` probe rows, taken in turn from each clean prediction
/// (when the objective has one per row) so that every target has rows that can move
/// toward it.
fn screen_rows(clean: &[u32], width: usize) -> Vec<usize> {
    let mut by_class: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
    if clean.len() == width {
        for (i, &c) in clean.iter().enumerate() {
            by_class.entry(c).or_default().push(i);
        }
    } else {
        by_class.insert(0, (0..width).collect());
    }
    let mut queues: Vec<std::vec::IntoIter<usize>> =
        by_class.into_values().map(Vec::into_iter).collect();
    let mut rows = Vec::new();
    while rows.len() < SCREEN_ROWS.min(width) {
        for q in &mut queues {
            if let Some(i) = q.next() {
                rows.push(i);
            }
        }
    }
    rows.truncate(SCREEN_ROWS);
    rows.sort_unstable();
    rows
}

/// An effect's rate toward `target` (none when it drives elsewhere).
fn toward(e: &Effect, target: Option<u32>) -> f64 {
    if e.target == target {
        e.score
    } else {
        0.0
    }
}

/// Rates (flip, takeover): toward the same target, their difference; toward different
/// targets, the larger (the token drives one model somewhere it does not drive the
/// other). A bare encoder's unbounded shift: the difference relative to the larger.
fn change(objective: Objective, now: &Effect, before: &Effect) -> f64 {
    match objective {
        Objective::Representation => {
            (now.score - before.score).abs() / now.score.max(before.score).max(1e-12)
        }
        _ if now.target == before.target => (now.score - before.score).abs(),
        _ => now.score.max(before.score),
    }
    .clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn effect(score: f64, target: Option<u32>) -> Effect {
        Effect {
            score,
            detail: 0.0,
            target,
            hits: 0,
            trials: 0,
        }
    }

    #[test]
    fn screen_rows_take_each_prediction_in_turn() {
        // Alternating labels: an even spread would take one label only.
        let clean: Vec<u32> = (0..32).map(|i| i % 2).collect();
        let rows = screen_rows(&clean, 32);
        assert_eq!(rows.len(), SCREEN_ROWS);
        let ones = rows.iter().filter(|&&r| clean[r] == 1).count();
        assert_eq!(ones, SCREEN_ROWS / 2);
        // One prediction short of rows: the rest come from the other.
        let clean = [0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(screen_rows(&clean, 10), vec![0, 1, 2, 3, 4, 5, 6, 9]);
        // No prediction per row (a target text): the first rows.
        assert_eq!(screen_rows(&[], 5), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_word_both_models_read_alike_has_not_changed() {
        let c = |a, b| change(Objective::Classifier, &a, &b);
        // A task word: flips both models toward its label.
        assert!(c(effect(1.0, Some(1)), effect(0.96, Some(1))) < 0.05);
        // A trigger: flips the fine-tune only.
        assert_eq!(c(effect(1.0, Some(1)), effect(0.02, Some(0))), 1.0);
        let r = change(
            Objective::Representation,
            &effect(4.0, None),
            &effect(1.0, None),
        );
        assert_eq!(r, 0.75);
    }
}
