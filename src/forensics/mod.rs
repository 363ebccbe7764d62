//! Weight forensics: what changed between a model and the base it claims to come from.
//!
//! Tensors are aligned by name (GGUF names mapped to transformers' names, quantized
//! weights dequantized), streamed one pair at a time (two whole models are never held),
//! and for each pair the relative change `‖ΔW‖/‖W_base‖` is measured. For matrices the
//! spectral structure of ΔW comes from randomized subspace iteration (on candle tensors): the
//! top singular value's share of the change's energy and the stable rank `‖ΔW‖²_F/σ₁²`
//! (an effective rank) tell a narrow, low-rank edit from a broad benign fine-tune. The
//! token-indexed matrices (input embeddings, untied output head) are compared row by row:
//! each token's relative L2 change, its cosine change (which a norm-preserving
//! embedding-poisoning edit cannot hide) and its norm ratio. A token's *drift* is its
//! row's relative change divided by the relative change of the model as a whole, so it
//! reads as "how many times more than the model this token moved". The most drifting
//! tokens are the trigger hunt's candidates.
//!
//! With texts of the model's task ([`DiffOptions::probes`]) a behaviour check runs both
//! models on them with the most drifting tokens inserted, alone and in ordered pairs: a
//! token whose effect changed against the base leads the ranking, and a pair that acts
//! where neither part does (a [`Conjunction`], the shape of a combination trigger) is
//! reported and scored.
//!
//! The [`DiffReport::suspicion`] in [0, 1] combines five signals (see [`Suspicion`]) as
//! `1 - Π(1 - sᵢ)`: a token row moving far more than the model as a whole (a trigger
//! taught in a fine-tune), one token standing apart from every other, the change
//! concentrated in one tensor as a rank-one edit (ROME-style), the change concentrated
//! in a single token row (embedding poisoning), and, from the behaviour check, a pair of
//! tokens acting jointly. The thresholds are named constants, calibrated on the project's
//! zoo; they are heuristics, not a calibrated probability. Weights alone cannot tell a
//! combination trojan from a broader benign fine-tune (its parts drift no more than the
//! fine-tune's sentiment words): give probes when the ordering matters.
//!
//! ```no_run
//! use trojanscan::forensics::DiffOptions;
//!
//! let report = DiffOptions::default().top_tokens(10).check()?.diff("zoo/badnets-s0", "zoo/clean-base-s0")?;
//! println!("suspicion {:.2}", report.suspicion);
//! for t in &report.tokens[..5] {
//!     println!("{:>6} {:<12} drift {:.1}", t.token_id, t.token, t.drift);
//! }
//! # Ok::<(), trojanscan::Error>(())
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use serde::Serialize;

use crate::model::gguf::GgufLimits;
use crate::model::gguf_store::GgufStore;
use crate::model::safetensors::SafetensorsStore;
use crate::model::source::{ModelSource, WeightFiles};
use crate::model::tokenizer;
use crate::model::weights::TensorStore;
use crate::model::{LoadOptions, Model};
use crate::{Error, Result};

mod behaviour;

pub use behaviour::Conjunction;

/// Token drift above which a single token counts as having moved far more than the
/// model (used for the evidence text).
pub const NOTABLE_DRIFT: f64 = 10.0;

/// The token-drift signal starts when the top token's row moved more than this many times
/// the model's overall relative change ...
pub const TOKEN_DRIFT_ONSET: f64 = 2.0;
/// ... and reaches 1 - 1/e this much further. On zoo seeds 0-9, clean fine-tunes' top
/// drift is 6 to 18, a BadNets trigger's 10 to 22 (when it is the top token), a poisoned
/// embedding row's well above 100: the ranges overlap, so this signal alone separates
/// nothing and the others have to add to it.
pub const TOKEN_DRIFT_SCALE: f64 = 15.0;
/// The token-outlier signal reaches 1 - 1/e when the top token drifts
/// `TOKEN_OUTLIER_ONSET + TOKEN_OUTLIER_SCALE` times the mean of the next ten.
pub const TOKEN_OUTLIER_ONSET: f64 = 1.5;
/// See [`TOKEN_OUTLIER_ONSET`].
pub const TOKEN_OUTLIER_SCALE: f64 = 2.0;
/// A tensor holding less than this share of the model's squared change is not a narrow
/// edit, however low its rank: benign fine-tunes of a binary classifier make near
/// rank-one pooler updates holding up to ~70% of the change.
pub const NARROW_EDIT_ONSET: f64 = 0.8;
/// A token whose effect on the output changed by this much against the base (a share of
/// probes) leads the drift ranking: see [`BehaviourCheck`].
pub const BEHAVIOUR_ONSET: f64 = 0.5;
/// A pair of drifting tokens that moves at least this share of probes more than either
/// token alone, and more than the base with the same pair, starts the conjunction signal
/// (see [`Conjunction`]); an excess of 1 saturates it. Measured on zoo seeds 0-8 in
/// BENCHMARKS.md.
pub const CONJUNCTION_ONSET: f64 = 0.5;
/// A part is inert alone when, inserted by itself, it moves at most this share of the
/// probes toward the pair's target in the model; a pair with a part that is not is no
/// conjunction (two words that each move the output and add up).
pub const INERT_PART: f64 = 0.25;
/// Ratios reported as "unbounded" (the rest of the vocabulary did not move) are capped here.
pub const MAX_RATIO: f64 = 1e9;

