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
//! where neither part alone moves it, and where the base does not go with the same pair,
//! is a [`Conjunction`]. A benign fine-tune teaches words that act alone (a
//! sentiment word moves the output by itself, and two of them add up); it has no reason
//! to teach a rule that needs two tokens, each of which does nothing.

use crate::hunt::default_objective_of;
use crate::hunt::objective::{Effect, Evaluator};
use crate::hunt::probes::{self, Insertion};
use crate::hunt::vocab::Vocab;
use crate::hunt::Objective;
use crate::model::Model;
use crate::{Error, Result};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap, HashSet};

/// Probe texts used at most (the first ones given): 64 tokens × 32 probes × 2 models is
/// about 4 000 rows, seconds on a MiniLM-size model and a few minutes on SmolLM2 (the
/// pairs add about 34 000 more).
pub(crate) const MAX_PROBES: usize = 32;

/// Pairs ranked highest on the screening rows are measured on every probe row in both
/// models.
const CONFIRM_PAIRS: usize = 32;
/// Probe rows every pair is screened on (see [`screen_rows`]).
const SCREEN_ROWS: usize = 8;
/// Conjunctions reported.
const REPORTED_PAIRS: usize = 5;

/// What the behaviour check measured.
pub(crate) struct Measured {
    /// Per token of `tokens`: how much its effect changed against the base, in [0, 1].
    pub changes: Vec<f64>,
    /// The base is a bare encoder with no verdict: changes are the model's effects, and a
    /// pair's excess has no base to rule out a pair of task words (`not` + `bad`).
    pub bare: bool,
    /// Ordered pairs screened.
    pub pairs: usize,
    /// Pairs (either order) whose excess reaches `CONJUNCTION_ONSET`.
    pub joint: usize,
    /// The pairs doing most that neither part nor the base does, most first, each pair
    /// once (in its better order).
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
    // A classifier fine-tuned from a bare encoder: the base has no verdict to compare, so
    // every effect a token has on the model is new (its change is its effect).
    let bare = objective == Objective::Classifier
        && base.info().labels.is_none()
        && base.info().family == model.info().family;
    if !bare
        && (default_objective_of(base, false) != objective
            || model.info().labels.as_ref().map(Vec::len)
                != base.info().labels.as_ref().map(Vec::len))
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
    let probes = probes::build(model, &vocab, texts, &[Insertion::Random], 2, seed, None)?;
    const ROWS: usize = 256;
    let ev_m = Evaluator::new(model, objective, probes.clone(), Vec::new(), ROWS)?;
    let ev_b = if bare {
        None
    } else {
        Some(Evaluator::new(base, objective, probes, Vec::new(), ROWS)?)
    };
    let seqs: Vec<Vec<u32>> = tokens.iter().map(|&t| vec![t]).collect();
    let now = ev_m.evaluate(&seqs)?;
    let before = match &ev_b {
        Some(ev) => ev.evaluate(&seqs)?,
        None => now.iter().map(|_| Effect::none()).collect(),
    };
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
    let mut measured = Measured {
        changes,
        bare,
        pairs: 0,
        joint: 0,
        conjunctions: Vec::new(),
    };
    if k >= 2 {
        let name = |t: u32| match (objective, &model.info().labels) {
            (Objective::Classifier, Some(l)) => l.get(t as usize).cloned(),
            (Objective::Classifier, None) => None,
            _ => Some(vocab.text(t).to_string()),
        };
        conjunctions(
            &ev_m,
            ev_b.as_ref(),
            &vocab,
            &tokens[..k],
            &name,
            &mut measured,
        )?;
    }
    Ok(measured)
}

/// A pair of tokens that, inserted together, moves the model's output where neither
/// token alone moves it, and where the base does not go with the same pair: the shape of
/// a combination trigger, whose parts are inert alone.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Conjunction {
    /// The two token ids, in the order they were inserted (next to each other); of the two
    /// orders, the one with the larger excess.
    pub token_ids: [u32; 2],
    /// The two tokens as the vocabulary spells them.
    pub tokens: [String; 2],
    /// Where the pair drives the model: a label id (classifier) or a next token (decoder).
    pub target: Option<u32>,
    /// The target's name: the label, or the token as the vocabulary spells it.
    pub target_name: Option<String>,
    /// Probe rows the pair moved to the target in the model ...
    pub hits: usize,
    /// ... out of those that could move (a classifier's rows not already at the label).
    pub trials: usize,
    /// `hits / trials`.
    pub model_rate: f64,
    /// The base's rate toward the same target with the same pair.
    pub base_rate: f64,
    /// The model's rate toward the same target with each token alone (at most
    /// [`INERT_PART`](super::INERT_PART)).
    pub part_rates: [f64; 2],
    /// `model_rate - max(base_rate, part_rates)`.
    pub excess: f64,
}

/// A pair's excess, from rates toward the pair's target in the model: the pair's over
/// the largest of its parts' and the base's with the same pair; `None` when a part is
/// not inert alone (two words that each move the output and add up are no conjunction).
fn excess(pair: f64, base: f64, parts: [f64; 2]) -> Option<f64> {
    (parts[0] <= super::INERT_PART && parts[1] <= super::INERT_PART)
        .then(|| pair - base.max(parts[0]).max(parts[1]))
}

