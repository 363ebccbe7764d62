//! Provenance: manifests, signatures, the approved registry and the pickle scan, with one
//! test per malformed or hostile input asserting its exact error variant.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use trojanscan::provenance::attest::{pae, PAYLOAD_TYPE};
use trojanscan::provenance::manifest::MAX_MANIFEST_RESOURCES;
use trojanscan::provenance::pickle::{scan_pickle, PickleScanOptions};
use trojanscan::provenance::registry::MAX_REGISTRY_BYTES;
use trojanscan::provenance::{
    self, sha256_file, Approval, ApprovedModel, FileMismatch, Manifest, ManifestOptions, PublicKey,
    Registry, Sha256Digest, SigningKey, Verdict, VerifyOptions,
};
use trojanscan::Error;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[0x11; 32]).unwrap()
}

fn other_key() -> SigningKey {
    SigningKey::from_bytes(&[0x22; 32]).unwrap()
}

/// A model directory with a nested file.
fn model(dir: &Path) -> PathBuf {
    let m = dir.join("model");
    std::fs::create_dir_all(m.join("sub")).unwrap();
    std::fs::write(m.join("config.json"), br#"{"model_type": "bert"}"#).unwrap();
    std::fs::write(m.join("model.safetensors"), vec![7u8; 4096]).unwrap();
    std::fs::write(m.join("sub/tokenizer.json"), b"{}").unwrap();
    m
}

fn signed(dir: &Path) -> (PathBuf, PathBuf) {
    let m = model(dir);
    let sig = dir.join("model.sig");
    provenance::sign_model(&m, &key(), &sig, &VerifyOptions::default()).unwrap();
    (m, sig)
}

fn verify(m: &Path, sig: &Path) -> trojanscan::Result<provenance::Verified> {
    provenance::verify_model(m, sig, &key().public_key(), &VerifyOptions::default())
}

/// A bundle around an arbitrary statement, properly signed by `key()`.
fn bundle_for(statement: &Value) -> Value {
    let payload = serde_json::to_vec(statement).unwrap();
    let sig = key().sign_der(&pae(PAYLOAD_TYPE, &payload));
    json!({
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"publicKey": {"hint": key().public_key().fingerprint()}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": B64.encode(&payload),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": B64.encode(sig), "keyid": ""}]
        }
    })
}

/// An edit applied to a JSON document to break it.
type Edit = Box<dyn Fn(&mut Value)>;

fn write_json(path: &Path, v: &Value) {
    std::fs::write(path, serde_json::to_vec(v).unwrap()).unwrap();
}

/// The statement of the signed model, to be altered and re-signed.
fn statement_of(sig: &Path) -> Value {
    let b: Value = serde_json::from_slice(&std::fs::read(sig).unwrap()).unwrap();
    let payload = B64
        .decode(b["dsseEnvelope"]["payload"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&payload).unwrap()
}

/// Recompute the subject digest of a statement after editing its resources.
fn fix_root(st: &mut Value) {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for r in st["predicate"]["resources"].as_array().unwrap() {
        h.update(
            Sha256Digest::from_hex(r["digest"].as_str().unwrap())
                .unwrap()
                .0,
        );
    }
    st["subject"][0]["digest"]["sha256"] = json!(Sha256Digest(h.finalize().into()).to_hex());
}

// ---------------------------------------------------------------- digests and manifests

#[test]
fn file_digest_matches_sha256sum() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("f.bin");
    std::fs::write(
        &p,
        (0..3_000_000u32)
            .map(|i| (i * 7 % 256) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let (d, n) = sha256_file(&p).unwrap();
    assert_eq!(n, 3_000_000);
    if let Ok(out) = Command::new("sha256sum").arg(&p).output() {
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.split_whitespace().next().unwrap(), d.to_hex());
    }
}

#[test]
fn manifest_is_sorted_ignores_git_and_is_thread_count_independent() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    std::fs::create_dir_all(m.join(".git/objects")).unwrap();
    std::fs::write(m.join(".git/objects/x"), b"git").unwrap();
    std::fs::write(m.join(".gitattributes"), b"*.bin lfs").unwrap();
    let a = Manifest::of_model(&m, &ManifestOptions::default().threads(Some(1))).unwrap();
    let b = Manifest::of_model(&m, &ManifestOptions::default().threads(Some(4))).unwrap();
    assert_eq!(a, b);
    let names: Vec<&str> = a.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["config.json", "model.safetensors", "sub/tokenizer.json"]
    );
    assert_eq!(a.model_name, "model");
    let st = a.to_statement();
    assert_eq!(st["predicateType"], "https://model_signing/signature/v1.0");
    assert_eq!(st["predicate"]["serialization"]["method"], "files");
    assert_eq!(
        Manifest::from_statement(&serde_json::to_vec(&st).unwrap()).unwrap(),
        a
    );
    // The registry digest binds names: swapping two files' contents changes it, the
    // subject digest (digests only) does not.
    let mut swapped = a.clone();
    let d0 = swapped.resources[0].digest;
    swapped.resources[0].digest = swapped.resources[1].digest;
    swapped.resources[1].digest = d0;
    assert_ne!(swapped.digest(), a.digest());
}

#[test]
fn symlink_in_model_is_refused_when_hashing_signing_and_verifying() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, sig) = signed(tmp.path());
    std::os::unix::fs::symlink("/etc/hostname", m.join("link.json")).unwrap();
    assert!(
        matches!(Manifest::of_model(&m, &ManifestOptions::default()), Err(Error::Symlink { path }) if path.ends_with("link.json"))
    );
    assert!(matches!(verify(&m, &sig), Err(Error::Symlink { .. })));
    let out = tmp.path().join("again.sig");
    assert!(matches!(
        provenance::sign_model(&m, &key(), &out, &VerifyOptions::default()),
        Err(Error::Symlink { .. })
    ));
    // The model path itself as a link is refused too.
    let link = tmp.path().join("model-link");
    std::fs::remove_file(m.join("link.json")).unwrap();
    std::os::unix::fs::symlink(&m, &link).unwrap();
    assert!(matches!(verify(&link, &sig), Err(Error::Symlink { .. })));
}

// ---------------------------------------------------------------- sign / verify