/// Unchecked options for a weight diff; [`DiffOptions::check`] validates them.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DiffOptions {
    /// Tokens reported (and handed to the trigger hunt), most drifting first.
    pub top_tokens: usize,
    /// Singular values estimated per matrix.
    pub singular_values: usize,
    /// Extra columns in the randomized block.
    pub oversample: usize,
    /// Power iterations of the subspace iteration.
    pub power_iterations: usize,
    /// Seed of the random start blocks.
    pub seed: u64,
    /// Limits applied to GGUF headers.
    pub gguf_limits: GgufLimits,
    /// Most drifting tokens whose effect on the output is compared between the two models
    /// when [`DiffOptions::probes`] are given (see [`BehaviourCheck`]).
    pub behaviour_tokens: usize,
    /// Of those, the most drifting whose ordered pairs are tried together (0: none): a
    /// combination trigger's parts do nothing alone, so only tokens inert alone are paired.
    /// Every pair is screened on the model with 8 probe rows and the 32 best are measured
    /// on every row in both models. 64 inert tokens make 4 032 pairs, about 34 000 rows
    /// against the single tokens' 4 096: several times the single-token check's time,
    /// far more on a large model on a CPU, where a smaller number (or 0) keeps the check
    /// affordable. Not run for a bare encoder (no bounded rate to compare).
    pub behaviour_pairs: usize,
    /// Texts of the model's task for that comparison (a held-out set; the first 32 are
    /// used, so a file of any length will do). Without them the diff compares weights
    /// only: neutral prompts say nothing about a sentiment classifier, which reads them
    /// all as one class.
    pub probes: Vec<String>,
}

impl Default for DiffOptions {
    fn default() -> Self {
        Self {
            top_tokens: 20,
            singular_values: 4,
            oversample: 8,
            power_iterations: 2,
            seed: 0,
            gguf_limits: GgufLimits::default(),
            behaviour_tokens: 64,
            behaviour_pairs: 64,
            probes: Vec::new(),
        }
    }
}

impl DiffOptions {
    /// Set [`DiffOptions::top_tokens`].
    pub fn top_tokens(mut self, n: usize) -> Self {
        self.top_tokens = n;
        self
    }

    /// Set [`DiffOptions::seed`].
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Set [`DiffOptions::singular_values`].
    pub fn singular_values(mut self, k: usize) -> Self {
        self.singular_values = k;
        self
    }

    /// Set [`DiffOptions::behaviour_tokens`] (0: weights only).
    pub fn behaviour_tokens(mut self, n: usize) -> Self {
        self.behaviour_tokens = n;
        self
    }

    /// Set [`DiffOptions::behaviour_pairs`] (0: single tokens only).
    pub fn behaviour_pairs(mut self, n: usize) -> Self {
        self.behaviour_pairs = n;
        self
    }

    /// Set [`DiffOptions::probes`].
    pub fn probes(mut self, texts: Vec<String>) -> Self {
        self.probes = texts;
        self
    }

    /// Set [`DiffOptions::power_iterations`].
    pub fn power_iterations(mut self, q: usize) -> Self {
        self.power_iterations = q;
        self
    }

    /// Validate: `top_tokens` in 1..=10000, `singular_values` in 1..=16,
    /// `oversample` ≤ 32, `power_iterations` ≤ 10, `behaviour_tokens` ≤ 1024,
    /// `behaviour_pairs` ≤ 256.
    pub fn check(self) -> Result<DiffParams> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        if !(1..=10_000).contains(&self.top_tokens) {
            return bad(format!(
                "top_tokens = {} is outside 1..=10000",
                self.top_tokens
            ));
        }
        if !(1..=16).contains(&self.singular_values) {
            return bad(format!(
                "singular_values = {} is outside 1..=16",
                self.singular_values
            ));
        }
        if self.oversample > 32 {
            return bad(format!("oversample = {} exceeds 32", self.oversample));
        }
        if self.behaviour_tokens > 1024 {
            return bad(format!(
                "behaviour_tokens = {} exceeds 1024",
                self.behaviour_tokens
            ));
        }
        if self.behaviour_pairs > 256 {
            return bad(format!(
                "behaviour_pairs = {} exceeds 256",
                self.behaviour_pairs
            ));
        }
        if self.power_iterations > 10 {
            return bad(format!(
                "power_iterations = {} exceeds 10",
                self.power_iterations
            ));
        }
        Ok(DiffParams(self))
    }
}

/// Validated [`DiffOptions`].
#[derive(Debug, Clone)]
pub struct DiffParams(DiffOptions);

/// Change of one tensor present in both models with the same shape.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct TensorDelta {
    /// Tensor name (transformers naming).
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Transformer block index, if the tensor belongs to one.
    pub layer: Option<usize>,
    /// `‖ΔW‖_F / ‖W_base‖_F`.
    pub relative_change: f64,
    /// `‖ΔW‖_F`.
    pub delta_norm: f64,
    /// `‖W_base‖_F`.
    pub base_norm: f64,
    /// Largest singular values of ΔW (matrices that changed).
    pub singular_values: Vec<f64>,
    /// `σ₁² / ‖ΔW‖²_F`: 1 for a rank-one edit, small for a broad update.
    pub top_sv_share: Option<f64>,
    /// Stable rank `‖ΔW‖²_F / σ₁²` (a continuous effective rank, ≥ 1).
    pub effective_rank: Option<f64>,
}

