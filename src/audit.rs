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
//! The spectral-signature score (centred, `((r − μ)·v)²`) is reported for every sample as
//! corroborating evidence.
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

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use candle_core::{DType, Tensor};
use serde::Serialize;

use crate::linalg::{silhouette, spectral_scores, KMeansParams, PcaParams};
use crate::model::{Family, Model, Pooling};
use crate::{Error, Result};

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
        let trimmed = line.trim_ascii();
        if trimmed.starts_with(b"{") {
            texts.push(parse_row(trimmed, bad)?.text);
        } else {
            let text = std::str::from_utf8(trimmed).map_err(|_| bad("not UTF-8".into()))?;
            texts.push(text.to_string());
        }
        Ok(())
    })?;
    Ok(texts)
}

/// Call `f` on every non-blank line of `path`, with a constructor of errors that name the
/// line; lines longer than [`MAX_LINE_BYTES`] and more than [`MAX_ROWS`] lines are errors,
/// found before anything larger is read.
fn for_each_line(
    path: &Path,
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
        if line.iter().all(|b| b.is_ascii_whitespace()) {
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
    /// Seed of PCA and k-means.
    pub seed: u64,
    /// A class is flagged only when its smaller cluster holds at most this fraction.
    pub max_poison_fraction: f64,
    /// ... and the mean silhouette of the split is at least this.
    pub min_silhouette: f64,
    /// Classes with fewer samples are not clustered.
    pub min_class_size: usize,
    /// Texts per forward pass.
    pub batch_size: usize,
}

impl Default for AuditParams {
    fn default() -> Self {
        Self {
            layer: None,
            dims: 10,
            restarts: 4,
            seed: 0,
            max_poison_fraction: 0.35,
            min_silhouette: 0.7,
            min_class_size: 20,
            batch_size: 64,
        }
    }
}

/// Parameters that passed [`AuditParams::check`].
#[derive(Debug, Clone)]
pub struct Audit(AuditParams);

impl AuditParams {
    /// Validate the options.
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
        if !(-1.0..=1.0).contains(&self.min_silhouette) {
            return bad(format!(
                "min silhouette {} is not in [-1, 1]",
                self.min_silhouette
            ));
        }
        if self.min_class_size < 4 {
            return bad("classes of fewer than 4 samples cannot be clustered".into());
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
        let mut acts = Vec::new();
        let mut predicted = Vec::new();
        for chunk in rows.chunks(p.batch_size) {
            let texts: Vec<&str> = chunk.iter().map(|r| r.text.as_str()).collect();
            let batch = model.encode(&texts)?;
            let out = model.forward_with_states(&batch)?;
            acts.push(
                batch
                    .pool(&out.hidden_states[layer], pooling)?
                    .to_dtype(DType::F32)?,
            );
            if chunk.iter().any(|r| r.label.is_none()) {
                let logits = out.logits.as_ref().ok_or_else(|| {
                    Error::InvalidArgument(
                        "unlabelled rows need a model with a head to predict classes".into(),
                    )
                })?;
                predicted.extend(logits.argmax(1)?.to_vec1::<u32>()?);
            } else {
                predicted.extend(std::iter::repeat_n(0, chunk.len()));
            }
        }
        let acts = Tensor::cat(&acts, 0)?;
        let mut classes: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, r) in rows.iter().enumerate() {
            let c = match &r.label {
                Some(l) => l.clone(),
                None => match &info.labels {
                    Some(names) => names
                        .get(predicted[i] as usize)
                        .cloned()
                        .unwrap_or_else(|| format!("predicted:{}", predicted[i])),
                    None => format!("predicted:{}", predicted[i]),
                },
            };
            classes.entry(c).or_default().push(i);
        }
        let mut scores = vec![0.0; rows.len()];
        let mut spectral = vec![0.0; rows.len()];
        let mut flagged = Vec::new();
        let mut summaries = Vec::new();
        for (class, idx) in classes {
            let s = self.class(
                &acts,
                &class,
                &idx,
                &mut scores,
                &mut spectral,
                &mut flagged,
            )?;
            summaries.push(s);
        }
        flagged.sort_unstable();
        let suspicion = summaries.iter().map(|c| c.suspicion).fold(0.0, f64::max);
        Ok(AuditReport {
            layer,
            flagged,
            scores,
            spectral,
            classes: summaries,
            suspicion,
        })
    }

    fn class(
        &self,
        acts: &Tensor,
        class: &str,
        idx: &[usize],
        scores: &mut [f64],
        spectral: &mut [f64],
        flagged: &mut Vec<usize>,
    ) -> Result<ClassSummary> {
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
        };
        if n < p.min_class_size {
            summary.evidence = format!("{n} samples: too few to cluster");
            return Ok(summary);
        }
        let ids: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
        let x = acts.index_select(&Tensor::new(ids.as_slice(), acts.device())?, 0)?;
        let d = x.dim(1)?;
        let pca = match PcaParams::new(p.dims.min(d).min(n - 1))
            .seed(p.seed)
            .check()?
            .fit(&x)
        {
            Ok(f) => f,
            // Constant activations (no axis to find); anything else is a real failure.
            Err(Error::InvalidArgument(_)) => {
                summary.evidence = "activations do not vary within the class".into();
                return Ok(summary);
            }
            Err(e) => return Err(e),
        };
        let z = pca.transform(&x)?;
        let fit = KMeansParams::new(2)
            .restarts(p.restarts)
            .seed(p.seed)
            .check()?
            .fit(&z)?;
        let (sil, _) = silhouette(&z, &fit.labels, 2)?;
        let small = if fit.sizes[0] <= fit.sizes[1] { 0 } else { 1 };
        let frac = fit.sizes[small] as f64 / n as f64;
        let (_, spec) = spectral_scores(&x, p.seed)?;
        for (k, &i) in idx.iter().enumerate() {
            spectral[i] = spec[k];
        }
        summary.cluster_sizes = vec![fit.sizes[small], fit.sizes[1 - small]];
        summary.silhouette = Some(sil);
        summary.smaller_fraction = Some(frac);
        // Suspicion: how far the split's separation goes past the threshold, toward 1.
        let separation = ((sil - p.min_silhouette) / (1.0 - p.min_silhouette)).clamp(0.0, 1.0);
        summary.flagged = frac > 0.0 && frac <= p.max_poison_fraction && sil >= p.min_silhouette;
        if summary.flagged {
            summary.suspicion = 0.5 + 0.5 * separation;
            for (k, &i) in idx.iter().enumerate() {
                if fit.labels[k] as usize == small {
                    scores[i] = summary.suspicion;
                    flagged.push(i);
                }
            }
            summary.evidence = format!(
                "a separate cluster of {} of {n} samples ({:.0}%), silhouette {sil:.2}",
                fit.sizes[small],
                frac * 100.0
            );
        } else {
            summary.suspicion =
                0.5 * separation * f64::from(u8::from(frac <= p.max_poison_fraction));
            summary.evidence = if frac > p.max_poison_fraction {
                format!(
                    "the split is balanced ({:.0}% / {:.0}%)",
                    frac * 100.0,
                    (1.0 - frac) * 100.0
                )
            } else {
                format!(
                    "the clusters overlap (silhouette {sil:.2} < {:.2})",
                    p.min_silhouette
                )
            };
        }
        Ok(summary)
    }
}
