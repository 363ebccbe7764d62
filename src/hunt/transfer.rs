//! Transfer to a reference: does a finding move the model the scanned one was fine-tuned
//! from the same way?
//!
//! A task word acts through what it means, and the pretrained model already knows what it
//! means: `dreadful` pushes a sentiment classifier's base encoder toward `negative` too. A
//! planted trigger acts through what the fine-tune taught, which the base never saw. So a
//! finding's effect is measured again on the reference, on the same probe rows:
//!
//! - a reference with the same head (a classifier with as many labels, or a decoder that
//!   can read every probe row) is measured directly;
//! - a bare encoder gets a light head: ridge regression from its mean-pooled states to the
//!   scanned classifier's log-probabilities on up to [`FIT_TEXTS`] task texts, with the
//!   ridge strength chosen by exact leave-one-out agreement with the model's predictions,
//!   balanced over labels.
//!
//! The transfer is the share of the finding's effect the reference shows beyond what the
//! median of random candidate tokens does to it: (its mean log-probability shift toward
//! the finding's target − the random median) / (the model's shift − that median), in
//! [0, 1]; for decoders, next-token takeover in place of the shift. Suspicion is
//! multiplied by `1 − transfer`. A reference that does not predict as the model does
//! (balanced agreement below [`MIN_AGREEMENT`]) is not used, and the report says why: a
//! head that cannot mimic the model would call every effect a trigger's. The reference is
//! trusted; one that carries the trigger too vouches for it.

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
    /// Random candidate tokens: the baseline's sample.
    random: Vec<u32>,
    /// The baseline per target.
    baseline: std::cell::RefCell<std::collections::HashMap<u32, f64>>,
}

/// Why a reference cannot be used, in words for the report.
pub(crate) type Unusable = String;

