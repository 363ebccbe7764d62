//! `trojanscan audit`: find poisoned samples in a training set.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use trojanscan::audit::{read_rows, AuditParams};
use trojanscan::model::{LoadOptions, Model, Precision};
use trojanscan::DeviceChoice;

use crate::provenance_cmd::Format;

#[derive(clap::Args)]
pub struct AuditArgs {
    /// HF model directory or GGUF file (the model trained on the data).
    model: PathBuf,
    /// JSONL data set: `text` and optional `label` per line.
    #[arg(long)]
    data: PathBuf,
    /// Hidden state to cluster (0: embeddings; default: the last block).
    #[arg(long)]
    layer: Option<usize>,
    /// PCA dimensions before clustering.
    #[arg(long, default_value_t = 10)]
    dims: usize,
    /// Seed of PCA, k-means and the trigger insertion test.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Clustering only: do not explain suspicious groups by shared tokens or test those
    /// as a trigger.
    #[arg(long)]
    no_attribution: bool,
    /// Rows the trigger tests may forward in all; candidates left once they are spent
    /// are reported untested.
    #[arg(long, default_value_t = AuditParams::default().max_test_rows)]
    max_test_rows: usize,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

pub fn run(args: AuditArgs, device: DeviceChoice) -> Result<()> {
    let mut opts = LoadOptions::with_precision(Precision::F32);
    opts.device = device;
    let model = Model::load(&args.model, &opts)?;
    let rows = read_rows(&args.data)?;
    let params = AuditParams {
        layer: args.layer,
        dims: args.dims,
        seed: args.seed,
        attribution: !args.no_attribution,
        max_test_rows: args.max_test_rows,
        ..AuditParams::default()
    };
    let report = params.check()?.run(&model, &rows)?;
    let mut out = std::io::stdout().lock();
    if args.format == Format::Json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "data:      {} ({} rows)",
        args.data.display(),
        rows.len()
    )?;
    writeln!(out, "layer:     {}", report.layer)?;
    writeln!(out, "suspicion: {:.3}", report.suspicion)?;
    writeln!(out, "flagged:   {} rows", report.flagged.len())?;
    for c in &report.classes {
        writeln!(
            out,
            "  {:<16} {:>6} samples  {}  {}",
            format!("{:?}", c.class),
            c.samples,
            if c.flagged { "FLAGGED" } else { "clean  " },
            c.evidence
        )?;
    }
    for note in &report.notes {
        writeln!(out, "note:      {note}")?;
    }
    for &i in report.flagged.iter().take(10) {
        writeln!(out, "  line {:>6}: {:?}", i + 1, rows[i].text)?;
    }
    if report.flagged.len() > 10 {
        writeln!(
            out,
            "  ... ({} more; --format json lists all)",
            report.flagged.len() - 10
        )?;
    }
    Ok(())
}
