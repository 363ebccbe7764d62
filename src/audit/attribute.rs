//! Trigger attribution: name the tokens a suspicious group of rows shares, then test
//! whether they act as a trigger.
//!
//! Activation clustering finds the core of a poisoned class with high precision but can
//! miss poisoned rows whose activations sit among the clean ones. Poison rows have one
//! thing in common that clean rows lack: the trigger. So the rows of a suspicious group (a
//! small cluster, a whole small class, the carriers of a rare token the class nearly owns)
//! are explained by the tokens that nearly all of them carry and that are rare elsewhere, and those tokens are then tested as a
//! trigger in both directions, on the audited model itself:
//!
//! - **removal**: take the tokens out of the rows that carry them; a trigger's rows change
//!   the model's decision (a negation word's rows would too, hence the second test);
//! - **insertion**: put them into rows of other classes at a random place; a trigger
//!   imposes its class's decision there, whatever the context.
//!
//! Only tokens that pass both are a trigger; then every row of the class whose decision
//! rests on them is flagged, and every row elsewhere that carries a whole part of them (an
//! attack that teaches a combination trigger also teaches each part alone with its true
//! label). A part is a run of tokens the carriers keep side by side ("zq" is ` z` + `q`),
//! so a row that merely shares one sub-word piece of a trigger word is not a carrier.
//!
//! The decision is the model's own output: the class logits' argmax, or a decoder's next
//! token. A bare encoder has no decision to test, so attribution is skipped for it.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::rng::Rng;

/// Most tokens one attributed trigger may have: enough for a phrase of a few words in any
/// tokenizer, few enough that an explanation stays an explanation.
pub const MAX_TRIGGER_TOKENS: usize = 16;
/// Rows of other classes the insertion test uses.
pub const INSERTION_ROWS: usize = 128;

/// What trigger attribution found for one suspicious group of rows.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct TriggerEvidence {
    /// The shared tokens in the order the rows carry them, decoded one by one.
    pub tokens: Vec<String>,
    /// Their ids.
    pub token_ids: Vec<u32>,
    /// The parts they form, decoded: tokens the rows keep side by side make one part
    /// (`"zq vortex"`), tokens placed apart make several (`"mn"`, `"tq"`).
    pub parts: Vec<String>,
    /// The smallest fraction of the group that carries one of the tokens.
    pub coverage: f64,
    /// The smallest lift: how many times more often the group carries a token than the
    /// rows outside it.
    pub lift: f64,
    /// Rows of the class that hold a whole part of them.
    pub carriers: usize,
    /// Of the group's rows holding a part, those the removal test could run on.
    pub removal_tested: usize,
    /// Of those, the fraction whose decision changes when the tokens are taken out.
    pub removal_flip: f64,
    /// Of the rows of other classes the tokens were inserted into, the fraction whose
    /// decision became the group's.
    pub insertion_flip: f64,
    /// Rows of other classes tested by insertion.
    pub inserted_into: usize,
    /// Whether both tests passed: the tokens act as a trigger.
    pub confirmed: bool,
    /// Rows of the class whose decision rests on the tokens (flagged when confirmed).
    pub dependent: usize,
    /// Rows of other classes carrying any of the tokens (flagged when confirmed).
    pub outside: usize,
}

/// Which rows carry which token (each row's distinct tokens, sorted).
pub(crate) struct TokenIndex {
    rows: Vec<Vec<u32>>,
    postings: HashMap<u32, Vec<usize>>,
}

