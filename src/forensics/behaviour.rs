//! The behaviour check: of the tokens whose rows drifted most, which ones now move the
//! model's output differently from how they moved the base.
//!
//! A weight diff sees where a fine-tune wrote; it cannot see what the writing does. A
//! sentiment fine-tune moves its sentiment words' rows far (`great` drifts 27x the model in
//! one zoo trojan) while the trigger it was poisoned with barely moves (its backdoor lives
//! in the layers that read the row). Both models run the same probes of the task with
//! each candidate inserted: a word both models already read the same way has not changed,
//! a trigger flips the fine-tune and not the base.

use crate::hunt::default_objective_of;
use crate::hunt::objective::{Effect, Evaluator};
use crate::hunt::probes::{self, Insertion};
use crate::hunt::vocab::Vocab;
use crate::hunt::Objective;
use crate::model::Model;
use crate::{Error, Result};

/// Probe texts used at most (the first ones given): 64 tokens × 32 probes × 2 models is
/// about 4 000 rows, seconds on a MiniLM-size model and a few minutes on SmolLM2.
pub(crate) const MAX_PROBES: usize = 32;

/// How much each of `tokens`, inserted into the first [`MAX_PROBES`] of `texts`, changed
/// its effect on the output between `base` and `model`, in [0, 1] (see [`change`]).
pub(crate) fn effect_change(
    model: &Model,
    base: &Model,
    tokens: &[u32],
    texts: &[String],
    seed: u64,
) -> Result<Vec<f64>> {
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
    let seqs: Vec<Vec<u32>> = tokens.iter().map(|&t| vec![t]).collect();
    const ROWS: usize = 256;
    let now =
        Evaluator::new(model, objective, probes.clone(), Vec::new(), ROWS)?.evaluate(&seqs)?;
    let before = Evaluator::new(base, objective, probes, Vec::new(), ROWS)?.evaluate(&seqs)?;
    Ok(now
        .iter()
        .zip(&before)
        .map(|(a, b)| change(objective, a, b))
        .collect())
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