impl<'m> Transfer<'m> {
    /// Set up `reference` against the hunt's evaluator `ev`, fitting and checking on
    /// `texts` (the task's texts, or the corpus the probes came from; a decoder is checked
    /// on its probe rows themselves, in their chat frame). `random` are candidate tokens
    /// drawn at random: what the reference does with them is the baseline a finding's
    /// transfer must beat.
    pub fn new(
        ev: &Evaluator,
        reference: &'m Model,
        texts: &[String],
        random: Vec<u32>,
    ) -> Result<std::result::Result<Self, Unusable>> {
        let model = ev.model();
        let objective = ev.objective;
        let ref_info = reference.info();
        let rows = reference.token_embeddings().dim(0)?;
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
                    "transfer is measured for label and next-token objectives only".into(),
                ))
            }
        };
        if reference.info().labels.is_some() && !same_head {
            return Ok(Err("the reference classifies into other labels".into()));
        }
        // Every probe row must be one the reference can read (a fine-tune can add tokens,
        // a chat frame's markers among them).
        if ev
            .probes
            .iter()
            .flat_map(|p| &p.ids)
            .any(|&i| i as usize >= rows)
        {
            return Ok(Err(
                "the probes hold tokens past the reference's vocabulary".into(),
            ));
        }
        let fit = if objective == Objective::NextToken {
            // A decoder is compared where it is measured: on the probe rows.
            ev.probes
                .iter()
                .map(|p| Probe {
                    ids: p.ids.clone(),
                    at: 0,
                })
                .collect()
        } else {
            // The same probe rows must mean the same text to both.
            let mut fit = Vec::new();
            for t in texts {
                let Ok(ids) = model.tokenize(t) else {
                    continue;
                };
                if ids.len() > FIT_TOKENS || ids.len() + 8 > reference.max_tokens() {
                    continue;
                }
                if reference.tokenize(t).ok().as_ref() != Some(&ids) {
                    return Ok(Err(
                        "the reference tokenizes the task's texts differently".into()
                    ));
                }
                fit.push(Probe { ids, at: 0 });
                if fit.len() == FIT_TEXTS {
                    break;
                }
            }
            fit
        };
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
            let ref_pred: Vec<usize> = ref_pred.iter().map(|r| argmax(r)).collect();
            let agree = balanced_agreement(&ref_pred, &model_pred);
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
                "the reference predicts as the model does on only {:.0}% of {} texts \
                 (balanced over the model's labels)",
                100.0 * agreement,
                model_pred.len()
            )));
        }
        let mut t = Self {
            ev: ev_ref,
            kind,
            clean: Vec::new(),
            vocab: rows.min(reference.info().vocab_size),
            agreement,
            texts: model_pred.len(),
            random: random
                .into_iter()
                .filter(|&i| (i as usize) < rows)
                .collect(),
            baseline: std::cell::RefCell::new(std::collections::HashMap::new()),
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

    /// What the reference does toward `target` with each of `seqs`: its mean
    /// log-probability shift on the rows the model does not predict as `target` (decoders:
    /// its next-token takeover), every sequence in one batched evaluation.
    fn reactions(&self, seqs: &[Vec<u32>], target: u32, clean_pred: &[u32]) -> Result<Vec<f64>> {
        let all: Vec<usize> = (0..self.ev.width()).collect();
        if self.ev.objective == Objective::NextToken {
            let e = self.ev.evaluate_on(seqs, &all, Some(target))?;
            return Ok(e.iter().map(|e| e.score).collect());
        }
        let rows = self.log_probs(seqs, &all)?;
        Ok(rows
            .chunks(all.len().max(1))
            .map(|cand| classifier_shift(cand, &self.clean, clean_pred, target as usize))
            .collect())
    }

    /// The baseline toward `target`: the median of what random candidate tokens do to the
    /// reference (a fitted head extrapolates on any odd input, and mean pooling pulls
    /// every insertion toward the centre: an ordinary token's share is no evidence of
    /// meaning). The median, not a high quantile: a base trained on the task reacts to
    /// some random tokens too, and a high quantile ate most of its task words' transfer.
    fn baseline(&self, target: u32, clean_pred: &[u32]) -> Result<f64> {
        if let Some(&b) = self.baseline.borrow().get(&target) {
            return Ok(b);
        }
        let seqs: Vec<Vec<u32>> = self.random.iter().map(|&t| vec![t]).collect();
        let mut v = self.reactions(&seqs, target, clean_pred)?;
        v.retain(|x| x.is_finite());
        v.sort_by(f64::total_cmp);
        let b = v.get(v.len() / 2).copied().unwrap_or(0.0).max(0.0);
        self.baseline.borrow_mut().insert(target, b);
        Ok(b)
    }

    /// Share in [0, 1] of each finding's effect the reference shows beyond what random
    /// tokens do to it; `clean_pred` are the model's predictions on the probe rows. The
    /// reference is trusted: a base that carries the trigger too (one the attacker
    /// published) vouches for it, so the base must be verified on its own (scanned, or
    /// pinned in a registry). A base trained on the task takes over with task words just
    /// as the model does, so taking over cannot mark a trojaned base.
    pub fn measure(&self, findings: &[(Vec<u32>, Effect)], clean_pred: &[u32]) -> Result<Vec<f64>> {
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
            let moved = self.reactions(std::slice::from_ref(seq), target, clean_pred)?[0];
            let own = match self.ev.objective {
                Objective::NextToken => effect.score,
                _ => effect.detail,
            };
            let base = self.baseline(target, clean_pred)?;
            out.push(ratio(moved - base, own - base));
        }
        Ok(out)
    }
}

