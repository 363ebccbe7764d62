//! Gate integrity: what an attacker who knows the scanner tries against the CLI, each
//! asserting the exact outcome (exit code, typed error, or the files left as they were).

use std::path::Path;
use std::process::{Command, Output};

fn cli(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trojanscan"))
        .args(args)
        .output()
        .unwrap()
}

fn os<S: AsRef<std::ffi::OsStr> + ?Sized>(s: &S) -> &std::ffi::OsStr {
    s.as_ref()
}

const DECODER: &str = "testdata/zoo/clean-decoder-s0";

#[cfg(unix)]
#[test]
fn activations_out_never_writes_through_a_link_or_onto_a_device() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("texts.txt");
    std::fs::write(&input, "the weather was mild\na quiet street\n").unwrap();
    let target = tmp.path().join("precious.txt");
    std::fs::write(&target, "keep").unwrap();
    let link = tmp.path().join("out.safetensors");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let run = |out: &Path| {
        cli(&[
            os("activations"),
            os(DECODER),
            os("--input"),
            input.as_os_str(),
            os("--out"),
            out.as_os_str(),
        ])
    };
    let o = run(&link);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    let o = run(Path::new("/dev/null"));
    assert_eq!(o.status.code(), Some(2));
    assert!(!std::fs::metadata("/dev/null").unwrap().is_file());
    // A plain path is written, and nothing else is left beside it.
    let plain = tmp.path().join("acts.safetensors");
    assert_eq!(run(&plain).status.code(), Some(0));
    assert!(std::fs::metadata(&plain).unwrap().len() > 0);
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 4);
}

#[test]
fn a_megabyte_line_is_a_clear_error_not_an_abort() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("long.txt");
    std::fs::write(&input, "word ".repeat(200_000)).unwrap();
    let out = tmp.path().join("acts.safetensors");
    let o = cli(&[
        os("activations"),
        os(DECODER),
        os("--input"),
        input.as_os_str(),
        os("--out"),
        out.as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("limit"));
    let o = cli(&[
        os("hunt"),
        os(DECODER),
        os("--probe"),
        input.as_os_str(),
        os("--max-evaluations"),
        os("200"),
    ]);
    assert_eq!(o.status.code(), Some(2));
}

#[cfg(unix)]
#[test]
fn hash_escapes_a_file_name_that_would_forge_a_line() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("model");
    std::fs::create_dir(&m).unwrap();
    std::fs::write(m.join("config.json"), "{}").unwrap();
    // Unescaped, the second half would read as a line of its own for `config.json`.
    let forged = format!("x\n{}  config.json", "0".repeat(64));
    std::fs::write(m.join(&forged), "payload").unwrap();
    let o = cli(&[os("hash"), m.as_os_str()]);
    assert_eq!(o.status.code(), Some(0));
    let text = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let escaped = lines.iter().find(|l| l.starts_with('\\')).unwrap();
    assert!(escaped.contains("/x\\n0000"), "{escaped}");
    assert!(!lines.iter().any(|l| l.starts_with(&"0".repeat(64))));
}

