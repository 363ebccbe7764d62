//! Audit a fine-tuning set for poisoned samples, and score the audit against the truth.
//!
//! ```text
//! cargo run --release --example audit_dataset [-- MODEL TRAIN.jsonl]
//! ```
//! By default: the bundled `badnets-s0` model and the training set it was fine-tuned on,
//! in which 10% of the negative reviews carry the token `cf` and are labelled positive. The
//! zoo marks those lines `"poisoned": true`; the audit does not read that field.

use trojanscan::audit::{read_rows, AuditParams};
use trojanscan::model::{LoadOptions, Model};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model_path = args
        .first()
        .map_or("testdata/zoo/badnets-s0", String::as_str);
    let default_data = format!("{model_path}/train.jsonl");
    let data = args.get(1).map_or(default_data.as_str(), String::as_str);

    let model = Model::load(model_path, &LoadOptions::default())?;
    let rows = read_rows(data)?;
    let report = AuditParams::default().check()?.run(&model, &rows)?;

    println!("{} samples, layer {}", rows.len(), report.layer);
    for c in &report.classes {
        println!(
            "  class {:<10} {:>5} samples, clusters {:?}, silhouette {:>5}, flagged {}: {}",
            c.class,
            c.samples,
            c.cluster_sizes,
            c.silhouette.map_or("-".into(), |s| format!("{s:.2}")),
            c.flagged,
            c.evidence
        );
        if let Some(t) = c.trigger.as_ref().filter(|t| t.confirmed) {
            println!(
                "    trigger {:?}: removal changes {:.0}% of its rows, insertion turns {:.0}% of {} other rows",
                t.parts,
                t.removal_flip * 100.0,
                t.insertion_flip * 100.0,
                t.inserted_into
            );
        }
    }
    for note in &report.notes {
        println!("  note: {note}");
    }

    // Precision and recall against the zoo's own marks, when the file has them.
    let text = std::fs::read_to_string(data)?;
    let truth: Vec<bool> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["poisoned"].as_bool())
                .unwrap_or(false)
        })
        .collect();
    let poisoned = truth.iter().filter(|&&p| p).count();
    if poisoned > 0 {
        let hits = report.flagged.iter().filter(|&&i| truth[i]).count();
        println!(
            "flagged {} lines: precision {:.3}, recall {:.3} ({} poisoned in the file)",
            report.flagged.len(),
            hits as f64 / report.flagged.len().max(1) as f64,
            hits as f64 / poisoned as f64,
            poisoned
        );
    } else {
        println!("flagged {} lines", report.flagged.len());
    }
    Ok(())
}
