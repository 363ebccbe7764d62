//! Fuzz mode: mutate token sequences, keep the ones that fire neurons nothing before fired.
//!
//! Coverage is per (layer, neuron): a neuron fires when its mean-pooled activation exceeds
//! the clean probes' mean + 2 std. A mutant joins the corpus when it fires a neuron no
//! corpus entry has fired, or beats the corpus's best effect. The corpus is a JSONL file
//! (`{"token_ids": [...], "effect": ...}` per line) written when the run ends; a later run
//! given the same file starts from it.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::objective::{Effect, Evaluator};
use super::vocab::Vocab;
use super::Clock;
use crate::progress::Progress;
use crate::rng::Rng;
use crate::{Error, Result};

/// Longest corpus line read back (bytes) and most entries.
const MAX_LINE: usize = 4096;
const MAX_ENTRIES: usize = 100_000;

/// Options of fuzz mode.
#[derive(Debug, Clone)]
pub struct FuzzParams {
    /// Corpus file to resume from and save to.
    pub corpus: Option<PathBuf>,
    /// Stop after this many mutants (otherwise when the budget runs out).
    pub iterations: Option<u64>,
    /// Mutants per forward batch round.
    pub batch: usize,
}

impl Default for FuzzParams {
    fn default() -> Self {
        Self {
            corpus: None,
            iterations: None,
            batch: 64,
        }
    }
}

