//! Trigger hunt: named candidates are screened first and within the cap; fuzzing saves and
//! resumes its corpus; bad parameters are refused.
//!
//! The hunt's acceptance on the zoo (true triggers in the top 5, AUC 1.0, verdicts) and on
//! the real models runs through `trojanscan scan` in `tests/scan.rs`, whose report holds
//! the whole hunt report; gradients against finite differences are a unit test in
//! `src/hunt/objective.rs`.

mod common;

use std::path::Path;
use std::time::Duration;

use trojanscan::hunt::{FuzzParams, HuntParams, Source};
use trojanscan::model::{LoadOptions, Model};
use trojanscan::progress::NoProgress;

fn probes(dir: &Path) -> Vec<String> {
    trojanscan::audit::read_rows(dir.join("heldout.jsonl"))
        .unwrap()
        .into_iter()
        .map(|r| r.text)
        .collect()
}

/// The user's candidates come first, then the hints, and `max_candidates` bounds them
/// too: with a cap of one, only the user's candidate (the zoo trojan's trigger) is
/// screened, and it is found by the user's name even when a hint names it as well.
#[test]
fn named_candidates_are_screened_first_and_within_the_cap() {
    let dir = common::root().join("testdata/zoo/badnets-s0");
    let model = Model::load(&dir, &LoadOptions::default()).unwrap();
    let cf = model.tokenizer().token_to_id("cf").unwrap();
    let other = model.tokenizer().token_to_id("river").unwrap();
    for hints in [vec![other], vec![cf, other]] {
        let r = HuntParams {
            probes: Some(probes(&dir)),
            candidates: vec!["cf".into()],
            hint_token_ids: hints.clone(),
            max_candidates: Some(1),
            max_len: 1,
            gradient_proposals: 0,
            budget: Some(Duration::from_secs(600)),
            ..HuntParams::default()
        }
        .check()
        .unwrap()
        .run(&model, &NoProgress)
        .unwrap();
        assert_eq!(r.coverage.screened, 1, "hints {hints:?}: {:?}", r.coverage);
        let best = r.triggers.first().expect("a finding");
        assert_eq!(best.token_ids, [cf], "hints {hints:?}");
        assert_eq!(best.found_by, Source::User, "hints {hints:?}");
    }
}

#[test]
fn fuzzing_saves_a_corpus_and_resumes_from_it() {
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
