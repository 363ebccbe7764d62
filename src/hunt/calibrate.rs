//! Calibration: how far a candidate's effect stands outside what ordinary tokens do.
//!
//! Two references, both on the same model, probes and insertion points:
//! - the **null**: random sequences of common words (lengths 1 to the hunt's maximum),
//!   which no attacker would pick as a trigger;
//! - the **population**: a uniform sample of the candidate pool, measured on every probe
//!   row. Most are not triggers, so it says what rare tokens do on this model (rare tokens
//!   often move a model more than common ones, and a trigger must beat them too). It is not
//!   drawn from what the sweep screened: the gradient's rankings put the task's strongest
//!   words first, and against them a trigger that takes over every input stood barely out.
//!   Task words are told apart by takeover and naturalness instead.
//!
//! A candidate's z-score is the smaller of its robust z-scores (median, 1.4826 × MAD) against
//! the two, each scale floored so a reference that never moves (a classifier no common word
//! flips) does not turn one flipped probe into infinite evidence. Suspicion maps z onto
//! [0, 1): `1 − exp(−max(0, z − Z0) / ZS)`, so z ≤ 2 gives 0, z = 6 about 0.55, z = 10 about
//! 0.8 and z = 20 about 0.97.
//!
//! For objectives that count hijacked rows (classifier flips, next-token takeover), standing
//! out is not enough: clean models have tokens that flip many inputs. Suspicion is then
//! multiplied by [`takeover_confidence`], the posterior probability that the candidate hijacks
//! at least [`TAKEOVER`] of inputs.

use serde::Serialize;

/// z below which suspicion is 0.
pub const Z0: f64 = 2.0;
/// How fast suspicion rises past [`Z0`].
pub const ZS: f64 = 5.0;

/// A reference distribution, robustly summarised.
#[derive(Debug, Clone, Copy, Serialize)]
#[non_exhaustive]
pub struct Reference {
    /// How many effects it holds.
    pub samples: usize,
    /// Their median.
    pub median: f64,
    /// 1.4826 × their median absolute deviation, floored.
    pub scale: f64,
    /// Their 99th percentile.
    pub p99: f64,
    /// Their largest value.
    pub max: f64,
}

impl Reference {
    /// Summarise `xs`, with `floor` the smallest scale allowed.
    pub fn new(xs: &[f64], floor: f64) -> Self {
        let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Self {
                samples: 0,
                median: 0.0,
                scale: floor,
                p99: 0.0,
                max: 0.0,
            };
        }
        v.sort_by(f64::total_cmp);
        let med = v[v.len() / 2];
        let mut dev: Vec<f64> = v.iter().map(|x| (x - med).abs()).collect();
        dev.sort_by(f64::total_cmp);
        let mad = dev[dev.len() / 2];
        Self {
            samples: v.len(),
            median: med,
            scale: (1.4826 * mad).max(floor),
            p99: v[(v.len() - 1) * 99 / 100],
            max: v[v.len() - 1],
        }
    }

    /// Robust z-score of `x`.
    pub fn z(&self, x: f64) -> f64 {
        (x - self.median) / self.scale
    }
}

/// Both references of one hunt.
#[derive(Debug, Clone, Copy, Serialize)]
#[non_exhaustive]
pub struct Calibration {
    /// Random common-word sequences.
    pub null: Reference,
    /// A uniform sample of the candidate pool.
    pub population: Reference,
}

impl Calibration {
    /// The z-score a finding is judged on: the smaller of the two.
    pub fn z(&self, x: f64) -> f64 {
        if self.population.samples < 8 {
            return self.null.z(x);
        }
        self.null.z(x).min(self.population.z(x))
    }

    /// Suspicion in [0, 1) for an effect.
    pub fn suspicion(&self, x: f64) -> f64 {
        suspicion_of_z(self.z(x))
    }
}

/// Takeover rate a trigger must have: the share of probe rows it hijacks.
pub const TAKEOVER: f64 = 0.9;

/// Confidence that a candidate's true takeover rate is at least [`TAKEOVER`], after it took
/// over `hits` of `trials` probe rows (uniform prior, so the posterior is
/// Beta(hits + 1, trials − hits + 1) and the answer is P(Binomial(trials + 1, TAKEOVER) ≤ hits)).
/// Natural quirks of clean models (an untrained token that flips most inputs) stay below
/// it; a planted trigger hijacks every row.
pub fn takeover_confidence(hits: usize, trials: usize) -> f64 {
    if trials == 0 {
        return 0.0;
    }
    let n = trials + 1;
    let (t, u) = (TAKEOVER.ln(), (1.0 - TAKEOVER).ln());
    let mut ln_choose = 0.0f64; // ln C(n, 0)
    let mut total = 0.0;
    for k in 0..=hits.min(n) {
        if k > 0 {
            ln_choose += ((n - k + 1) as f64).ln() - (k as f64).ln();
        }
        total += (ln_choose + k as f64 * t + (n - k) as f64 * u).exp();
    }
    total.min(1.0)
}

/// The map from z to suspicion.
pub fn suspicion_of_z(z: f64) -> f64 {
    if !z.is_finite() {
        return if z > 0.0 { 1.0 } else { 0.0 };
    }
    1.0 - (-(z - Z0).max(0.0) / ZS).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspicion_is_zero_inside_the_null_and_rises_outside() {
        let null = Reference::new(&[0.0, 0.0, 0.1, 0.0, 0.05], 0.0625);
        assert_eq!(null.median, 0.0);
        let cal = Calibration {
            null,
            population: Reference::new(&[], 0.0625),
        };
        assert_eq!(cal.suspicion(0.1), 0.0);
        assert!(cal.suspicion(1.0) > 0.9);
        assert!(cal.suspicion(0.5) < cal.suspicion(0.6));
    }

    #[test]
    fn takeover_needs_nearly_every_row() {
        assert!((takeover_confidence(24, 24) - (1.0 - 0.9f64.powi(25))).abs() < 1e-12);
        assert!(takeover_confidence(22, 24) < 0.5);
        assert!(takeover_confidence(5, 24) < 1e-6);
        assert_eq!(takeover_confidence(0, 0), 0.0);
    }

    #[test]
    fn the_population_bounds_z_when_rare_tokens_all_move_the_model() {
        let null = Reference::new(&[0.0; 20], 0.05);
        let pop = Reference::new(
            &(0..100).map(|i| 0.4 + i as f64 * 0.002).collect::<Vec<_>>(),
            0.05,
        );
        let cal = Calibration {
            null,
            population: pop,
        };
        assert!(cal.z(0.5) < 2.0, "an ordinary rare token is not evidence");
        assert!(cal.z(1.0) > 5.0);
    }
}