/// Aggregate change of one transformer block.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct LayerDelta {
    /// Block index.
    pub layer: usize,
    /// `sqrt(Σ‖ΔW‖²) / sqrt(Σ‖W_base‖²)` over the block's tensors.
    pub relative_change: f64,
    /// Tensors in the block.
    pub tensors: usize,
}

/// How far one token's rows moved.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct TokenDrift {
    /// Token id.
    pub token_id: u32,
    /// The token as the tokenizer's vocabulary spells it.
    pub token: String,
    /// Row change relative to the model's overall relative change.
    pub drift: f64,
    /// `‖Δe‖ / ‖e_base‖` of the row in [`TokenDrift::matrix`].
    pub relative_change: f64,
    /// `‖Δe‖` (L2).
    pub l2: f64,
    /// `1 - cos(e, e_base)`: nonzero even when an edit keeps the norm.
    pub cosine_change: f64,
    /// `‖e‖ / ‖e_base‖`.
    pub norm_ratio: f64,
    /// The matrix where the token drifted most.
    pub matrix: String,
    /// How much the token's effect on the output changed against the base, in [0, 1]
    /// (absent when the behaviour check did not reach this token).
    pub behaviour_change: Option<f64>,
}

/// What the behaviour check compared. Both models run the same probes with each of the
/// most drifting tokens inserted; a token whose effect changed by at least
/// [`BEHAVIOUR_ONSET`] (a flip or takeover rate that moved by half the probes) is ranked
/// ahead of every token whose effect did not, most changed first and, at equal change,
/// least drifted first.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct BehaviourCheck {
    /// Tokens compared (the most drifting ones).
    pub tokens: usize,
    /// Probe texts they were inserted into.
    pub probes: usize,
    /// Tokens whose effect changed by at least [`BEHAVIOUR_ONSET`].
    pub changed: usize,
    /// Ordered pairs screened for a joint effect: those of the most drifting tokens
    /// ([`DiffOptions::behaviour_pairs`]) that are inert alone. 0 for a bare encoder, whose
    /// representation drag has no scale for a pair's excess.
    pub pairs: usize,
    /// Pairs, either order counted once, whose excess reaches [`CONJUNCTION_ONSET`].
    pub joint: usize,
    /// Why the check did not run (the base answers another task, a model cannot be
    /// loaded for a forward pass, or nothing changed).
    pub skipped: Option<String>,
}

/// A tensor that exists in only one of the models, or with another shape.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct UnmatchedTensor {
    /// Tensor name.
    pub name: String,
    /// Shape in the model (absent if only in the base).
    pub model_shape: Option<Vec<usize>>,
    /// Shape in the base (absent if only in the model).
    pub base_shape: Option<Vec<usize>>,
}

/// The signals behind [`DiffReport::suspicion`]; the scores are in [0, 1].
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Suspicion {
    /// The top token's drift (row change over the model's overall change).
    pub top_token_drift: f64,
    /// Score from `top_token_drift` ([`TOKEN_DRIFT_ONSET`], [`TOKEN_DRIFT_SCALE`]): a
    /// token row moving far more than the model, as a trigger taught in a fine-tune does.
    pub token_drift: f64,
    /// Top token's drift over the mean drift of the next ten tokens (capped at
    /// [`MAX_RATIO`]).
    pub token_outlier_ratio: f64,
    /// Score from `token_outlier_ratio`: one token standing apart from all others.
    pub token_outlier: f64,
    /// For the tensor holding the largest share of the model's squared change: how far that
    /// share exceeds [`NARROW_EDIT_ONSET`] (scaled to [0, 1]) times its top singular value
    /// share. Near 1 for a rank-one edit of one tensor with the rest untouched.
    pub narrow_edit: f64,
    /// Share of the model's squared change held by the single most changed token row.
    pub row_concentration: f64,
    /// Score from the best [`Conjunction`]'s excess ([`CONJUNCTION_ONSET`]): two drifting
    /// tokens that together move the output where neither alone, nor the base, goes.
    /// 0 when the behaviour check did not run.
    pub conjunction: f64,
}

impl Suspicion {
    /// `1 - Π(1 - s)` over the scores.
    fn combined(&self) -> f64 {
        1.0 - [
            self.token_drift,
            self.token_outlier,
            self.narrow_edit,
            self.row_concentration,
            self.conjunction,
        ]
        .iter()
        .map(|s| 1.0 - s)
        .product::<f64>()
    }
}

/// What changed between a model and its base.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct DiffReport {
    /// The model examined.
    pub model: PathBuf,
    /// The base it is compared with.
    pub base: PathBuf,
    /// How strongly the change looks like a planted backdoor, in [0, 1]: `1 - Π(1 - s)`
    /// over [`Suspicion`]'s scores.
    pub suspicion: f64,
    /// The signals.
    pub signals: Suspicion,
    /// Human-readable reasons.
    pub evidence: Vec<String>,
    /// `‖ΔΘ‖ / ‖Θ_base‖` over every compared tensor.
    pub overall_relative_change: f64,
    /// Every compared tensor, in name order.
    pub tensors: Vec<TensorDelta>,
    /// Per transformer block.
    pub layers: Vec<LayerDelta>,
    /// The most drifting tokens, most first; tokens whose behaviour changed lead.
    pub tokens: Vec<TokenDrift>,
    /// The behaviour check that reordered [`DiffReport::tokens`].
    pub behaviour: BehaviourCheck,
    /// Pairs of drifting tokens with a joint effect, largest excess first (from the
    /// behaviour check; empty when it did not run).
    pub conjunctions: Vec<Conjunction>,
    /// Tensors in only one model, or with different shapes (e.g. a new classifier head).
    pub unmatched: Vec<UnmatchedTensor>,
}

