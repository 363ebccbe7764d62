//! One scan of a model, every detector together: "safe to deploy or not, and why".
//!
//! [`Scanner::builder`] sets what to check; [`Scanner::scan`] runs, in order:
//! 1. **identity**: the model's architecture and the SHA-256 of every file (the manifest a
//!    signature or registry entry refers to);
//! 2. **provenance** (with a signature and key, or a registry): the signature verifies and
//!    the files are the signed ones; the registry approves this exact model;
//! 3. **forensics** (with a base model): what the fine-tune changed; its most drifting
//!    tokens become the hunt's first candidates;
//! 4. **hunt**: triggers by sweep, beam and gradients (see [`crate::hunt`]);
//! 5. **confirmation**: whether inputs carrying the hunt's best findings form their own
//!    cluster of activations (see [`crate::confirm`]).
//!
//! The model-level suspicion is the hunt's, or the forensics suspicion capped at
//! [`FORENSICS_CAP`] when that is higher: weight changes alone show that something was
//! taught, not that it is a trigger. The verdict is `trojaned` only when the hunt found a
//! trigger that hijacks the model; `suspicious` from a suspicion of 0.4; otherwise `clean`.
//! A failed provenance check does not change the verdict (it says nothing about triggers)
//! but fails the scan's gate: see [`ScanReport::gate`].
//!
//! ```
//! use trojanscan::scan::Scanner;
//!
//! // Samples of the model's task as probes: with neutral built-in probes, every
//! // sentiment word would flip this sentiment classifier just like a trigger.
//! let probes = trojanscan::audit::read_texts("testdata/zoo/clean-base-s0/heldout.jsonl")?;
//! let scanner = Scanner::builder()
//!     .probes(probes)
//!     .max_evaluations(20_000)
//!     .max_len(1)
//!     .build()?;
//! let report = scanner.scan("testdata/zoo/clean-base-s0")?;
//! assert_ne!(report.verdict, trojanscan::Verdict::Trojaned);
//! assert_eq!(report.files.len(), 7);
//! # Ok::<(), trojanscan::Error>(())
//! ```

mod html;
pub mod render;

pub use self::html::html;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::confirm::{ConfirmParams, ConfirmReport};
use crate::forensics::{DiffOptions, DiffReport};
use crate::hunt::{HuntParams, HuntReport, BUILTIN_PROBES};
use crate::model::{LoadOptions, Model, ModelInfo, Precision};
use crate::progress::{NoProgress, Progress};
use crate::provenance::{
    self, Approval, Manifest, ManifestOptions, PublicKey, Registry, VerifyOptions,
};
use crate::verdict::Verdict;
use crate::{DeviceChoice, Error, Result};

/// Highest model-level suspicion weight forensics alone can give: below the hunt's
/// `trojaned` threshold, so a weight diff without a trigger reads `suspicious` at most.
pub const FORENSICS_CAP: f64 = 0.79;

/// Version of the [`ScanReport`] JSON layout; it changes when a field is renamed or removed.
pub const REPORT_SCHEMA: u32 = 1;

/// Which detectors a scan runs (each also needs its inputs: a base for forensics, a
/// signature or registry for provenance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Detectors {
    /// Signature and registry checks.
    pub provenance: bool,
    /// Weight diff against the base model.
    pub forensics: bool,
    /// The trigger hunt.
    pub hunt: bool,
    /// Activation-clustering confirmation of the hunt's findings.
    pub confirmation: bool,
}

impl Default for Detectors {
    fn default() -> Self {
        Self {
            provenance: true,
            forensics: true,
            hunt: true,
            confirmation: true,
        }
    }
}

/// Builds a [`Scanner`]; every setting has a default.
#[derive(Debug, Clone, Default)]
pub struct ScannerBuilder {
    load: LoadOptions,
    hunt: HuntParams,
    confirm: ConfirmParams,
    detectors: Detectors,
    base: Option<PathBuf>,
    registry: Option<PathBuf>,
    signature: Option<(PathBuf, PathBuf)>,
    threads: Option<usize>,
    notes: Vec<String>,
}

