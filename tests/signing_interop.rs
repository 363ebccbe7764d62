//! Interoperability with the OpenSSF `model-signing` Python package (key method): a model
//! signed by the package verifies with trojanscan and the other way round, signature
//! beside or inside the model; tampering with one byte fails both.
//!
//! Runs where Python can `import model_signing` (CI: `pip install model-signing
//! pyopenssl`); the interpreter is `$TROJANSCAN_PYTHON`, else `python3`. Elsewhere it
//! prints why it skipped.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::tiny::{self, TinyOpts};
use trojanscan::provenance::{self, FileMismatch, SigningKey, VerifyOptions};
use trojanscan::Error;

fn python() -> Option<String> {
    let py = std::env::var("TROJANSCAN_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py)
        .args(["-c", "import model_signing, OpenSSL"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        Some(py)
    } else {
        println!("skipping: `{py}` cannot import model_signing and OpenSSL (pip install model-signing pyopenssl)");
        None
    }
}

/// `python -m model_signing <args>`; returns (success, combined output).
fn model_signing(py: &str, args: &[&Path]) -> (bool, String) {
    let out = Command::new(py)
        .arg("-m")
        .arg("model_signing")
        .args(args)
        .output()
        .expect("run python");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn p(s: &str) -> &Path {
    Path::new(s)
}

struct Keys {
    key: SigningKey,
    private: PathBuf,
    public: PathBuf,
}

fn keys(dir: &Path) -> Keys {
    let key = SigningKey::from_bytes(&[0x5a; 32]).unwrap();
    let private = dir.join("key.pem");
    let public = dir.join("key.pub.pem");
    std::fs::write(&private, key.to_pem()).unwrap();
    std::fs::write(&public, key.public_key().to_pem()).unwrap();
    Keys {
        key,
        private,
        public,
    }
}

fn model(dir: &Path) -> PathBuf {
    let m = dir.join("tiny-bert");
    tiny::write_bert(&m, TinyOpts::default());
    // A nested file and a name that sorts differently by string and by path components.
    std::fs::create_dir_all(m.join("a")).unwrap();
    std::fs::write(m.join("a/b.txt"), b"nested").unwrap();
    std::fs::write(m.join("a.txt"), b"sibling").unwrap();
    m
}

fn flip_one_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = bytes.len() - 3;
    bytes[i] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn package_signature_verifies_with_trojanscan_and_back() {
    let Some(py) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let k = keys(tmp.path());
    let m = model(tmp.path());
    let opts = VerifyOptions::default();

    // Package signs, trojanscan verifies.
    let py_sig = tmp.path().join("py.sig");
    let (ok, out) = model_signing(
        &py,
        &[
            p("sign"),
            p("key"),
            p("--private_key"),
            &k.private,
            p("--signature"),
            &py_sig,
            &m,
        ],
    );
    assert!(ok, "model_signing sign failed: {out}");
    let v = provenance::verify_model(&m, &py_sig, &k.key.public_key(), &opts).unwrap();
    assert_eq!(v.manifest.len(), 5, "{:?}", v.manifest.resources);
    // Path-component order, as the package writes it.
    assert_eq!(v.manifest.resources[0].name, "a/b.txt");
    assert_eq!(v.manifest.resources[1].name, "a.txt");

    // trojanscan signs, package verifies.
    let ts_sig = tmp.path().join("ts.sig");
    provenance::sign_model(&m, &k.key, &ts_sig, &opts).unwrap();
    let (ok, out) = model_signing(
        &py,
        &[
            p("verify"),
            p("key"),
            p("--public_key"),
            &k.public,
            p("--signature"),
            &ts_sig,
            &m,
        ],
    );
    assert!(
        ok,
        "model_signing verify rejected trojanscan's signature: {out}"
    );

    // Same manifest either way.
    let ours = provenance::verify_model(&m, &ts_sig, &k.key.public_key(), &opts).unwrap();
    assert_eq!(ours.manifest.resources, v.manifest.resources);
    assert_eq!(ours.manifest.subject_digest(), v.manifest.subject_digest());

    // One byte changed: both fail, trojanscan naming the file.
    flip_one_byte(&m.join("model.safetensors"));
    for sig in [&py_sig, &ts_sig] {
        match provenance::verify_model(&m, sig, &k.key.public_key(), &opts) {
            Err(Error::Integrity(f)) => {
                assert_eq!(f.mismatches.len(), 1);
                assert!(
                    matches!(&f.mismatches[0], FileMismatch::Changed { name, .. } if name == "model.safetensors")
                );
                assert!(Error::Integrity(f)
                    .to_string()
                    .contains("model.safetensors"));
            }
            other => panic!("tampered model verified: {other:?}"),
        }
        let (ok, out) = model_signing(
            &py,
            &[
                p("verify"),
                p("key"),
                p("--public_key"),
                &k.public,
                p("--signature"),
                sig,
                &m,
            ],
        );
        assert!(!ok, "model_signing accepted a tampered model: {out}");
    }
}

#[test]
fn signature_stored_inside_the_model_both_ways() {
    let Some(py) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let k = keys(tmp.path());
    let opts = VerifyOptions::default();

    let m = model(tmp.path());
    let sig = m.join("model.sig");
    let (ok, out) = model_signing(
        &py,
        &[
            p("sign"),
            p("key"),
            p("--private_key"),
            &k.private,
            p("--signature"),
            &sig,
            &m,
        ],
    );
    assert!(ok, "{out}");
    provenance::verify_model(&m, &sig, &k.key.public_key(), &opts).unwrap();

    std::fs::remove_file(&sig).unwrap();
    provenance::sign_model(&m, &k.key, &sig, &opts).unwrap();
    let (ok, out) = model_signing(
        &py,
        &[
            p("verify"),
            p("key"),
            p("--public_key"),
            &k.public,
            p("--signature"),
            &sig,
            &m,
        ],
    );
    assert!(ok, "{out}");

    // An extra file fails both.
    std::fs::write(m.join("extra.bin"), b"x").unwrap();
    match provenance::verify_model(&m, &sig, &k.key.public_key(), &opts) {
        Err(Error::Integrity(f)) => assert_eq!(
            f.mismatches,
            vec![FileMismatch::Extra {
                name: "extra.bin".into()
            }]
        ),
        other => panic!("{other:?}"),
    }
    let (ok, _) = model_signing(
        &py,
        &[
            p("verify"),
            p("key"),
            p("--public_key"),
            &k.public,
            p("--signature"),
            &sig,
            &m,
        ],
    );
    assert!(!ok);
}

#[test]
fn single_file_model_both_ways() {
    let Some(py) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let k = keys(tmp.path());
    let opts = VerifyOptions::default();
    let f = tmp.path().join("model.gguf");
    std::fs::write(&f, b"GGUF not really, but bytes are bytes").unwrap();
    let (py_sig, ts_sig) = (tmp.path().join("py.sig"), tmp.path().join("ts.sig"));
    let (ok, out) = model_signing(
        &py,
        &[
            p("sign"),
            p("key"),
            p("--private_key"),
            &k.private,
            p("--signature"),
            &py_sig,
            &f,
        ],
    );
    assert!(ok, "{out}");
    provenance::verify_model(&f, &py_sig, &k.key.public_key(), &opts).unwrap();
    provenance::sign_model(&f, &k.key, &ts_sig, &opts).unwrap();
    let (ok, out) = model_signing(
        &py,
        &[
            p("verify"),
            p("key"),
            p("--public_key"),
            &k.public,
            p("--signature"),
            &ts_sig,
            &f,
        ],
    );
    assert!(ok, "{out}");
}

#[test]
fn openssl_sec1_key_from_the_cli_interoperates() {
    let Some(py) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (private, public) = (tmp.path().join("ec.pem"), tmp.path().join("ec.pub.pem"));
    let gen = Command::new("openssl")
        .args([
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
        ])
        .arg(&private)
        .status();
    if !gen.map(|s| s.success()).unwrap_or(false) {
        println!("skipping: openssl not available");
        return;
    }
    assert!(Command::new("openssl")
        .args(["ec", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .output()
        .unwrap()
        .status
        .success());
    let m = model(tmp.path());
    let sig = tmp.path().join("cli.sig");
    let bin = env!("CARGO_BIN_EXE_trojanscan");
    let st = Command::new(bin)
        .arg("sign")
        .arg(&m)
        .arg("--key")
        .arg(&private)
        .arg("--out")
        .arg(&sig)
        .status()
        .unwrap();
    assert!(st.success());
    let (ok, out) = model_signing(
        &py,
        &[
            p("verify"),
            p("key"),
            p("--public_key"),
            &public,
            p("--signature"),
            &sig,
            &m,
        ],
    );
    assert!(ok, "{out}");
    let st = Command::new(bin)
        .arg("verify")
        .arg(&m)
        .arg("--signature")
        .arg(&sig)
        .arg("--key")
        .arg(&public)
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(0));
    flip_one_byte(&m.join("config.json"));
    let st = Command::new(bin)
        .arg("verify")
        .arg(&m)
        .arg("--signature")
        .arg(&sig)
        .arg("--key")
        .arg(&public)
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&st.stderr).contains("config.json"));
}
