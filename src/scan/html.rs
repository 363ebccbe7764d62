//! The scan report as one self-contained HTML file: inline CSS and inline SVG plots
//! (plotters), no scripts, nothing fetched, so it opens the same in a browser offline.
//! The markup is well-formed XML (XHTML-style), which the tests check.

use std::fmt::Write;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use super::render::{signature_line, target_text};
use super::{Gate, ScanReport};
use crate::confirm::ConfirmReport;
use crate::forensics::DiffReport;
use crate::hunt::HuntReport;
use crate::{Error, Result};

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}\
h1{font-size:1.4rem;word-break:break-all}h2{font-size:1.1rem;margin-top:2rem;border-bottom:1px solid #ddd}\
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;font-size:.9rem}\
code{background:#f4f4f4;padding:0 .2rem}.badge{display:inline-block;padding:.2rem .6rem;border-radius:.3rem;color:#fff;font-weight:bold}\
.clean{background:#2e7d32}.suspicious{background:#ef6c00}.incomplete{background:#6d4c41}.trojaned{background:#c62828}figure{margin:1rem 0}";

/// Escape text for HTML content and attribute values.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            // Control characters are not allowed in XML.
            c if c.is_control() && c != '\n' && c != '\t' => o.push('\u{fffd}'),
            c => o.push(c),
        }
    }
    o
}

fn render_err<E: std::fmt::Debug>(e: E) -> Error {
    Error::Render(format!("{e:?}"))
}

/// The report as one HTML file.
pub fn html(r: &ScanReport) -> Result<String> {
    let mut o = String::new();
    let path = r.model.path.display().to_string();
    let verdict = r.verdict.to_string();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\" xmlns=\"http://www.w3.org/1999/xhtml\"><head><meta charset=\"utf-8\"/>\
         <title>trojanscan: {}</title><style>{STYLE}</style></head><body>\n",
        esc(&path)
    );
    let _ = writeln!(o, "<h1>trojanscan: <code>{}</code></h1>", esc(&path));
    let i = &r.model.info;
    let gate = match r.gate {
        Gate::Pass => "pass",
        Gate::Review => "review",
        Gate::Trojaned => "fail: trojaned",
        Gate::ProvenanceFailed => "fail: provenance",
        Gate::Incomplete => "fail: incomplete",
    };
    let _ = writeln!(
        o,
        "<p><span class=\"badge {verdict}\">{verdict}</span> suspicion <b>{:.3}</b> · gate {gate} (exit {}) · {} ({}), {} layers, {:.1} M parameters</p>",
        r.suspicion,
        r.gate.exit_code(),
        esc(&i.model_type),
        esc(&i.format),
        i.num_layers,
        i.num_parameters as f64 / 1e6
    );
    if !r.reasons.is_empty() {
        o.push_str("<h2>Why</h2><ul>");
        for reason in &r.reasons {
            let _ = write!(o, "<li>{}</li>", esc(reason));
        }
        o.push_str("</ul>\n");
    }
    if !r.notes.is_empty() {
        o.push_str("<h2>Notes</h2><ul>");
        for note in &r.notes {
            let _ = write!(o, "<li>{}</li>", esc(note));
        }
        o.push_str("</ul>\n");
    }
    if let Some(p) = &r.provenance {
        let _ = write!(
            o,
            "<h2>Provenance: {}</h2><ul>",
            if p.passed { "passed" } else { "FAILED" }
        );
        if let Some(s) = &p.signature {
            let _ = write!(o, "<li>{}</li>", esc(&signature_line(s)));
        }
        if let Some(a) = &p.registry {
            let _ = write!(o, "<li>registry: {}</li>", esc(&a.to_string()));
        }
        o.push_str("</ul>\n");
    }
    if let Some(h) = r.hunt.as_ref().filter(|h| !h.triggers.is_empty()) {
        hunt_section(&mut o, h)?;
    }
    if let Some(c) = r.confirmation.as_ref().filter(|c| !c.candidates.is_empty()) {
        clusters_section(&mut o, c)?;
    }
    if let Some(d) = &r.forensics {
        forensics_section(&mut o, d)?;
    }
    o.push_str("<h2>Files</h2><table><tr><th>file</th><th>sha256</th></tr>");
    for f in &r.files {
        let _ = write!(
            o,
            "<tr><td><code>{}</code></td><td><code>{}</code></td></tr>",
            esc(&f.name),
            esc(&f.sha256)
        );
    }
    let _ = writeln!(
        o,
        "</table><p>manifest digest <code>{}</code></p>",
        esc(&r.model.manifest_digest)
    );
    o.push_str("<h2>Time</h2><table><tr><th>stage</th><th>seconds</th></tr>");
    for t in &r.timings {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{:.1}</td></tr>",
            esc(&t.stage),
            t.seconds
        );
    }
    let _ = writeln!(
        o,
        "</table><p>trojanscan {} · report schema {}</p></body></html>",
        esc(&r.trojanscan),
        r.schema
    );
    Ok(o)
}

