//! Provenance before anything runs: hash a model, sign it, verify it, approve it in a
//! registry, then change one byte and watch every check fail, naming the file.
//!
//! ```text
//! cargo run --release --example verify_provenance [-- MODEL]
//! ```
//! Works on a copy of the model (default: the bundled `clean-base-s0`) in a temporary
//! directory; the key is generated from a fixed seed for the demonstration (use
//! `openssl ecparam -name prime256v1 -genkey` for a real one).

use std::path::Path;

use trojanscan::provenance::{
    self, registry::today, ApprovedModel, Manifest, ManifestOptions, Registry, SigningKey,
    VerifyOptions,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let src = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "testdata/zoo/clean-base-s0".into());
    let tmp = std::env::temp_dir().join(format!("trojanscan-provenance-{}", std::process::id()));
    let model = tmp.join("model");
    std::fs::create_dir_all(&model)?;
    for f in std::fs::read_dir(&src)? {
        let f = f?.path();
        if f.is_file() {
            std::fs::copy(&f, model.join(f.file_name().unwrap_or_default()))?;
        }
    }

    // 1. Every file and its digest: the manifest a signature covers.
    let manifest = Manifest::of_model(&model, &ManifestOptions::default())?;
    for r in &manifest.resources {
        println!("{}  {}", r.digest, r.name);
    }
    println!("manifest digest {}", manifest.digest());

    // 2. Sign (an OpenSSF model-signing bundle) and verify.
    let key = SigningKey::from_bytes(&[42u8; 32])?;
    let sig = tmp.join("model.sig");
    let opts = VerifyOptions::default();
    provenance::sign_model(&model, &key, &sig, &opts)?;
    let ok = provenance::verify_model(&model, &sig, &key.public_key(), &opts)?;
    println!("\nsignature verifies; signer {}", ok.signer);

    // 3. Approve this exact model in a registry, and check it.
    let reg_path = tmp.join("approved.json");
    let mut registry = Registry::new();
    let entry = ApprovedModel::new(
        "clean-base",
        "1.0",
        ok.manifest_digest,
        ok.manifest.len(),
        Some(ok.signer.clone()),
        provenance::Verdict::Clean,
        &today(),
    )?;
    registry.add(entry, false, &reg_path)?;
    registry.save(&reg_path)?;
    let approval = provenance::check_approval(&model, &registry, Some(&ok), None)?;
    println!("registry: {approval}");

    // 4. One byte changes: verification names the file, and the registry no longer knows
    //    this model.
    tamper(&model.join("config.json"))?;
    match provenance::verify_model(&model, &sig, &key.public_key(), &opts) {
        Ok(_) => println!("\nunexpected: the changed model still verifies"),
        Err(e) => println!("\nafter one changed byte: {e}"),
    }
    let approval = provenance::check_approval(&model, &registry, None, None)?;
    println!("registry: {approval}");

    std::fs::remove_dir_all(&tmp)?;
    Ok(())
}

/// Turn one space of a JSON file into a tab: still valid, no longer the same bytes.
fn tamper(path: &Path) -> std::io::Result<()> {
    let mut bytes = std::fs::read(path)?;
    if let Some(b) = bytes.iter_mut().find(|b| **b == b' ') {
        *b = b'\t';
    } else {
        bytes.push(b'\n');
    }
    std::fs::write(path, bytes)
}