impl ScannerBuilder {
    /// Where the model runs (default: the CPU).
    pub fn device(mut self, device: DeviceChoice) -> Self {
        self.load.device = device;
        self
    }

    /// Numeric precision (default f32: the hunt's gradients need it).
    pub fn precision(mut self, precision: Precision) -> Self {
        self.load.precision = precision;
        self
    }

    /// Limits applied to untrusted GGUF headers.
    pub fn limits(mut self, limits: crate::model::gguf::GgufLimits) -> Self {
        self.load.gguf_limits = limits;
        self
    }

    /// Clean probe texts of the model's task (default: built-in neutral sentences).
    pub fn probes(mut self, texts: Vec<String>) -> Self {
        self.hunt.probes = Some(texts);
        self
    }

    /// Probe texts sampled from the file at `path` by [`crate::audit::sample_texts`]: as
    /// [`ScannerBuilder::probes`], and when the file held more texts than were kept, the
    /// report's notes say so.
    pub fn probe_sample(
        mut self,
        path: impl AsRef<Path>,
        sample: crate::audit::TextSample,
    ) -> Self {
        if let Some(note) = sample.note(path.as_ref()) {
            self.notes.push(note);
        }
        self.hunt.probes = Some(sample.texts);
        self
    }

    /// Time budget of the hunt (default: 2 minutes up to 50 M parameters, 8 above).
    pub fn budget(mut self, budget: Duration) -> Self {
        self.hunt.budget = Some(budget);
        self
    }

    /// Work budget of the hunt in candidate × probe rows, for results that do not depend
    /// on the machine's speed.
    pub fn max_evaluations(mut self, rows: u64) -> Self {
        self.hunt.max_evaluations = Some(rows);
        self
    }

    /// Longest trigger sequence hunted, in tokens (default 4).
    pub fn max_len(mut self, tokens: usize) -> Self {
        self.hunt.max_len = tokens;
        self
    }

    /// Whether an instruct model is probed through its chat template (default `true`; see
    /// [`HuntParams::chat_template`]).
    pub fn chat_template(mut self, on: bool) -> Self {
        self.hunt.chat_template = on;
        self.confirm.chat_template = on;
        self
    }

    /// Every hunt setting at once (probes, budgets and hints set here are kept unless
    /// set again afterwards).
    pub fn hunt_params(mut self, params: HuntParams) -> Self {
        self.hunt = params;
        self
    }

    /// Confirmation settings.
    pub fn confirm_params(mut self, params: ConfirmParams) -> Self {
        self.confirm = params;
        self
    }

    /// Which detectors run.
    pub fn detectors(mut self, detectors: Detectors) -> Self {
        self.detectors = detectors;
        self
    }

    /// The base model the scanned one claims to fine-tune: enables forensics.
    pub fn base(mut self, base: impl Into<PathBuf>) -> Self {
        self.base = Some(base.into());
        self
    }

    /// A registry of approved models to check this one against.
    pub fn registry(mut self, registry: impl Into<PathBuf>) -> Self {
        self.registry = Some(registry.into());
        self
    }

    /// A signature bundle and the public key (PEM) it must verify under.
    pub fn signature(mut self, signature: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.signature = Some((signature.into(), key.into()));
        self
    }

    /// Hashing workers (default: one per core).
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = Some(n);
        self
    }

    /// Validate the settings, read the key and registry.
    pub fn build(self) -> Result<Scanner> {
        if self.threads == Some(0) {
            return Err(Error::InvalidArgument("threads must be at least 1".into()));
        }
        let key = match &self.signature {
            Some((_, key)) => Some(PublicKey::from_pem_file(key)?),
            None => None,
        };
        let registry = match &self.registry {
            Some(path) => Some(Registry::load(path)?),
            None => None,
        };
        let confirm_texts: Vec<String> = match &self.hunt.probes {
            Some(t) => t.clone(),
            None => BUILTIN_PROBES.iter().map(|s| s.to_string()).collect(),
        };
        Ok(Scanner {
            hunt: self.hunt.check()?,
            confirm: self.confirm.check()?,
            confirm_texts,
            key,
            registry,
            load: self.load,
            detectors: self.detectors,
            base: self.base,
            signature: self.signature.map(|s| s.0),
            threads: self.threads,
            notes: self.notes,
        })
    }
}

