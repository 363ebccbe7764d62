//! Signatures as the OpenSSF `model-signing` package writes them with a key: a Sigstore
//! bundle (JSON, media type [`BUNDLE_MEDIA_TYPE`]) holding a DSSE envelope around the
//! in-toto statement of a [`Manifest`], signed with ECDSA P-256 / SHA-256.
//!
//! ```json
//! { "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
//!   "verificationMaterial": { "publicKey": { "hint": "<sha256 of the public key PEM>" },
//!                             "tlogEntries": [] },
//!   "dsseEnvelope": { "payload": "<base64 statement>",
//!                     "payloadType": "application/vnd.in-toto+json",
//!                     "signatures": [{ "sig": "<base64 DER ECDSA>", "keyid": "" }] } }
//! ```
//!
//! The signature covers the DSSE pre-authentication encoding ([`pae`]) of the payload. The
//! key hint is the SHA-256 of the public key as SubjectPublicKeyInfo PEM, which is also
//! the key fingerprint the approved registry records.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, Engine as _};
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use serde::{Deserialize, Serialize};

use super::digest::Sha256Digest;
use super::manifest::Manifest;
use crate::{Error, Result};

/// Media type of the Sigstore bundles written and accepted.
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// DSSE payload type of an in-toto statement.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// Largest signature bundle read (checked before parsing).
pub const MAX_SIGNATURE_BYTES: u64 = 64 << 20;
/// Largest key file read.
pub const MAX_KEY_BYTES: u64 = 64 << 10;

const B64_STANDARD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const B64_URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decode protobuf-JSON bytes (standard or URL-safe base64, padding optional).
fn b64_decode(s: &str) -> Option<Vec<u8>> {
    B64_STANDARD.decode(s).or_else(|_| B64_URL.decode(s)).ok()
}

/// The DSSE v1 pre-authentication encoding:
/// `"DSSEv1" SP len(type) SP type SP len(payload) SP payload`.
///
/// ```
/// use trojanscan::provenance::attest::pae;
/// assert_eq!(pae("t", b"hi"), b"DSSEv1 1 t 2 hi");
/// ```
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    v.extend_from_slice(payload);
    v
}

/// Read at most `limit` bytes of `path`, failing with [`Error::TooLarge`] beyond it.
pub(crate) fn read_bounded(path: &Path, limit: u64, what: &'static str) -> Result<Vec<u8>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    crate::model::source::read_capped(f, path, limit, what)
}

fn read_pem(path: &Path) -> Result<String> {
    let bytes = read_bounded(path, MAX_KEY_BYTES, "key file")?;
    String::from_utf8(bytes).map_err(|_| Error::Key {
        path: path.into(),
        why: "not a PEM text file".into(),
    })
}

