//! `trojanscan hunt`: search a model for trigger tokens and sequences.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use trojanscan::audit::{sample_texts, TextSample, MAX_PROBE_TEXTS};
use trojanscan::forensics::DiffOptions;
use trojanscan::hunt::{FuzzParams, HuntParams, HuntReport, Insertion, Target, HINTS};
use trojanscan::model::{LoadOptions, Model, Precision};
use trojanscan::DeviceChoice;

use crate::bars::Bars;
use crate::provenance_cmd::Format;

/// What a hunt searches with and how long: shared by `hunt` and `scan`.
#[derive(clap::Args)]
pub struct SearchArgs {
    /// Clean probe texts: JSONL with a `text` field, or one text per line (default:
    /// built-in neutral prompts). A file of more than 4096 texts is sampled (seeded,
    /// uniform): no stage reads more.
    #[arg(long)]
    pub probe: Option<PathBuf>,
    /// Time budget: `90s`, `2m`, `1h` or seconds (default: 2 minutes up to 50 M
    /// parameters, 8 minutes above).
    #[arg(long, value_parser = parse_duration)]
    pub budget: Option<Duration>,
    /// Work budget in candidate × probe rows: with a generous time budget, the findings
    /// no longer depend on how fast or busy the machine is.
    #[arg(long, value_name = "ROWS")]
    pub max_evaluations: Option<u64>,
    /// Longest trigger sequence, in tokens.
    #[arg(long, default_value_t = 4)]
    pub max_len: usize,
    /// Probe an instruct model with bare text rather than as the user's turn of its chat
    /// template.
    #[arg(long)]
    pub no_chat_template: bool,
}

#[derive(clap::Args)]
pub struct HuntArgs {
    /// HF model directory or GGUF file.
    model: PathBuf,
    #[command(flatten)]
    search: SearchArgs,
    /// Where candidates go in each probe; repeat for several rows per probe (default: the
    /// start, the end and one random word boundary).
    #[arg(long, value_name = "start|end|random")]
    insert: Vec<Insertion>,
    /// Candidate × probe rows per forward pass.
    #[arg(long, default_value_t = 256)]
    batch_rows: usize,
    /// Single-token candidates screened together in one probe row, groups that move the
    /// model split down to one token (default: 8 for decoders, 1 otherwise).
    #[arg(long, value_name = "N")]
    group_size: Option<usize>,
    /// Decoders: hunt for inputs that make the model say this text.
    #[arg(long)]
    target: Option<String>,
    /// Candidate texts to try first (comma-separated).
    #[arg(long, value_delimiter = ',')]
    candidates: Vec<String>,
    /// The base model this one claims to fine-tune: its top drifting tokens are tried first,
    /// and a finding whose effect the base shows too counts as a task word (transfer).
    #[arg(long)]
    base: Option<PathBuf>,
    /// Fuzz after the beam search: mutate sequences with activation coverage as feedback.
    #[arg(long)]
    fuzz: bool,
    /// Fuzz corpus file (JSONL) to resume from and save to.
    #[arg(long, requires = "fuzz")]
    fuzz_corpus: Option<PathBuf>,
    /// Stop fuzzing after this many mutants.
    #[arg(long, requires = "fuzz")]
    fuzz_iterations: Option<u64>,
    /// Seed of insertion points, the null and fuzzing.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Findings to report.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// No progress on stderr.
    #[arg(long)]
    quiet: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

/// `90s`, `2m`, `1h`, `1500ms` or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration"))?;
    let secs = match unit {
        "" | "s" => v,
        "ms" => v / 1000.0,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("unknown unit `{unit}` in `{s}` (ms, s, m, h)")),
    };
    if !(secs > 0.0 && secs < 1e7) {
        return Err(format!("`{s}` is not a positive duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

pub fn run(args: HuntArgs, device: DeviceChoice) -> Result<()> {
    // f32 weights: gradients need them, and GGUF runs at the same speed dequantized.
    let mut opts = LoadOptions::with_precision(Precision::F32);
    opts.device = device;
    let model = Model::load(&args.model, &opts)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let probes = match &args.search.probe {
        Some(p) => Some(read_probes(p, args.seed, args.quiet)?),
        None => None,
    };
    let sample_note = match (&args.search.probe, &probes) {
        (Some(p), Some(s)) => s.note(p),
        _ => None,
    };
    let hints = match &args.base {
        Some(b) => DiffOptions::default()
            .top_tokens(HINTS)
            .check()?
            .diff(&args.model, b)?
            .candidate_tokens(),
        None => Vec::new(),
    };
    let params = HuntParams {
        probes: probes.map(|s| s.texts),
        budget: args.search.budget,
        max_evaluations: args.search.max_evaluations,
        max_len: args.search.max_len,
        insertions: if args.insert.is_empty() {
            HuntParams::default().insertions
        } else {
            args.insert.clone()
        },
        batch_rows: args.batch_rows,
        group_size: args.group_size,
        target_text: args.target.clone(),
        candidates: args.candidates.clone(),
        hint_token_ids: hints,
        seed: args.seed,
        top: args.top,
        fuzz: args.fuzz.then(|| FuzzParams {
            corpus: args.fuzz_corpus.clone(),
            iterations: args.fuzz_iterations,
            ..FuzzParams::default()
        }),
        chat_template: !args.search.no_chat_template,
        ..HuntParams::default()
    };
    let sink = Bars::new(args.quiet);
    let hunt = params.check()?;
    let mut report = match &args.base {
        Some(b) => {
            let base = Model::load(b, &opts).with_context(|| format!("loading {}", b.display()))?;
            hunt.run_with_base(&model, &base, &sink)?
        }
        None => hunt.run(&model, &sink)?,
    };
    sink.clear();
    // The report says what it did not cover: weights left unread, probes left out.
    report
        .notes
        .extend(model.info().unread_note().into_iter().chain(sample_note));
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &report)?;
            writeln!(out)?;
        }
        Format::Text => print_text(&mut out, &args, &report)?,
    }
    Ok(())
}