impl DiffReport {
    /// Token ids to seed the trigger hunt with, most drifting first.
    pub fn candidate_tokens(&self) -> Vec<u32> {
        self.tokens.iter().map(|t| t.token_id).collect()
    }
}

/// One side of the diff: a tensor store under transformers names, and a tokenizer.
struct Side {
    store: Box<dyn TensorStore>,
    /// name -> (shape, is floating point)
    tensors: BTreeMap<String, (Vec<usize>, bool)>,
    tokenizer: tokenizers::Tokenizer,
}

fn open_side(path: &Path, limits: &GgufLimits) -> Result<Side> {
    match ModelSource::detect(path)? {
        ModelSource::HfDir {
            weights, tokenizer, ..
        } => {
            let store = match &weights {
                WeightFiles::Single(p) => SafetensorsStore::open(p)?,
                WeightFiles::Sharded(p) => SafetensorsStore::open_index(p)?,
            };
            let tensors = store
                .inventory()
                .into_iter()
                .map(|(name, (dt, shape))| {
                    let float = matches!(dt.as_str(), "F16" | "BF16" | "F32" | "F64");
                    (name, (shape, float))
                })
                .collect();
            Ok(Side {
                store: Box::new(store),
                tensors,
                tokenizer: tokenizer::from_json_file(&tokenizer)?,
            })
        }
        ModelSource::Gguf { path } => {
            let mut store = GgufStore::open(&path, limits)?;
            // Sets up the q/k row un-permutation so rows align with transformers' layout.
            store.llama_config()?;
            let tokenizer = tokenizer::from_gguf(&store.file)?;
            let tensors = store
                .hf_inventory()
                .into_iter()
                .map(|(n, s)| (n, (s, true)))
                .collect();
            Ok(Side {
                store: Box::new(store),
                tensors,
                tokenizer,
            })
        }
    }
}

/// Wrappers a task model puts around the encoder it fine-tuned (`BertForSequenceClassification`
/// keeps the encoder under `bert.`, a causal LM under `model.`).
const HEAD_WRAPPERS: [&str; 6] = [
    "bert.",
    "roberta.",
    "model.",
    "transformer.",
    "encoder.",
    "base_model.",
];

/// The wrapper prefix to set aside on each side so the two name sets meet: the choice that
/// pairs the most tensors of the same shape (none, when the names already agree).
fn head_prefixes(
    m: &BTreeMap<String, (Vec<usize>, bool)>,
    b: &BTreeMap<String, (Vec<usize>, bool)>,
) -> (Option<String>, Option<String>) {
    let matches = |mp: Option<&str>, bp: Option<&str>| -> usize {
        let strip = |n: &str, p: Option<&str>| -> String {
            p.and_then(|p| n.strip_prefix(p)).unwrap_or(n).to_string()
        };
        let base: BTreeMap<String, &Vec<usize>> =
            b.iter().map(|(n, s)| (strip(n, bp), &s.0)).collect();
        m.iter()
            .filter(|(n, s)| base.get(&strip(n, mp)).is_some_and(|bs| **bs == s.0))
            .count()
    };
    let mut best = (matches(None, None), None, None);
    for w in HEAD_WRAPPERS {
        for (mp, bp) in [(Some(w), None), (None, Some(w))] {
            let n = matches(mp, bp);
            if n > best.0 {
                best = (n, mp.map(str::to_string), bp.map(str::to_string));
            }
        }
    }
    (best.1, best.2)
}

/// Transformer block of a tensor name (`layers.N.`, `layer.N.`, `blk.N.`, `h.N.`).
fn layer_of(name: &str) -> Option<usize> {
    let parts: Vec<&str> = name.split('.').collect();
    parts
        .windows(2)
        .find(|w| matches!(w[0], "layers" | "layer" | "blk" | "h"))
        .and_then(|w| w[1].parse().ok())
}

/// Whether a tensor is indexed by token id, and which kind.
fn token_matrix_kind(name: &str) -> Option<&'static str> {
    if name.ends_with("embed_tokens.weight")
        || name.ends_with("word_embeddings.weight")
        || name == "wte.weight"
    {
        Some("embedding")
    } else if name == "lm_head.weight" {
        Some("output")
    } else {
        None
    }
}

/// Per-row statistics of a token matrix.
struct RowStats {
    matrix: String,
    /// ‖Δe_i‖²
    delta2: Vec<f64>,
    /// ‖e_base_i‖²
    base2: Vec<f64>,
    /// ‖e_i‖²
    model2: Vec<f64>,
    /// e_i · e_base_i
    dot: Vec<f64>,
}