/// A configured scan; reusable across models.
#[derive(Debug, Clone)]
pub struct Scanner {
    load: LoadOptions,
    hunt: crate::hunt::TriggerHunt,
    confirm: crate::confirm::Confirm,
    confirm_texts: Vec<String>,
    detectors: Detectors,
    base: Option<PathBuf>,
    registry: Option<Registry>,
    signature: Option<PathBuf>,
    key: Option<PublicKey>,
    threads: Option<usize>,
    notes: Vec<String>,
}

/// What the scanned model is.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ModelIdentity {
    /// The path scanned.
    pub path: PathBuf,
    /// Architecture, sizes and format.
    pub info: ModelInfo,
    /// SHA-256 over the model's manifest (what signatures and registries name).
    pub manifest_digest: String,
}

/// One file of the model and its digest.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct FileDigest {
    /// Path relative to the model (`.` for a single-file model).
    pub name: String,
    /// SHA-256, lowercase hex.
    pub sha256: String,
}

/// Signature and registry results.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ProvenanceCheck {
    /// Whether every check that ran passed.
    pub passed: bool,
    /// The signature check, when a signature was given.
    pub signature: Option<SignatureCheck>,
    /// The registry's answer, when a registry was given.
    pub registry: Option<Approval>,
}

/// Whether the signature verified.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct SignatureCheck {
    /// The signature bundle.
    pub path: PathBuf,
    /// Whether it verified and the files match it.
    pub valid: bool,
    /// Fingerprint of the key it verified under.
    pub signer: Option<String>,
    /// Why it did not verify.
    pub error: Option<String>,
}

/// Time spent in one stage of a scan.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Timing {
    /// Stage name.
    pub stage: String,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Whether a deployment pipeline may go on; the CLI's exit code follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Gate {
    /// Verdict `clean`, provenance passed (or not checked).
    Pass,
    /// Verdict `suspicious`: a person should look at the findings.
    Review,
    /// Verdict `trojaned`.
    Trojaned,
    /// The signature or registry check failed.
    ProvenanceFailed,
    /// Verdict `incomplete`: the hunt found nothing but covered too little to pass.
    Incomplete,
}

impl Gate {
    /// The CLI's exit code: 0 pass, 3 review, 4 trojaned, 5 provenance failed, 6 incomplete
    /// (2 is an error: the scan could not run).
    pub fn exit_code(self) -> u8 {
        match self {
            Gate::Pass => 0,
            Gate::Review => 3,
            Gate::Trojaned => 4,
            Gate::ProvenanceFailed => 5,
            Gate::Incomplete => 6,
        }
    }
}

/// Everything a scan found.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ScanReport {
    /// [`REPORT_SCHEMA`].
    pub schema: u32,
    /// trojanscan's version.
    pub trojanscan: String,
    /// What was scanned.
    pub model: ModelIdentity,
    /// Every file and its digest.
    pub files: Vec<FileDigest>,
    /// Signature and registry results (absent when neither was given).
    pub provenance: Option<ProvenanceCheck>,
    /// The weight diff against the base (absent without a base).
    pub forensics: Option<DiffReport>,
    /// The trigger hunt.
    pub hunt: Option<HuntReport>,
    /// Clustering confirmation of the hunt's best findings.
    pub confirmation: Option<ConfirmReport>,
    /// Model-level suspicion in [0, 1].
    pub suspicion: f64,
    /// The verdict.
    pub verdict: Verdict,
    /// What a pipeline should do.
    pub gate: Gate,
    /// Why, one sentence per finding, most important first.
    pub reasons: Vec<String>,
    /// How the inputs were read, where it bounds what the verdict covers: weight files
    /// beside the loaded ones that were not read, a probe file of which only a sample was
    /// kept.
    pub notes: Vec<String>,
    /// Time per stage.
    pub timings: Vec<Timing>,
}

