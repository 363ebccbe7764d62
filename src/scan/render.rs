//! Scan reports for people: plain text for a terminal, Markdown for a pull request or a
//! ticket. (JSON is the report serialized as it is: `serde_json::to_string(&report)`.)

use std::fmt::Write;

use super::{Gate, ScanReport};
use crate::hunt::Target;

/// What a finding drives the model to, in a few words.
pub fn target_text(t: &Target) -> String {
    match t {
        Target::Label { label, .. } => format!("label `{label}`"),
        Target::Text {
            text, agreement, ..
        } => format!("{text:?} ({:.0}% of probes agree)", agreement * 100.0),
        _ => "one region of representation space".into(),
    }
}

/// One line on the signature check.
pub(crate) fn signature_line(s: &super::SignatureCheck) -> String {
    match (&s.signer, &s.error) {
        (Some(k), _) => format!("signature verifies (signer {k})"),
        (_, Some(e)) => format!("signature does not verify: {e}"),
        _ => "signature not checked".into(),
    }
}

fn gate_text(g: Gate) -> &'static str {
    match g {
        Gate::Pass => "pass",
        Gate::Review => "review: a person should look at the findings",
        Gate::Trojaned => "fail: a trigger hijacks the model",
        Gate::ProvenanceFailed => "fail: provenance check failed",
        Gate::Incomplete => "fail: the hunt covered too little to call the model clean",
    }
}

/// The report as plain text.
pub fn text(r: &ScanReport) -> String {
    let mut o = String::new();
    let i = &r.model.info;
    let _ = writeln!(o, "model:      {}", r.model.path.display());
    let _ = writeln!(
        o,
        "            {} ({}), {} layers, {:.1} M parameters, {} files, manifest {}",
        i.model_type,
        i.format,
        i.num_layers,
        i.num_parameters as f64 / 1e6,
        r.files.len(),
        &r.model.manifest_digest[..16]
    );
    let _ = writeln!(o, "verdict:    {}", r.verdict);
    let _ = writeln!(o, "suspicion:  {:.3}", r.suspicion);
    let _ = writeln!(
        o,
        "gate:       {} (exit {})",
        gate_text(r.gate),
        r.gate.exit_code()
    );
    for reason in &r.reasons {
        let _ = writeln!(o, "  - {reason}");
    }
    for note in &r.notes {
        let _ = writeln!(o, "note:       {note}");
    }
    if let Some(p) = &r.provenance {
        let _ = writeln!(
            o,
            "\nprovenance: {}",
            if p.passed { "passed" } else { "FAILED" }
        );
        if let Some(s) = &p.signature {
            let _ = writeln!(o, "  {}", signature_line(s));
        }
        if let Some(a) = &p.registry {
            let _ = writeln!(o, "  registry: {a}");
        }
    }
    if let Some(d) = &r.forensics {
        let _ = writeln!(
            o,
            "\nforensics against {}: suspicion {:.3}, overall change {:.2e}",
            d.base.display(),
            d.suspicion,
            d.overall_relative_change
        );
        for t in d.tokens.iter().take(5) {
            let _ = writeln!(
                o,
                "  token {:?} (id {}) drift {:.1}",
                t.token, t.token_id, t.drift
            );
        }
    }
    if let Some(h) = &r.hunt {
        let _ = writeln!(
            o,
            "\nhunt ({:?}): suspicion {:.3}, {} candidates, {} evaluations{}",
            h.objective,
            h.suspicion,
            h.candidates,
            h.evaluations,
            if h.budget_exhausted {
                ", budget ran out"
            } else {
                ""
            }
        );
        let c = &h.coverage;
        let _ = writeln!(
            o,
            "coverage: {} of {} candidates screened ({:.1}%; {} of {} proposals){}",
            c.screened,
            c.pool,
            100.0 * c.share,
            c.proposed_screened,
            c.proposed,
            c.shortfall
                .as_ref()
                .map_or(String::new(), |s| format!("; short: {s}"))
        );
        for (k, t) in h.triggers.iter().take(5).enumerate() {
            let _ = writeln!(
                o,
                "  {}. {:?} suspicion {:.3}, effect {:.2} -> {}",
                k + 1,
                t.text,
                t.suspicion,
                t.effect,
                target_text(&t.target)
            );
        }
    }
    if let Some(c) = &r.confirmation {
        let _ = writeln!(
            o,
            "\nconfirmation (layer {}, {} probes):",
            c.layer, c.probes
        );
        for x in &c.candidates {
            let _ = writeln!(
                o,
                "  {:?}: separation {:.3} (purity {:.2}, silhouette {:.2}), suspicion {:.3}",
                x.text, x.separation, x.purity, x.silhouette, x.suspicion
            );
        }
    }
    let total: f64 = r.timings.iter().map(|t| t.seconds).sum();
    let parts: Vec<String> = r
        .timings
        .iter()
        .map(|t| format!("{} {:.1} s", t.stage, t.seconds))
        .collect();
    let _ = writeln!(o, "\ntime:       {total:.1} s ({})", parts.join(", "));
    o
}

