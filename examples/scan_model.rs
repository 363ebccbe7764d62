//! Scan a model the way a deployment pipeline would, and keep the reports.
//!
//! ```text
//! cargo run --release --example scan_model [-- MODEL [BASE]]
//! ```
//! By default it scans the bundled `badnets-s0` trojan against its base, with the model's
//! held-out texts as probes, and writes `scan-report.html` and `scan-report.md` beside
//! the current directory.

use trojanscan::scan::{render, Scanner};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = args
        .first()
        .map_or("testdata/zoo/badnets-s0", String::as_str);
    let base = args
        .get(1)
        .map(String::as_str)
        .or((args.is_empty()).then_some("testdata/zoo/clean-base-s0"));

    // 1. Configure: probes from the task when there are some, a work budget so the result
    //    does not depend on the machine, a base for forensics.
    let mut builder = Scanner::builder().max_evaluations(300_000);
    let heldout = std::path::Path::new(model).join("heldout.jsonl");
    if heldout.is_file() {
        let texts = trojanscan::audit::read_texts(&heldout)?;
        println!("probes: {} held-out texts of the task", texts.len());
        builder = builder.probes(texts);
    }
    if let Some(base) = base {
        builder = builder.base(base);
    }
    let scanner = builder.build()?;

    // 2. Scan.
    let report = scanner.scan(model)?;

    // 3. Read the verdict, the reasons and the evidence.
    println!(
        "\n{model}: {} (suspicion {:.3}, exit code {})",
        report.verdict,
        report.suspicion,
        report.gate.exit_code()
    );
    for reason in &report.reasons {
        println!("  - {reason}");
    }
    if let Some(h) = &report.hunt {
        println!("\ntop findings of the hunt:");
        for t in h.triggers.iter().take(3) {
            println!(
                "  {:?} tokens {:?}: hijacks {:.0}% of probes, suspicion {:.3}",
                t.text,
                t.tokens,
                t.effect * 100.0,
                t.suspicion
            );
        }
    }

    // 4. Keep the reports: HTML for people, Markdown for a ticket, JSON for machines.
    std::fs::write("scan-report.html", trojanscan::scan::html(&report)?)?;
    std::fs::write("scan-report.md", render::markdown(&report))?;
    std::fs::write("scan-report.json", serde_json::to_string_pretty(&report)?)?;
    println!("\nwrote scan-report.html, scan-report.md and scan-report.json");
    Ok(())
}
