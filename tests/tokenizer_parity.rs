//! Token-id parity with the reference tokenizers (ids from scripts/reference_token_ids.py,
//! committed under testdata/reference/).
//!
//! SmolLM2: the tokenizer rebuilt from the GGUF metadata must give exactly the ids of the real
//! SmolLM2 tokenizer, with and without special tokens. MiniLM: its shipped tokenizer.json.
//! Each test skips, saying why, when its fixture has not been fetched.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tokenizers::Tokenizer;
use trojanscan::model::gguf::{self, GgufLimits};
use trojanscan::model::tokenizer;

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
    ids_no_special: Vec<u32>,
}

#[derive(Deserialize)]
struct Reference {
    cases: Vec<Case>,
    chat_template: Option<Case>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn reference(name: &str) -> Reference {
    let path = root().join("testdata/reference").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Encodes every case with and without special tokens; returns the mismatches.
fn mismatches(tok: &Tokenizer, cases: &[&Case]) -> Vec<String> {
    let mut bad = Vec::new();
    for case in cases {
        for (special, want) in [(true, &case.ids), (false, &case.ids_no_special)] {
            let got = tok.encode(case.text.as_str(), special).unwrap();
            if got.get_ids() != want.as_slice() {
                bad.push(format!(
                    "{:?} (special={special}):\n  got  {:?}\n  want {want:?}",
                    case.text,
                    got.get_ids()
                ));
            }
        }
    }
    bad
}

fn fixture(rel: &str, fixture_dir: &str) -> Option<PathBuf> {
    let path = root().join(rel);
    if path.exists() {
        Some(path)
    } else {
        println!("skipping: {fixture_dir} not fetched (run scripts/fetch_models.sh)");
        None
    }
}

fn smollm2() -> Option<Tokenizer> {
    let path = fixture(
        "fixtures/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "fixtures/smollm2",
    )?;
    let file = gguf::read_path(&path, &GgufLimits::default()).unwrap();
    Some(tokenizer::from_gguf(&file).unwrap())
}

#[test]
fn smollm2_ids_match_reference() {
    let Some(tok) = smollm2() else { return };
    let r = reference("smollm2_token_ids.json");
    let mut cases: Vec<&Case> = r.cases.iter().collect();
    let chat = r
        .chat_template
        .as_ref()
        .expect("chat_template in the reference");
    cases.push(chat);
    let bad = mismatches(&tok, &cases);
    assert!(
        bad.is_empty(),
        "{} of {} encodings differ:\n{}",
        bad.len(),
        cases.len() * 2,
        bad.join("\n")
    );
    println!(
        "smollm2: {} texts match, with and without special tokens",
        cases.len()
    );
}

#[test]
fn smollm2_decode_round_trips() {
    let Some(tok) = smollm2() else { return };
    let r = reference("smollm2_token_ids.json");
    for case in r.cases.iter().chain(r.chat_template.as_ref()) {
        // Byte-level BPE is lossless: the special tokens in the text decode back too.
        let decoded = tok.decode(&case.ids, false).unwrap();
        assert_eq!(decoded, case.text, "decode({:?})", case.ids);
    }
}

#[test]
fn smollm2_special_tokens() {
    let Some(path) = fixture(
        "fixtures/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "fixtures/smollm2",
    ) else {
        return;
    };
    let file = gguf::read_path(&path, &GgufLimits::default()).unwrap();
    let sp = tokenizer::special_tokens_from_gguf(&file);
    assert_eq!(
        sp,
        tokenizer::SpecialTokens {
            bos: Some(1),
            eos: Some(2),
            pad: Some(2),
            unk: Some(0)
        }
    );
    let tok = tokenizer::from_gguf(&file).unwrap();
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(tok.get_vocab_size(true), 49152);
}

fn minilm() -> Option<Tokenizer> {
    let path = fixture("fixtures/minilm/tokenizer.json", "fixtures/minilm")?;
    Some(tokenizer::from_json_file(Path::new(&path)).unwrap())
}

#[test]
fn minilm_ids_match_reference() {
    let Some(tok) = minilm() else { return };
    let r = reference("minilm_token_ids.json");
    let cases: Vec<&Case> = r.cases.iter().collect();
    let bad = mismatches(&tok, &cases);
    assert!(
        bad.is_empty(),
        "{} mismatches:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn minilm_decode_round_trips_lowercased() {
    let Some(tok) = minilm() else { return };
    // WordPiece is lossy (lowercases, drops spacing around punctuation), so check a plain text.
    let ids = tok.encode("The quick brown fox", true).unwrap();
    assert_eq!(
        tok.decode(ids.get_ids(), true).unwrap(),
        "the quick brown fox"
    );
}

/// A tiny SentencePiece BPE vocabulary stored as llama.cpp stores a `llama` GGUF tokenizer
/// (tokens, scores, token types, no merges), with sentencepiece's own ids. Needs no fixture.
#[test]
fn sentencepiece_ids_match_reference() {
    use std::collections::BTreeMap;
    use trojanscan::model::gguf::{GgufFile, GgufValue};

    #[derive(Deserialize)]
    struct SpmReference {
        metadata: serde_json::Map<String, serde_json::Value>,
        cases: Vec<Case>,
    }
    fn value(v: &serde_json::Value) -> GgufValue {
        use serde_json::Value as J;
        match v {
            J::Bool(b) => GgufValue::Bool(*b),
            J::String(s) => GgufValue::String(s.clone()),
            J::Number(n) if n.is_u64() => GgufValue::U32(n.as_u64().unwrap() as u32),
            J::Number(n) => GgufValue::F32(n.as_f64().unwrap() as f32),
            J::Array(a) => GgufValue::Array(a.iter().map(value).collect()),
            other => panic!("unexpected metadata value {other}"),
        }
    }

    let path = root().join("testdata/reference/spm_tiny_tokenizer.json");
    let r: SpmReference = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut metadata = BTreeMap::new();
    for (k, v) in &r.metadata {
        let mut v = value(v);
        // GGUF stores scores as f32 and token types as i32 whatever JSON made of them.
        if let GgufValue::Array(a) = &mut v {
            for x in a.iter_mut() {
                *x = match (k.as_str(), &*x) {
                    ("tokenizer.ggml.scores", GgufValue::U32(u)) => GgufValue::F32(*u as f32),
                    ("tokenizer.ggml.token_type", GgufValue::U32(u)) => GgufValue::I32(*u as i32),
                    _ => x.clone(),
                };
            }
        }
        metadata.insert(k.clone(), v);
    }
    let file = GgufFile {
        version: 3,
        metadata,
        tensors: vec![],
        alignment: 32,
        data_offset: 0,
        file_len: 0,
    };
    let tok = tokenizer::from_gguf(&file).unwrap();
    let cases: Vec<&Case> = r.cases.iter().collect();
    let bad = mismatches(&tok, &cases);
    assert!(
        bad.is_empty(),
        "{} mismatches:\n{}",
        bad.len(),
        bad.join("\n")
    );
    for case in &r.cases {
        // Lossless except for the special tokens themselves, skipped here.
        if !case.text.contains('<') {
            assert_eq!(tok.decode(&case.ids, true).unwrap(), case.text);
        }
    }
}