#[test]
fn round_trip_and_every_kind_of_file_change_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, sig) = signed(tmp.path());
    let v = verify(&m, &sig).unwrap();
    assert_eq!(v.signer, key().public_key().fingerprint());
    assert_eq!(v.manifest.len(), 3);

    std::fs::write(m.join("config.json"), br#"{"model_type": "bert "}"#).unwrap();
    std::fs::remove_file(m.join("sub/tokenizer.json")).unwrap();
    std::fs::write(m.join("sub/extra.py"), b"import os").unwrap();
    let Err(Error::Integrity(f)) = verify(&m, &sig) else {
        panic!("verified a changed model")
    };
    let kinds: Vec<(&str, &str)> = f
        .mismatches
        .iter()
        .map(|x| {
            let k = match x {
                FileMismatch::Changed { .. } => "changed",
                FileMismatch::Missing { .. } => "missing",
                FileMismatch::Extra { .. } => "extra",
                _ => "?",
            };
            (x.name(), k)
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("config.json", "changed"),
            ("sub/extra.py", "extra"),
            ("sub/tokenizer.json", "missing")
        ]
    );
    let msg = Error::Integrity(f).to_string();
    for n in ["config.json", "sub/extra.py", "sub/tokenizer.json"] {
        assert!(msg.contains(n), "{msg}");
    }
}

#[test]
fn wrong_key_is_its_own_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, sig) = signed(tmp.path());
    let r = provenance::verify_model(
        &m,
        &sig,
        &other_key().public_key(),
        &VerifyOptions::default(),
    );
    assert!(matches!(r, Err(Error::WrongKey { .. })), "{r:?}");
    // Without the key hint the signature itself fails under the wrong key.
    let mut b: Value = serde_json::from_slice(&std::fs::read(&sig).unwrap()).unwrap();
    b["verificationMaterial"]["publicKey"]["hint"] = Value::Null;
    write_json(&sig, &b);
    let r = provenance::verify_model(
        &m,
        &sig,
        &other_key().public_key(),
        &VerifyOptions::default(),
    );
    assert!(matches!(r, Err(Error::BadSignature { .. })), "{r:?}");
    verify(&m, &sig).unwrap();
}

#[test]
fn altered_payload_fails_the_signature() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, sig) = signed(tmp.path());
    // Replace the payload by one that lists the config with another digest: the
    // signature no longer covers it.
    let mut st = statement_of(&sig);
    st["predicate"]["resources"][0]["digest"] = json!("00".repeat(32));
    fix_root(&mut st);
    let mut b: Value = serde_json::from_slice(&std::fs::read(&sig).unwrap()).unwrap();
    b["dsseEnvelope"]["payload"] = json!(B64.encode(serde_json::to_vec(&st).unwrap()));
    write_json(&sig, &b);
    assert!(matches!(verify(&m, &sig), Err(Error::BadSignature { .. })));
}

#[test]
fn malformed_bundles_are_malformed_signature_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, sig) = signed(tmp.path());
    let good: Value = serde_json::from_slice(&std::fs::read(&sig).unwrap()).unwrap();
    let cases: Vec<(&str, Edit)> = vec![
        (
            "media type",
            Box::new(|b| b["mediaType"] = json!("application/json")),
        ),
        (
            "no envelope",
            Box::new(|b| {
                b.as_object_mut().unwrap().remove("dsseEnvelope");
            }),
        ),
        (
            "payload type",
            Box::new(|b| b["dsseEnvelope"]["payloadType"] = json!("text/plain")),
        ),
        (
            "payload base64",
            Box::new(|b| b["dsseEnvelope"]["payload"] = json!("!!!not base64!!!")),
        ),
        (
            "sig base64",
            Box::new(|b| b["dsseEnvelope"]["signatures"][0]["sig"] = json!("@@@")),
        ),
        (
            "sig not DER",
            Box::new(|b| b["dsseEnvelope"]["signatures"][0]["sig"] = json!(B64.encode([1u8; 64]))),
        ),
        (
            "no signature",
            Box::new(|b| b["dsseEnvelope"]["signatures"] = json!([])),
        ),
        (
            "two signatures",
            Box::new(|b| {
                let s = b["dsseEnvelope"]["signatures"][0].clone();
                b["dsseEnvelope"]["signatures"] = json!([s.clone(), s]);
            }),
        ),
        (
            "wrong field type",
            Box::new(|b| b["verificationMaterial"] = json!(42)),
        ),
    ];
    for (what, edit) in cases {
        let mut b = good.clone();
        edit(&mut b);
        write_json(&sig, &b);
        let r = verify(&m, &sig);
        assert!(
            matches!(r, Err(Error::MalformedSignature { .. })),
            "{what}: {r:?}"
        );
    }
    for junk in [&b""[..], b"not json", b"[1,2,3]", b"{\"mediaType\": 1}"] {
        std::fs::write(&sig, junk).unwrap();
        assert!(
            matches!(verify(&m, &sig), Err(Error::MalformedSignature { .. })),
            "{junk:?}"
        );
    }
}

#[test]
fn signed_manifests_naming_paths_outside_the_model_are_path_traversal() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, sig) = signed(tmp.path());
    let original = statement_of(&sig);
    for evil in [
        "../outside.txt",
        "/etc/passwd",
        "sub/../../x",
        "a//b",
        "./config.json",
        "c:\\x",
    ] {
        let mut st = original.clone();
        st["predicate"]["resources"][0]["name"] = json!(evil);
        fix_root(&mut st);
        write_json(&sig, &bundle_for(&st));
        let r = verify(&m, &sig);
        assert!(
            matches!(&r, Err(Error::PathTraversal { name }) if name == evil),
            "{evil}: {r:?}"
        );
    }
    // In ignore_paths too.
    let mut st = original.clone();
    st["predicate"]["serialization"]["ignore_paths"] = json!(["../.."]);
    write_json(&sig, &bundle_for(&st));
    assert!(matches!(verify(&m, &sig), Err(Error::PathTraversal { .. })));
}