/// An ECDSA P-256 private key (the `model-signing` package's `key` method).
#[derive(Clone)]
pub struct SigningKey {
    inner: p256::ecdsa::SigningKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.public_key().fingerprint())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Parse an unencrypted PEM private key: PKCS#8 (`BEGIN PRIVATE KEY`) or SEC1
    /// (`BEGIN EC PRIVATE KEY`, what `openssl ecparam -genkey` writes). `path` only names
    /// the source in errors.
    pub fn from_pem(pem: &str, path: &Path) -> Result<Self> {
        let err = |why: String| Error::Key {
            path: path.into(),
            why,
        };
        if pem.contains("ENCRYPTED PRIVATE KEY") || pem.contains("Proc-Type: 4,ENCRYPTED") {
            return Err(err(
                "encrypted private keys are not supported; decrypt it first".into(),
            ));
        }
        let secret = if pem.contains("BEGIN EC PRIVATE KEY") {
            p256::SecretKey::from_sec1_pem(pem)
                .map_err(|e| err(format!("not a P-256 SEC1 key: {e}")))?
        } else if pem.contains("BEGIN PRIVATE KEY") {
            p256::SecretKey::from_pkcs8_pem(pem).map_err(|e| {
                err(format!(
                    "not a P-256 PKCS#8 key (only ECDSA P-256 is supported): {e}"
                ))
            })?
        } else {
            return Err(err(
                "no `BEGIN PRIVATE KEY` or `BEGIN EC PRIVATE KEY` block".into(),
            ));
        };
        Ok(Self {
            inner: p256::ecdsa::SigningKey::from(secret),
        })
    }

    /// Read a PEM private key file (see [`SigningKey::from_pem`]).
    pub fn from_pem_file(path: &Path) -> Result<Self> {
        Self::from_pem(&read_pem(path)?, path)
    }

    /// A key from its 32-byte secret scalar (big-endian), e.g. derived for tests.
    pub fn from_bytes(secret: &[u8; 32]) -> Result<Self> {
        let inner = p256::ecdsa::SigningKey::from_slice(secret).map_err(|_| {
            Error::InvalidArgument("secret scalar is zero or not below the curve order".into())
        })?;
        Ok(Self { inner })
    }

    /// The key as unencrypted PKCS#8 PEM.
    pub fn to_pem(&self) -> String {
        let secret: p256::SecretKey = self.inner.clone().into();
        secret
            .to_pkcs8_pem(LineEnding::LF)
            .map(|z| z.to_string())
            .expect("a P-256 secret key always encodes")
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            inner: *self.inner.verifying_key(),
        }
    }

    /// ECDSA P-256 / SHA-256 signature of `msg`, DER-encoded (deterministic, RFC 6979).
    pub fn sign_der(&self, msg: &[u8]) -> Vec<u8> {
        let sig: p256::ecdsa::Signature = self.inner.sign(msg);
        sig.to_der().as_bytes().to_vec()
    }
}

/// An ECDSA P-256 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    inner: p256::ecdsa::VerifyingKey,
}

impl PublicKey {
    /// Parse a SubjectPublicKeyInfo PEM (`BEGIN PUBLIC KEY`). `path` only names the source
    /// in errors.
    pub fn from_pem(pem: &str, path: &Path) -> Result<Self> {
        let pk = p256::PublicKey::from_public_key_pem(pem).map_err(|e| Error::Key {
            path: path.into(),
            why: format!("not a P-256 public key PEM (only ECDSA P-256 is supported): {e}"),
        })?;
        Ok(Self { inner: pk.into() })
    }

    /// Read a public key PEM file.
    pub fn from_pem_file(path: &Path) -> Result<Self> {
        Self::from_pem(&read_pem(path)?, path)
    }

    /// The key as SubjectPublicKeyInfo PEM (LF line endings), byte for byte what Python's
    /// `cryptography` writes.
    pub fn to_pem(&self) -> String {
        p256::PublicKey::from(self.inner)
            .to_public_key_pem(LineEnding::LF)
            .expect("a P-256 public key always encodes")
    }

    /// SHA-256 (hex) of [`PublicKey::to_pem`]: the bundle's key hint and the signer
    /// fingerprint the approved registry records.
    pub fn fingerprint(&self) -> String {
        Sha256Digest::of_bytes(self.to_pem().as_bytes()).to_hex()
    }

    /// Whether `der` is a valid signature of `msg` under this key.
    pub fn verify_der(&self, msg: &[u8], der: &[u8]) -> std::result::Result<(), String> {
        let sig = p256::ecdsa::Signature::from_der(der)
            .map_err(|e| format!("signature is not DER ECDSA: {e}"))?;
        self.inner
            .verify(msg, &sig)
            .map_err(|_| "ECDSA P-256 verification failed".to_string())
    }
}

/// A Sigstore bundle (protobuf JSON) holding a DSSE envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Bundle {
    /// [`BUNDLE_MEDIA_TYPE`].
    pub media_type: String,
    /// How to find the verification key.
    pub verification_material: VerificationMaterial,
    /// The signed envelope (bundles with a bare message signature are not accepted).
    pub dsse_envelope: Option<Envelope>,
}