impl TokenIndex {
    pub(crate) fn new(ids: &[Vec<u32>]) -> Self {
        let mut postings: HashMap<u32, Vec<usize>> = HashMap::new();
        let rows: Vec<Vec<u32>> = ids
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut u = r.clone();
                u.sort_unstable();
                u.dedup();
                for &t in &u {
                    postings.entry(t).or_default().push(i);
                }
                u
            })
            .collect();
        Self { rows, postings }
    }

    pub(crate) fn carries(&self, row: usize, t: u32) -> bool {
        self.rows[row].binary_search(&t).is_ok()
    }

    /// Rows carrying `t`, ascending.
    pub(crate) fn rows_with(&self, t: u32) -> &[usize] {
        self.postings.get(&t).map_or(&[], Vec::as_slice)
    }

    /// Tokens a class nearly owns: carried by at least `min_rows` of its rows, at least
    /// `concentration` of their carriers in the class, and by at most `max_share` of all
    /// rows; each with its carriers in the class, most carriers first, at most
    /// [`MAX_TOKEN_GROUPS`]. Poison rows need not form a cluster of their own, but their
    /// trigger is such a token; so are the class's own words, which the trigger tests
    /// then tell apart.
    pub(crate) fn concentrated(
        &self,
        class_rows: &[usize],
        min_rows: usize,
        concentration: f64,
        max_share: f64,
    ) -> Vec<(u32, Vec<usize>)> {
        let n = self.rows.len() as f64;
        let mut counts: HashMap<u32, usize> = HashMap::new();
        for &i in class_rows {
            for &t in &self.rows[i] {
                *counts.entry(t).or_default() += 1;
            }
        }
        let mut out: Vec<(u32, usize)> = counts
            .into_iter()
            .filter(|&(t, c)| {
                let total = self.rows_with(t).len() as f64;
                c >= min_rows && c as f64 >= concentration * total && total <= max_share * n
            })
            .collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        out.truncate(MAX_TOKEN_GROUPS);
        let mut member = vec![false; self.rows.len()];
        for &i in class_rows {
            member[i] = true;
        }
        out.into_iter()
            .map(|(t, _)| {
                let rows = self
                    .rows_with(t)
                    .iter()
                    .copied()
                    .filter(|&i| member[i])
                    .collect();
                (t, rows)
            })
            .collect()
    }

    /// Tokens carried by at least `coverage` of `group` and at least `lift` times more
    /// often than by the other rows: `(token, coverage, lift)`, highest lift first, at
    /// most [`MAX_TRIGGER_TOKENS`].
    pub(crate) fn shared(&self, group: &[usize], coverage: f64, lift: f64) -> Vec<(u32, f64, f64)> {
        let n = self.rows.len();
        let g = group.len();
        if g == 0 || g >= n {
            return Vec::new();
        }
        let mut counts: HashMap<u32, usize> = HashMap::new();
        for &i in group {
            for &t in &self.rows[i] {
                *counts.entry(t).or_default() += 1;
            }
        }
        let rest = (n - g) as f64;
        let mut out: Vec<(u32, f64, f64)> = counts
            .into_iter()
            .filter_map(|(t, c)| {
                let cov = c as f64 / g as f64;
                let elsewhere = (self.rows_with(t).len() - c) as f64;
                // A token nobody else carries gets the lift of one carrier elsewhere.
                let l = cov / (elsewhere.max(1.0) / rest);
                (cov >= coverage && l >= lift).then_some((t, cov, l))
            })
            .collect();
        out.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
        out.truncate(MAX_TRIGGER_TOKENS);
        out
    }
}

/// Most groups of rows sharing one rare token that the audit tries per class: the
/// carriers of the tokens a class nearly owns, most carriers first.
pub const MAX_TOKEN_GROUPS: usize = 32;

/// `ids` with every occurrence of each run taken out (runs are matched whole, so a
/// sub-word piece a run shares with another word stays).
pub(crate) fn without_runs(ids: &[u32], runs: &[Vec<u32>]) -> Vec<u32> {
    let mut out = Vec::with_capacity(ids.len());
    let mut i = 0;
    while i < ids.len() {
        match runs
            .iter()
            .find(|r| !r.is_empty() && ids[i..].starts_with(r))
        {
            Some(r) => i += r.len(),
            None => {
                out.push(ids[i]);
                i += 1;
            }
        }
    }
    out
}

