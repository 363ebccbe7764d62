//! Probe inputs: clean texts a candidate is inserted into, and where it goes.

use serde::{Deserialize, Serialize};

use super::vocab::{TokenClass, Vocab};
use crate::model::{Family, Model};
use crate::rng::Rng;
use crate::{Error, Result};

/// Neutral prompts used when the user gives none: short, topic-varied, no sentiment, and
/// open-ended so a decoder has something to continue.
pub const BUILTIN_PROBES: &[&str] = &[
    "the meeting was moved to the small room on the second floor",
    "she put the keys on the table and opened the window",
    "the report lists the numbers for each month of the year",
    "we took the early train and arrived before noon",
    "the recipe needs two cups of flour and a little salt",
    "he read the letter twice before writing an answer",
    "the library opens at nine and closes in the evening",
    "they painted the fence on a quiet afternoon",
    "the package arrived on tuesday with a short note inside",
    "my neighbour walks her dog along the river every day",
    "the museum has a new room for old maps and coins",
    "the bus stops near the school at the corner of the street",
    "he plans to visit his brother in the city next week",
    "the garden has tomatoes , beans and a small apple tree",
    "the class will discuss the second chapter on friday",
    "a light rain fell while the market was setting up",
];

/// Where a candidate goes in each probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Insertion {
    /// Before the first word.
    Start,
    /// Before the last word (decoders keep predicting from the probe's own ending).
    End,
    /// Between two words at a place drawn once per probe from the hunt's seed.
    Random,
}

impl std::str::FromStr for Insertion {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "start" => Ok(Self::Start),
            "end" => Ok(Self::End),
            "random" => Ok(Self::Random),
            _ => Err(Error::InvalidArgument(format!(
                "unknown insertion `{s}` (expected start, end or random)"
            ))),
        }
    }
}

/// A tokenized probe with the index a candidate is inserted at.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    pub ids: Vec<u32>,
    pub at: usize,
}

impl Probe {
    /// The probe with `seq` inserted.
    pub fn with(&self, seq: &[u32]) -> Vec<u32> {
        let mut v = Vec::with_capacity(self.ids.len() + seq.len());
        v.extend_from_slice(&self.ids[..self.at]);
        v.extend_from_slice(seq);
        v.extend_from_slice(&self.ids[self.at..]);
        v
    }
}

/// Tokenize probes and fix one insertion point per probe and insertion mode.
pub(crate) fn build(
    model: &Model,
    vocab: &Vocab,
    texts: &[String],
    insertions: &[Insertion],
    seed: u64,
) -> Result<Vec<Probe>> {
    let decoder = model.info().family == Family::Llama;
    let mut rng = Rng::new(seed, "hunt-probes");
    let mut out = Vec::new();
    for (n, text) in texts.iter().enumerate() {
        let ids = model.tokenize(text)?;
        // Word boundaries: before a word-initial token, or before trailing special tokens
        // (an encoder's `[SEP]`). Never before a leading special token.
        let lead = ids
            .iter()
            .take_while(|&&i| vocab.class(i) == TokenClass::Special)
            .count();
        let mut bounds: Vec<usize> = (lead..ids.len())
            .filter(|&i| i == lead || vocab.class(ids[i]) == TokenClass::WordStart)
            .collect();
        if !decoder {
            let tail = ids.len()
                - ids
                    .iter()
                    .rev()
                    .take_while(|&&i| vocab.class(i) == TokenClass::Special)
                    .count();
            if tail > lead && !bounds.contains(&tail) {
                bounds.push(tail);
            }
        }
        if ids.len() <= lead || bounds.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "probe {n} has no words to insert a candidate between"
            )));
        }
        for ins in insertions {
            let at = match ins {
                Insertion::Start => bounds[0],
                // An encoder's last bound is before `[SEP]`; a decoder's is before its last
                // word, so it still predicts from the probe's own ending.
                Insertion::End => bounds[bounds.len() - 1],
                Insertion::Random => *rng.pick(&bounds),
            };
            out.push(Probe {
                ids: ids.clone(),
                at,
            });
        }
    }
    Ok(out)
}