/// A probe file, within bounded memory: at most [`MAX_PROBE_TEXTS`] texts, a uniform
/// sample drawn with `seed` when the file holds more, which stderr notes unless `quiet`.
pub fn read_probes(path: &Path, seed: u64, quiet: bool) -> Result<TextSample> {
    let sample = sample_texts(path, MAX_PROBE_TEXTS, seed)
        .with_context(|| format!("reading {}", path.display()))?;
    if sample.texts.is_empty() {
        bail!("{} holds no probe texts", path.display());
    }
    if let Some(note) = sample.note(path).filter(|_| !quiet) {
        eprintln!("note: {note}");
    }
    Ok(sample)
}

fn print_text(out: &mut impl Write, args: &HuntArgs, r: &HuntReport) -> Result<()> {
    writeln!(out, "model:      {}", args.model.display())?;
    writeln!(out, "objective:  {:?}", r.objective)?;
    writeln!(out, "verdict:    {}", r.verdict)?;
    let c = &r.coverage;
    writeln!(
        out,
        "coverage:   {} of {} candidates screened ({:.1}%, {:.1}% required), {} of {} proposals",
        c.screened,
        c.pool,
        100.0 * c.share,
        100.0 * c.required,
        c.proposed_screened,
        c.proposed
    )?;
    if let Some(why) = &c.shortfall {
        writeln!(out, "            short: {why}")?;
    }
    writeln!(out, "suspicion:  {:.3}", r.suspicion)?;
    writeln!(
        out,
        "searched:   {} candidates, {} evaluations ({} probe rows each){}",
        r.candidates,
        r.evaluations,
        r.probes,
        if r.budget_exhausted {
            "; budget ran out"
        } else {
            ""
        }
    )?;
    writeln!(
        out,
        "null:       median {:.3}, scale {:.3}, max {:.3} over {} random common-word sequences",
        r.calibration.null.median,
        r.calibration.null.scale,
        r.calibration.null.max,
        r.calibration.null.samples
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "  # suspicion      z  effect  detail  natural  found by  trigger → target"
    )?;
    for (i, t) in r.triggers.iter().enumerate() {
        let target = match &t.target {
            Target::Label { label, .. } => format!("label {label}"),
            Target::Text {
                text, agreement, ..
            } => format!("{text:?} ({:.0}% of probes)", agreement * 100.0),
            _ => "representation".into(),
        };
        writeln!(
            out,
            "{:>3} {:>9.3} {:>6.1} {:>7.3} {:>7.3}  {:>7}  {:<8}  {:?} → {target}",
            i + 1,
            t.suspicion,
            t.z.min(999.0),
            t.effect,
            t.detail,
            t.naturalness.map_or("-".to_string(), |n| format!("{n:.2}")),
            format!("{:?}", t.found_by).to_lowercase(),
            t.text,
        )?;
    }
    let t = &r.time;
    let work = (t.rows + t.forward + t.objective).max(1e-9);
    writeln!(
        out,
        "\ntime:       {:.1} s; of the evaluations: forward {:.0}%, building rows {:.0}%, objective {:.0}%",
        r.seconds,
        100.0 * t.forward / work,
        100.0 * t.rows / work,
        100.0 * t.objective / work
    )?;
    for n in &r.notes {
        writeln!(out, "note: {n}")?;
    }
    Ok(())
}