/// The bundle's key material.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct VerificationMaterial {
    /// The signing key's identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<PublicKeyIdentifier>,
    /// Transparency-log entries (empty for key signatures).
    #[serde(default)]
    pub tlog_entries: Vec<serde_json::Value>,
}

/// A public key named by hint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PublicKeyIdentifier {
    /// SHA-256 hex of the key's SubjectPublicKeyInfo PEM ([`PublicKey::fingerprint`]).
    #[serde(default)]
    pub hint: Option<String>,
}

/// A DSSE envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Envelope {
    /// The statement, base64.
    pub payload: String,
    /// [`PAYLOAD_TYPE`].
    pub payload_type: String,
    /// Exactly one signature.
    pub signatures: Vec<EnvelopeSignature>,
}

/// One DSSE signature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EnvelopeSignature {
    /// DER ECDSA signature over the PAE, base64.
    pub sig: String,
    /// Key id (empty).
    #[serde(default)]
    pub keyid: String,
}

impl Bundle {
    /// Sign a manifest's statement.
    ///
    /// ```
    /// use trojanscan::provenance::{attest::{Bundle, SigningKey}, Manifest, ManifestOptions};
    /// # let dir = tempfile::tempdir()?;
    /// std::fs::write(dir.path().join("config.json"), b"{}")?;
    /// let key = SigningKey::from_bytes(&[7u8; 32])?;
    /// let manifest = Manifest::of_model(dir.path(), &ManifestOptions::default())?;
    /// let bundle = Bundle::sign(&manifest, &key);
    /// let back = bundle.verify(&key.public_key(), std::path::Path::new("model.sig"))?;
    /// assert_eq!(back.resources, manifest.resources);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sign(manifest: &Manifest, key: &SigningKey) -> Self {
        let payload =
            serde_json::to_vec_pretty(&manifest.to_statement()).expect("statement serializes");
        let sig = key.sign_der(&pae(PAYLOAD_TYPE, &payload));
        Bundle {
            media_type: BUNDLE_MEDIA_TYPE.into(),
            verification_material: VerificationMaterial {
                public_key: Some(PublicKeyIdentifier {
                    hint: Some(key.public_key().fingerprint()),
                }),
                tlog_entries: Vec::new(),
            },
            dsse_envelope: Some(Envelope {
                payload: B64_STANDARD.encode(&payload),
                payload_type: PAYLOAD_TYPE.into(),
                signatures: vec![EnvelopeSignature {
                    sig: B64_STANDARD.encode(sig),
                    keyid: String::new(),
                }],
            }),
        }
    }

    /// The bundle as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("bundle serializes")
    }

    /// Parse a bundle from untrusted bytes; `path` names the source in errors.
    pub fn from_json(bytes: &[u8], path: &Path) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| Error::MalformedSignature {
            path: path.into(),
            why: format!("not a Sigstore bundle: {e}"),
        })
    }

    /// Read a bundle file, at most `limit` bytes ([`MAX_SIGNATURE_BYTES`] by default).
    pub fn read(path: &Path, limit: u64) -> Result<Self> {
        Self::from_json(&read_bounded(path, limit, "signature bundle")?, path)
    }

    /// Check the bundle's form, the key hint ([`Error::WrongKey`]) and the signature
    /// ([`Error::BadSignature`]), then parse and validate the signed manifest.
    pub fn verify(&self, key: &PublicKey, path: &Path) -> Result<Manifest> {
        let malformed = |why: String| Error::MalformedSignature {
            path: path.into(),
            why,
        };
        if self.media_type != BUNDLE_MEDIA_TYPE {
            return Err(malformed(format!(
                "media type `{}`, expected `{BUNDLE_MEDIA_TYPE}`",
                self.media_type
            )));
        }
        let env = self.dsse_envelope.as_ref().ok_or_else(|| {
            malformed("no DSSE envelope (only key-signed DSSE bundles are supported)".into())
        })?;
        if env.payload_type != PAYLOAD_TYPE {
            return Err(malformed(format!(
                "payload type `{}`, expected `{PAYLOAD_TYPE}`",
                env.payload_type
            )));
        }
        let [sig] = env.signatures.as_slice() else {
            return Err(malformed(format!(
                "{} signatures in the envelope, expected one",
                env.signatures.len()
            )));
        };
        let payload =
            b64_decode(&env.payload).ok_or_else(|| malformed("payload is not base64".into()))?;
        let der =
            b64_decode(&sig.sig).ok_or_else(|| malformed("signature is not base64".into()))?;
        let fingerprint = key.fingerprint();
        if let Some(hint) = self
            .verification_material
            .public_key
            .as_ref()
            .and_then(|k| k.hint.as_ref())
        {
            if !hint.eq_ignore_ascii_case(&fingerprint) {
                return Err(Error::WrongKey {
                    expected: hint.clone(),
                    found: fingerprint,
                });
            }
        }
        if p256::ecdsa::Signature::from_der(&der).is_err() {
            return Err(malformed(
                "signature is not a DER-encoded ECDSA signature".into(),
            ));
        }
        key.verify_der(&pae(PAYLOAD_TYPE, &payload), &der)
            .map_err(|why| Error::BadSignature { why })?;
        Manifest::from_statement(&payload)
    }
}