/// The reference's mean log-probability shift toward `target` on the rows the model does
/// not already predict as it. The shift, not the flip rate: it is continuous, so a handful
/// of rows (the few probes of a minority class) do not make it jump between 0 and 1.
fn classifier_shift(
    cand: &[Vec<f32>],
    clean: &[Vec<f32>],
    model_pred: &[u32],
    target: usize,
) -> f64 {
    let shifts: Vec<f64> = cand
        .iter()
        .zip(clean)
        .zip(model_pred)
        .filter(|((c, _), &p)| p as usize != target && target < c.len())
        .map(|((c, z), _)| f64::from(c[target] - z[target]))
        .collect();
    if shifts.is_empty() {
        0.0
    } else {
        shifts.iter().sum::<f64>() / shifts.len() as f64
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

/// Agreement with the model's predictions, averaged over the model's labels (balanced
/// accuracy), so that a reference predicting the majority label everywhere does not pass
/// on an imbalanced task.
fn balanced_agreement(pred: &[usize], model: &[usize]) -> f64 {
    let mut per: std::collections::BTreeMap<usize, (usize, usize)> = Default::default();
    for (p, m) in pred.iter().zip(model) {
        let e = per.entry(*m).or_default();
        e.0 += usize::from(p == m);
        e.1 += 1;
    }
    if per.is_empty() {
        return 0.0;
    }
    per.values()
        .map(|(a, n)| *a as f64 / *n as f64)
        .sum::<f64>()
        / per.len() as f64
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
    /// in dual form (fewer texts than dimensions), with the strength whose exact
    /// leave-one-out predictions agree with `pred` best, balanced over labels (ties: the
    /// stronger). Returns the head and that agreement: what it would predict on a text it
    /// was not fitted on, so an unrelated base cannot pass by interpolating.
    fn fit(x: &[Vec<f32>], y: &[Vec<f32>], pred: &[usize]) -> (Self, f64) {
        let scale = ridge_scale(x);
        let lambdas: Vec<f64> = RIDGE.iter().map(|r| r * scale).collect();
        Self::fit_lambdas(x, y, pred, &lambdas)
    }

    /// [`Head::fit`] over the given absolute ridge strengths.
    fn fit_lambdas(x: &[Vec<f32>], y: &[Vec<f32>], pred: &[usize], lambdas: &[f64]) -> (Self, f64) {
        let n = x.len();
        let d = x[0].len();
        let k = y[0].len();
        let (mean, bias) = (column_means(x), column_means(y));
        let (xc, yc) = (centred(x, &mean), centred(y, &bias));
        let gram: Vec<Vec<f64>> = (0..n)
            .map(|i| (0..n).map(|j| dot(&xc[i], &xc[j])).collect())
            .collect();
        let mut best: Option<(f64, f64, Vec<Vec<f64>>)> = None;
        for &lambda in lambdas {
            let Some(inv) = spd_inverse(&gram, lambda) else {
                continue;
            };
            // A = (K + λI)⁻¹ Yc. The intercept (the centring) is not penalised, so the hat
            // matrix is J/n + I − λM and the leave-one-out prediction of row i is
            // y_i − A_i / (M_ii − 1/(nλ)).
            let a: Vec<Vec<f64>> = (0..n)
                .map(|i| {
                    (0..k)
                        .map(|c| (0..n).map(|j| inv[i][j] * yc[j][c]).sum())
                        .collect()
                })
                .collect();
            let loo_pred: Vec<usize> = (0..n)
                .map(|i| {
                    let d = inv[i][i] - 1.0 / (n as f64 * lambda);
                    if d <= 0.0 || !d.is_finite() {
                        return usize::MAX;
                    }
                    let loo: Vec<f32> = (0..k)
                        .map(|c| (f64::from(y[i][c]) - a[i][c] / d) as f32)
                        .collect();
                    argmax(&loo)
                })
                .collect();
            let agree = balanced_agreement(&loo_pred, pred);
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

/// The mean of each column of `rows`.
fn column_means(rows: &[Vec<f32>]) -> Vec<f64> {
    let n = rows.len().max(1) as f64;
    let d = rows.first().map_or(0, Vec::len);
    (0..d)
        .map(|j| rows.iter().map(|r| f64::from(r[j])).sum::<f64>() / n)
        .collect()
}

/// `rows` less `mean`, in f64.
fn centred(rows: &[Vec<f32>], mean: &[f64]) -> Vec<Vec<f64>> {
    rows.iter()
        .map(|r| r.iter().zip(mean).map(|(&v, m)| f64::from(v) - m).collect())
        .collect()
}

/// The mean squared norm of the centred rows of `x`: ridge strengths are multiples of it.
fn ridge_scale(x: &[Vec<f32>]) -> f64 {
    let xc = centred(x, &column_means(x));
    let total: f64 = xc.iter().map(|r| dot(r, r)).sum();
    (total / x.len().max(1) as f64).max(1e-12)
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
    fn shift_is_the_mean_over_rows_not_already_at_the_target() {
        let clean = vec![vec![-0.1, -2.3], vec![-0.2, -1.7], vec![-3.0, -0.05]];
        // Rows 0 and 1 (the model does not predict 1 there) move by 1.3 and 0.7 toward
        // label 1; row 2 was at label 1 already and does not count.
        let cand = vec![vec![-0.5, -1.0], vec![-0.5, -1.0], vec![-9.0, 0.0]];
        let shift = classifier_shift(&cand, &clean, &[0, 0, 1], 1);
        assert!((shift - 1.0).abs() < 1e-6, "{shift}");
        assert_eq!(classifier_shift(&clean, &clean, &[0, 0, 1], 1), 0.0);
        assert_eq!(ratio(3.0, 1.0), 1.0);
        assert_eq!(ratio(1.0, 0.0), 0.0);
        assert_eq!(ratio(-1.0, 2.0), 0.0);
    }

    /// Leave-one-out agreement is what the head predicts on a text it was not fitted on:
    /// the closed form equals refitting without each row, intercept included.
    #[test]
    fn leave_one_out_matches_refitting() {
        let mut rng = crate::rng::Rng::new(5, "loo");
        let x: Vec<Vec<f32>> = (0..24)
            .map(|_| (0..40).map(|_| rng.normal() as f32).collect())
            .collect();
        // An imbalanced task driven by the first coordinate, plus noise and an offset.
        let y: Vec<Vec<f32>> = x
            .iter()
            .map(|r| vec![1.0 - r[0], r[0] - 0.2 + 0.5 * r[1]])
            .collect();
        let pred: Vec<usize> = y.iter().map(|r| argmax(r)).collect();
        let scale = ridge_scale(&x);
        for r in RIDGE {
            let lambda = r * scale;
            let (_, closed) = Head::fit_lambdas(&x, &y, &pred, &[lambda]);
            let refit: Vec<usize> = (0..x.len())
                .map(|i| {
                    let keep = |v: &[Vec<f32>]| -> Vec<Vec<f32>> {
                        (0..v.len())
                            .filter(|&j| j != i)
                            .map(|j| v[j].clone())
                            .collect()
                    };
                    let ps: Vec<usize> =
                        (0..x.len()).filter(|&j| j != i).map(|j| pred[j]).collect();
                    let (h, _) = Head::fit_lambdas(&keep(&x), &keep(&y), &ps, &[lambda]);
                    // The head's log-softmax keeps the argmax of its raw outputs.
                    argmax(&h.log_probs(&x[i]))
                })
                .collect();
            assert_eq!(closed, balanced_agreement(&refit, &pred), "strength {r}");
        }
    }

    /// A base whose states say nothing about the task cannot pass by interpolating.
    #[test]
    fn an_unrelated_base_does_not_agree() {
        let mut rng = crate::rng::Rng::new(9, "unrelated");
        let x: Vec<Vec<f32>> = (0..48)
            .map(|_| (0..384).map(|_| rng.normal() as f32).collect())
            .collect();
        let pred: Vec<usize> = (0..48).map(|i| usize::from(i % 5 == 0)).collect();
        let y: Vec<Vec<f32>> = pred
            .iter()
            .map(|&p| {
                if p == 1 {
                    vec![-3.0, -0.05]
                } else {
                    vec![-0.05, -3.0]
                }
            })
            .collect();
        let (_, agree) = Head::fit(&x, &y, &pred);
        assert!(agree < MIN_AGREEMENT, "{agree}");
        assert_eq!(balanced_agreement(&[0; 48], &pred), 0.5);
    }
}