impl Scanner {
    /// A builder with every default.
    pub fn builder() -> ScannerBuilder {
        ScannerBuilder::default()
    }

    /// Scan the model at `path` (HF directory or GGUF file).
    pub fn scan(&self, path: impl AsRef<Path>) -> Result<ScanReport> {
        self.scan_with(path, &NoProgress)
    }

    /// Scan, reporting progress to `progress`.
    pub fn scan_with(&self, path: impl AsRef<Path>, progress: &dyn Progress) -> Result<ScanReport> {
        let path = path.as_ref();
        let mut timings = Vec::new();
        let mut reasons = Vec::new();
        let mut timed = |stage: &str, t: Instant| {
            timings.push(Timing {
                stage: stage.into(),
                seconds: t.elapsed().as_secs_f64(),
            })
        };

        // 1. Identity.
        let t = Instant::now();
        progress.begin("identity", None);
        let model = Model::load(path, &self.load)?;
        let manifest_opts = ManifestOptions::default().threads(self.threads);
        let manifest = Manifest::of_model(path, &manifest_opts)?;
        progress.finish();
        timed("identity", t);

        // 2. Provenance.
        let provenance =
            if self.detectors.provenance && (self.signature.is_some() || self.registry.is_some()) {
                let t = Instant::now();
                progress.begin("provenance", None);
                let check = self.provenance(path)?;
                if let Some(s) = check.signature.as_ref().filter(|s| !s.valid) {
                    reasons.push(format!(
                        "the signature does not verify: {}",
                        s.error.as_deref().unwrap_or("?")
                    ));
                }
                if let Some(a) = check.registry.as_ref().filter(|a| !a.is_approved()) {
                    reasons.push(format!("registry: {a}"));
                }
                progress.finish();
                timed("provenance", t);
                Some(check)
            } else {
                None
            };

        // 3. Forensics.
        let forensics = match (&self.base, self.detectors.forensics) {
            (Some(base), true) => {
                let t = Instant::now();
                progress.begin("forensics", None);
                // The task's texts reach the behaviour check and its conjunctions.
                let mut opts = DiffOptions::default();
                let top = opts.top_tokens.max(crate::hunt::HINTS);
                opts = opts.top_tokens(top);
                if let Some(texts) = &self.hunt.params().probes {
                    opts = opts.probes(texts.clone());
                }
                let params = opts.check()?;
                let d = params.diff(path, base)?;
                progress.finish();
                timed("forensics", t);
                Some(d)
            }
            _ => None,
        };

        // 4. Hunt.
        let hunt = if self.detectors.hunt {
            let t = Instant::now();
            let mut params = self.hunt.params().clone();
            if let Some(d) = &forensics {
                params.hint_token_ids.extend(d.candidate_tokens());
            }
            let hunt = params.check()?;
            let r = match &self.base {
                // The base also tells task words from triggers (transfer).
                Some(b) => hunt.run_with_base(&model, &Model::load(b, &self.load)?, progress)?,
                None => hunt.run(&model, progress)?,
            };
            timed("hunt", t);
            Some(r)
        } else {
            None
        };

        // 5. Confirmation of the hunt's best findings.
        let confirmation = match (&hunt, self.detectors.confirmation) {
            (Some(h), true) if !h.triggers.is_empty() => {
                let t = Instant::now();
                progress.begin("confirmation", None);
                let seqs: Vec<Vec<u32>> = h
                    .triggers
                    .iter()
                    .take(3)
                    .map(|t| t.token_ids.clone())
                    .collect();
                let c = self.confirm.run(&model, &self.confirm_texts, &seqs)?;
                progress.finish();
                timed("confirmation", t);
                Some(c)
            }
            _ => None,
        };

        // Verdict.
        let hunt_s = hunt.as_ref().map_or(0.0, |h| h.suspicion);
        let forensic_s = forensics
            .as_ref()
            .map_or(0.0, |d| d.suspicion.min(FORENSICS_CAP));
        let suspicion = hunt_s.max(forensic_s);
        let p = self.hunt.params();
        let verdict = if hunt
            .as_ref()
            .is_some_and(|h| h.verdict == Verdict::Trojaned)
        {
            Verdict::Trojaned
        } else if suspicion >= p.suspicious_at {
            Verdict::Suspicious
        } else if hunt
            .as_ref()
            .is_some_and(|h| h.verdict == Verdict::Incomplete)
        {
            Verdict::Incomplete
        } else {
            Verdict::Clean
        };
        if let Some(h) = &hunt {
            if let Some(top) = h
                .triggers
                .first()
                .filter(|t| t.suspicion >= p.suspicious_at)
            {
                let corroborated = confirmation
                    .as_ref()
                    .and_then(|c| c.candidates.first())
                    .filter(|c| c.suspicion >= p.suspicious_at)
                    .map_or(String::new(), |c| {
                        format!(
                            "; inputs carrying it form their own activation cluster (purity {:.2}, silhouette {:.2})",
                            c.purity, c.silhouette
                        )
                    });
                reasons.insert(
                    0,
                    format!(
                        "trigger `{}` drives {:.0}% of probes to {} (suspicion {:.2}){corroborated}",
                        top.text,
                        top.effect * 100.0,
                        render::target_text(&top.target),
                        top.suspicion
                    ),
                );
            }
        }
        if let Some(why) = hunt
            .as_ref()
            .filter(|_| verdict == Verdict::Incomplete)
            .and_then(|h| h.coverage.shortfall.as_ref())
        {
            reasons.push(format!("hunt incomplete: {why}"));
        }
        if let Some(d) = forensics
            .as_ref()
            .filter(|d| d.suspicion >= p.suspicious_at)
        {
            reasons.extend(d.evidence.iter().map(|e| format!("forensics: {e}")));
        }
        let notes: Vec<String> = model
            .info()
            .unread_note()
            .into_iter()
            .chain(self.notes.iter().cloned())
            .collect();
        let failed = provenance.as_ref().is_some_and(|c| !c.passed);
        let gate = match verdict {
            Verdict::Trojaned => Gate::Trojaned,
            _ if failed => Gate::ProvenanceFailed,
            Verdict::Suspicious => Gate::Review,
            Verdict::Incomplete => Gate::Incomplete,
            _ => Gate::Pass,
        };
        Ok(ScanReport {
            schema: REPORT_SCHEMA,
            trojanscan: env!("CARGO_PKG_VERSION").into(),
            model: ModelIdentity {
                path: path.into(),
                info: model.info().clone(),
                manifest_digest: manifest.digest().to_hex(),
            },
            files: manifest
                .resources
                .iter()
                .map(|r| FileDigest {
                    name: r.name.clone(),
                    sha256: r.digest.to_hex(),
                })
                .collect(),
            provenance,
            forensics,
            hunt,
            confirmation,
            suspicion,
            verdict,
            gate,
            reasons,
            notes,
            timings,
        })
    }

    fn provenance(&self, path: &Path) -> Result<ProvenanceCheck> {
        let opts = VerifyOptions::default().threads(self.threads);
        let mut verified = None;
        let signature = match (&self.signature, &self.key) {
            (Some(sig), Some(key)) => Some(match provenance::verify_model(path, sig, key, &opts) {
                Ok(v) => {
                    let signer = v.signer.clone();
                    verified = Some(v);
                    SignatureCheck {
                        path: sig.clone(),
                        valid: true,
                        signer: Some(signer),
                        error: None,
                    }
                }
                Err(e) if e.is_verification_failure() => SignatureCheck {
                    path: sig.clone(),
                    valid: false,
                    signer: None,
                    error: Some(e.to_string()),
                },
                Err(e) => return Err(e),
            }),
            _ => None,
        };
        let registry = match &self.registry {
            Some(reg) => Some(provenance::check_approval(
                path,
                reg,
                verified.as_ref(),
                self.threads,
            )?),
            None => None,
        };
        let passed = signature.as_ref().is_none_or(|s| s.valid)
            && registry.as_ref().is_none_or(Approval::is_approved);
        Ok(ProvenanceCheck {
            passed,
            signature,
            registry,
        })
    }
}
