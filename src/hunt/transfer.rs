//! Transfer to a reference: does a finding move the model the scanned one was fine-tuned
//! from the same way?
//!
//! A task word acts through what it means, and the pretrained model already knows what it
//! means: `dreadful` pushes a sentiment classifier's base encoder toward `negative` too. A
//! planted trigger acts through what the fine-tune taught, which the base never saw. So a
//! finding's effect is measured again on the reference, on the same probe rows:
//!
//! - a reference with the same head (a classifier with as many labels, a decoder with the
//!   same vocabulary) is measured directly;
//! - a bare encoder gets a light head: ridge regression from its mean-pooled states to the
//!   scanned classifier's log-probabilities on up to [`FIT_TEXTS`] task texts, with the
//!   ridge strength chosen by leave-one-out agreement with the model's predictions.
//!
//! The transfer is the share of the finding's effect the reference shows (its mean
//! log-probability shift toward the finding's target as a share of the model's; for
//! decoders, its next-token takeover as a share of the model's); suspicion
//! is multiplied by `1 − transfer`. A reference that does not predict as the model does on
//! the fitting texts (agreement below [`MIN_AGREEMENT`]) is not used, and the report says
//! why: a head that cannot mimic the model would call every effect a trigger's.

use crate::hunt::objective::{Effect, Evaluator, Objective};
use crate::hunt::probes::Probe;
use crate::model::{Family, Model};
use crate::Result;

/// Task texts a bare encoder's head is fitted on (and agreement measured on).
pub(crate) const FIT_TEXTS: usize = 128;
/// Longest fitting text, in tokens (longer ones are skipped: the fit runs them in one
/// batch).
const FIT_TOKENS: usize = 128;
/// Least share of fitting texts the reference must predict as the model does.
pub(crate) const MIN_AGREEMENT: f64 = 0.75;
/// Ridge strengths tried, as multiples of the mean squared norm of a centred row.
const RIDGE: [f64; 6] = [1e-3, 1e-2, 0.1, 0.3, 1.0, 10.0];

/// How the reference is measured.
enum Kind {
    /// Same labels or vocabulary: the reference's own outputs.
    Direct,
    /// A bare encoder with a fitted head.
    Head(Head),
}

/// A reference ready to measure findings on the hunt's probe rows.
pub(crate) struct Transfer<'m> {
    ev: Evaluator<'m>,
    kind: Kind,
    /// The reference's log-probabilities on the clean probe rows (classifiers).
    clean: Vec<Vec<f32>>,
    /// Ids at or past this are not in the reference's vocabulary: a token the fine-tune
    /// added cannot transfer.
    vocab: usize,
    /// Share of the fitting texts the reference predicts as the model does.
    pub agreement: f64,
    /// How many texts that was measured on.
    pub texts: usize,
}

/// Why a reference cannot be used, in words for the report.
pub(crate) type Unusable = String;