/// Options for [`crate::provenance::verify_model`] and [`crate::provenance::sign_model`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct VerifyOptions {
    /// Largest signature bundle read.
    pub max_signature_bytes: u64,
    /// Hashing workers (`None`: one per core).
    pub threads: Option<usize>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            max_signature_bytes: MAX_SIGNATURE_BYTES,
            threads: None,
        }
    }
}

impl VerifyOptions {
    /// Set [`VerifyOptions::max_signature_bytes`].
    pub fn max_signature_bytes(mut self, n: u64) -> Self {
        self.max_signature_bytes = n;
        self
    }

    /// Set [`VerifyOptions::threads`].
    pub fn threads(mut self, n: Option<usize>) -> Self {
        self.threads = n;
        self
    }

    /// Validate the options.
    pub fn check(&self) -> Result<()> {
        if self.max_signature_bytes == 0 {
            return Err(Error::InvalidArgument(
                "max_signature_bytes must be positive".into(),
            ));
        }
        if self.threads == Some(0) {
            return Err(Error::InvalidArgument("threads must be at least 1".into()));
        }
        Ok(())
    }
}

/// A model whose files match a signature that verified under a given key.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Verified {
    /// The model path.
    pub model: PathBuf,
    /// The signed manifest (equal, file for file, to the model as it is now).
    pub manifest: Manifest,
    /// Fingerprint of the key that verified the signature.
    pub signer: String,
    /// [`Manifest::digest`] of the model.
    pub manifest_digest: Sha256Digest,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hint the `model-signing` package wrote for this key (`verificationMaterial`).
    #[test]
    fn fingerprint_matches_python_cryptography_pem() {
        let pem = "-----BEGIN PUBLIC KEY-----\n\
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEAhOnT7waAZpH4QoDDEpQXI+cGz0b\n\
Lr8Dp1cN3wc/TqFN+OzRN99RzBctA7a5HciLqR0KPwLGTMnhA3L8zuV5aA==\n\
-----END PUBLIC KEY-----\n";
        let k = PublicKey::from_pem(pem, Path::new("k.pem")).unwrap();
        assert_eq!(k.to_pem(), pem);
        assert_eq!(
            k.fingerprint(),
            "6d86d38e2350af22943911f2f99f338851f72f71298e28ae9fccbb3353cddf33"
        );
    }

    #[test]
    fn sign_verify_round_trip_and_tamper() {
        let key = SigningKey::from_bytes(&[3u8; 32]).unwrap();
        let msg = b"payload";
        let der = key.sign_der(msg);
        key.public_key().verify_der(msg, &der).unwrap();
        assert!(key.public_key().verify_der(b"payloae", &der).is_err());
        let back = SigningKey::from_pem(&key.to_pem(), Path::new("k")).unwrap();
        assert_eq!(back.public_key(), key.public_key());
    }
}
