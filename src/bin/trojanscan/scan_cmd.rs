//! `trojanscan scan`: every detector, one verdict, an exit code a pipeline can gate on.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::ValueEnum;
use trojanscan::scan::{render, Scanner};
use trojanscan::DeviceChoice;

use crate::bars::Bars;
use crate::hunt_cmd::{read_probes, SearchArgs};

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ReportFormat {
    Text,
    Json,
    Markdown,
    /// One self-contained file with inline SVG plots.
    Html,
}

#[derive(clap::Args)]
pub struct ScanArgs {
    /// HF model directory or GGUF file.
    model: PathBuf,
    /// The base model this one claims to fine-tune: adds weight forensics, and its most
    /// drifting tokens are hunted first.
    #[arg(long)]
    base: Option<PathBuf>,
    /// Registry of approved models: the scan fails its gate unless this exact model is
    /// approved.
    #[arg(long)]
    registry: Option<PathBuf>,
    /// Signature bundle (Sigstore JSON) the model's files must match.
    #[arg(long, requires = "key")]
    signature: Option<PathBuf>,
    /// Public key (PEM) the signature must verify under.
    #[arg(long, requires = "signature")]
    key: Option<PathBuf>,
    #[command(flatten)]
    search: SearchArgs,
    /// Report format.
    #[arg(long, value_enum, default_value = "text")]
    format: ReportFormat,
    /// Write the report here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

/// Exit codes: 0 clean, 3 suspicious, 4 trojaned, 5 provenance failed, 2 error.
pub fn run(args: ScanArgs, device: DeviceChoice) -> Result<ExitCode> {
    let mut b = Scanner::builder()
        .device(device)
        .max_len(args.search.max_len)
        .chat_template(!args.search.no_chat_template);
    if let Some(p) = &args.search.probe {
        b = b.probe_sample(p, read_probes(p, 0, args.quiet)?);
    }
    if let Some(t) = args.search.budget {
        b = b.budget(t);
    }
    if let Some(n) = args.search.max_evaluations {
        b = b.max_evaluations(n);
    }
    if let Some(base) = &args.base {
        b = b.base(base);
    }
    if let Some(r) = &args.registry {
        b = b.registry(r);
    }
    if let (Some(s), Some(k)) = (&args.signature, &args.key) {
        b = b.signature(s, k);
    }
    let scanner = b.build()?;
    let bars = Bars::new(args.quiet);
    let report = scanner
        .scan_with(&args.model, &bars)
        .with_context(|| format!("scanning {}", args.model.display()))?;
    bars.clear();
    let body = match args.format {
        ReportFormat::Json => serde_json::to_string_pretty(&report)? + "\n",
        ReportFormat::Text => render::text(&report),
        ReportFormat::Markdown => render::markdown(&report),
        ReportFormat::Html => trojanscan::scan::html(&report)?,
    };
    match &args.out {
        Some(path) => trojanscan::output::write(path, body.as_bytes())?,
        None => std::io::stdout().lock().write_all(body.as_bytes())?,
    }
    Ok(ExitCode::from(report.gate.exit_code()))
}