impl<'m> Transfer<'m> {
    /// Set up `reference` against the hunt's evaluator `ev`, fitting and checking on
    /// `texts` (the task's texts, or the corpus the probes came from).
    pub fn new(
        ev: &Evaluator,
        reference: &'m Model,
        texts: &[String],
    ) -> Result<std::result::Result<Self, Unusable>> {
        let model = ev.model();
        let objective = ev.objective;
        let ref_info = reference.info();
        let same_head = match objective {
            Objective::Classifier => {
                let labels = |m: &Model| m.info().labels.as_ref().map(Vec::len);
                if ref_info.family == Family::Llama {
                    return Ok(Err("a decoder cannot stand in for a classifier".into()));
                }
                labels(reference).is_some() && labels(reference) == labels(model)
            }
            Objective::NextToken => {
                if ref_info.family != Family::Llama || reference.info().labels.is_some() {
                    return Ok(Err("a decoder needs a decoder as its reference".into()));
                }
                true
            }
            _ => {
                return Ok(Err(
                    "transfer is measured for classifiers and decoders only".into(),
                ))
            }
        };
        if reference.info().labels.is_some() && !same_head {
            return Ok(Err("the reference classifies into other labels".into()));
        }
        // The same probe rows must mean the same text to both.
        let mut fit = Vec::new();
        for t in texts {
            let ids = model.tokenize(t)?;
            if ids.len() > FIT_TOKENS || ids.len() + 8 > reference.max_tokens() {
                continue;
            }
            if reference.tokenize(t)? != ids {
                return Ok(Err(
                    "the reference tokenizes the task's texts differently".into()
                ));
            }
            fit.push(Probe { ids, at: 0 });
            if fit.len() == FIT_TEXTS {
                break;
            }
        }
        if fit.len() < 8 {
            return Ok(Err(format!(
                "{} task texts fit to compare the reference on; 8 needed",
                fit.len()
            )));
        }
        let batch = ev.batch_rows();
        let fit_rows: Vec<usize> = (0..fit.len()).collect();
        let on_model = ev.with_probes(fit.clone())?;
        let model_out = on_model.outputs(&[Vec::new()], &fit_rows)?;
        let model_pred: Vec<usize> = model_out.iter().map(|r| argmax(r)).collect();
        let probes = ev.probes.clone();
        let width = probes.len();
        let all: Vec<usize> = (0..width).collect();
        let (ev_ref, kind, agreement) = if same_head {
            let fit_ev = Evaluator::new(reference, objective, fit, Vec::new(), batch)?;
            let ref_pred = fit_ev.outputs(&[Vec::new()], &fit_rows)?;
            let agree = agreement(ref_pred.iter().map(|r| argmax(r)), &model_pred);
            let ev_ref = Evaluator::new(reference, objective, probes, Vec::new(), batch)?;
            (ev_ref, Kind::Direct, agree)
        } else {
            let classes: std::collections::BTreeSet<usize> = model_pred.iter().copied().collect();
            if classes.len() < 2 {
                return Ok(Err(
                    "the model predicts one label on every task text: no head to fit".into(),
                ));
            }
            let fit_ev =
                Evaluator::new(reference, Objective::Representation, fit, Vec::new(), batch)?;
            let x = fit_ev.outputs(&[Vec::new()], &fit_rows)?;
            let (head, agree) = Head::fit(&x, &model_out, &model_pred);
            let ev_ref = Evaluator::new(
                reference,
                Objective::Representation,
                probes,
                Vec::new(),
                batch,
            )?;
            (ev_ref, Kind::Head(head), agree)
        };
        if agreement < MIN_AGREEMENT {
            return Ok(Err(format!(
                "the reference predicts as the model does on only {:.0}% of {} task texts",
                100.0 * agreement,
                model_pred.len()
            )));
        }
        let mut t = Self {
            ev: ev_ref,
            kind,
            clean: Vec::new(),
            vocab: reference.info().vocab_size,
            agreement,
            texts: model_pred.len(),
        };
        if objective == Objective::Classifier {
            t.clean = t.log_probs(&[Vec::new()], &all)?;
        }
        Ok(Ok(t))
    }

    /// Whether the reference carries its own head (not a fitted one).
    pub fn direct(&self) -> bool {
        matches!(self.kind, Kind::Direct)
    }

    /// The reference's log-probabilities for `seqs` on probe `rows` (sequence-major).
    fn log_probs(&self, seqs: &[Vec<u32>], rows: &[usize]) -> Result<Vec<Vec<f32>>> {
        let out = self.ev.outputs(seqs, rows)?;
        Ok(match &self.kind {
            Kind::Direct => out,
            Kind::Head(h) => out.iter().map(|x| h.log_probs(x)).collect(),
        })
    }

    /// Share in [0, 1] of each finding's effect the reference shows; `clean_pred` are the
    /// model's predictions on the probe rows.
    pub fn measure(&self, findings: &[(Vec<u32>, Effect)], clean_pred: &[u32]) -> Result<Vec<f64>> {
        let all: Vec<usize> = (0..self.ev.width()).collect();
        let mut out = Vec::with_capacity(findings.len());
        for (seq, effect) in findings {
            let Some(target) = effect.target else {
                out.push(0.0);
                continue;
            };
            if seq.iter().any(|&i| i as usize >= self.vocab) {
                out.push(0.0);
                continue;
            }
            let share = match self.ev.objective {
                Objective::NextToken => {
                    let e = self
                        .ev
                        .evaluate_on(std::slice::from_ref(seq), &all, Some(target))?;
                    ratio(e[0].score, effect.score)
                }
                _ => {
                    let cand = self.log_probs(std::slice::from_ref(seq), &all)?;
                    classifier_share(&cand, &self.clean, clean_pred, target as usize, effect)
                }
            };
            out.push(share);
        }
        Ok(out)
    }
}