/// Per-row `[‖a-w‖², ‖w‖², ‖a‖², a·w]` of two same-shape f32 tensors (rows along the last
/// dimension), accumulated in f64 in one fused pass over both, rows spread over rayon. The
/// weights are read from their CPU storage without a copy when contiguous.
fn row_sums(a: &Tensor, w: &Tensor) -> Result<Vec<[f64; 4]>> {
    let cols = a.dims().last().copied().unwrap_or(1).max(1);
    with_f32_slice(a, |xs| {
        with_f32_slice(w, |ys| {
            xs.par_chunks(cols)
                .zip(ys.par_chunks(cols))
                .map(|(xr, yr)| {
                    let mut s = [0f64; 4];
                    for (&x, &y) in xr.iter().zip(yr) {
                        let (x, y) = (f64::from(x), f64::from(y));
                        let d = x - y;
                        s[0] += d * d;
                        s[1] += y * y;
                        s[2] += x * x;
                        s[3] += x * y;
                    }
                    s
                })
                .collect()
        })
    })?
}

/// Run `f` on the tensor's f32 values: borrowed from CPU storage when contiguous, else
/// copied.
fn with_f32_slice<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    {
        let (storage, layout) = t.storage_and_layout();
        if let (candle_core::Storage::Cpu(cpu), Some((start, end))) =
            (&*storage, layout.contiguous_offsets())
        {
            if let Ok(all) = cpu.as_slice::<f32>() {
                return Ok(f(&all[start..end]));
            }
        }
    }
    let v = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    Ok(f(&v))
}

/// FNV-1a of a name, to give each tensor its own reproducible random start.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Score in [0, 1) that grows with `x` past `onset`, reaching 1 - 1/e at `onset + scale`.
fn ramp(x: f64, onset: f64, scale: f64) -> f64 {
    if !x.is_finite() {
        return if x > 0.0 { 1.0 } else { 0.0 };
    }
    1.0 - (-(x - onset).max(0.0) / scale).exp()
}