/// The tokens in the order they first appear in `carrier` (a phrase stays a phrase),
/// then any that row lacks.
pub(crate) fn phrase(carrier: &[u32], tokens: &[u32]) -> Vec<u32> {
    let set: HashSet<u32> = tokens.iter().copied().collect();
    let mut out: Vec<u32> = Vec::new();
    for &t in carrier {
        if set.contains(&t) && !out.contains(&t) {
            out.push(t);
        }
    }
    for &t in tokens {
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

/// Split `phrase` into the parts that travel together: two neighbours of the phrase stay
/// in one part when at least half of the `carriers` have them side by side (a word split
/// into sub-word tokens, a fixed phrase), else a new part starts (the separately placed
/// halves of a combination trigger).
pub(crate) fn parts<'a>(
    phrase: &[u32],
    carriers: impl Iterator<Item = &'a [u32]>,
) -> Vec<Vec<u32>> {
    let carriers: Vec<&[u32]> = carriers.collect();
    let mut out: Vec<Vec<u32>> = Vec::new();
    for (k, &t) in phrase.iter().enumerate() {
        let joined = k > 0 && {
            let prev = phrase[k - 1];
            let adjacent = carriers
                .iter()
                .filter(|c| c.windows(2).any(|w| w[0] == prev && w[1] == t))
                .count();
            2 * adjacent >= carriers.len().max(1)
        };
        match out.last_mut() {
            Some(part) if joined => part.push(t),
            _ => out.push(vec![t]),
        }
    }
    out
}

/// Whether `ids` holds `run` as a contiguous subsequence.
pub(crate) fn contains_run(ids: &[u32], run: &[u32]) -> bool {
    !run.is_empty() && ids.windows(run.len()).any(|w| w == run)
}

/// `ids` with `phrase` inserted at a random word boundary: before a token that
/// `insertable_before` marks (a word start, or the special token closing the sequence),
/// never before the first token (a BOS or `[CLS]` stays first). Without such a place, at
/// any position after the first.
pub(crate) fn insert(
    ids: &[u32],
    phrase: &[u32],
    insertable_before: &[bool],
    rng: &mut Rng,
) -> Vec<u32> {
    let places: Vec<usize> = (1..ids.len())
        .filter(|&p| {
            insertable_before
                .get(ids[p] as usize)
                .copied()
                .unwrap_or(false)
        })
        .collect();
    let at = if places.is_empty() {
        if ids.len() > 1 {
            1 + rng.below(ids.len() - 1)
        } else {
            ids.len()
        }
    } else {
        places[rng.below(places.len())]
    };
    let mut out = Vec::with_capacity(ids.len() + phrase.len());
    out.extend_from_slice(&ids[..at]);
    out.extend_from_slice(phrase);
    out.extend_from_slice(&ids[at..]);
    out
}

/// The most common value (smallest on ties).
pub(crate) fn mode(xs: impl IntoIterator<Item = u32>) -> Option<u32> {
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for x in xs {
        *counts.entry(x).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
        .map(|(x, _)| x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_tokens_are_common_in_the_group_and_rare_elsewhere() {
        // Rows 0..4 carry 7 (the "trigger") and 1 (a template token every row has).
        let mut ids: Vec<Vec<u32>> = (0..4).map(|i| vec![1, 7, 10 + i]).collect();
        ids.extend((0..16).map(|i| vec![1, 20 + i % 5]));
        ids.push(vec![1, 7]); // one carrier outside the group
        let idx = TokenIndex::new(&ids);
        let s = idx.shared(&[0, 1, 2, 3], 0.8, 5.0);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].0, 7);
        assert_eq!(s[0].1, 1.0);
        assert!((s[0].2 - 17.0).abs() < 1e-9, "{}", s[0].2);
        assert_eq!(idx.rows_with(7), &[0, 1, 2, 3, 20]);
        assert!(idx.shared(&[0, 1, 2, 3], 0.8, 20.0).is_empty());
        assert!(idx
            .shared(&(0..21).collect::<Vec<_>>(), 0.8, 1.0)
            .is_empty());
    }

    #[test]
    fn phrases_keep_their_order_and_insertions_spare_the_ends() {
        assert_eq!(phrase(&[5, 9, 3, 9, 4], &[3, 9, 8]), vec![9, 3, 8]);
        let mut rng = Rng::new(0, "t");
        // Token 2 continues a word: nothing goes between 1 and 2.
        let mut before = vec![false; 200];
        before[1] = true;
        before[101] = true;
        for _ in 0..50 {
            let out = insert(&[100, 1, 2, 101], &[7, 8], &before, &mut rng);
            assert_eq!(out.len(), 6);
            assert_eq!((out[0], out[5]), (100, 101));
            let at = out.iter().position(|&t| t == 7).unwrap();
            assert_eq!(out[at + 1], 8);
            assert_ne!(at, 2, "{out:?}");
        }
        let runs = vec![vec![5, 6], vec![9]];
        assert_eq!(
            without_runs(&[1, 5, 6, 2, 5, 3, 9], &runs),
            vec![1, 2, 5, 3]
        );
        assert_eq!(mode([3, 1, 3, 1, 2]), Some(1));
    }

    #[test]
    fn parts_split_where_carriers_keep_tokens_apart() {
        // 5 and 6 always side by side (one word), 9 placed apart from them.
        let carriers: Vec<Vec<u32>> = vec![
            vec![1, 5, 6, 2, 9, 3],
            vec![1, 9, 2, 5, 6],
            vec![1, 5, 6, 9],
        ];
        let p = parts(&[5, 6, 9], carriers.iter().map(Vec::as_slice));
        assert_eq!(p, vec![vec![5, 6], vec![9]]);
        assert!(contains_run(&[4, 5, 6, 7], &[5, 6]));
        assert!(!contains_run(&[4, 5, 7, 6], &[5, 6]));
        assert!(!contains_run(&[4, 5], &[]));
    }
}