/// Escape text for a Markdown table cell or inline code.
fn md(s: &str) -> String {
    s.replace('|', "\\|").replace('`', "'").replace('\n', " ")
}

/// The report as Markdown.
pub fn markdown(r: &ScanReport) -> String {
    let mut o = String::new();
    let i = &r.model.info;
    let _ = writeln!(
        o,
        "# trojanscan: `{}`\n",
        md(&r.model.path.display().to_string())
    );
    let _ = writeln!(o, "| | |\n|---|---|");
    let _ = writeln!(o, "| verdict | **{}** |", r.verdict);
    let _ = writeln!(o, "| suspicion | {:.3} |", r.suspicion);
    let _ = writeln!(
        o,
        "| gate | {} (exit {}) |",
        gate_text(r.gate),
        r.gate.exit_code()
    );
    let _ = writeln!(
        o,
        "| model | {} ({}), {} layers, {:.1} M parameters |",
        i.model_type,
        i.format,
        i.num_layers,
        i.num_parameters as f64 / 1e6
    );
    let _ = writeln!(o, "| manifest digest | `{}` |", r.model.manifest_digest);
    if !r.reasons.is_empty() {
        let _ = writeln!(o, "\n## Why\n");
        for reason in &r.reasons {
            let _ = writeln!(o, "- {}", md(reason));
        }
    }
    if !r.notes.is_empty() {
        let _ = writeln!(o, "\n## Notes\n");
        for note in &r.notes {
            let _ = writeln!(o, "- {}", md(note));
        }
    }
    if let Some(p) = &r.provenance {
        let _ = writeln!(
            o,
            "\n## Provenance: {}\n",
            if p.passed { "passed" } else { "FAILED" }
        );
        if let Some(s) = &p.signature {
            let _ = writeln!(o, "- {}", md(&signature_line(s)));
        }
        if let Some(a) = &p.registry {
            let _ = writeln!(o, "- registry: {}", md(&a.to_string()));
        }
    }
    if let Some(h) = &r.hunt {
        let _ = writeln!(
            o,
            "\n## Trigger hunt\n\n{:?} objective, {} candidates, {} evaluations, suspicion {:.3}.\n",
            h.objective, h.candidates, h.evaluations, h.suspicion
        );
        let _ = writeln!(
            o,
            "| # | trigger | token ids | suspicion | effect | drives to |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|---|");
        for (k, t) in h.triggers.iter().take(10).enumerate() {
            let _ = writeln!(
                o,
                "| {} | `{}` | {:?} | {:.3} | {:.2} | {} |",
                k + 1,
                md(&t.text),
                t.token_ids,
                t.suspicion,
                t.effect,
                md(&target_text(&t.target))
            );
        }
    }
    if let Some(c) = &r.confirmation {
        let _ = writeln!(
            o,
            "\n## Activation clustering (layer {}, {} probes)\n",
            c.layer, c.probes
        );
        let _ = writeln!(
            o,
            "| candidate | separation | purity | silhouette | suspicion |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|");
        for x in &c.candidates {
            let _ = writeln!(
                o,
                "| `{}` | {:.3} | {:.2} | {:.2} | {:.3} |",
                md(&x.text),
                x.separation,
                x.purity,
                x.silhouette,
                x.suspicion
            );
        }
    }
    if let Some(d) = &r.forensics {
        let _ = writeln!(
            o,
            "\n## Weight forensics against `{}`\n\nSuspicion {:.3}; overall relative change {:.2e}.\n",
            md(&d.base.display().to_string()),
            d.suspicion,
            d.overall_relative_change
        );
        let _ = writeln!(
            o,
            "| token | id | drift | cosine change |\n|---|---|---|---|"
        );
        for t in d.tokens.iter().take(10) {
            let _ = writeln!(
                o,
                "| `{}` | {} | {:.1} | {:.3} |",
                md(&t.token),
                t.token_id,
                t.drift,
                t.cosine_change
            );
        }
    }
    let _ = writeln!(o, "\n## Files\n\n| file | sha256 |\n|---|---|");
    for f in &r.files {
        let _ = writeln!(o, "| `{}` | `{}` |", md(&f.name), f.sha256);
    }
    let _ = writeln!(o, "\n## Time\n\n| stage | seconds |\n|---|---|");
    for t in &r.timings {
        let _ = writeln!(o, "| {} | {:.1} |", t.stage, t.seconds);
    }
    o
}