#[test]
fn invalid_signed_statements_are_manifest_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, sig) = signed(tmp.path());
    let cases: Vec<(&str, Edit)> = vec![
        (
            "statement type",
            Box::new(|s| s["_type"] = json!("https://in-toto.io/Statement/v0.1")),
        ),
        (
            "predicate type",
            Box::new(|s| s["predicateType"] = json!("https://slsa.dev/provenance/v1")),
        ),
        (
            "v0.2",
            Box::new(|s| s["predicateType"] = json!("https://model_signing/Digests/v0.1")),
        ),
        (
            "root digest",
            Box::new(|s| s["subject"][0]["digest"]["sha256"] = json!("ab".repeat(32))),
        ),
        (
            "two subjects",
            Box::new(|s| {
                let x = s["subject"][0].clone();
                s["subject"] = json!([x.clone(), x]);
            }),
        ),
        (
            "shards",
            Box::new(|s| s["predicate"]["serialization"]["method"] = json!("shards")),
        ),
        (
            "blake3",
            Box::new(|s| s["predicate"]["serialization"]["hash_type"] = json!("blake3")),
        ),
        (
            "algorithm",
            Box::new(|s| s["predicate"]["resources"][0]["algorithm"] = json!("md5")),
        ),
        (
            "bad digest",
            Box::new(|s| s["predicate"]["resources"][0]["digest"] = json!("xyz")),
        ),
        (
            "duplicate",
            Box::new(|s| {
                let r = s["predicate"]["resources"][0].clone();
                s["predicate"]["resources"].as_array_mut().unwrap().push(r);
                fix_root(s);
            }),
        ),
        (
            "no resources",
            Box::new(|s| {
                s["predicate"].as_object_mut().unwrap().remove("resources");
            }),
        ),
    ];
    let original = statement_of(&sig);
    for (what, edit) in cases {
        let mut st = original.clone();
        edit(&mut st);
        write_json(&sig, &bundle_for(&st));
        let r = verify(&m, &sig);
        assert!(matches!(r, Err(Error::Manifest { .. })), "{what}: {r:?}");
    }
}

#[test]
fn huge_signatures_and_manifests_are_refused_before_parsing() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, sig) = signed(tmp.path());
    // Over the default limit: a sparse file, nothing is read.
    let huge = tmp.path().join("huge.sig");
    let f = std::fs::File::create(&huge).unwrap();
    f.set_len(provenance::attest::MAX_SIGNATURE_BYTES + 1)
        .unwrap();
    assert!(matches!(
        verify(&m, &huge),
        Err(Error::TooLarge {
            what: "signature bundle",
            ..
        })
    ));
    // A caller's own limit.
    let small = VerifyOptions::default().max_signature_bytes(100);
    let r = provenance::verify_model(&m, &sig, &key().public_key(), &small);
    assert!(
        matches!(r, Err(Error::TooLarge { limit: 100, .. })),
        "{r:?}"
    );
    // Within the byte limit but more resources than a manifest may list.
    let mut st = statement_of(&sig);
    let r0 = st["predicate"]["resources"][0].clone();
    let many: Vec<Value> = (0..=MAX_MANIFEST_RESOURCES)
        .map(|i| {
            let mut r = r0.clone();
            r["name"] = json!(format!("f{i}"));
            r
        })
        .collect();
    st["predicate"]["resources"] = json!(many);
    write_json(&sig, &bundle_for(&st));
    let r = verify(&m, &sig);
    assert!(
        matches!(&r, Err(Error::Manifest { why }) if why.contains("exceeds")),
        "{r:?}"
    );
}

#[test]
fn unusable_keys_are_key_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("k.pem");
    let cases = [
        ("garbage", "hello".to_string()),
        (
            "encrypted",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
                .into(),
        ),
        (
            "bad body",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".into(),
        ),
        ("public as private", key().public_key().to_pem()),
    ];
    for (what, text) in cases {
        std::fs::write(&p, text).unwrap();
        assert!(
            matches!(SigningKey::from_pem_file(&p), Err(Error::Key { .. })),
            "{what}"
        );
    }
    std::fs::write(&p, key().to_pem()).unwrap();
    assert!(
        matches!(PublicKey::from_pem_file(&p), Err(Error::Key { .. })),
        "private as public"
    );
    // An RSA key (from openssl, when present) is refused as not P-256.
    let rsa = tmp.path().join("rsa.pem");
    if Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:1024",
            "-out",
        ])
        .arg(&rsa)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
    {
        assert!(matches!(
            SigningKey::from_pem_file(&rsa),
            Err(Error::Key { .. })
        ));
    }
    std::fs::write(&p, vec![b'A'; 1 << 20]).unwrap();
    assert!(matches!(
        SigningKey::from_pem_file(&p),
        Err(Error::TooLarge { .. })
    ));
}

// ---------------------------------------------------------------- registry

#[test]
fn registry_approves_exact_models_only() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, sig) = signed(tmp.path());
    let path = tmp.path().join("registry.json");
    let v = verify(&m, &sig).unwrap();
    let mut reg = Registry::load_or_new(&path).unwrap();
    let entry = ApprovedModel::new(
        "tiny",
        "1.0",
        v.manifest_digest,
        v.manifest.len(),
        Some(v.signer.clone()),
        Verdict::Clean,
        "2025-03-01",
    )
    .unwrap();
    reg.add(entry.clone(), false, &path).unwrap();
    assert!(
        matches!(reg.add(entry, false, &path), Err(Error::Registry { .. })),
        "duplicate"
    );
    reg.save(&path).unwrap();
    let reg = Registry::load(&path).unwrap();

    assert!(provenance::check_approval(&m, &reg, Some(&v), None)
        .unwrap()
        .is_approved());
    // Listed with a signer: hashing alone is not enough.
    assert!(matches!(
        provenance::check_approval(&m, &reg, None, None).unwrap(),
        Approval::SignerUnverified { .. }
    ));
    // Signed by another key.
    let other = tmp.path().join("other.sig");
    provenance::sign_model(&m, &other_key(), &other, &VerifyOptions::default()).unwrap();
    let vo = provenance::verify_model(
        &m,
        &other,
        &other_key().public_key(),
        &VerifyOptions::default(),
    )
    .unwrap();
    assert!(matches!(
        provenance::check_approval(&m, &reg, Some(&vo), None).unwrap(),
        Approval::SignerMismatch { .. }
    ));
    // One byte changed: not listed.
    std::fs::write(m.join("config.json"), b"{}").unwrap();
    assert!(matches!(
        provenance::check_approval(&m, &reg, None, None).unwrap(),
        Approval::NotListed { .. }
    ));
    // A trojaned verdict is never approved.
    let mut reg2 = Registry::new();
    let d = Manifest::of_model(&m, &ManifestOptions::default())
        .unwrap()
        .digest();
    reg2.add(
        ApprovedModel::new("tiny", "2", d, 3, None, Verdict::Trojaned, "2025-03-02").unwrap(),
        false,
        &path,
    )
    .unwrap();
    assert!(matches!(
        provenance::check_approval(&m, &reg2, None, None).unwrap(),
        Approval::BadVerdict { .. }
    ));
    reg2.add(
        ApprovedModel::new("tiny", "3", d, 3, None, Verdict::Clean, "2025-03-02").unwrap(),
        false,
        &path,
    )
    .unwrap();
    assert!(
        matches!(
            provenance::check_approval(&m, &reg2, None, None).unwrap(),
            Approval::BadVerdict { .. }
        ),
        "a bad verdict outranks"
    );
}

