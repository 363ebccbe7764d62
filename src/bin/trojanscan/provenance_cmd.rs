//! `diff`, `hash`, `sign`, `verify`, `registry` and `pickle-scan`: argument parsing and
//! printing only; the library does the work.
//!
//! Exit codes: 0 success (verified, approved, pickle clean); 1 the check failed (a
//! signature that does not verify, a file that differs, a model not approved, offending
//! pickle imports); 2 the check could not run (bad arguments, unreadable files).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Subcommand, ValueEnum};
use trojanscan::forensics::{DiffOptions, DiffParams};
use trojanscan::provenance::{
    self, pickle, registry, Approval, ApprovedModel, Manifest, ManifestOptions, PublicKey,
    Registry, SigningKey, Verdict, Verified, VerifyOptions,
};

/// Exit code of a check that ran and failed.
const EXIT_FAILED: i32 = 1;

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum ProvenanceCommand {
    /// Weight forensics: what changed between MODEL and the BASE it claims to come from.
    Diff {
        /// HF model directory or GGUF file.
        model: PathBuf,
        /// The base model (HF directory or GGUF file).
        #[arg(long)]
        base: PathBuf,
        /// Tokens to list, most drifting first (the trigger hunt's candidates).
        #[arg(long, default_value_t = 20)]
        top: usize,
        /// Seed of the randomized SVD and of the probes' insertion points.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Texts of the model's task for the behaviour check (JSONL with `text`, or one
        /// per line; the first 32 are used, of a seeded sample of 4096 when the file holds
        /// more); without them the diff compares weights only.
        #[arg(long)]
        probe: Option<PathBuf>,
        /// Most drifting tokens whose effect on the output is compared against the base
        /// (0: compare weights only).
        #[arg(long, default_value_t = 64)]
        behaviour_tokens: usize,
        /// Of those, the most drifting whose pairs are tried together (a combination
        /// trigger's parts do nothing alone; 0: single tokens only).
        #[arg(long, default_value_t = 64)]
        behaviour_pairs: usize,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// SHA-256 of every file of a model, hashed in parallel (a model-signing manifest).
    Hash {
        /// Model directory or single file.
        model: PathBuf,
        /// text: `sha256sum` lines; json: the in-toto statement plus digests.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Hashing threads (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Sign a model with an ECDSA P-256 key (OpenSSF model-signing bundle).
    Sign {
        /// Model directory or single file.
        model: PathBuf,
        /// Private key, PEM (PKCS#8 or SEC1), unencrypted.
        #[arg(long)]
        key: PathBuf,
        /// Where to write the signature (a signature inside the model is left out of it).
        #[arg(long, default_value = "model.sig")]
        out: PathBuf,
        /// Hashing threads (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Verify a model's signature and files, and/or whether an approved registry lists it.
    /// Exit 0: verified (and approved); 1: verification failed or not approved; 2: error.
    Verify {
        /// Model directory or single file.
        model: PathBuf,
        /// Signature bundle (needs --key).
        #[arg(long, requires = "key")]
        signature: Option<PathBuf>,
        /// Public key, PEM.
        #[arg(long, requires = "signature")]
        key: Option<PathBuf>,
        /// Approved-model registry to check this exact model against.
        #[arg(long, required_unless_present = "signature")]
        registry: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// The approved-model registry.
    Registry {
        #[command(subcommand)]
        action: RegistryAction,
    },
    /// Scan every pickle of a checkpoint (never executing it) for imports outside an
    /// allow-list. Exit 0: clean; 1: offending imports found; 2: error (also bytes that are
    /// not a pickle, and refused zip layouts).
    PickleScan {
        /// `.bin`, `.pt`, `.pth`, `.ckpt` or `.pkl` file (torch zip or plain pickle).
        path: PathBuf,
        /// Extra allowed import, `module.name` (repeatable).
        #[arg(long)]
        allow: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
}

#[derive(Subcommand)]
pub enum RegistryAction {
    /// Add a model (creating the registry file if needed).
    Add {
        /// Registry file.
        registry: PathBuf,
        /// Model directory or single file.
        model: PathBuf,
        /// Model name.
        #[arg(long)]
        name: String,
        /// Model version.
        #[arg(long)]
        version: String,
        /// Scan verdict, as `scan` gives it: clean, suspicious, trojaned, incomplete (or
        /// not-scanned). Only `clean` is ever approved.
        #[arg(long)]
        verdict: String,
        /// Scan date, YYYY-MM-DD (default: today, UTC).
        #[arg(long)]
        date: Option<String>,
        /// Signature bundle to verify first; its key becomes the recorded signer.
        #[arg(long, requires = "key")]
        signature: Option<PathBuf>,
        /// Public key, PEM.
        #[arg(long, requires = "signature")]
        key: Option<PathBuf>,
        /// Replace an entry with the same name and version.
        #[arg(long)]
        replace: bool,
    },
    /// Whether a model is approved. Exit 0: approved; 1: not approved; 2: error.
    Check {
        /// Registry file.
        registry: PathBuf,
        /// Model directory or single file.
        model: PathBuf,
        /// Signature bundle (needed when the entry names a signer).
        #[arg(long, requires = "key")]
        signature: Option<PathBuf>,
        /// Public key, PEM.
        #[arg(long, requires = "signature")]
        key: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// List the registry.
    List {
        /// Registry file.
        registry: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
}

/// Print, flush and leave with [`EXIT_FAILED`]: the check ran and failed.
fn fail(msg: &str) -> ! {
    let _ = std::io::stdout().flush();
    eprintln!("{msg}");
    std::process::exit(EXIT_FAILED)
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

pub fn run(cmd: ProvenanceCommand) -> Result<()> {
    match cmd {
        ProvenanceCommand::Diff {
            model,
            base,
            top,
            seed,
            probe,
            behaviour_tokens,
            behaviour_pairs,
            format,
        } => {
            let probes = match &probe {
                Some(p) => crate::hunt_cmd::read_probes(p, seed, false)?.texts,
                None => Vec::new(),
            };
            let params = DiffOptions::default()
                .top_tokens(top)
                .seed(seed)
                .behaviour_tokens(behaviour_tokens)
                .behaviour_pairs(behaviour_pairs)
                .probes(probes)
                .check()?;
            diff(&model, &base, &params, format)
        }
        ProvenanceCommand::Hash {
            model,
            format,
            threads,
        } => hash(&model, format, threads),
        ProvenanceCommand::Sign {
            model,
            key,
            out,
            threads,
        } => {
            let key = SigningKey::from_pem_file(&key)?;
            let opts = VerifyOptions::default().threads(threads);
            let m = provenance::sign_model(&model, &key, &out, &opts)
                .with_context(|| format!("signing {}", model.display()))?;
            eprintln!(
                "signed {} ({} files, manifest digest {}) with key {}: {}",
                model.display(),
                m.len(),
                m.digest(),
                key.public_key().fingerprint(),
                out.display()
            );
            Ok(())
        }
        ProvenanceCommand::Verify {
            model,
            signature,
            key,
            registry,
            format,
        } => verify(
            &model,
            signature.as_deref(),
            key.as_deref(),
            registry.as_deref(),
            format,
        ),
        ProvenanceCommand::Registry { action } => registry_cmd(action),
        ProvenanceCommand::PickleScan {
            path,
            allow,
            format,
        } => pickle_scan(&path, allow, format),
    }
}

fn diff(model: &Path, base: &Path, params: &DiffParams, format: Format) -> Result<()> {
    let r = params
        .diff(model, base)
        .with_context(|| format!("comparing {} with {}", model.display(), base.display()))?;
    if format == Format::Json {
        return print_json(&r);
    }
    let mut o = std::io::stdout().lock();
    writeln!(o, "model:     {}", r.model.display())?;
    writeln!(o, "base:      {}", r.base.display())?;
    writeln!(o, "suspicion: {:.3}", r.suspicion)?;
    writeln!(
        o,
        "overall relative change: {:.3e}",
        r.overall_relative_change
    )?;
    for e in &r.evidence {
        writeln!(o, "  - {e}")?;
    }
    let b = &r.behaviour;
    match &b.skipped {
        Some(why) => writeln!(o, "behaviour check: not run ({why})")?,
        None => writeln!(
            o,
            "behaviour check on {} probes: {} of {} tokens changed alone; {} of {} ordered pairs act jointly",
            b.probes, b.changed, b.tokens, b.joint, b.pairs
        )?,
    }
    // Where the change is: tensors by their share of the model's squared change.
    let total: f64 = r.tensors.iter().map(|t| t.delta_norm * t.delta_norm).sum();
    if total == 0.0 {
        return Ok(());
    }
    writeln!(o, "\ntensors holding most of the change:")?;
    let mut ts: Vec<_> = r.tensors.iter().filter(|t| t.delta_norm > 0.0).collect();
    ts.sort_by(|a, b| b.delta_norm.total_cmp(&a.delta_norm));
    writeln!(
        o,
        "  {:>6}  {:>10}  {:>8}  {:>9}  name",
        "share", "rel.change", "eff.rank", "top share"
    )?;
    for t in ts.iter().take(10) {
        let f = |v: Option<f64>, p: usize| v.map_or("-".to_string(), |x| format!("{x:.p$}"));
        writeln!(
            o,
            "  {:>5.1}%  {:>10.3e}  {:>8}  {:>9}  {}",
            100.0 * t.delta_norm * t.delta_norm / total,
            t.relative_change,
            f(t.effective_rank, 1),
            f(t.top_sv_share, 3),
            t.name
        )?;
    }
    for l in &r.layers {
        writeln!(
            o,
            "  block {:>3}: relative change {:.3e} ({} tensors)",
            l.layer, l.relative_change, l.tensors
        )?;
    }
    writeln!(o, "\nmost drifting tokens (trigger candidates):")?;
    writeln!(
        o,
        "  {:>8}  {:>9}  {:>8}  {:>6}  token",
        "id", "drift", "cos.chg", "norm"
    )?;
    for t in &r.tokens {
        writeln!(
            o,
            "  {:>8}  {:>9.2}  {:>8.4}  {:>6.3}  {:?}",
            t.token_id, t.drift, t.cosine_change, t.norm_ratio, t.token
        )?;
    }
    Ok(())
}

fn hash(model: &Path, format: Format, threads: Option<usize>) -> Result<()> {
    let m = Manifest::of_model(model, &ManifestOptions::default().threads(threads))?;
    if format == Format::Json {
        return print_json(&serde_json::json!({
            "manifest_digest": m.digest(),
            "subject_digest": m.subject_digest(),
            "statement": m.to_statement(),
        }));
    }
    let mut o = std::io::stdout().lock();
    for r in &m.resources {
        let path = if r.name == "." {
            model.to_path_buf()
        } else {
            model.join(&r.name)
        };
        writeln!(o, "{}", provenance::sha256sum_line(&r.digest, &path))?;
    }
    Ok(())
}

fn verify_sig(model: &Path, sig: &Path, key: &Path) -> trojanscan::Result<Verified> {
    let key = PublicKey::from_pem_file(key)?;
    provenance::verify_model(model, sig, &key, &VerifyOptions::default())
}

fn verify(
    model: &Path,
    sig: Option<&Path>,
    key: Option<&Path>,
    reg: Option<&Path>,
    format: Format,
) -> Result<()> {
    let verified = match (sig, key) {
        (Some(s), Some(k)) => match verify_sig(model, s, k) {
            Ok(v) => Some(v),
            Err(e) if e.is_verification_failure() => {
                if format == Format::Json {
                    print_json(&serde_json::json!({"verified": false, "error": e.to_string()}))?;
                }
                fail(&format!("verification FAILED: {e}"))
            }
            Err(e) => return Err(e.into()),
        },
        _ => None,
    };
    let approval = match reg {
        Some(r) => {
            let registry = Registry::load(r)?;
            Some(provenance::check_approval(
                model,
                &registry,
                verified.as_ref(),
                None,
            )?)
        }
        None => None,
    };
    let approved = approval.as_ref().is_none_or(Approval::is_approved);
    if format == Format::Json {
        print_json(&serde_json::json!({
            "verified": verified.is_some().then_some(true),
            "signer": verified.as_ref().map(|v| &v.signer),
            "manifest_digest": verified.as_ref().map(|v| v.manifest_digest),
            "files": verified.as_ref().map(|v| v.manifest.len()),
            "approval": approval,
        }))?;
    } else {
        if let Some(v) = &verified {
            println!(
                "verified: {} ({} files) signed by key {}, manifest digest {}",
                model.display(),
                v.manifest.len(),
                v.signer,
                v.manifest_digest
            );
        }
        if let Some(a) = &approval {
            println!("{a}");
        }
    }
    if !approved {
        fail("not approved");
    }
    Ok(())
}

fn registry_cmd(action: RegistryAction) -> Result<()> {
    match action {
        RegistryAction::Add {
            registry: path,
            model,
            name,
            version,
            verdict,
            date,
            signature,
            key,
            replace,
        } => {
            let verdict: Verdict = verdict.parse()?;
            let (digest, files, signer) = match (signature, key) {
                (Some(s), Some(k)) => {
                    let v = verify_sig(&model, &s, &k).with_context(|| {
                        format!("verifying {} before listing it", model.display())
                    })?;
                    (v.manifest_digest, v.manifest.len(), Some(v.signer))
                }
                _ => {
                    let m = Manifest::of_model(&model, &ManifestOptions::default())?;
                    (m.digest(), m.len(), None)
                }
            };
            let date = date.unwrap_or_else(registry::today);
            let entry = ApprovedModel::new(&name, &version, digest, files, signer, verdict, &date)?;
            let mut reg = Registry::load_or_new(&path)?;
            reg.add(entry, replace, &path)?;
            reg.save(&path)?;
            eprintln!(
                "listed {name} {version} ({verdict}, manifest digest {digest}) in {}",
                path.display()
            );
            Ok(())
        }
        RegistryAction::Check {
            registry: path,
            model,
            signature,
            key,
            format,
        } => verify(
            &model,
            signature.as_deref(),
            key.as_deref(),
            Some(&path),
            format,
        ),
        RegistryAction::List {
            registry: path,
            format,
        } => {
            let reg = Registry::load(&path)?;
            if format == Format::Json {
                return print_json(&reg);
            }
            let mut o = std::io::stdout().lock();
            writeln!(
                o,
                "{:<24} {:<12} {:<12} {:<10} {:<16} signer",
                "name", "version", "verdict", "scanned", "manifest"
            )?;
            for m in &reg.models {
                writeln!(
                    o,
                    "{:<24} {:<12} {:<12} {:<10} {:<16} {}",
                    m.name,
                    m.version,
                    m.verdict.to_string(),
                    m.scanned,
                    &m.manifest_digest.to_hex()[..16],
                    m.signer.as_deref().map_or("-", |s| &s[..16.min(s.len())])
                )?;
            }
            Ok(())
        }
    }
}

fn pickle_scan(path: &Path, allow: Vec<String>, format: Format) -> Result<()> {
    let opts = allow
        .into_iter()
        .fold(pickle::PickleScanOptions::default(), |o, a| o.allow(a));
    let report = pickle::scan_pickle(path, &opts)?;
    let offending = report.offending();
    if format == Format::Json {
        print_json(&serde_json::json!({
            "clean": offending.is_empty(),
            "report": report,
        }))?;
    } else {
        let ops: u64 = report.streams.iter().map(|s| s.opcodes).sum();
        println!(
            "{} ({}, {} stream(s), {} opcodes, never executed)",
            path.display(),
            report.container,
            report.streams.len(),
            ops
        );
        if let Some(st) = &report.storage {
            println!(
                "  {} torch storage record(s), {} bytes at offset {} (raw tensor data, walked as torch reads it)",
                st.count, st.len, st.offset
            );
        }
        for s in &report.streams {
            for i in &s.imports {
                println!(
                    "  {} {:<48} {:<13} x{:<4} {}  [{}]",
                    if i.allowed { " " } else { "!" },
                    i.global(),
                    i.opcode,
                    i.count,
                    s.member,
                    if i.allowed { "allowed" } else { "NOT ALLOWED" }
                );
            }
        }
    }
    if !offending.is_empty() {
        let names: Vec<String> = offending.iter().map(|(_, i)| i.global()).collect();
        fail(&format!(
            "pickle imports outside the allow-list: {}",
            names.join(", ")
        ));
    }
    Ok(())
}