/// The reference's mean log-probability shift toward `target` as a share of the model's,
/// on the rows the model does not already predict as it. The shift, not the flip rate: it
/// is continuous, so a handful of rows (the few probes of a minority class) do not make it
/// jump between 0 and 1.
fn classifier_share(
    cand: &[Vec<f32>],
    clean: &[Vec<f32>],
    model_pred: &[u32],
    target: usize,
    model: &Effect,
) -> f64 {
    let (mut shift, mut n) = (0.0f64, 0usize);
    for ((c, z), &p) in cand.iter().zip(clean).zip(model_pred) {
        if p as usize == target || target >= c.len() {
            continue;
        }
        shift += f64::from(c[target] - z[target]);
        n += 1;
    }
    if n == 0 {
        0.0
    } else {
        ratio(shift / n as f64, model.detail)
    }
}

/// `part / whole` in [0, 1]; 0 when the whole is not positive.
fn ratio(part: f64, whole: f64) -> f64 {
    if whole > 0.0 && part.is_finite() {
        (part / whole).clamp(0.0, 1.0)
    } else {
        0.0
    }
}

fn agreement(pred: impl Iterator<Item = usize>, model: &[usize]) -> f64 {
    let same = pred.zip(model).filter(|(a, b)| a == *b).count();
    same as f64 / model.len().max(1) as f64
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

/// A linear head on a bare encoder's pooled states, mimicking the model's log-probabilities.
struct Head {
    mean: Vec<f64>,
    /// `d × k`.
    w: Vec<Vec<f64>>,
    bias: Vec<f64>,
}

impl Head {
    /// Ridge regression of `y` (the model's log-probabilities) on `x` (pooled states),
    /// in dual form (fewer texts than dimensions), with the strength whose leave-one-out
    /// predictions agree with `pred` most often (ties: the stronger). Returns the head and
    /// that agreement.
    fn fit(x: &[Vec<f32>], y: &[Vec<f32>], pred: &[usize]) -> (Self, f64) {
        let n = x.len();
        let d = x[0].len();
        let k = y[0].len();
        let mean: Vec<f64> = (0..d)
            .map(|j| x.iter().map(|r| f64::from(r[j])).sum::<f64>() / n as f64)
            .collect();
        let bias: Vec<f64> = (0..k)
            .map(|j| y.iter().map(|r| f64::from(r[j])).sum::<f64>() / n as f64)
            .collect();
        let xc: Vec<Vec<f64>> = x
            .iter()
            .map(|r| {
                r.iter()
                    .zip(&mean)
                    .map(|(&v, m)| f64::from(v) - m)
                    .collect()
            })
            .collect();
        let yc: Vec<Vec<f64>> = y
            .iter()
            .map(|r| {
                r.iter()
                    .zip(&bias)
                    .map(|(&v, m)| f64::from(v) - m)
                    .collect()
            })
            .collect();
        let gram: Vec<Vec<f64>> = (0..n)
            .map(|i| (0..n).map(|j| dot(&xc[i], &xc[j])).collect())
            .collect();
        let scale = (0..n).map(|i| gram[i][i]).sum::<f64>() / n as f64;
        let mut best: Option<(f64, f64, Vec<Vec<f64>>)> = None;
        for r in RIDGE {
            let lambda = r * scale.max(1e-12);
            let Some(inv) = spd_inverse(&gram, lambda) else {
                continue;
            };
            // A = (K + λI)⁻¹ Y; the leave-one-out prediction of row i is y_i − A_i / M_ii.
            let a: Vec<Vec<f64>> = (0..n)
                .map(|i| {
                    (0..k)
                        .map(|c| (0..n).map(|j| inv[i][j] * yc[j][c]).sum())
                        .collect()
                })
                .collect();
            let agree = (0..n)
                .filter(|&i| {
                    let loo: Vec<f32> = (0..k)
                        .map(|c| (yc[i][c] - a[i][c] / inv[i][i]) as f32)
                        .collect();
                    argmax(&loo) == pred[i]
                })
                .count() as f64
                / n as f64;
            if best.as_ref().is_none_or(|b| agree >= b.0) {
                best = Some((agree, lambda, a));
            }
        }
        let (agree, _, a) = best.unwrap_or((0.0, 0.0, vec![vec![0.0; k]; n]));
        // W = Xᵀ A.
        let w: Vec<Vec<f64>> = (0..d)
            .map(|j| {
                (0..k)
                    .map(|c| (0..n).map(|i| xc[i][j] * a[i][c]).sum())
                    .collect()
            })
            .collect();
        (Self { mean, w, bias }, agree)
    }

    /// Log-softmax of the head's outputs for pooled state `x`.
    fn log_probs(&self, x: &[f32]) -> Vec<f32> {
        let k = self.bias.len();
        let mut z = self.bias.clone();
        for ((&v, m), row) in x.iter().zip(&self.mean).zip(&self.w) {
            let v = f64::from(v) - m;
            for c in 0..k {
                z[c] += v * row[c];
            }
        }
        let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + z.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        z.iter().map(|v| (v - lse) as f32).collect()
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `(K + λI)⁻¹` for a symmetric positive semi-definite `K`, by Cholesky; `None` if not
/// positive definite (λ too small for rounding).
#[allow(clippy::needless_range_loop)] // triangular index arithmetic reads clearer as indices
fn spd_inverse(k: &[Vec<f64>], lambda: f64) -> Option<Vec<Vec<f64>>> {
    let n = k.len();
    let mut l = vec![vec![0.0f64; n]; n];
    for i in 0..n {
        for j in 0..=i {
            let mut s = k[i][j] + if i == j { lambda } else { 0.0 };
            for p in 0..j {
                s -= l[i][p] * l[j][p];
            }
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[i][i] = s.sqrt();
            } else {
                l[i][j] = s / l[j][j];
            }
        }
    }
    // Invert L (lower triangular), then (K + λI)⁻¹ = L⁻ᵀ L⁻¹.
    let mut li = vec![vec![0.0f64; n]; n];
    for i in 0..n {
        li[i][i] = 1.0 / l[i][i];
        for j in 0..i {
            let s: f64 = (j..i).map(|p| l[i][p] * li[p][j]).sum();
            li[i][j] = -s / l[i][i];
        }
    }
    let mut inv = vec![vec![0.0f64; n]; n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (i..n).map(|p| li[p][i] * li[p][j]).sum();
            inv[i][j] = s;
            inv[j][i] = s;
        }
    }
    Some(inv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::needless_range_loop)]
    fn the_inverse_inverts() {
        let k = vec![
            vec![4.0, 1.0, 0.5],
            vec![1.0, 3.0, 0.2],
            vec![0.5, 0.2, 2.0],
        ];
        let inv = spd_inverse(&k, 0.5).unwrap();
        for i in 0..3 {
            for j in 0..3 {
                let v: f64 = (0..3)
                    .map(|p| (k[i][p] + if i == p { 0.5 } else { 0.0 }) * inv[p][j])
                    .sum();
                assert!(
                    (v - f64::from(u8::from(i == j))).abs() < 1e-12,
                    "{i} {j} {v}"
                );
            }
        }
        assert!(spd_inverse(&[vec![-1.0]], 0.5).is_none());
    }

    #[test]
    fn a_head_learns_a_direction_and_its_effect_transfers() {
        // Label 1 when the first coordinate is positive; the second is noise.
        let x: Vec<Vec<f32>> = (0..40)
            .map(|i| vec![if i % 2 == 0 { 1.0 } else { -1.0 }, (i % 7) as f32 * 0.1])
            .collect();
        let y: Vec<Vec<f32>> = x.iter().map(|r| vec![-2.0 * r[0], 2.0 * r[0]]).collect();
        let pred: Vec<usize> = x.iter().map(|r| usize::from(r[0] > 0.0)).collect();
        let (h, agree) = Head::fit(&x, &y, &pred);
        assert_eq!(agree, 1.0);
        let lp = h.log_probs(&[3.0, 0.0]);
        assert!(lp[1] > lp[0]);
        assert!((lp.iter().map(|v| v.exp()).sum::<f32>() - 1.0).abs() < 1e-5);
    }

    #[test]
    fn share_is_the_shift_the_reference_keeps() {
        let model = Effect {
            score: 1.0,
            detail: 2.0,
            target: Some(1),
            hits: 3,
            trials: 3,
        };
        let clean = vec![vec![-0.1, -2.3], vec![-0.2, -1.7], vec![-3.0, -0.05]];
        // The reference moves the rows not already at label 1 by 1.0 on average; the row
        // the model predicts as 1 does not count.
        let cand = vec![vec![-0.5, -1.0], vec![-0.5, -1.0], vec![-9.0, 0.0]];
        let s = classifier_share(&cand, &clean, &[0, 0, 1], 1, &model);
        assert!((s - 0.5).abs() < 1e-6, "{s}");
        // A reference that does nothing transfers nothing.
        assert_eq!(classifier_share(&clean, &clean, &[0, 0, 1], 1, &model), 0.0);
        assert_eq!(ratio(3.0, 1.0), 1.0);
        assert_eq!(ratio(1.0, 0.0), 0.0);
    }
}