fn hunt_section(o: &mut String, h: &HuntReport) -> Result<()> {
    let _ = write!(
        o,
        "<h2>Trigger hunt</h2><p>{:?} objective, {} candidates, {} evaluations, suspicion {:.3}.</p>",
        h.objective, h.candidates, h.evaluations, h.suspicion
    );
    let n = h.triggers.len().min(8);
    let labels: Vec<String> = h.triggers[..n]
        .iter()
        .map(|t| {
            let mut s: String = t.text.chars().take(24).collect();
            if t.text.chars().count() > 24 {
                s.push('…');
            }
            s
        })
        .collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 70 + 30 * n as u32)).into_drawing_area();
        root.fill(&WHITE).map_err(render_err)?;
        let mut c = ChartBuilder::on(&root)
            .caption(
                "top findings: share of probes hijacked (bar), suspicion (dot)",
                ("sans-serif", 15),
            )
            .margin(10)
            .x_label_area_size(28)
            .y_label_area_size(180)
            .build_cartesian_2d(0f64..1.0, (0..n).into_segmented())
            .map_err(render_err)?;
        c.configure_mesh()
            .disable_y_mesh()
            .y_labels(n)
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                    labels.get(*i).cloned().unwrap_or_default()
                }
                SegmentValue::Last => String::new(),
            })
            .draw()
            .map_err(render_err)?;
        let bounded = |x: f64| x.clamp(0.0, 1.0);
        c.draw_series(h.triggers[..n].iter().enumerate().map(|(i, t)| {
            Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(i)),
                    (bounded(t.effect), SegmentValue::Exact(i + 1)),
                ],
                RGBColor(66, 133, 244).mix(0.55).filled(),
            )
        }))
        .map_err(render_err)?;
        c.draw_series(h.triggers[..n].iter().enumerate().map(|(i, t)| {
            Circle::new(
                (bounded(t.suspicion), SegmentValue::CenterOf(i)),
                5,
                RGBColor(198, 40, 40).filled(),
            )
        }))
        .map_err(render_err)?;
        root.present().map_err(render_err)?;
    }
    let _ = write!(o, "<figure>{svg}</figure>");
    o.push_str("<table><tr><th>#</th><th>trigger</th><th>token ids</th><th>suspicion</th><th>effect</th><th>drives to</th><th>found by</th></tr>");
    for (k, t) in h.triggers.iter().enumerate() {
        let _ = write!(
            o,
            "<tr><td>{}</td><td><code>{}</code></td><td>{:?}</td><td>{:.3}</td><td>{:.2}</td><td>{}</td><td>{:?}</td></tr>",
            k + 1,
            esc(&t.text),
            t.token_ids,
            t.suspicion,
            t.effect,
            esc(&target_text(&t.target)),
            t.found_by
        );
    }
    o.push_str("</table>\n");
    Ok(())
}