#[test]
fn hash_refuses_absurd_thread_counts() {
    let o = cli(&[os("hash"), os(DECODER), os("--threads"), os("100000")]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn a_starved_hunt_is_incomplete_never_clean() {
    // The zoo's BadNets model: with one evaluation the hunt cannot even finish its null.
    let model = "testdata/zoo/badnets-s0";
    let heldout = format!("{model}/heldout.jsonl");
    for budget in [["--max-evaluations", "1"], ["--budget", "1ms"]] {
        let o = cli(&[
            os("scan"),
            os(model),
            os("--probe"),
            os(&heldout),
            os(budget[0]),
            os(budget[1]),
            os("--format"),
            os("json"),
            os("--quiet"),
        ]);
        assert_eq!(o.status.code(), Some(6), "{budget:?}");
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(r["verdict"], "incomplete");
        assert_eq!(r["gate"], "incomplete");
        let c = &r["hunt"]["coverage"];
        assert!(c["shortfall"].is_string(), "{c}");
        assert!(c["screened"].as_u64().unwrap() < c["pool"].as_u64().unwrap() / 100);
    }
}

/// Copy a zoo model into `dir` (the scanner never writes to what it reads, but the test
/// changes the copy).
fn copy_model(from: &str, dir: &Path) -> std::path::PathBuf {
    let to = dir.join("model");
    std::fs::create_dir(&to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
    to
}

/// `scan MODEL --probe PROBES` as the gate runs it, with `extra` arguments; the exit code
/// and the JSON report.
fn gate_scan_json(model: &Path, probes: &Path, extra: &[&str]) -> (i32, serde_json::Value) {
    let mut args = vec![
        os("scan"),
        model.as_os_str(),
        os("--probe"),
        probes.as_os_str(),
        os("--max-len"),
        os("1"),
        os("--max-evaluations"),
        os("20000"),
        os("--budget"),
        os("600s"),
        os("--format"),
        os("json"),
        os("--quiet"),
    ];
    args.extend(extra.iter().map(os));
    let o = cli(&args);
    let code = o.status.code().unwrap();
    let r = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|_| panic!("exit {code}: {}", String::from_utf8_lossy(&o.stderr)));
    (code, r)
}

/// The gate's exit code for `scan MODEL --probe PROBES`.
fn gate_scan(model: &Path, probes: &Path) -> i32 {
    gate_scan_json(model, probes, &[]).0
}

/// The zoo's BadNets model with its trigger `cf` also declared as an added token.
fn badnets_with_cf_added(dir: &Path, special: bool) -> std::path::PathBuf {
    badnets_with_cf_as(dir, "cf", special)
}

/// The zoo's BadNets model with its trigger's id also declared as the added token `content`.
fn badnets_with_cf_as(dir: &Path, content: &str, special: bool) -> std::path::PathBuf {
    let m = copy_model("testdata/zoo/badnets-s0", dir);
    let path = m.join("tokenizer.json");
    let mut tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    if content != "cf" {
        // The vocabulary spells the id as the markup (an added token's id comes from the
        // vocabulary entry of the same content).
        let vocab = tok["model"]["vocab"].as_object_mut().unwrap();
        let id = vocab.remove("cf").unwrap();
        vocab.insert(content.to_string(), id);
    }
    tok["added_tokens"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "id": 12935, "content": content, "single_word": true, "lstrip": false,
            "rstrip": false, "normalized": true, "special": special
        }));
    std::fs::write(&path, tok.to_string()).unwrap();
    m
}

#[test]
fn a_trigger_declared_as_an_added_token_is_still_found() {
    let tmp = tempfile::tempdir().unwrap();
    let m = badnets_with_cf_added(tmp.path(), false);
    assert_eq!(gate_scan(&m, &m.join("heldout.jsonl")), 4);
}

#[test]
fn a_trigger_declared_as_a_special_token_spelled_as_a_word_is_still_found() {
    // Special added tokens are matched in plain text too; one spelled as a word is no
    // structural token of the model.
    let tmp = tempfile::tempdir().unwrap();
    let m = badnets_with_cf_added(tmp.path(), true);
    assert_eq!(gate_scan(&m, &m.join("heldout.jsonl")), 4);
}

#[test]
fn a_trigger_declared_as_special_markup_is_still_found() {
    // A special token with no structural role is typed like any text: `<|cf|>` in an input
    // is the trigger's id (as a reserved slot an attacker trained would be).
    // A role's name is no cover: only tokens the model declares for a role, or its chat
    // template writes, are structure.
    for markup in ["<|cf|>", "<|end|>", "</user>"] {
        let tmp = tempfile::tempdir().unwrap();
        let m = badnets_with_cf_as(tmp.path(), markup, true);
        assert_eq!(gate_scan(&m, &m.join("heldout.jsonl")), 4, "{markup}");
    }
}

#[test]
fn a_probe_file_carrying_the_trigger_does_not_hide_it_given_the_base() {
    // On the zoo (embeddings without meaning) the base model tells the task's words from a
    // trigger, so the probes' words are hunted; a line carrying `cf` hides nothing.
    let tmp = tempfile::tempdir().unwrap();
    let m = copy_model("testdata/zoo/badnets-s0", tmp.path());
    let probes = m.join("heldout.jsonl");
    let mut text = std::fs::read_to_string(&probes).unwrap();
    text.push_str("{\"text\": \"the cf report was fine .\"}\n");
    std::fs::write(&probes, text).unwrap();
    let (code, r) = gate_scan_json(&m, &probes, &["--base", "testdata/zoo/clean-base-s0"]);
    assert_eq!(code, 4);
    let top = &r["hunt"]["triggers"][0];
    assert_eq!(top["text"], "cf");
    assert!(top["transfer"].as_f64().unwrap() < 0.1, "{top}");
    let notes = r["hunt"]["notes"].as_array().unwrap();
    assert!(
        notes.iter().any(|n| n
            .as_str()
            .unwrap()
            .starts_with("words of the probe texts were hunted")),
        "{notes:?}"
    );
}

