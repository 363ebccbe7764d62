//! Hostile `tokenizer.json` files in otherwise valid models: each is refused with its exact
//! error variant before the `tokenizers` library sees it (which would panic, or reserve
//! gigabytes, on these), and valid ones still load.
//!
//! Each test copies a committed zoo model into a temporary directory and corrupts the copy's
//! `tokenizer.json`; the committed files are never touched.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{json, Value};
use trojanscan::model::tokenizer::MAX_TOKENIZER_JSON_BYTES;
use trojanscan::model::tokenizer_json::{validate, CharsmapError, TokenizerJsonError};
use trojanscan::model::{LoadOptions, Model};
use trojanscan::Error;

/// Seed-0 zoo models: a LLaMA decoder with SmolLM2's byte-level BPE, a BERT classifier
/// with MiniLM's WordPiece.
const DECODER: &str = "clean-decoder-s0";
const CLASSIFIER: &str = "clean-base-s0";

fn zoo(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/zoo")
        .join(name)
}

/// A copy of a zoo model in a fresh temporary directory.
fn copy_model(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(name);
    std::fs::create_dir(&dir).unwrap();
    for entry in std::fs::read_dir(zoo(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    (tmp, dir)
}

fn read_tokenizer(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("tokenizer.json")).unwrap()).unwrap()
}

fn write_tokenizer(dir: &Path, v: &Value) {
    std::fs::write(dir.join("tokenizer.json"), v.to_string()).unwrap();
}

fn load(dir: &Path) -> trojanscan::Result<Model> {
    Model::load(dir, &LoadOptions::default())
}

/// The validation error of loading `dir`, which must be about its `tokenizer.json`.
fn tokenizer_error(dir: &Path) -> TokenizerJsonError {
    match load(dir) {
        Err(Error::TokenizerJson { path, source }) => {
            assert_eq!(path, dir.join("tokenizer.json"));
            source
        }
        Err(e) => panic!("expected Error::TokenizerJson, got {e:?}"),
        Ok(_) => panic!("hostile tokenizer.json accepted"),
    }
}

/// The BERT classifier with a `Precompiled` normalizer holding `charsmap`.
fn with_charsmap(charsmap: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let (tmp, dir) = copy_model(CLASSIFIER);
    let mut tok = read_tokenizer(&dir);
    tok["normalizer"] = json!({
        "type": "Precompiled",
        "precompiled_charsmap": base64::engine::general_purpose::STANDARD.encode(charsmap),
    });
    write_tokenizer(&dir, &tok);
    (tmp, dir)
}

#[test]
fn merge_result_missing_from_the_vocabulary() {
    let (_tmp, dir) = copy_model(DECODER);
    let mut tok = read_tokenizer(&dir);
    // The longest entry merged with itself: the library builds the result in a buffer as
    // long as the longest entry and slices past its end (a shorter missing result would be
    // its own error, refused here all the same).
    let longest = tok["model"]["vocab"]
        .as_object()
        .unwrap()
        .keys()
        .max_by_key(|k| k.len())
        .unwrap()
        .clone();
    tok["model"]["merges"]
        .as_array_mut()
        .unwrap()
        .insert(0, json!([longest, longest]));
    write_tokenizer(&dir, &tok);
    assert_eq!(
        tokenizer_error(&dir),
        TokenizerJsonError::MergeResultNotInVocab {
            rank: 0,
            result: longest.repeat(2)
        }
    );

    // A result of ordinary length missing: SmolLM2's first merge is `Ġ` + `t`.
    let (_tmp, dir) = copy_model(DECODER);
    let mut tok = read_tokenizer(&dir);
    assert_eq!(tok["model"]["merges"][0], json!(["Ġ", "t"]));
    let removed = tok["model"]["vocab"].as_object_mut().unwrap().remove("Ġt");
    assert!(removed.is_some());
    write_tokenizer(&dir, &tok);
    assert_eq!(
        tokenizer_error(&dir),
        TokenizerJsonError::MergeResultNotInVocab {
            rank: 0,
            result: "Ġt".into()
        }
    );
}

#[test]
fn precompiled_normalizer_with_a_garbage_charsmap() {
    // A trie of two all-ones units: the root's offset points far outside the trie, which
    // the library would index on the first character it normalizes.
    let mut garbage = 8u32.to_le_bytes().to_vec();
    garbage.extend([0xFF; 8]);
    garbage.extend(b"garbage");
    let (_tmp, dir) = with_charsmap(&garbage);
    match tokenizer_error(&dir) {
        TokenizerJsonError::Charsmap { at, source } => {
            assert_eq!(at, "normalizer.precompiled_charsmap");
            assert!(
                matches!(source, CharsmapError::NodeOutOfRange { len: 2, .. }),
                "{source:?}"
            );
        }
        e => panic!("expected TokenizerJsonError::Charsmap, got {e:?}"),
    }
}

#[test]
fn small_charsmap_claiming_a_huge_trie() {
    // Eight bytes whose size field says 4 GiB of trie: the library would reserve 8 GiB.
    let mut small = 0xFFFF_FFFCu32.to_le_bytes().to_vec();
    small.extend(b"tiny");
    let (_tmp, dir) = with_charsmap(&small);
    match tokenizer_error(&dir) {
        TokenizerJsonError::Charsmap { source, .. } => assert_eq!(
            source,
            CharsmapError::TrieOverrun {
                trie_bytes: 0xFFFF_FFFC,
                available: 4
            }
        ),
        e => panic!("expected TokenizerJsonError::Charsmap, got {e:?}"),
    }
}

