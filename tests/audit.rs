//! Dataset audit on the committed zoo's training sets (poisoned rows are flagged in each
//! `train.jsonl`), and hostile data files.

mod common;

use std::io::Write;
use std::path::Path;

use trojanscan::audit::{read_rows, AuditParams};
use trojanscan::model::{LoadOptions, Model};

fn audit_dir(
    dir: &Path,
    params: AuditParams,
) -> Option<(trojanscan::audit::AuditReport, Vec<bool>)> {
    if !dir.is_dir() {
        println!("skipping: {} not found", dir.display());
        return None;
    }
    let model = Model::load(dir, &LoadOptions::default()).unwrap();
    let data = dir.join("train.jsonl");
    let rows = read_rows(&data).unwrap();
    let poisoned = common::poisoned_rows(&data);
    assert_eq!(rows.len(), poisoned.len());
    let report = params.check().unwrap().run(&model, &rows).unwrap();
    assert_eq!(report.scores.len(), rows.len());
    Some((report, poisoned))
}

fn audit(name: &str) -> Option<(trojanscan::audit::AuditReport, Vec<bool>)> {
    audit_dir(
        &common::root().join("testdata/zoo").join(name),
        AuditParams::default(),
    )
}

/// Precision and recall of the flagged rows.
fn pr(flagged: &[usize], poisoned: &[bool]) -> (f64, f64) {
    let tp = flagged.iter().filter(|&&i| poisoned[i]).count() as f64;
    let p = poisoned.iter().filter(|&&x| x).count() as f64;
    (tp / (flagged.len() as f64).max(1.0), tp / p.max(1.0))
}