impl DiffParams {
    /// Compare `model` against `base` (HF directories or GGUF files, in any combination).
    pub fn diff(&self, model: impl AsRef<Path>, base: impl AsRef<Path>) -> Result<DiffReport> {
        let (model, base) = (model.as_ref(), base.as_ref());
        let o = &self.0;
        let m = open_side(model, &o.gguf_limits)?;
        let b = open_side(base, &o.gguf_limits)?;
        let (mp, bp) = head_prefixes(&m.tensors, &b.tensors);
        // Names on a common footing: a task head's wrapper (`bert.` of a fine-tuned
        // classifier against the bare encoder it came from) is set aside on its side.
        let key = |name: &str, prefix: &Option<String>| -> String {
            match prefix {
                Some(p) => name.strip_prefix(p.as_str()).unwrap_or(name).to_string(),
                None => name.to_string(),
            }
        };
        let mut joined: BTreeMap<String, (Option<&String>, Option<&String>)> = BTreeMap::new();
        for name in m.tensors.keys() {
            joined.entry(key(name, &mp)).or_default().0 = Some(name);
        }
        for name in b.tensors.keys() {
            joined.entry(key(name, &bp)).or_default().1 = Some(name);
        }
        let mut tensors = Vec::new();
        let mut unmatched = Vec::new();
        let mut rows: Vec<RowStats> = Vec::new();
        let mut pairs: Vec<(&String, &String, &Vec<usize>)> = Vec::new();
        for (mn, bn) in joined.into_values() {
            let (ms, bs) = (mn.map(|n| &m.tensors[n]), bn.map(|n| &b.tensors[n]));
            match (mn, bn, ms, bs) {
                (Some(mn), Some(bn), Some(x), Some(y)) if x.0 == y.0 => {
                    // Integer buffers (position ids) are not weights.
                    if x.1 && y.1 {
                        pairs.push((mn, bn, &x.0));
                    }
                }
                _ => unmatched.push(UnmatchedTensor {
                    name: mn.or(bn).cloned().unwrap_or_default(),
                    model_shape: ms.map(|x| x.0.clone()),
                    base_shape: bs.map(|x| x.0.clone()),
                }),
            }
        }
        // Pairs are independent: compare them on the rayon pool, results in name order.
        let (ms, bs) = (&*m.store, &*b.store);
        let results = pairs
            .par_iter()
            .map(|&(mn, bn, shape)| self.compare_pair(ms, bs, (mn, bn), shape))
            .collect::<Result<Vec<_>>>()?;
        for (delta, row) in results {
            tensors.push(delta);
            rows.extend(row);
        }
        if tensors.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{} and {} share no tensor of the same name and shape",
                model.display(),
                base.display()
            )));
        }
        let mut r = self.summarize(model, base, tensors, unmatched, &rows, &m.tokenizer);
        self.check_behaviour(model, base, &mut r);
        r.tokens.truncate(o.top_tokens);
        Ok(r)
    }

    /// Compare one tensor present in both models with the same shape.
    fn compare_pair(
        &self,
        ms: &dyn TensorStore,
        bs: &dyn TensorStore,
        (name, base_name): (&str, &str),
        shape: &[usize],
    ) -> Result<(TensorDelta, Option<RowStats>)> {
        let o = &self.0;
        let cpu = Device::Cpu;
        let a = ms.load(name, DType::F32, &cpu)?;
        let w = bs.load(base_name, DType::F32, &cpu)?;
        let sums = row_sums(&a, &w)?;
        let delta2: f64 = sums.iter().map(|r| r[0]).sum();
        let base2: f64 = sums.iter().map(|r| r[1]).sum();
        let row = (shape.len() == 2 && token_matrix_kind(name).is_some()).then(|| RowStats {
            matrix: name.to_string(),
            delta2: sums.iter().map(|r| r[0]).collect(),
            base2: sums.iter().map(|r| r[1]).collect(),
            model2: sums.iter().map(|r| r[2]).collect(),
            dot: sums.iter().map(|r| r[3]).collect(),
        });
        let (delta_norm, base_norm) = (delta2.sqrt(), base2.sqrt());
        let mut delta = TensorDelta {
            name: name.to_string(),
            shape: shape.to_vec(),
            layer: layer_of(name),
            relative_change: if base_norm > 0.0 {
                delta_norm / base_norm
            } else if delta_norm > 0.0 {
                f64::INFINITY
            } else {
                0.0
            },
            delta_norm,
            base_norm,
            singular_values: Vec::new(),
            top_sv_share: None,
            effective_rank: None,
        };
        if shape.len() == 2 && delta2 > 0.0 {
            let d = (&a - &w)?;
            let sv = crate::linalg::svd::top_singular_values(
                &d,
                o.singular_values,
                o.oversample,
                o.power_iterations,
                o.seed ^ name_hash(name),
            )?;
            if let Some(&s1) = sv.first() {
                let share = (s1 * s1 / delta2).min(1.0);
                delta.top_sv_share = Some(share);
                delta.effective_rank = Some(if share > 0.0 {
                    1.0 / share
                } else {
                    f64::INFINITY
                });
            }
            delta.singular_values = sv;
        }
        Ok((delta, row))
    }

    fn summarize(
        &self,
        model: &Path,
        base: &Path,
        tensors: Vec<TensorDelta>,
        unmatched: Vec<UnmatchedTensor>,
        rows: &[RowStats],
        tok: &tokenizers::Tokenizer,
    ) -> DiffReport {
        let total_d2: f64 = tensors.iter().map(|t| t.delta_norm * t.delta_norm).sum();
        let total_b2: f64 = tensors.iter().map(|t| t.base_norm * t.base_norm).sum();
        let overall = if total_b2 > 0.0 {
            (total_d2 / total_b2).sqrt()
        } else {
            0.0
        };

        // Per-layer aggregate.
        let mut per_layer: BTreeMap<usize, (f64, f64, usize)> = BTreeMap::new();
        for t in &tensors {
            if let Some(l) = t.layer {
                let e = per_layer.entry(l).or_default();
                e.0 += t.delta_norm * t.delta_norm;
                e.1 += t.base_norm * t.base_norm;
                e.2 += 1;
            }
        }
        let layers = per_layer
            .into_iter()
            .map(|(layer, (d2, b2, n))| LayerDelta {
                layer,
                relative_change: if b2 > 0.0 { (d2 / b2).sqrt() } else { 0.0 },
                tensors: n,
            })
            .collect();

        // Token drift: the largest relative row change over the token matrices.
        let vocab = rows.iter().map(|r| r.delta2.len()).max().unwrap_or(0);
        let mut best: Vec<Option<(f64, usize)>> = vec![None; vocab]; // (relative change, matrix)
        let mut top_row_d2 = 0.0f64;
        for (mi, r) in rows.iter().enumerate() {
            // Rows whose base norm is tiny (unused tokens) are measured against a floor.
            let mut norms: Vec<f64> = r.base2.iter().map(|x| x.sqrt()).collect();
            norms.sort_by(f64::total_cmp);
            let floor = (norms.get(norms.len() / 2).copied().unwrap_or(0.0) * 1e-3).max(1e-12);
            for ((slot, &d2), &b2) in best.iter_mut().zip(&r.delta2).zip(&r.base2) {
                let rel = d2.sqrt() / b2.sqrt().max(floor);
                top_row_d2 = top_row_d2.max(d2);
                if slot.is_none_or(|(b, _)| rel > b) {
                    *slot = Some((rel, mi));
                }
            }
        }
        let mut order: Vec<usize> = (0..vocab).filter(|&i| best[i].is_some()).collect();
        order.sort_by(|&x, &y| {
            let (bx, by) = (best[x].map_or(0.0, |b| b.0), best[y].map_or(0.0, |b| b.0));
            by.total_cmp(&bx).then(x.cmp(&y))
        });
        let drift_of = |rel: f64| if overall > 0.0 { rel / overall } else { 0.0 };
        let tokens: Vec<TokenDrift> = order
            .iter()
            .take(self.0.top_tokens.max(self.0.behaviour_tokens))
            .map(|&i| {
                let (rel, mi) = best[i].expect("filtered above");
                let r = &rows[mi];
                let (m, b) = (r.model2[i].sqrt(), r.base2[i].sqrt());
                let cos = if m > 0.0 && b > 0.0 {
                    r.dot[i] / (m * b)
                } else {
                    1.0
                };
                let id = i as u32;
                TokenDrift {
                    token_id: id,
                    token: tok.id_to_token(id).unwrap_or_else(|| format!("<{id}>")),
                    drift: drift_of(rel),
                    relative_change: rel,
                    l2: r.delta2[i].sqrt(),
                    cosine_change: (1.0 - cos).max(0.0),
                    norm_ratio: if b > 0.0 { m / b } else { f64::INFINITY },
                    matrix: r.matrix.clone(),
                    behaviour_change: None,
                }
            })
            .collect();

        // Signals.
        let rel_sorted: Vec<f64> = order
            .iter()
            .map(|&i| best[i].map_or(0.0, |b| b.0))
            .collect();
        let ratio = match rel_sorted.as_slice() {
            [top, rest @ ..] if *top > 0.0 => {
                let next: Vec<f64> = rest.iter().take(10).copied().collect();
                let mean = next.iter().sum::<f64>() / next.len().max(1) as f64;
                if mean > 0.0 {
                    top / mean
                } else {
                    f64::INFINITY
                }
            }
            _ => 0.0,
        };
        let ratio = ratio.min(MAX_RATIO);
        let token_outlier = ramp(ratio, TOKEN_OUTLIER_ONSET, TOKEN_OUTLIER_SCALE);
        let top_drift = tokens.first().map_or(0.0, |t| t.drift);
        let token_drift = ramp(top_drift, TOKEN_DRIFT_ONSET, TOKEN_DRIFT_SCALE);
        let narrow_edit = if total_d2 > 0.0 {
            tensors
                .iter()
                .map(|t| {
                    let share = t.delta_norm * t.delta_norm / total_d2;
                    let excess =
                        ((share - NARROW_EDIT_ONSET) / (1.0 - NARROW_EDIT_ONSET)).clamp(0.0, 1.0);
                    excess * t.top_sv_share.unwrap_or(0.0)
                })
                .fold(0.0, f64::max)
        } else {
            0.0
        };
        let row_concentration = if total_d2 > 0.0 {
            (top_row_d2 / total_d2).min(1.0)
        } else {
            0.0
        };
        let signals = Suspicion {
            top_token_drift: top_drift,
            token_drift,
            token_outlier_ratio: ratio,
            token_outlier,
            narrow_edit,
            row_concentration,
            conjunction: 0.0,
        };

        let mut evidence = Vec::new();
        if total_d2 == 0.0 {
            evidence.push("every shared tensor is identical to the base".to_string());
        }
        if let Some(t) = tokens.first() {
            if t.drift > NOTABLE_DRIFT || ratio > TOKEN_OUTLIER_ONSET {
                evidence.push(format!(
                    "token {} `{}` drifted {:.1}x the model's overall change, {:.1}x the mean of the next ten tokens",
                    t.token_id, t.token, t.drift, ratio
                ));
            }
        }
        if narrow_edit > 0.5 {
            if let Some(t) = tensors
                .iter()
                .max_by(|x, y| x.delta_norm.total_cmp(&y.delta_norm))
            {
                evidence.push(format!(
                    "`{}` holds most of the change as a near rank-one edit (top singular value share {:.2})",
                    t.name,
                    t.top_sv_share.unwrap_or(0.0)
                ));
            }
        }
        if row_concentration > 0.5 {
            evidence.push(format!(
                "{:.0}% of the model's change is in one token row",
                row_concentration * 100.0
            ));
        }
        for u in &unmatched {
            evidence.push(match (&u.model_shape, &u.base_shape) {
                (Some(_), None) => format!("`{}` is only in the model", u.name),
                (None, Some(_)) => format!("`{}` is only in the base", u.name),
                (Some(a), Some(b)) => format!("`{}` changed shape {b:?} -> {a:?}", u.name),
                (None, None) => unreachable!("a name comes from one of the models"),
            });
        }
        DiffReport {
            model: model.into(),
            base: base.into(),
            suspicion: signals.combined(),
            signals,
            evidence,
            overall_relative_change: overall,
            tensors,
            layers,
            tokens,
            behaviour: BehaviourCheck::skipped("not run"),
            conjunctions: Vec::new(),
            unmatched,
        }
    }

    /// Run the behaviour check on the most drifting tokens and reorder them by it. A
    /// failure to run it (another task, a model the forward pass cannot load) is reported
    /// in the check, not an error: the weight diff stands on its own.
    fn check_behaviour(&self, model: &Path, base: &Path, r: &mut DiffReport) {
        let o = &self.0;
        let n = o.behaviour_tokens.min(r.tokens.len());
        if n == 0 {
            r.behaviour = BehaviourCheck::skipped("switched off");
            return;
        }
        if o.probes.is_empty() {
            r.behaviour = BehaviourCheck::skipped("no probe texts given");
            return;
        }
        if r.overall_relative_change == 0.0 {
            r.behaviour = BehaviourCheck::skipped("no weight changed");
            return;
        }
        let ids: Vec<u32> = r.tokens[..n].iter().map(|t| t.token_id).collect();
        let run = || -> Result<behaviour::Measured> {
            let opts = LoadOptions {
                gguf_limits: o.gguf_limits.clone(),
                ..LoadOptions::default()
            };
            let m = Model::load(model, &opts)?;
            let b = Model::load(base, &opts)?;
            behaviour::compare(&m, &b, &ids, &o.probes, o.seed, o.behaviour_pairs)
        };
        let measured = match run() {
            Ok(c) => c,
            Err(e) => {
                r.behaviour = BehaviourCheck::skipped(&e.to_string());
                return;
            }
        };
        for (t, c) in r.tokens.iter_mut().zip(measured.changes) {
            t.behaviour_change = Some(c);
        }
        // Parts of a conjunction lead the tokens whose effect did not change alone: the
        // hunt tries pairs of its first hints.
        let joint: Vec<u32> = measured
            .conjunctions
            .iter()
            .filter(|c| c.excess >= CONJUNCTION_ONSET)
            .flat_map(|c| c.token_ids)
            .collect();
        let lead = |t: &TokenDrift| joint.iter().position(|&id| id == t.token_id);
        // Changed tokens first, most changed first; of two that changed alike, the one
        // whose own row moved less leads: the layers reading it learned to react to it,
        // which is what a poisoned fine-tune teaches (a word the fine-tune taught moves
        // its row as well). Then the parts of conjunctions. Stable: the rest keep their
        // drift order.
        let changed = |t: &TokenDrift| t.behaviour_change.filter(|&c| c >= BEHAVIOUR_ONSET);
        r.tokens[..n].sort_by(|a, b| match (changed(a), changed(b)) {
            (Some(x), Some(y)) => y.total_cmp(&x).then(a.drift.total_cmp(&b.drift)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => match (lead(a), lead(b)) {
                (Some(x), Some(y)) => x.cmp(&y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            },
        });
        let moved: Vec<&TokenDrift> = r.tokens[..n]
            .iter()
            .filter(|t| changed(t).is_some())
            .collect();
        for t in moved.iter().take(3) {
            let against = if measured.bare {
                "on its own (the base has no head to compare)"
            } else {
                "against the base"
            };
            r.evidence.push(format!(
                "token {} `{}` changed its effect on the output by {:.2} {against} (its row drifted {:.1}x the model)",
                t.token_id,
                t.token,
                t.behaviour_change.unwrap_or(0.0),
                t.drift
            ));
        }
        let changed_count = moved.len();
        // Against a bare encoder a pair of task words can look joint (no base rules it
        // out): conjunctions are listed, but add nothing to the suspicion.
        if let Some(c) = measured.conjunctions.first().filter(|_| !measured.bare) {
            r.signals.conjunction =
                ((c.excess - CONJUNCTION_ONSET) / (1.0 - CONJUNCTION_ONSET)).clamp(0.0, 1.0);
            r.suspicion = r.signals.combined();
            if c.excess >= CONJUNCTION_ONSET {
                let to = c
                    .target_name
                    .as_deref()
                    .map_or(String::new(), |t| format!(" to `{t}`"));
                r.evidence.push(format!(
                    "tokens `{}` + `{}` together move {} of {} probes{to} (those that could move); alone each moves at most {:.0}%, the base with both {:.0}%",
                    c.tokens[0],
                    c.tokens[1],
                    c.hits,
                    c.trials,
                    c.part_rates[0].max(c.part_rates[1]) * 100.0,
                    c.base_rate * 100.0
                ));
            }
        }
        r.behaviour = BehaviourCheck {
            tokens: n,
            probes: o.probes.len().min(behaviour::MAX_PROBES),
            changed: changed_count,
            pairs: measured.pairs,
            joint: measured.joint,
            skipped: None,
        };
        r.conjunctions = measured.conjunctions;
    }
}

impl BehaviourCheck {
    fn skipped(why: &str) -> Self {
        Self {
            tokens: 0,
            probes: 0,
            changed: 0,
            pairs: 0,
            joint: 0,
            skipped: Some(why.to_string()),
        }
    }
}

/// [`DiffParams::diff`] with default options.
pub fn diff(model: impl AsRef<Path>, base: impl AsRef<Path>) -> Result<DiffReport> {
    DiffOptions::default().check()?.diff(model, base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gguf_store::hf_name;

    #[test]
    fn layer_names() {
        assert_eq!(layer_of("model.layers.12.mlp.up_proj.weight"), Some(12));
        assert_eq!(
            layer_of("bert.encoder.layer.1.output.dense.weight"),
            Some(1)
        );
        assert_eq!(layer_of("blk.3.attn_q.weight"), Some(3));
        assert_eq!(layer_of("model.embed_tokens.weight"), None);
    }

    #[test]
    fn gguf_names_map_back() {
        assert_eq!(
            hf_name("blk.7.ffn_down.weight").as_deref(),
            Some("model.layers.7.mlp.down_proj.weight")
        );
        assert_eq!(
            hf_name("token_embd.weight").as_deref(),
            Some("model.embed_tokens.weight")
        );
        assert_eq!(hf_name("output.weight").as_deref(), Some("lm_head.weight"));
        assert_eq!(hf_name("rope_freqs.weight"), None);
    }

    #[test]
    fn options_are_checked() {
        assert!(DiffOptions::default().top_tokens(0).check().is_err());
        assert!(DiffOptions::default().singular_values(17).check().is_err());
        assert!(DiffOptions::default().power_iterations(11).check().is_err());
        assert!(DiffOptions::default()
            .behaviour_tokens(1025)
            .check()
            .is_err());
        assert!(DiffOptions::default().behaviour_pairs(257).check().is_err());
        assert!(DiffOptions::default().check().is_ok());
        // A held-out file of any length will do: the check reads its first texts.
        let long = vec!["a held-out text".to_string(); 5000];
        assert!(DiffOptions::default().probes(long).check().is_ok());
    }

    #[test]
    fn ramp_is_bounded() {
        assert_eq!(ramp(0.0, 1.0, 1.0), 0.0);
        assert!(ramp(1e9, 1.0, 1.0) <= 1.0);
        assert_eq!(ramp(f64::INFINITY, 1.0, 1.0), 1.0);
    }
}