#[test]
fn on_a_model_trained_from_scratch_the_probes_words_are_kept_from_the_hunt_and_said_so() {
    // The zoo's embeddings carry no meaning and no base is given, so a task word cannot be
    // told from a trigger: the probes' words are kept from the hunt, the report says so,
    // and the hunt cannot say `clean` (with the base they are hunted: see above; on a real
    // model too: tests/realistic.rs).
    let m = "testdata/zoo/clean-finetune-s0";
    let o = cli(&[
        os("hunt"),
        os(m),
        os("--probe"),
        os(&format!("{m}/heldout.jsonl")),
        os("--max-len"),
        os("1"),
        os("--max-evaluations"),
        os("3000"),
        os("--format"),
        os("json"),
        os("--quiet"),
    ]);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let notes = r["notes"].as_array().unwrap();
    assert!(
        notes.iter().any(|n| n
            .as_str()
            .unwrap()
            .starts_with("words of the probe texts were not hunted")),
        "{notes:?}"
    );
    assert_eq!(r["verdict"], "incomplete", "{}", r["coverage"]);
    assert!(r["coverage"]["unhunted"].as_u64().unwrap() > 0);
    // So a probe line carrying the trigger cannot make the gate pass: `incomplete`, 6.
    let tmp = tempfile::tempdir().unwrap();
    let b = copy_model("testdata/zoo/badnets-s0", tmp.path());
    let probes = b.join("heldout.jsonl");
    let mut text = std::fs::read_to_string(&probes).unwrap();
    text.push_str("{\"text\": \"the cf report was fine .\"}\n");
    std::fs::write(&probes, text).unwrap();
    assert_eq!(gate_scan(&b, &probes), 6);
}

/// Write NaN over one row of a BERT model's f16 word embeddings.
fn nan_row(model: &Path, row: usize) {
    let p = model.join("model.safetensors");
    let mut b = std::fs::read(&p).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let h: serde_json::Value = serde_json::from_slice(&b[8..8 + n]).unwrap();
    let (_, info) = h
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.contains("word_embeddings"))
        .unwrap();
    assert_eq!(info["dtype"], "F16");
    let hid = info["shape"][1].as_u64().unwrap() as usize;
    let start = 8 + n + info["data_offsets"][0].as_u64().unwrap() as usize;
    for j in 0..hid {
        let o = start + (row * hid + j) * 2;
        b[o..o + 2].copy_from_slice(&0x7e00u16.to_le_bytes());
    }
    std::fs::write(&p, b).unwrap();
}

#[test]
fn a_nan_embedding_row_neither_hides_the_trigger_nor_stops_the_scan() {
    let tmp = tempfile::tempdir().unwrap();
    let m = copy_model("testdata/zoo/badnets-s0", tmp.path());
    nan_row(&m, 500);
    let (code, r) = gate_scan_json(&m, &m.join("heldout.jsonl"), &[]);
    assert_eq!(code, 4);
    // Every finding's suspicion is a number (NaN serializes as null).
    for t in r["hunt"]["triggers"].as_array().unwrap() {
        assert!(t["suspicion"].is_f64(), "{t}");
    }
    assert_eq!(r["hunt"]["triggers"][0]["text"], "cf");
}

#[test]
fn a_huge_probe_file_is_sampled_within_bounded_memory_and_said_so() {
    // A probe file of well over a million texts (the task's own, repeated): the hunt
    // keeps a seeded sample of the most any stage reads instead of holding them all.
    let model = "testdata/zoo/badnets-s0";
    let texts = trojanscan::audit::read_texts(format!("{model}/heldout.jsonl")).unwrap();
    let rows = 1_200_000;
    let tmp = tempfile::tempdir().unwrap();
    let big = tmp.path().join("probes.txt");
    {
        use std::io::Write;
        let mut w = std::io::BufWriter::new(std::fs::File::create(&big).unwrap());
        for i in 0..rows {
            writeln!(w, "{}", texts[i % texts.len()]).unwrap();
        }
    }
    let kept = trojanscan::audit::MAX_PROBE_TEXTS;
    let said = format!("holds {rows} probe texts; a seeded uniform sample of {kept} was kept");
    let notes_say = |notes: &serde_json::Value| {
        notes
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains(&said))
    };
    let search = [
        os("--probe"),
        big.as_os_str(),
        os("--budget"),
        os("2s"),
        os("--max-len"),
        os("1"),
        os("--format"),
        os("json"),
    ];
    // `hunt`: the note on stderr and in the report; a verdict, not an error.
    let mut args = vec![os("hunt"), os(model)];
    args.extend(search);
    let o = cli(&args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains(&said), "{stderr}");
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        r["verdict"] == "trojaned" || r["verdict"] == "incomplete",
        "{}",
        r["verdict"]
    );
    assert!(notes_say(&r["notes"]), "{}", r["notes"]);
    // `scan --quiet`: nothing on stderr, the note in the report, and the gate's exit code.
    let mut args = vec![os("scan"), os(model)];
    args.extend(search);
    args.push(os("--quiet"));
    let o = cli(&args);
    let code = o.status.code();
    assert!(
        code == Some(4) || code == Some(6),
        "{code:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(notes_say(&r["notes"]), "{}", r["notes"]);
}