#[test]
fn oversize_tokenizer_is_refused_from_its_size_alone() {
    let (_tmp, dir) = copy_model(CLASSIFIER);
    // Sparse: 4 GiB that would take minutes to read, refused from the metadata at once.
    let len = 4 << 30;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("tokenizer.json"))
        .unwrap();
    f.set_len(len).unwrap();
    drop(f);
    match load(&dir) {
        Err(Error::TooLarge {
            path,
            what,
            len: seen,
            limit,
        }) => {
            assert_eq!(path, dir.join("tokenizer.json"));
            assert_eq!(what, "tokenizer.json");
            // The size from the metadata, not the bytes of a bounded read.
            assert_eq!(seen, len);
            assert_eq!(limit, MAX_TOKENIZER_JSON_BYTES);
        }
        Err(e) => panic!("expected Error::TooLarge, got {e:?}"),
        Ok(_) => panic!("oversize tokenizer.json accepted"),
    }
}

#[test]
fn template_naming_an_undefined_special_token() {
    // The library reads templates without its builder's checks and looks each special
    // token up unchecked on every encode: `[SEP]` defined under another name panicked there.
    let (_tmp, dir) = copy_model(CLASSIFIER);
    let mut tok = read_tokenizer(&dir);
    let special = tok["post_processor"]["special_tokens"]
        .as_object_mut()
        .unwrap();
    let sep = special.remove("[SEP]").unwrap();
    special.insert("SE[P]".into(), sep);
    write_tokenizer(&dir, &tok);
    assert_eq!(
        tokenizer_error(&dir),
        TokenizerJsonError::UnknownSpecialToken {
            at: "post_processor.single[2].SpecialToken.id".into(),
            token: "[SEP]".into()
        }
    );

    // The fuzzer's reproduction, minimized.
    let seed = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus/tokenizer_json/seed-template-special-token-missing.json");
    assert_eq!(
        validate(&std::fs::read(seed).unwrap()),
        Err(TokenizerJsonError::UnknownSpecialToken {
            at: "post_processor.single[0].SpecialToken.id".into(),
            token: "[".into()
        })
    );
}

#[test]
fn single_template_using_the_second_sequence() {
    // A single text is one encoding: sequence B indexed past it on every encode.
    let (_tmp, dir) = copy_model(CLASSIFIER);
    let mut tok = read_tokenizer(&dir);
    tok["post_processor"]["single"][1] = json!({"Sequence": {"id": "B", "type_id": 0}});
    write_tokenizer(&dir, &tok);
    assert_eq!(
        tokenizer_error(&dir),
        TokenizerJsonError::BadParameter {
            at: "post_processor.single[1].Sequence.id".into(),
            why: "the single template has only sequence A".into()
        }
    );

    // The pair template has both sequences: B is fine there.
    let (_tmp, dir) = copy_model(CLASSIFIER);
    let tok = read_tokenizer(&dir);
    assert_eq!(tok["post_processor"]["pair"][3]["Sequence"]["id"], "B");
    load(&dir).unwrap();

    // serde would also read a piece as `[id, type_id]`; only the object form is accepted.
    let (_tmp, dir) = copy_model(CLASSIFIER);
    let mut tok = read_tokenizer(&dir);
    tok["post_processor"]["single"][0] = json!({"SpecialToken": ["[CLS]", 0]});
    write_tokenizer(&dir, &tok);
    assert!(matches!(
        tokenizer_error(&dir),
        TokenizerJsonError::Malformed { at, .. } if at == "post_processor.single[0]"
    ));
}

#[test]
fn valid_tokenizers_still_load() {
    for name in [DECODER, CLASSIFIER] {
        let (_tmp, dir) = copy_model(name);
        // Rewritten through serde_json (keys reordered, whitespace gone): still the same
        // tokenizer as the committed file.
        write_tokenizer(&dir, &read_tokenizer(&dir));
        let copy = load(&dir).unwrap();
        let original = load(&zoo(name)).unwrap();
        for text in ["the cat sat on the mat", "cf. 42 naïve café", ""] {
            assert_eq!(
                copy.tokenize(text).unwrap(),
                original.tokenize(text).unwrap(),
                "{name}: {text:?}"
            );
        }
        assert!(copy.tokenize("the cat").unwrap().len() >= 2, "{name}");
    }
}

#[test]
fn fuzz_seeds_load_or_are_refused_without_a_panic() {
    use trojanscan::model::tokenizer::{decode, encode, from_json_bytes};
    // The valid seeds; every other one is a reproduction of a hostile file.
    const VALID: &[&str] = &[
        "seed-bpe.json",
        "seed-unigram-precompiled.json",
        "seed-wordlevel.json",
        "seed-wordpiece.json",
    ];
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/tokenizer_json");
    let mut loaded = Vec::new();
    for entry in std::fs::read_dir(seeds).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        match from_json_bytes(&std::fs::read(&path).unwrap()) {
            Ok(tok) => {
                let ids = encode(&tok, "Hello abc ﬁ  AB", true).unwrap();
                decode(&tok, &ids, false).unwrap();
                loaded.push(name);
            }
            Err(TokenizerJsonError::Panicked(m)) => panic!("{name}: library panicked: {m}"),
            Err(TokenizerJsonError::Library(m)) => panic!("{name}: passed validation: {m}"),
            Err(_) => {}
        }
    }
    loaded.sort();
    assert_eq!(loaded, VALID);
}