impl FuzzParams {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.batch == 0 || self.iterations == Some(0) {
            return Err(Error::InvalidArgument(
                "fuzzing needs a batch and iteration count of at least 1".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct Entry {
    token_ids: Vec<u32>,
    effect: f64,
}

pub(crate) struct Outcome {
    pub found: Vec<(Vec<u32>, Effect)>,
    pub notes: Vec<String>,
}

/// Share of the budget fuzzing may use up to.
const SHARE: f64 = 0.95;

#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    ev: &Evaluator,
    vocab: &Vocab,
    p: &FuzzParams,
    max_len: usize,
    seeds: &[Vec<u32>],
    clock: &Clock,
    rng: &mut Rng,
    progress: &dyn Progress,
) -> Result<Outcome> {
    let cov = ev.coverage()?;
    let mut covered = vec![0u64; cov.bits().div_ceil(64)];
    let pool = vocab.by_rarity();
    let any: Vec<u32> = (0..vocab.len() as u32)
        .filter(|&i| vocab.is_extension(i))
        .collect();
    if pool.is_empty() {
        return Err(Error::InvalidArgument(
            "no candidate tokens to fuzz with".into(),
        ));
    }
    let mut notes = Vec::new();
    let mut start: Vec<Vec<u32>> = Vec::new();
    if let Some(path) = p.corpus.as_deref().filter(|p| p.exists()) {
        let loaded = load(path, vocab, max_len)?;
        notes.push(format!(
            "fuzz: resumed from {} corpus entries",
            loaded.len()
        ));
        start.extend(loaded);
    }
    start.extend(seeds.iter().cloned());
    for _ in 0..8 {
        start.push(vec![*rng.pick(&pool)]);
    }
    let mut corpus: Vec<(Vec<u32>, f64)> = Vec::new();
    let mut found = Vec::new();
    let mut best = f64::NEG_INFINITY;
    let mut admit = |seqs: Vec<Vec<u32>>,
                     effects: Vec<Effect>,
                     sets: Vec<Vec<u64>>,
                     corpus: &mut Vec<(Vec<u32>, f64)>,
                     found: &mut Vec<(Vec<u32>, Effect)>| {
        for ((s, e), set) in seqs.into_iter().zip(effects).zip(sets) {
            let new = set.iter().zip(covered.iter()).any(|(a, c)| a & !c != 0);
            if new || e.score > best {
                for (c, a) in covered.iter_mut().zip(&set) {
                    *c |= a;
                }
                best = best.max(e.score);
                if corpus.len() < MAX_ENTRIES {
                    corpus.push((s.clone(), e.score));
                }
            }
            found.push((s, e));
        }
    };
    let (eff, sets) = ev.evaluate_with(&start, None, Some(&cov))?;
    admit(start, eff, sets, &mut corpus, &mut found);

    progress.begin("fuzz", p.iterations);
    let mut done = 0u64;
    while !clock.past(SHARE) && p.iterations.is_none_or(|n| done < n) {
        let n = p
            .iterations
            .map_or(p.batch, |cap| p.batch.min((cap - done) as usize));
        let mutants: Vec<Vec<u32>> = (0..n)
            .map(|_| mutate(rng, &corpus, &pool, &any, max_len))
            .collect();
        let (eff, sets) = ev.evaluate_with(&mutants, None, Some(&cov))?;
        admit(mutants, eff, sets, &mut corpus, &mut found);
        done += n as u64;
        progress.advance(n as u64);
    }
    progress.finish();
    let fired = covered.iter().map(|w| w.count_ones()).sum::<u32>();
    notes.push(format!(
        "fuzz: {done} mutants, corpus of {}, {fired} of {} neurons covered",
        corpus.len(),
        cov.bits()
    ));
    if let Some(path) = &p.corpus {
        save(path, &corpus)?;
    }
    Ok(Outcome { found, notes })
}

/// One mutation of a corpus entry: replace, insert, delete, splice or swap.
fn mutate(
    rng: &mut Rng,
    corpus: &[(Vec<u32>, f64)],
    pool: &[u32],
    any: &[u32],
    max_len: usize,
) -> Vec<u32> {
    // Parents: half the time one of the best quarter, else any entry.
    let parent = if rng.chance(0.5) && corpus.len() >= 4 {
        let mut idx: Vec<usize> = (0..corpus.len()).collect();
        idx.sort_by(|&a, &b| corpus[b].1.total_cmp(&corpus[a].1));
        &corpus[idx[rng.below(corpus.len() / 4)]].0
    } else {
        &corpus[rng.below(corpus.len())].0
    };
    let mut s = parent.clone();
    // The first token must start a word; later ones may continue it.
    let token = |rng: &mut Rng, at: usize| {
        if at > 0 && rng.chance(0.2) {
            *rng.pick(any)
        } else {
            *rng.pick(pool)
        }
    };
    match rng.below(5) {
        0 => {
            let at = rng.below(s.len());
            s[at] = token(rng, at);
        }
        1 if s.len() < max_len => {
            let at = rng.below(s.len() + 1);
            let t = token(rng, at);
            s.insert(at, t);
            if at == 0 && s.len() > 1 && !pool.contains(&s[1]) {
                s[0] = *rng.pick(pool);
            }
        }
        2 if s.len() > 1 => {
            s.remove(rng.below(s.len()));
            if !pool.contains(&s[0]) {
                s[0] = *rng.pick(pool);
            }
        }
        3 => {
            let other = &corpus[rng.below(corpus.len())].0;
            let cut = rng.below(s.len()) + 1;
            s.truncate(cut);
            s.extend(other.iter().skip(rng.below(other.len())));
            s.truncate(max_len);
        }
        _ if s.len() > 1 => {
            let at = rng.below(s.len() - 1);
            s.swap(at, at + 1);
            if !pool.contains(&s[0]) {
                s.swap(at, at + 1);
            }
        }
        _ => s = vec![*rng.pick(pool)],
    }
    s
}

fn load(path: &Path, vocab: &Vocab, max_len: usize) -> Result<Vec<Vec<u32>>> {
    let io = |e: std::io::Error| Error::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    let mut r = BufReader::new(f);
    let mut out = Vec::new();
    let mut line = String::new();
    for n in 1.. {
        line.clear();
        let got = (&mut r)
            .take(MAX_LINE as u64 + 1)
            .read_line(&mut line)
            .map_err(io)?;
        if got == 0 {
            break;
        }
        let bad = |m: String| Error::InvalidArgument(format!("{}:{n}: {m}", path.display()));
        if got > MAX_LINE {
            return Err(bad(format!("line longer than {MAX_LINE} bytes")));
        }
        if line.trim().is_empty() {
            continue;
        }
        if out.len() == MAX_ENTRIES {
            return Err(bad(format!("more than {MAX_ENTRIES} entries")));
        }
        let e: Entry = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        if e.token_ids.is_empty() || e.token_ids.len() > max_len {
            return Err(bad(format!(
                "{} tokens (1 to {max_len} allowed)",
                e.token_ids.len()
            )));
        }
        if let Some(&id) = e.token_ids.iter().find(|&&i| !vocab.is_extension(i)) {
            return Err(bad(format!(
                "token id {id} is not an ordinary vocabulary entry"
            )));
        }
        out.push(e.token_ids);
    }
    Ok(out)
}

/// Write the corpus with [`crate::output::write_with`].
fn save(path: &Path, corpus: &[(Vec<u32>, f64)]) -> Result<()> {
    crate::output::write_with(path, |f| {
        for (s, e) in corpus {
            let entry = Entry {
                token_ids: s.clone(),
                effect: *e,
            };
            serde_json::to_writer(&mut *f, &entry)?;
            writeln!(f)?;
        }
        Ok(())
    })
}