/// Screen every ordered pair of `tokens` on the model (a few rows each), then measure the
/// best on every row: the pair in both models, its parts toward the pair's target.
/// `name` spells a target.
fn conjunctions(
    ev_m: &Evaluator,
    ev_b: Option<&Evaluator>,
    vocab: &Vocab,
    tokens: &[u32],
    name: &dyn Fn(u32) -> Option<String>,
    out: &mut Measured,
) -> Result<()> {
    // Both orders: a trigger's parts may only fire in the order it was taught.
    let n = tokens.len();
    let idx: Vec<(usize, usize)> = (0..n)
        .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
        .collect();
    out.pairs = idx.len();
    let seqs: Vec<Vec<u32>> = idx
        .iter()
        .map(|&(i, j)| vec![tokens[i], tokens[j]])
        .collect();
    let singles: Vec<Vec<u32>> = tokens.iter().map(|&t| vec![t]).collect();
    let rows = screen_rows(ev_m.clean_predictions(), ev_m.width());
    let parts = ev_m.evaluate_with(&singles, Some(&rows), None)?.0;
    let screened = ev_m.evaluate_with(&seqs, Some(&rows), None)?.0;
    // Screening key: the pair's rate over its parts' where they drive the same way (a
    // part driving elsewhere counts as 0 here; the confirmation measures it toward the
    // pair's target). Rates on a few rows come in coarse steps: the log-probability
    // shift (or KL) breaks their ties.
    let same = |e: &Effect, t: Option<u32>| if e.target == t { e.score } else { 0.0 };
    let key = |k: usize| {
        let (e, (i, j)) = (&screened[k], idx[k]);
        let p = same(&parts[i], e.target).max(same(&parts[j], e.target));
        (e.score - p, e.detail)
    };
    let mut order: Vec<usize> = (0..seqs.len()).filter(|&k| key(k).0 > 0.0).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (key(a), key(b));
        y.0.total_cmp(&x.0)
            .then(y.1.total_cmp(&x.1))
            .then(a.cmp(&b))
    });
    order.truncate(CONFIRM_PAIRS);
    let picked: Vec<Vec<u32>> = order.iter().map(|&k| seqs[k].clone()).collect();
    let m = ev_m.evaluate(&picked)?;
    // Rates toward each pair's own target: the pair in the base, its parts in the model.
    let mut base_rate = vec![0.0; picked.len()];
    let mut part_rate: HashMap<(u32, u32), f64> = HashMap::new(); // (target, token)
    let targets: BTreeSet<u32> = m.iter().filter_map(|e| e.target).collect();
    for &t in &targets {
        let mine: Vec<usize> = (0..picked.len())
            .filter(|&p| m[p].target == Some(t))
            .collect();
        let pairs: Vec<Vec<u32>> = mine.iter().map(|&p| picked[p].clone()).collect();
        if let Some(ev_b) = ev_b {
            for (&p, e) in mine.iter().zip(ev_b.evaluate_toward(&pairs, t)?) {
                base_rate[p] = e.score;
            }
        }
        let used: BTreeSet<u32> = pairs.iter().flatten().copied().collect();
        let used: Vec<u32> = used.into_iter().collect();
        let alone: Vec<Vec<u32>> = used.iter().map(|&tok| vec![tok]).collect();
        for (&tok, e) in used.iter().zip(ev_m.evaluate_toward(&alone, t)?) {
            part_rate.insert((t, tok), e.score);
        }
    }
    let mut found: Vec<Conjunction> = Vec::new();
    for (p, &k) in order.iter().enumerate() {
        let (em, (i, j)) = (&m[p], idx[k]);
        let Some(t) = em.target else { continue };
        let part_rates = [tokens[i], tokens[j]].map(|tok| part_rate[&(t, tok)]);
        let base_rate = base_rate[p];
        let Some(x) = excess(em.score, base_rate, part_rates).filter(|&x| x > 0.0) else {
            continue;
        };
        found.push(Conjunction {
            token_ids: [tokens[i], tokens[j]],
            tokens: [tokens[i], tokens[j]].map(|t| vocab.text(t).to_string()),
            target: Some(t),
            target_name: name(t),
            hits: em.hits,
            trials: em.trials,
            model_rate: em.score,
            base_rate,
            part_rates,
            excess: x,
        });
    }
    found.sort_by(|a, b| b.excess.total_cmp(&a.excess));
    // Each pair once, in its better order.
    let mut seen = HashSet::new();
    found.retain(|c| {
        let [a, b] = c.token_ids;
        seen.insert([a.min(b), a.max(b)])
    });
    out.joint = found
        .iter()
        .filter(|c| c.excess >= super::CONJUNCTION_ONSET)
        .count();
    found.truncate(REPORTED_PAIRS);
    out.conjunctions = found;
    Ok(())
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
    fn a_conjunction_needs_inert_parts_and_a_quiet_base() {
        // A combination trigger: nothing alone, everything together, nothing in the base.
        assert_eq!(excess(1.0, 0.0, [0.0, 0.06]), Some(0.94));
        // Two words that each move 44% and add up to 81%: not a conjunction.
        assert_eq!(excess(0.81, 0.0, [0.44, 0.44]), None);
        // The base does the same with the pair: no excess left.
        assert_eq!(excess(0.9, 0.9, [0.0, 0.0]), Some(0.0));
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
        // Many next tokens: one row of each of the first eight.
        let clean: Vec<u32> = (0..20).map(|i| i % 10).collect();
        assert_eq!(screen_rows(&clean, 20), (0..8).collect::<Vec<_>>());
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
