//! Can I trust where these weights came from? Digests, manifests, signatures and the
//! approved-model registry.
//!
//! - [`digest`]: streaming SHA-256, many files hashed in parallel.
//! - [`manifest`]: every file of a model with its digest, as the OpenSSF model-signing
//!   v1.0 in-toto statement (`files` serialization), so manifests interoperate with the
//!   `model-signing` Python package.
//! - [`attest`]: ECDSA P-256 keys, DSSE envelopes in Sigstore bundles: what
//!   `model_signing sign key` writes and `model_signing verify key` reads.
//! - [`registry`]: a versioned file of approved models.
//! - [`pickle`]: a non-executing opcode scan of pickle checkpoints.
//!
//! ```
//! use trojanscan::provenance::{self, attest::SigningKey, VerifyOptions};
//! # let dir = tempfile::tempdir()?;
//! # let model = dir.path().join("model");
//! # std::fs::create_dir(&model)?;
//! std::fs::write(model.join("config.json"), b"{}")?;
//! let key = SigningKey::from_bytes(&[42u8; 32])?;
//! let sig = dir.path().join("model.sig");
//! provenance::sign_model(&model, &key, &sig, &VerifyOptions::default())?;
//! let ok = provenance::verify_model(&model, &sig, &key.public_key(), &VerifyOptions::default())?;
//! assert_eq!(ok.signer, key.public_key().fingerprint());
//!
//! std::fs::write(model.join("config.json"), b"{ }")?; // one byte changed
//! let err = provenance::verify_model(&model, &sig, &key.public_key(), &VerifyOptions::default());
//! assert!(matches!(err, Err(trojanscan::Error::Integrity(_))));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod attest;
pub mod digest;
pub mod manifest;
pub mod pickle;
pub mod registry;

use std::path::Path;

pub use self::attest::{Bundle, PublicKey, SigningKey, Verified, VerifyOptions};
pub use self::digest::{sha256_file, sha256_files, sha256sum_line, Sha256Digest};
pub use self::manifest::{FileMismatch, IntegrityFailure, Manifest, ManifestOptions, Resource};
pub use self::pickle::{scan_pickle, PickleReport, PickleScanOptions};
pub use self::registry::{Approval, ApprovedModel, Registry, Verdict};

use crate::{Error, Result};

/// Sign the model at `model` with `key`, writing the bundle to `out`. A bundle stored
/// inside the model directory is left out of the manifest (and recorded in its
/// `ignore_paths`), as the `model-signing` package does. Returns the signed manifest.
pub fn sign_model(
    model: &Path,
    key: &SigningKey,
    out: &Path,
    opts: &VerifyOptions,
) -> Result<Manifest> {
    opts.check()?;
    let mut mopts = ManifestOptions::default().threads(opts.threads);
    if let Some(name) = manifest::name_inside(model, out) {
        mopts = mopts.ignore(name);
    }
    let manifest = Manifest::of_model(model, &mopts)?;
    let bundle = Bundle::sign(&manifest, key);
    crate::output::write(out, bundle.to_json().as_bytes())?;
    Ok(manifest)
}

/// Verify the model at `model` against the signature bundle `signature` and the public
/// key: the bundle's form, the key, the signature, the signed manifest (names inside the
/// model, consistent digests), then every file re-hashed. Fails with a typed error:
/// [`Error::MalformedSignature`], [`Error::TooLarge`], [`Error::WrongKey`],
/// [`Error::BadSignature`], [`Error::Manifest`], [`Error::PathTraversal`],
/// [`Error::Symlink`], [`Error::SpecialFile`] or [`Error::Integrity`] (naming each changed,
/// missing or extra file).
pub fn verify_model(
    model: &Path,
    signature: &Path,
    key: &PublicKey,
    opts: &VerifyOptions,
) -> Result<Verified> {
    opts.check()?;
    let bundle = Bundle::read(signature, opts.max_signature_bytes)?;
    let signed = bundle.verify(key, signature)?;
    let extra: Vec<String> = manifest::name_inside(model, signature)
        .into_iter()
        .collect();
    signed.check_model(model, &extra, opts.threads)?;
    Ok(Verified {
        model: model.into(),
        manifest_digest: signed.digest(),
        manifest: signed,
        signer: key.fingerprint(),
    })
}

/// Whether the model is approved by `registry`. With `verified` (a signature checked by
/// [`verify_model`]), the signed manifest and signer are used; otherwise the model is
/// hashed (signer unknown).
pub fn check_approval(
    model: &Path,
    registry: &Registry,
    verified: Option<&Verified>,
    threads: Option<usize>,
) -> Result<Approval> {
    match verified {
        Some(v) => Ok(registry.check(&v.manifest_digest, Some(&v.signer))),
        None => {
            let m = Manifest::of_model(model, &ManifestOptions::default().threads(threads))?;
            Ok(registry.check(&m.digest(), None))
        }
    }
}

impl Error {
    /// Whether this error means "the model failed verification" (bad or malformed
    /// signature, wrong key, invalid manifest, a file outside the model, a symbolic link, a
    /// special file, files that differ) rather than "verification could not run" (I/O, arguments).
    pub fn is_verification_failure(&self) -> bool {
        matches!(
            self,
            Error::MalformedSignature { .. }
                | Error::TooLarge { .. }
                | Error::WrongKey { .. }
                | Error::BadSignature { .. }
                | Error::Manifest { .. }
                | Error::PathTraversal { .. }
                | Error::Symlink { .. }
                | Error::SpecialFile { .. }
                | Error::Integrity(_)
        )
    }
}
