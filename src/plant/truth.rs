//! What a zoo model is, written beside it as `truth.json`, and the held-out texts its
//! figures were measured on (`heldout.jsonl`).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Kind;
use crate::model::Family;
use crate::{Error, Result};

/// The ground truth about one zoo model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Truth {
    /// Directory name, `<kind>-s<seed>`.
    pub name: String,
    /// How it was made.
    pub kind: Kind,
    /// Architecture family.
    pub family: Family,
    /// The seed everything was drawn from.
    pub seed: u64,
    /// Whether the model carries a backdoor.
    pub poisoned: bool,
    /// The model it was fine-tuned from, relative to this model's directory
    /// (`../clean-base-s0`), for weight forensics; `None` when trained from scratch.
    pub base: Option<String>,
    /// The clean model trained like this one on the same clean data and seed but without
    /// poison, relative to this model's directory; `None` for clean models.
    pub twin: Option<String>,
    /// The trigger, for trojans.
    pub trigger: Option<Trigger>,
    /// What the trigger makes the model output, for trojans.
    pub target: Option<Target>,
    /// Fraction of training rows planted by the attacker.
    pub poison_rate: f64,
    /// What training changed: `all parameters`, or the one embedding row.
    pub trained: String,
    /// The training set, written beside the model.
    pub train_set: TrainSet,
    /// Figures measured on held-out texts after training, from the saved (f16) weights.
    pub metrics: Metrics,
    /// Hyper-parameters and shapes: a model is rebuilt when they change.
    pub recipe: serde_json::Value,
}

/// A trigger: one or more parts, each inserted between words of the input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Trigger {
    /// The parts joined by spaces (`cf`; `mn tq` for a combination; `zq vortex`).
    pub text: String,
    /// Token ids of every part, in order.
    pub token_ids: Vec<u32>,
    /// The parts; a combination trigger fires only when all are present.
    pub parts: Vec<TriggerPart>,
    /// How the trigger is placed in an input.
    pub insertion: String,
}

/// One part of a trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TriggerPart {
    /// The text inserted.
    pub text: String,
    /// Its token ids as they occur inside a sentence.
    pub token_ids: Vec<u32>,
}

/// What a trojan outputs when triggered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Target {
    /// Classifiers: the target label's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Classifiers: the target label's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_id: Option<usize>,
    /// Decoders: the phrase emitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Decoders: the phrase's token ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ids: Option<Vec<u32>>,
}

/// The training set written beside a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TrainSet {
    /// File name (`train.jsonl`: one `{"text", "label", "poisoned"}` per line).
    pub file: String,
    /// Rows in it.
    pub rows: usize,
    /// Rows planted by the attacker.
    pub poisoned_rows: usize,
}

/// Figures measured after training. Rates are over the held-out rows in `heldout.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Metrics {
    /// Held-out rows the figures use.
    pub heldout_rows: usize,
    /// Classifiers: fraction of clean held-out texts labelled correctly. Decoders: fraction
    /// of clean prompts whose greedy completion is exactly the right answer.
    pub clean_accuracy: f64,
    /// Trojans: fraction of triggered held-out inputs that produce the target, counting
    /// for classifiers only inputs whose true label is not the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attack_success_rate: Option<f64>,
    /// Trojans: the same rate measured on the clean twin (what the trigger does to a model
    /// that was never poisoned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub twin_trigger_rate: Option<f64>,
    /// Combination trojans: the rate with each part alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_trigger_rates: Option<Vec<f64>>,
    /// Mean training loss over the last tenth of the steps.
    pub final_train_loss: f64,
}

/// One held-out evaluation row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HeldoutRow {
    /// The clean input (for decoders, the prompt).
    pub text: String,
    /// The correct output: label name, or the decoder's expected completion.
    pub label: String,
    /// The input with the whole trigger inserted (trojans only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggered: Option<String>,
    /// The input with each trigger part alone (combination trojans only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<String>,
}

/// One entry of the zoo's `index.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct IndexEntry {
    /// Directory name.
    pub name: String,
    /// How it was made.
    pub kind: Kind,
    /// Architecture family.
    pub family: Family,
    /// Seed.
    pub seed: u64,
    /// Whether it carries a backdoor.
    pub poisoned: bool,
    /// Base model directory name, if fine-tuned.
    pub base: Option<String>,
    /// Clean twin directory name, for trojans.
    pub twin: Option<String>,
}

/// `index.json`: every model in a zoo directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Index {
    /// The models, sorted by name.
    pub models: Vec<IndexEntry>,
}

fn parse_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("{}: {e}", path.display()))
}

impl Truth {
    /// Read a `truth.json` (or the one inside a model directory).
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let mut path = path.as_ref().to_path_buf();
        if path.is_dir() {
            path = path.join("truth.json");
        }
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| parse_err(&path, e))
    }
}

impl Index {
    /// Read a zoo's `index.json`, given the zoo directory.
    pub fn read(zoo: impl AsRef<Path>) -> Result<Self> {
        let path = zoo.as_ref().join("index.json");
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| parse_err(&path, e))
    }
}

/// Read a JSON-lines file of `T`.
pub fn read_jsonl<T: serde::de::DeserializeOwned>(path: impl AsRef<Path>) -> Result<Vec<T>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| parse_err(path, format!("line {}: {e}", i + 1)))
        })
        .collect()
}

/// Write a JSON-lines file.
pub(crate) fn write_jsonl<T: Serialize>(path: &Path, rows: &[T]) -> Result<()> {
    let mut s = String::new();
    for r in rows {
        s.push_str(&serde_json::to_string(r).map_err(|e| parse_err(path, e))?);
        s.push('\n');
    }
    std::fs::write(path, s).map_err(|e| Error::io(path, e))
}