fn clusters_section(o: &mut String, c: &ConfirmReport) -> Result<()> {
    let best = &c.candidates[0];
    let n = best.projection.len() / 2;
    let (mut lo, mut hi) = ([f32::INFINITY; 2], [f32::NEG_INFINITY; 2]);
    for p in &best.projection {
        for d in 0..2 {
            lo[d] = lo[d].min(p[d]);
            hi[d] = hi[d].max(p[d]);
        }
    }
    let range = |d: usize| {
        let pad = ((hi[d] - lo[d]) * 0.08).max(1e-3);
        (lo[d] - pad)..(hi[d] + pad)
    };
    if !lo[0].is_finite() || !hi[1].is_finite() {
        return Ok(());
    }
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (560, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(render_err)?;
        let mut ch = ChartBuilder::on(&root)
            .caption(
                format!("layer {} activations, top two principal axes", c.layer),
                ("sans-serif", 15),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(range(0), range(1))
            .map_err(render_err)?;
        ch.configure_mesh()
            .x_desc("PC 1")
            .y_desc("PC 2")
            .draw()
            .map_err(render_err)?;
        let clean = RGBColor(66, 133, 244);
        let carrying = RGBColor(198, 40, 40);
        ch.draw_series(
            best.projection[..n]
                .iter()
                .map(|p| Circle::new((p[0], p[1]), 4, clean.filled())),
        )
        .map_err(render_err)?
        .label("clean probes")
        .legend(move |(x, y)| Circle::new((x, y), 4, clean.filled()));
        ch.draw_series(
            best.projection[n..]
                .iter()
                .map(|p| TriangleMarker::new((p[0], p[1]), 5, carrying.filled())),
        )
        .map_err(render_err)?
        .label(format!("with {}", best.text))
        .legend(move |(x, y)| TriangleMarker::new((x, y), 5, carrying.filled()));
        ch.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(render_err)?;
        root.present().map_err(render_err)?;
    }
    let _ = write!(
        o,
        "<h2>Activation clustering</h2><figure>{svg}</figure><table><tr><th>candidate</th><th>separation</th><th>purity</th><th>silhouette</th><th>cluster sizes</th><th>suspicion</th></tr>"
    );
    for x in &c.candidates {
        let _ = write!(
            o,
            "<tr><td><code>{}</code></td><td>{:.3}</td><td>{:.2}</td><td>{:.2}</td><td>{:?}</td><td>{:.3}</td></tr>",
            esc(&x.text),
            x.separation,
            x.purity,
            x.silhouette,
            x.sizes,
            x.suspicion
        );
    }
    o.push_str("</table>\n");
    Ok(())
}

fn forensics_section(o: &mut String, d: &DiffReport) -> Result<()> {
    let _ = write!(
        o,
        "<h2>Weight forensics</h2><p>Against <code>{}</code>: suspicion {:.3}, overall relative change {:.2e}.</p>",
        esc(&d.base.display().to_string()),
        d.suspicion,
        d.overall_relative_change
    );
    if !d.layers.is_empty() {
        let n = d.layers.len();
        let top = d
            .layers
            .iter()
            .map(|l| l.relative_change)
            .fold(0.0f64, f64::max)
            .max(1e-12)
            * 1.1;
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (640, 300)).into_drawing_area();
            root.fill(&WHITE).map_err(render_err)?;
            let mut c = ChartBuilder::on(&root)
                .caption("relative weight change per layer", ("sans-serif", 15))
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(60)
                .build_cartesian_2d((0..n).into_segmented(), 0f64..top)
                .map_err(render_err)?;
            c.configure_mesh()
                .disable_x_mesh()
                .x_desc("layer")
                .draw()
                .map_err(render_err)?;
            c.draw_series(d.layers.iter().enumerate().map(|(i, l)| {
                Rectangle::new(
                    [
                        (SegmentValue::Exact(i), 0.0),
                        (SegmentValue::Exact(i + 1), l.relative_change),
                    ],
                    RGBColor(239, 108, 0).mix(0.7).filled(),
                )
            }))
            .map_err(render_err)?;
            root.present().map_err(render_err)?;
        }
        let _ = write!(o, "<figure>{svg}</figure>");
    }
    o.push_str("<table><tr><th>token</th><th>id</th><th>drift</th><th>cosine change</th></tr>");
    for t in d.tokens.iter().take(10) {
        let _ = write!(
            o,
            "<tr><td><code>{}</code></td><td>{}</td><td>{:.1}</td><td>{:.3}</td></tr>",
            esc(&t.token),
            t.token_id,
            t.drift,
            t.cosine_change
        );
    }
    o.push_str("</table>\n");
    Ok(())
}