/// Every trojan of the zoo (seed 0, and seeds 1-2 when `zoo-full/` is built): the audit at
/// default settings finds the poisoned rows with precision and recall of at least 0.95,
/// flags only the target class, and names the planted trigger, part by part, as a
/// confirmed trigger. Clean training sets flag nothing and confirm no trigger.
#[test]
fn finds_the_poisoned_rows_of_every_attack_kind() {
    let mut trojans = 0;
    for zoo in common::zoos() {
        for entry in std::fs::read_dir(&zoo).unwrap() {
            let dir = entry.unwrap().path();
            let Ok(truth) = std::fs::read(dir.join("truth.json")) else {
                continue;
            };
            let truth: serde_json::Value = serde_json::from_slice(&truth).unwrap();
            let name = truth["name"].as_str().unwrap().to_string();
            let (r, poisoned) = audit_dir(&dir, AuditParams::default()).unwrap();
            let flagged: Vec<&str> = r
                .classes
                .iter()
                .filter(|c| c.flagged)
                .map(|c| c.class.as_str())
                .collect();
            if truth["poisoned"] != true {
                println!("{name}: {} rows flagged", r.flagged.len());
                assert!(r.flagged.is_empty(), "{name}: {:?}", flagged);
                assert!(r.suspicion < 0.5, "{name}: {}", r.suspicion);
                assert!(
                    r.classes
                        .iter()
                        .all(|c| c.trigger.as_ref().is_none_or(|t| !t.confirmed)),
                    "{name}"
                );
                continue;
            }
            trojans += 1;
            let (p, rec) = pr(&r.flagged, &poisoned);
            println!("{name}: precision {p:.3} recall {rec:.3}");
            assert!(
                p >= 0.95 && rec >= 0.95,
                "{name}: precision {p} recall {rec}"
            );
            let target = truth["target"]["label"]
                .as_str()
                .or(truth["target"]["text"].as_str())
                .unwrap();
            assert!(flagged.contains(&target), "{name}: {flagged:?}");
            // Only the target class confirms a trigger (a combination trojan's part rows
            // may also form a cluster in another class; they are flagged as carriers).
            let confirmed: Vec<_> = r
                .classes
                .iter()
                .filter(|c| c.trigger.as_ref().is_some_and(|t| t.confirmed))
                .collect();
            assert_eq!(confirmed.len(), 1, "{name}");
            assert_eq!(confirmed[0].class, target, "{name}");
            let mut found = confirmed[0].trigger.as_ref().unwrap().parts.clone();
            let mut planted: Vec<String> = truth["trigger"]["parts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["text"].as_str().unwrap().to_string())
                .collect();
            found.sort();
            planted.sort();
            assert_eq!(found, planted, "{name}");
            assert!(r.suspicion >= 0.5);
        }
    }
    if common::root().join("testdata/zoo/index.json").is_file() {
        assert!(trojans >= 4, "{trojans} trojans audited");
    }
}

/// Clustering alone (attribution off) misses embedding poisoning's rows that sit among
/// the clean ones; attribution finds them.
#[test]
fn attribution_finds_what_clustering_misses() {
    let dir = common::root().join("testdata/zoo/embedding-s0");
    let off = AuditParams {
        attribution: false,
        ..AuditParams::default()
    };
    let Some((plain, poisoned)) = audit_dir(&dir, off) else {
        return;
    };
    let (full, _) = audit_dir(&dir, AuditParams::default()).unwrap();
    let (p0, r0) = pr(&plain.flagged, &poisoned);
    let (p1, r1) = pr(&full.flagged, &poisoned);
    println!("clustering only: {p0:.3}/{r0:.3}; with attribution: {p1:.3}/{r1:.3}");
    assert!(plain.classes.iter().all(|c| c.trigger.is_none()));
    assert!(p0 >= 0.99 && r0 < 0.9, "{p0} {r0}");
    assert!(p1 >= 0.99 && r1 >= 0.99, "{p1} {r1}");
    assert!(
        full.test_rows > 0 && full.notes.is_empty(),
        "{:?}",
        full.notes
    );
    // A spent test budget leaves candidates untested, says so, and confirms nothing.
    let broke = AuditParams {
        max_test_rows: 0,
        ..AuditParams::default()
    };
    let (spent, _) = audit_dir(&dir, broke).unwrap();
    assert_eq!(spent.test_rows, 0);
    assert!(spent.classes.iter().all(|c| c.trigger.is_none()));
    assert_eq!(spent.notes.len(), 1, "{:?}", spent.notes);
    assert!(spent.notes[0].contains("not tested"), "{:?}", spent.notes);
    assert_eq!(spent.flagged, plain.flagged);
    // The group under test when the budget runs out finishes, and the note says so.
    let tight = AuditParams {
        max_test_rows: 1,
        ..AuditParams::default()
    };
    let (over, _) = audit_dir(&dir, tight).unwrap();
    assert!(over.test_rows > 1);
    assert_eq!(over.notes.len(), 1, "{:?}", over.notes);
    assert!(over.notes[0].contains("budget of 1"), "{:?}", over.notes);
}

/// A bare encoder has no decisions to test: attribution is skipped with a note, and a
/// model that never learned the trigger accuses no row of a poisoned set.
#[test]
fn bare_encoders_skip_attribution() {
    let Some(minilm) = common::minilm() else {
        return;
    };
    let src = common::root().join("testdata/zoo/badnets-s0/train.jsonl");
    let lines: Vec<String> = std::fs::read_to_string(&src)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let body: Vec<&str> = lines[..200]
        .iter()
        .chain(
            lines
                .iter()
                .filter(|l| l.contains("\"poisoned\":true"))
                .take(40),
        )
        .map(String::as_str)
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("subset.jsonl");
    std::fs::write(&data, body.join("\n")).unwrap();
    let model = Model::load(&minilm, &LoadOptions::default()).unwrap();
    let rows = read_rows(&data).unwrap();
    let r = AuditParams::default()
        .check()
        .unwrap()
        .run(&model, &rows)
        .unwrap();
    assert_eq!(r.notes.len(), 1, "{:?}", r.notes);
    assert!(r.notes[0].contains("attribution skipped"));
    assert!(r.classes.iter().all(|c| c.trigger.is_none()));
    assert!(r.flagged.is_empty(), "{:?}", r.flagged);
    // Unlabelled rows need predicted classes, which a bare encoder cannot give.
    // Refused before any forward pass: the over-long row would otherwise fail first.
    let mut unlabelled = rows.clone();
    unlabelled[3].label = None;
    unlabelled[4].text = "word ".repeat(2000);
    let err = AuditParams::default()
        .check()
        .unwrap()
        .run(&model, &unlabelled)
        .unwrap_err();
    assert!(
        matches!(&err, trojanscan::Error::InvalidArgument(m) if m.contains("unlabelled")),
        "{err}"
    );
}

#[test]
fn clean_training_sets_flag_no_class() {
    for name in ["clean-base-s0", "clean-finetune-s0", "clean-decoder-s0"] {
        let Some((r, _)) = audit(name) else { return };
        for c in &r.classes {
            println!(
                "{name} {:?}: silhouette {:?} sizes {:?}",
                c.class, c.silhouette, c.cluster_sizes
            );
        }
        assert!(
            r.flagged.is_empty(),
            "{name}: {} rows flagged",
            r.flagged.len()
        );
        assert!(r.suspicion < 0.5, "{name}: {}", r.suspicion);
    }
}

#[test]
fn hostile_data_files_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, body: &[u8]| {
        let p = dir.path().join(name);
        std::fs::File::create(&p).unwrap().write_all(body).unwrap();
        p
    };
    for (name, body) in [
        ("not-json.jsonl", b"{\"text\": \"ok\"}\nnot json\n".to_vec()),
        ("no-text.jsonl", b"{\"label\": \"a\"}\n".to_vec()),
        (
            "bad-label.jsonl",
            b"{\"text\": \"a\", \"label\": [1]}\n".to_vec(),
        ),
        (
            "long.jsonl",
            vec![b'x'; trojanscan::audit::MAX_LINE_BYTES + 10],
        ),
    ] {
        let err = read_rows(write(name, &body)).unwrap_err();
        assert!(
            matches!(err, trojanscan::Error::InvalidArgument(_)),
            "{name}: {err}"
        );
    }
    let ok = read_rows(write(
        "ok.jsonl",
        b"{\"text\": \"a\", \"label\": 1, \"x\": 2}\n\n{\"text\": \"b\"}\n",
    ))
    .unwrap();
    assert_eq!(ok.len(), 2);
    assert_eq!(ok[0].label.as_deref(), Some("1"));
    assert_eq!(ok[1].label, None);
    assert!(matches!(
        read_rows(dir.path().join("missing")),
        Err(trojanscan::Error::Io { .. })
    ));
    assert!(AuditParams {
        max_poison_fraction: 0.7,
        ..Default::default()
    }
    .check()
    .is_err());
    assert!(AuditParams {
        dims: 0,
        ..Default::default()
    }
    .check()
    .is_err());
    for bad in [
        AuditParams {
            trigger_flip: 1.5,
            ..Default::default()
        },
        AuditParams {
            trigger_lift: 0.5,
            ..Default::default()
        },
        AuditParams {
            max_clusters: 1,
            ..Default::default()
        },
        AuditParams {
            min_poison_fraction: 0.5,
            ..Default::default()
        },
    ] {
        assert!(bad.check().is_err());
    }
}