#[test]
fn an_incomplete_scan_is_recorded_but_never_approved() {
    // `scan` exits 6 when its budget ran out before the hunt covered enough: the registry
    // records it as it was given, and never lets it pass.
    assert_eq!(
        Verdict::from(trojanscan::Verdict::Incomplete),
        Verdict::Incomplete
    );
    assert_eq!(
        "incomplete".parse::<Verdict>().unwrap(),
        Verdict::Incomplete
    );
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let path = tmp.path().join("registry.json");
    let d = Manifest::of_model(&m, &ManifestOptions::default())
        .unwrap()
        .digest();
    let incomplete =
        ApprovedModel::new("tiny", "1", d, 3, None, Verdict::Incomplete, "2025-03-01").unwrap();
    let mut reg = Registry::new();
    reg.add(incomplete, false, &path).unwrap();
    reg.save(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(r#""verdict": "incomplete""#), "{text}");
    let reg = Registry::load(&path).unwrap();
    let a = provenance::check_approval(&m, &reg, None, None).unwrap();
    assert!(
        matches!(&a, Approval::BadVerdict { entry } if entry.verdict == Verdict::Incomplete),
        "{a:?}"
    );
    assert!(a.to_string().contains("incomplete scan is no pass"), "{a}");
    // Beside a `clean` entry for the same bytes it still blocks the approval.
    let mut both = reg.clone();
    both.add(
        ApprovedModel::new("tiny", "1-rescan", d, 3, None, Verdict::Clean, "2025-03-02").unwrap(),
        false,
        &path,
    )
    .unwrap();
    assert!(matches!(
        provenance::check_approval(&m, &both, None, None).unwrap(),
        Approval::BadVerdict { entry } if entry.verdict == Verdict::Incomplete
    ));
    // Replaced by a clean rescan, the model is approved.
    let mut replaced = reg.clone();
    replaced
        .add(
            ApprovedModel::new("tiny", "1", d, 3, None, Verdict::Clean, "2025-03-02").unwrap(),
            true,
            &path,
        )
        .unwrap();
    assert!(provenance::check_approval(&m, &replaced, None, None)
        .unwrap()
        .is_approved());

    // From the command line: listed (exit 0), shown, and refused by every check (exit 1).
    let reg_path = tmp.path().join("cli.json");
    let out = cli(&[
        "registry".as_ref(),
        "add".as_ref(),
        reg_path.as_os_str(),
        m.as_os_str(),
        "--name".as_ref(),
        "tiny".as_ref(),
        "--version".as_ref(),
        "1".as_ref(),
        "--verdict".as_ref(),
        "incomplete".as_ref(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["registry".as_ref(), "list".as_ref(), reg_path.as_os_str()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("incomplete"));
    let out = cli(&[
        "registry".as_ref(),
        "check".as_ref(),
        reg_path.as_os_str(),
        m.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("verdict incomplete"));
    let out = cli(&[
        "verify".as_ref(),
        m.as_os_str(),
        "--registry".as_ref(),
        reg_path.as_os_str(),
        "--format".as_ref(),
        "json".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["approval"]["status"], "bad-verdict");
    assert_eq!(j["approval"]["entry"]["verdict"], "incomplete");
    // An unknown verdict is still refused before anything is written.
    let out = cli(&[
        "registry".as_ref(),
        "add".as_ref(),
        reg_path.as_os_str(),
        m.as_os_str(),
        "--name".as_ref(),
        "tiny".as_ref(),
        "--version".as_ref(),
        "2".as_ref(),
        "--verdict".as_ref(),
        "fine".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn malformed_registries_are_registry_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("r.json");
    let entry = json!({"name": "m", "version": "1", "manifest_digest": "ab".repeat(32), "files": 1,
                       "verdict": "clean", "scanned": "2025-01-01"});
    let cases = [
        ("not json", json!(null).to_string() + "}"),
        ("no version", json!({"models": []}).to_string()),
        ("future version", json!({"version": 2, "models": []}).to_string()),
        ("unknown field", json!({"version": 1, "models": [], "x": 1}).to_string()),
        ("bad digest", json!({"version": 1, "models": [{"manifest_digest": "zz", "name": "m", "version": "1", "files": 1, "verdict": "clean", "scanned": "2025-01-01"}]}).to_string()),
        ("bad verdict", json!({"version": 1, "models": [{"manifest_digest": "ab".repeat(32), "name": "m", "version": "1", "files": 1, "verdict": "fine", "scanned": "2025-01-01"}]}).to_string()),
        ("bad date", json!({"version": 1, "models": [{"manifest_digest": "ab".repeat(32), "name": "m", "version": "1", "files": 1, "verdict": "clean", "scanned": "yesterday"}]}).to_string()),
        ("duplicate", json!({"version": 1, "models": [entry.clone(), entry]}).to_string()),
    ];
    for (what, text) in cases {
        std::fs::write(&p, text).unwrap();
        let r = Registry::load(&p);
        assert!(matches!(r, Err(Error::Registry { .. })), "{what}: {r:?}");
    }
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(MAX_REGISTRY_BYTES + 1).unwrap();
    assert!(matches!(
        Registry::load(&p),
        Err(Error::TooLarge {
            what: "registry",
            ..
        })
    ));
}

// ---------------------------------------------------------------- pickle

/// A protocol-2 pickle of `{"w": <tensor via torch._utils._rebuild_tensor_v2>}` using
/// only allowed globals, optionally with an extra `os.system("id")` call.
fn torch_like_pickle(evil: bool) -> Vec<u8> {
    let mut p = vec![0x80, 2];
    p.extend(b"ccollections\nOrderedDict\nq\x00)Rq\x01");
    p.extend(b"X\x01\x00\x00\x00wq\x02");
    p.extend(b"ctorch._utils\n_rebuild_tensor_v2\nq\x03");
    p.extend(b"((X\x07\x00\x00\x00storageq\x04ctorch\nFloatStorage\nq\x05X\x01\x00\x00\x000q\x06X\x03\x00\x00\x00cpuq\x07K\x04tq\x08Q");
    p.extend(b"K\x00K\x04\x85K\x01\x85\x89h\x01tq\tRq\n");
    p.push(b's');
    if evil {
        p.extend(b"X\x04\x00\x00\x00pwndcposix\nsystem\nX\x02\x00\x00\x00id\x85Rs");
    }
    p.push(b'.');
    p
}

fn torch_zip(path: &Path, pickle: &[u8]) {
    use std::io::Write;
    let f = std::fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file("archive/data.pkl", opts).unwrap();
    z.write_all(pickle).unwrap();
    z.start_file("archive/data/0", opts).unwrap();
    z.write_all(&[0u8; 16]).unwrap();
    z.start_file("archive/version", opts).unwrap();
    z.write_all(b"3\n").unwrap();
    z.finish().unwrap();
}

#[test]
fn pickle_scan_reports_imports_outside_the_allow_list() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = PickleScanOptions::default();
    let clean = tmp.path().join("clean.bin");
    std::fs::write(&clean, torch_like_pickle(false)).unwrap();
    let r = scan_pickle(&clean, &opts).unwrap();
    assert!(r.is_clean(), "{:?}", r.offending());
    assert_eq!(r.streams[0].imports.len(), 3);

    let evil = tmp.path().join("evil.pt");
    std::fs::write(&evil, torch_like_pickle(true)).unwrap();
    let r = scan_pickle(&evil, &opts).unwrap();
    let off: Vec<String> = r.offending().iter().map(|(_, i)| i.global()).collect();
    assert_eq!(off, ["posix.system"]);
    // The user may allow it explicitly.
    assert!(
        scan_pickle(&evil, &PickleScanOptions::default().allow("posix.system"))
            .unwrap()
            .is_clean()
    );
    // Loading it as a model is refused outright.
    assert!(matches!(
        trojanscan::model::ModelSource::detect(&evil),
        Err(Error::PickleRefused { .. })
    ));

    // Protocol 0 INST and protocol 4 STACK_GLOBAL.
    let p0 = tmp.path().join("p0.pkl");
    std::fs::write(&p0, b"(S'ls'\nisubprocess\ncall\np0\n.").unwrap();
    assert_eq!(
        scan_pickle(&p0, &opts).unwrap().offending()[0].1.global(),
        "subprocess.call"
    );
    let p4 = tmp.path().join("p4.pkl");
    let mut b = vec![0x80, 4, 0x95, 0, 0, 0, 0, 0, 0, 0, 0];
    b.extend(b"\x8c\x08builtins\x94\x8c\x04exec\x94\x93\x94\x8c\x05print\x85R.");
    std::fs::write(&p4, b).unwrap();
    assert_eq!(
        scan_pickle(&p4, &opts).unwrap().offending()[0].1.global(),
        "builtins.exec"
    );
}

#[test]
fn torch_zip_checkpoints_are_scanned_member_by_member() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = PickleScanOptions::default();
    let good = tmp.path().join("good.pt");
    torch_zip(&good, &torch_like_pickle(false));
    let r = scan_pickle(&good, &opts).unwrap();
    assert_eq!(r.container, "zip");
    assert_eq!(r.streams[0].member, "archive/data.pkl");
    assert!(r.is_clean());
    let bad = tmp.path().join("bad.pt");
    torch_zip(&bad, &torch_like_pickle(true));
    let r = scan_pickle(&bad, &opts).unwrap();
    assert_eq!(r.offending()[0].0, "archive/data.pkl");
}

#[test]
fn malformed_pickles_are_pickle_scan_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("x.pkl");
    let cases: [(&str, &[u8]); 6] = [
        ("empty", b""),
        ("truncated string", b"\x80\x02X\xff\x00\x00\x00ab"),
        ("unknown opcode", b"\x80\x02\xfa."),
        ("no stop", b"\x80\x02N"),
        ("underflow", b"\x80\x02R."),
        ("memo", b"\x80\x02h\x09."),
    ];
    for (what, bytes) in cases {
        std::fs::write(&p, bytes).unwrap();
        let r = scan_pickle(&p, &PickleScanOptions::default());
        assert!(matches!(r, Err(Error::PickleScan { .. })), "{what}: {r:?}");
    }
    // Limits: a long run of opcodes stops at the caller's bound.
    let mut long = vec![0x80, 2];
    long.extend(std::iter::repeat_n(b'N', 10_000));
    long.push(b'.');
    std::fs::write(&p, &long).unwrap();
    assert!(matches!(
        scan_pickle(&p, &PickleScanOptions::default().max_ops(100)),
        Err(Error::PickleScan { .. })
    ));
    assert!(matches!(
        scan_pickle(&p, &PickleScanOptions::default().max_bytes(100)),
        Err(Error::PickleScan { .. })
    ));
    // A huge declared length is skipped against the bound, never allocated.
    std::fs::write(&p, b"\x80\x04\x8d\xff\xff\xff\xff\xff\xff\xff\x7f").unwrap();
    assert!(matches!(
        scan_pickle(&p, &PickleScanOptions::default()),
        Err(Error::PickleScan { .. })
    ));
    // A zip without a pickle inside is not a torch checkpoint.
    let z = tmp.path().join("z.pt");
    {
        use std::io::Write;
        let mut w = zip::ZipWriter::new(std::fs::File::create(&z).unwrap());
        w.start_file(
            "readme.txt",
            zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored),
        )
        .unwrap();
        w.write_all(b"hi").unwrap();
        w.finish().unwrap();
    }
    assert!(matches!(
        scan_pickle(&z, &PickleScanOptions::default()),
        Err(Error::PickleScan { .. })
    ));
}

// ------------------------------------------------- pickle: every pickle, every member

/// `cos\nsystem\n(S'echo pwned'\ntR.`: protocol 0 (no PROTO opcode), `os.system`.
const P0_PAYLOAD: &[u8] = b"cos\nsystem\n(S'echo pwned'\ntR.";

/// The five pickles `torch.save(..., _use_new_zipfile_serialization=False)` writes (magic
/// number, protocol version, system info, the object, its storage keys) for
/// `torch_like_pickle`'s one storage (key `0`, 4 floats), then that storage's record.
fn legacy_torch(evil: bool) -> Vec<u8> {
    let mut f = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.".to_vec();
    f.extend(b"\x80\x02M\xe9\x03.");
    f.extend(b"\x80\x02}q\x00(X\x10\x00\x00\x00protocol_versionq\x01M\xe9\x03u.");
    f.extend(torch_like_pickle(evil));
    f.extend(b"\x80\x02]q\x00X\x01\x00\x00\x000q\x01a.");
    f.extend(4u64.to_le_bytes());
    f.extend([0u8; 16]);
    f
}

fn pickle_scan_exit(path: &Path) -> Option<i32> {
    cli(&["pickle-scan".as_ref(), path.as_os_str()])
        .status
        .code()
}

#[test]
fn every_pickle_of_a_plain_file_is_scanned_to_its_end() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = PickleScanOptions::default();
    let p = tmp.path().join("multi.pt");

    // A protocol-2 pickle of a large int, then a protocol-0 pickle calling os.system.
    let mut f = b"\x80\x02\x8a\x08\x01\x02\x03\x04\x05\x06\x07\x08.".to_vec();
    f.extend(P0_PAYLOAD);
    std::fs::write(&p, &f).unwrap();
    let r = scan_pickle(&p, &opts).unwrap();
    assert_eq!(r.container, "pickle");
    assert_eq!(r.streams.len(), 2);
    assert_eq!((r.streams[1].offset, r.streams[1].len), (13, 29));
    let off: Vec<(&str, String)> = r
        .offending()
        .iter()
        .map(|(m, i)| (*m, i.global()))
        .collect();
    assert_eq!(off, [("#1", "os.system".to_string())]);
    assert_eq!(r.offending()[0].1.opcode, "GLOBAL");
    assert_eq!(pickle_scan_exit(&p), Some(1));

    // The same payload after several clean pickles of protocols 2, 3, 4 and 0.
    let mut f = Vec::new();
    f.extend(b"\x80\x02K\x01.");
    f.extend(b"\x80\x03X\x01\x00\x00\x00a.");
    f.extend(b"\x80\x04\x95\x02\x00\x00\x00\x00\x00\x00\x00\x88.");
    f.extend(b"I42\n.");
    f.extend(P0_PAYLOAD);
    std::fs::write(&p, &f).unwrap();
    let r = scan_pickle(&p, &opts).unwrap();
    assert_eq!(r.streams.len(), 5);
    let off: Vec<(&str, String)> = r
        .offending()
        .iter()
        .map(|(m, i)| (*m, i.global()))
        .collect();
    assert_eq!(off, [("#4", "os.system".to_string())]);
    assert_eq!(pickle_scan_exit(&p), Some(1));
}

#[test]
fn legacy_torch_files_walk_their_storage_records_then_read_on() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = PickleScanOptions::default();
    let p = tmp.path().join("legacy.bin");

    // A clean legacy file: five pickles, then one storage record of 8 + 16 bytes.
    let clean = legacy_torch(false);
    std::fs::write(&p, &clean).unwrap();
    let r = scan_pickle(&p, &opts).unwrap();
    assert!(r.is_clean(), "{:?}", r.offending());
    assert_eq!(r.streams.len(), 5);
    let storage = r.storage.clone().unwrap();
    assert_eq!(
        (storage.offset, storage.len, storage.count),
        (clean.len() as u64 - 24, 24, 1)
    );
    assert_eq!(pickle_scan_exit(&p), Some(0));

    // A payload in the object is found as before.
    std::fs::write(&p, legacy_torch(true)).unwrap();
    let r = scan_pickle(&p, &opts).unwrap();
    assert_eq!(r.offending()[0].0, "#3");

    // A protocol-0 payload after the storage records is read too.
    let mut f = clean.clone();
    f.extend(P0_PAYLOAD);
    std::fs::write(&p, &f).unwrap();
    let r = scan_pickle(&p, &opts).unwrap();
    assert_eq!(r.storage, Some(storage.clone()));
    let off: Vec<(&str, String)> = r
        .offending()
        .iter()
        .map(|(m, i)| (*m, i.global()))
        .collect();
    assert_eq!(off, [("#5", "os.system".to_string())]);
    assert_eq!(pickle_scan_exit(&p), Some(1));

    // A storage record whose element count differs from the one declared is not walked:
    // its bytes are held to the rule for any other bytes.
    let mut f = clean.clone();
    let at = f.len() - 24;
    f[at] = 5;
    std::fs::write(&p, &f).unwrap();
    let r = scan_pickle(&p, &opts);
    assert!(
        matches!(
            &r,
            Err(Error::PickleTrailingData { member, offset, len: 24, .. })
                if member == "#5" && *offset == at as u64
        ),
        "{r:?}"
    );
}

#[test]
fn bytes_after_a_pickle_that_are_not_one_are_a_typed_error() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("trailing.pkl");
    let opts = PickleScanOptions::default();
    let cases: [(&str, &[u8]); 4] = [
        ("garbage", b"\xfa\xfb\xfc"),
        ("a string running past the end", b"X\x10\x00\x00\x00ab"),
        // Unpicklers run os.system at REDUCE, before they find the stream truncated.
        ("truncated payload", b"cos\nsystem\n(S'echo pwned'\ntR"),
        ("raw bytes", &[0u8; 24]),
    ];
    for (what, tail) in cases {
        let mut f = b"\x80\x02K\x01.".to_vec();
        f.extend(tail);
        std::fs::write(&p, &f).unwrap();
        let r = scan_pickle(&p, &opts);
        assert!(
            matches!(
                &r,
                Err(Error::PickleTrailingData { member, offset: 5, len, .. })
                    if member == "#1" && *len == tail.len() as u64
            ),
            "{what}: {r:?}"
        );
        assert_eq!(pickle_scan_exit(&p), Some(2), "{what}");
    }
}

/// One stored member of a hand-written zip.
struct Member<'a> {
    name: &'a str,
    data: &'a [u8],
}

/// A stored zip written by hand: `members` in order, then `extra` central-directory entries
/// `(name, local-header offset, size)`, optionally with miniz's (torch's) zip64 end records.
fn hand_zip(members: &[Member], extra: &[(String, u32, u32)], zip64: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut cd = Vec::new();
    let entry = |cd: &mut Vec<u8>, name: &str, offset: u32, size: u32| {
        cd.extend(0x0201_4b50u32.to_le_bytes());
        cd.extend([20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        cd.extend(size.to_le_bytes());
        cd.extend(size.to_le_bytes());
        cd.extend((name.len() as u16).to_le_bytes());
        cd.extend([0u8; 12]);
        cd.extend(offset.to_le_bytes());
        cd.extend(name.as_bytes());
    };
    for m in members {
        let offset = out.len() as u32;
        out.extend(0x0403_4b50u32.to_le_bytes());
        out.extend([20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend((m.data.len() as u32).to_le_bytes());
        out.extend((m.data.len() as u32).to_le_bytes());
        out.extend((m.name.len() as u16).to_le_bytes());
        out.extend([0, 0]);
        out.extend(m.name.as_bytes());
        out.extend(m.data);
        entry(&mut cd, m.name, offset, m.data.len() as u32);
    }
    for (name, offset, size) in extra {
        entry(&mut cd, name, *offset, *size);
    }
    let count = (members.len() + extra.len()) as u64;
    let cd_offset = out.len() as u64;
    out.extend(&cd);
    if zip64 {
        let eocd64 = out.len() as u64;
        out.extend(0x0606_4b50u32.to_le_bytes());
        out.extend(44u64.to_le_bytes());
        out.extend([45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend(count.to_le_bytes());
        out.extend(count.to_le_bytes());
        out.extend((cd.len() as u64).to_le_bytes());
        out.extend(cd_offset.to_le_bytes());
        out.extend(0x0706_4b50u32.to_le_bytes());
        out.extend(0u32.to_le_bytes());
        out.extend(eocd64.to_le_bytes());
        out.extend(1u32.to_le_bytes());
    }
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0, 0, 0, 0]);
    let n = count.min(0xffff) as u16;
    out.extend(n.to_le_bytes());
    out.extend(n.to_le_bytes());
    out.extend((cd.len() as u32).to_le_bytes());
    out.extend((cd_offset as u32).to_le_bytes());
    out.extend([0, 0]);
    out
}

#[test]
fn every_pickle_member_of_a_zip_is_scanned_to_its_end() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = PickleScanOptions::default();
    let p = tmp.path().join("members.pt");
    let clean = torch_like_pickle(false);
    let evil = torch_like_pickle(true);

    // The payload in a pickle member after the first, named in upper case (torch's reader
    // matches names ignoring ASCII case); miniz-style zip64 end records.
    let z = hand_zip(
        &[
            Member {
                name: "archive/data.pkl",
                data: &clean,
            },
            Member {
                name: "archive/data/0",
                data: &[0u8; 16],
            },
            Member {
                name: "archive/EXTRA.PKL",
                data: &evil,
            },
        ],
        &[],
        true,
    );
    std::fs::write(&p, &z).unwrap();
    let r = scan_pickle(&p, &opts).unwrap();
    assert_eq!(r.container, "zip");
    let members: Vec<&str> = r.streams.iter().map(|s| s.member.as_str()).collect();
    assert_eq!(members, ["archive/data.pkl", "archive/EXTRA.PKL"]);
    let off: Vec<(&str, String)> = r
        .offending()
        .iter()
        .map(|(m, i)| (*m, i.global()))
        .collect();
    assert_eq!(off, [("archive/EXTRA.PKL", "posix.system".to_string())]);
    assert_eq!(pickle_scan_exit(&p), Some(1));

    // A protocol-0 payload after the clean pickle inside `data.pkl`.
    let mut two = clean.clone();
    two.extend(P0_PAYLOAD);
    let z = hand_zip(
        &[Member {
            name: "archive/data.pkl",
            data: &two,
        }],
        &[],
        false,
    );
    std::fs::write(&p, &z).unwrap();
    let r = scan_pickle(&p, &opts).unwrap();
    let off: Vec<(&str, String)> = r
        .offending()
        .iter()
        .map(|(m, i)| (*m, i.global()))
        .collect();
    assert_eq!(off, [("archive/data.pkl#1", "os.system".to_string())]);

    // Bytes after the member's last pickle are trailing data, with the member named.
    let mut tail = clean.clone();
    tail.extend(b"\xfa");
    let z = hand_zip(
        &[Member {
            name: "archive/data.pkl",
            data: &tail,
        }],
        &[],
        false,
    );
    std::fs::write(&p, &z).unwrap();
    let r = scan_pickle(&p, &opts);
    assert!(
        matches!(&r, Err(Error::PickleTrailingData { member, len: 1, .. }) if member == "archive/data.pkl#1"),
        "{r:?}"
    );
}

#[test]
fn zip_members_that_overlap_or_repeat_are_refused_fast() {
    use trojanscan::provenance::pickle::ZipArchiveError;
    let tmp = tempfile::tempdir().unwrap();
    let opts = PickleScanOptions::default();
    let p = tmp.path().join("overlap.pt");

    // One 1 MB pickle member, then 65,534 more central-directory entries naming its local
    // header: each would rescan the same megabyte.
    let mut big = vec![0x80, 2];
    big.extend(std::iter::repeat_n(b'N', 1 << 20));
    big.push(b'.');
    let size = big.len() as u32;
    let extra: Vec<(String, u32, u32)> = (1..65_535)
        .map(|i| (format!("archive/data{i}.pkl"), 0, size))
        .collect();
    let z = hand_zip(
        &[Member {
            name: "archive/data.pkl",
            data: &big,
        }],
        &extra,
        false,
    );
    std::fs::write(&p, &z).unwrap();
    // Refused from the directory alone, before any member is read.
    let r = scan_pickle(&p, &opts);
    assert!(
        matches!(
            &r,
            Err(Error::ZipArchive {
                source: ZipArchiveError::OverlappingMembers { .. },
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(pickle_scan_exit(&p), Some(2));

    // An entry whose local header lies inside another member's data.
    let clean = torch_like_pickle(false);
    let inner = vec![(String::from("archive/b.pkl"), 40, 10)];
    let z = hand_zip(
        &[Member {
            name: "archive/data.pkl",
            data: &clean,
        }],
        &inner,
        false,
    );
    std::fs::write(&p, &z).unwrap();
    let r = scan_pickle(&p, &opts);
    assert!(
        matches!(
            &r,
            Err(Error::ZipArchive {
                source: ZipArchiveError::OverlappingMembers { first, second },
                ..
            }) if first == "archive/data.pkl" && second == "archive/b.pkl"
        ),
        "{r:?}"
    );

    // Two members of one name (ignoring case): torch would read one, a scan the other.
    let z = hand_zip(
        &[
            Member {
                name: "archive/data.pkl",
                data: &clean,
            },
            Member {
                name: "archive/Data.pkl",
                data: &torch_like_pickle(true),
            },
        ],
        &[],
        false,
    );
    std::fs::write(&p, &z).unwrap();
    let r = scan_pickle(&p, &opts);
    assert!(
        matches!(
            &r,
            Err(Error::ZipArchive {
                source: ZipArchiveError::DuplicateName { name },
                ..
            }) if name == "archive/Data.pkl"
        ),
        "{r:?}"
    );

    // A member whose data runs into the central directory.
    let cd_offset = (30 + "archive/data.pkl".len() + clean.len()) as u32;
    let past = vec![(String::from("archive/late.bin"), cd_offset, 1 << 20)];
    let z = hand_zip(
        &[Member {
            name: "archive/data.pkl",
            data: &clean,
        }],
        &past,
        false,
    );
    std::fs::write(&p, &z).unwrap();
    assert!(matches!(
        scan_pickle(&p, &opts),
        Err(Error::ZipArchive {
            source: ZipArchiveError::OutOfBounds { .. },
            ..
        })
    ));
}

#[test]
fn zip_entry_counts_and_total_work_are_bounded() {
    use trojanscan::provenance::pickle::{ZipArchiveError, MAX_ZIP_ENTRIES};
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("many.pt");

    // zip64 end records claiming 2^40 entries: refused before the directory is read.
    let mut z = b"PK\x03\x04".to_vec();
    let eocd64 = z.len() as u64;
    z.extend(0x0606_4b50u32.to_le_bytes());
    z.extend(44u64.to_le_bytes());
    z.extend([45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    z.extend((1u64 << 40).to_le_bytes());
    z.extend((1u64 << 40).to_le_bytes());
    z.extend((1u64 << 50).to_le_bytes());
    z.extend(0u64.to_le_bytes());
    z.extend(0x0706_4b50u32.to_le_bytes());
    z.extend(0u32.to_le_bytes());
    z.extend(eocd64.to_le_bytes());
    z.extend(1u32.to_le_bytes());
    z.extend(0x0605_4b50u32.to_le_bytes());
    z.extend([0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
    z.extend([0xff; 8]);
    z.extend([0, 0]);
    std::fs::write(&p, &z).unwrap();
    let r = scan_pickle(&p, &PickleScanOptions::default());
    assert!(
        matches!(
            &r,
            Err(Error::ZipArchive {
                source: ZipArchiveError::TooManyEntries { count, max },
                ..
            }) if *count == 1 << 40 && *max == MAX_ZIP_ENTRIES as u64
        ),
        "{r:?}"
    );

    // Opcode bytes across all members stop at the checkpoint-wide bound.
    let clean = torch_like_pickle(false);
    let z = hand_zip(
        &[
            Member {
                name: "archive/a.pkl",
                data: &clean,
            },
            Member {
                name: "archive/b.pkl",
                data: &clean,
            },
        ],
        &[],
        false,
    );
    std::fs::write(&p, &z).unwrap();
    let total = 2 * clean.len() as u64;
    let opts = PickleScanOptions::default();
    assert!(scan_pickle(&p, &opts.clone().max_total_bytes(total)).is_ok());
    assert!(matches!(
        scan_pickle(&p, &opts.max_total_bytes(total - 1)),
        Err(Error::PickleScan { .. })
    ));
}

#[test]
fn zip64_archives_from_the_zip_writer_are_read() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("z64.pt");
    let mut z = zip::ZipWriter::new(std::fs::File::create(&p).unwrap());
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(true);
    z.start_file("archive/data.pkl", opts).unwrap();
    z.write_all(&torch_like_pickle(true)).unwrap();
    z.start_file("archive/data/0", opts).unwrap();
    z.write_all(&[0u8; 16]).unwrap();
    z.finish().unwrap();
    let r = scan_pickle(&p, &PickleScanOptions::default()).unwrap();
    assert_eq!(r.offending()[0].0, "archive/data.pkl");
}

// ---------------------------------------------------------------- CLI exit codes

fn cli(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_trojanscan"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn cli_sign_verify_registry_and_exit_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let (kp, pp) = (tmp.path().join("k.pem"), tmp.path().join("k.pub"));
    std::fs::write(&kp, key().to_pem()).unwrap();
    std::fs::write(&pp, key().public_key().to_pem()).unwrap();
    let sig = tmp.path().join("m.sig");
    let reg = tmp.path().join("approved.json");
    let o = |s: &str| std::ffi::OsString::from(s);
    let run = |args: &[std::ffi::OsString]| {
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        cli(&refs)
    };
    let out = run(&[
        o("sign"),
        m.clone().into(),
        o("--key"),
        kp.clone().into(),
        o("--out"),
        sig.clone().into(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verify_args = vec![
        o("verify"),
        m.clone().into(),
        o("--signature"),
        sig.clone().into(),
        o("--key"),
        pp.clone().into(),
    ];
    assert_eq!(run(&verify_args).status.code(), Some(0));

    let out = run(&[
        o("registry"),
        o("add"),
        reg.clone().into(),
        m.clone().into(),
        o("--name"),
        o("tiny"),
        o("--version"),
        o("1"),
        o("--verdict"),
        o("clean"),
        o("--signature"),
        sig.clone().into(),
        o("--key"),
        pp.clone().into(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut with_reg = verify_args.clone();
    with_reg.extend([
        o("--registry"),
        reg.clone().into(),
        o("--format"),
        o("json"),
    ]);
    let out = run(&with_reg);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["approval"]["status"], "approved");
    let out = run(&[o("registry"), o("list"), reg.clone().into()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("tiny"));
    // Registry alone, without the signature the entry requires: not approved.
    assert_eq!(
        run(&[
            o("verify"),
            m.clone().into(),
            o("--registry"),
            reg.clone().into()
        ])
        .status
        .code(),
        Some(1)
    );

    std::fs::write(m.join("model.safetensors"), vec![8u8; 4096]).unwrap();
    let out = run(&verify_args);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("model.safetensors"));
    assert_eq!(
        run(&[
            o("registry"),
            o("check"),
            reg.clone().into(),
            m.clone().into()
        ])
        .status
        .code(),
        Some(1)
    );
    // Errors that stop the check from running: 2.
    let missing_key = vec![
        o("verify"),
        m.clone().into(),
        o("--signature"),
        sig.clone().into(),
        o("--key"),
        o("/nonexistent.pem"),
    ];
    assert_eq!(run(&missing_key).status.code(), Some(2));

    let pk = tmp.path().join("evil.pt");
    std::fs::write(&pk, torch_like_pickle(true)).unwrap();
    let out = run(&[o("pickle-scan"), pk.clone().into()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("posix.system"));
    std::fs::write(&pk, torch_like_pickle(false)).unwrap();
    assert_eq!(run(&[o("pickle-scan"), pk.into()]).status.code(), Some(0));
}

#[test]
fn cli_hash_matches_sha256sum_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let out = cli(&[std::ffi::OsStr::new("hash"), m.as_os_str()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 3);
    if let Ok(o) = Command::new("sha256sum")
        .arg("-c")
        .current_dir(tmp.path())
        .stdin(std::process::Stdio::piped())
        .spawn()
    {
        use std::io::Write;
        let mut child = o;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        assert!(
            child.wait().unwrap().success(),
            "sha256sum -c disagrees:\n{text}"
        );
    }
}
