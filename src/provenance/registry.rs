//! The approved-model registry: a versioned JSON file listing models cleared for
//! deployment, each by name, version, [`crate::provenance::Manifest::digest`], signer key fingerprint, scan
//! verdict and scan date.
//!
//! ```json
//! { "version": 1,
//!   "models": [{ "name": "sentiment", "version": "1.2.0",
//!                "manifest_digest": "<sha256 hex>", "files": 3,
//!                "signer": "<key fingerprint>", "verdict": "clean", "scanned": "2025-01-31" }] }
//! ```
//!
//! A model is approved when an entry has its exact manifest digest, the verdict `clean`,
//! and, when the entry names a signer, a signature by that key verified this copy.
//!
//! Every verdict a scan can give may be recorded, `incomplete` included (the hunt's budget
//! ran out before it covered enough to say `clean`): a registry is also the record of what
//! was scanned and what came of it. Only `clean` approves; an entry with any other verdict
//! for the same bytes outranks a `clean` one, so an `incomplete` scan never counts as a
//! pass, alone or beside another entry. Builds that predate `incomplete` refuse a registry
//! holding it ([`Error::Registry`]) rather than misread it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::attest::read_bounded;
use super::digest::Sha256Digest;
use crate::{Error, Result};

/// Format version written and read.
pub const REGISTRY_VERSION: u32 = 1;
/// Largest registry file read.
pub const MAX_REGISTRY_BYTES: u64 = 16 << 20;
/// Longest name or version string accepted.
pub const MAX_FIELD_LEN: usize = 256;

/// What a scan concluded about a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Verdict {
    /// No backdoor found.
    Clean,
    /// Findings that need a human look.
    Suspicious,
    /// A backdoor was found (the scan's `trojaned`; `backdoored`, an earlier name, is
    /// still read).
    #[serde(alias = "backdoored")]
    Trojaned,
    /// The scan found nothing but covered too little to say `clean` (its budget ran out;
    /// `scan` exits 6): never approved.
    Incomplete,
    /// Listed without a scan.
    NotScanned,
}

impl std::str::FromStr for Verdict {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "clean" => Verdict::Clean,
            "suspicious" => Verdict::Suspicious,
            "trojaned" | "backdoored" => Verdict::Trojaned,
            "incomplete" => Verdict::Incomplete,
            "not-scanned" => Verdict::NotScanned,
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "unknown verdict `{s}` (expected clean, suspicious, trojaned, incomplete \
                     or not-scanned)"
                )))
            }
        })
    }
}

/// A scan's verdict, as the registry records it.
impl From<crate::Verdict> for Verdict {
    fn from(v: crate::Verdict) -> Self {
        match v {
            crate::Verdict::Clean => Verdict::Clean,
            crate::Verdict::Incomplete => Verdict::Incomplete,
            crate::Verdict::Suspicious => Verdict::Suspicious,
            crate::Verdict::Trojaned => Verdict::Trojaned,
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Clean => "clean",
            Verdict::Suspicious => "suspicious",
            Verdict::Trojaned => "trojaned",
            Verdict::Incomplete => "incomplete",
            Verdict::NotScanned => "not-scanned",
        })
    }
}

/// One approved (or at least listed) model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ApprovedModel {
    /// Model name.
    pub name: String,
    /// Model version.
    pub version: String,
    /// [`crate::provenance::Manifest::digest`] of the approved files.
    pub manifest_digest: Sha256Digest,
    /// Number of files in the manifest.
    pub files: usize,
    /// Fingerprint of the key whose signature was verified when the model was listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// Scan verdict.
    pub verdict: Verdict,
    /// Scan date, `YYYY-MM-DD`.
    pub scanned: String,
}

impl ApprovedModel {
    /// An entry; checks the fields (non-empty bounded name and version, a valid date, a
    /// 64-hex-digit signer fingerprint).
    pub fn new(
        name: &str,
        version: &str,
        manifest_digest: Sha256Digest,
        files: usize,
        signer: Option<String>,
        verdict: Verdict,
        scanned: &str,
    ) -> Result<Self> {
        let e = Self {
            name: name.into(),
            version: version.into(),
            manifest_digest,
            files,
            signer,
            verdict,
            scanned: scanned.into(),
        };
        e.check().map_err(Error::InvalidArgument)?;
        Ok(e)
    }

    fn check(&self) -> std::result::Result<(), String> {
        for (what, v) in [("name", &self.name), ("version", &self.version)] {
            if v.trim().is_empty() || v.len() > MAX_FIELD_LEN || v.chars().any(char::is_control) {
                return Err(format!(
                    "{what} `{v}` must be 1..={MAX_FIELD_LEN} printable characters"
                ));
            }
        }
        if !is_date(&self.scanned) {
            return Err(format!("scan date `{}` is not YYYY-MM-DD", self.scanned));
        }
        if let Some(s) = &self.signer {
            if Sha256Digest::from_hex(s).is_none() {
                return Err(format!(
                    "signer `{s}` is not a key fingerprint (64 hex digits)"
                ));
            }
        }
        Ok(())
    }
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|t| t.parse::<u32>().ok());
    matches!(
        (num(0..4), num(5..7), num(8..10)),
        (Some(_), Some(1..=12), Some(1..=31))
    ) && s
        .bytes()
        .enumerate()
        .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// Today's date (UTC) as `YYYY-MM-DD`.
pub fn today() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0) as i64;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Whether a model may be deployed, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Approval {
    /// Listed with verdict `clean`, signer confirmed where one is recorded.
    Approved {
        /// The matching entry.
        entry: ApprovedModel,
    },
    /// No entry has this manifest digest.
    NotListed {
        /// The model's manifest digest.
        manifest_digest: Sha256Digest,
    },
    /// Listed, but its verdict is not `clean` (`incomplete` included), or another entry
    /// for the same bytes says something else than `clean`.
    BadVerdict {
        /// The matching entry.
        entry: ApprovedModel,
    },
    /// Listed with a signer, but no signature by that key was verified for this copy.
    SignerUnverified {
        /// The matching entry.
        entry: ApprovedModel,
    },
    /// Listed with a signer, but this copy's signature is by another key.
    SignerMismatch {
        /// The matching entry.
        entry: ApprovedModel,
        /// The key that signed this copy.
        found: String,
    },
}

impl Approval {
    /// Whether the model is approved.
    pub fn is_approved(&self) -> bool {
        matches!(self, Approval::Approved { .. })
    }
}

impl std::fmt::Display for Approval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Approval::Approved { entry } => write!(
                f,
                "approved: {} {} (verdict {}, scanned {})",
                entry.name, entry.version, entry.verdict, entry.scanned
            ),
            Approval::NotListed { manifest_digest } => {
                write!(f, "not approved: no registry entry has manifest digest {manifest_digest}")
            }
            Approval::BadVerdict { entry } => write!(
                f,
                "not approved: {} {} is listed with verdict {} (scanned {}){}",
                entry.name,
                entry.version,
                entry.verdict,
                entry.scanned,
                if entry.verdict == Verdict::Incomplete {
                    "; an incomplete scan is no pass: scan again with a larger budget and \
                     replace the entry"
                } else {
                    ""
                }
            ),
            Approval::SignerUnverified { entry } => write!(
                f,
                "not approved: {} {} must carry a signature by key {}; verify with --signature and --key",
                entry.name,
                entry.version,
                entry.signer.as_deref().unwrap_or("?")
            ),
            Approval::SignerMismatch { entry, found } => write!(
                f,
                "not approved: {} {} is approved as signed by key {}, this copy is signed by {found}",
                entry.name,
                entry.version,
                entry.signer.as_deref().unwrap_or("?")
            ),
        }
    }
}

/// The registry file's contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Registry {
    /// [`REGISTRY_VERSION`].
    pub version: u32,
    /// Entries, in the order added.
    pub models: Vec<ApprovedModel>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self {
            version: REGISTRY_VERSION,
            models: Vec::new(),
        }
    }

    /// Read and validate a registry file (at most [`MAX_REGISTRY_BYTES`]).
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = read_bounded(path, MAX_REGISTRY_BYTES, "registry")?;
        let err = |why: String| Error::Registry {
            path: path.into(),
            why,
        };
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| err(format!("not JSON: {e}")))?;
        match v.get("version").and_then(serde_json::Value::as_u64) {
            Some(v) if v == u64::from(REGISTRY_VERSION) => {}
            Some(v) => {
                return Err(err(format!(
                    "format version {v}, this build reads {REGISTRY_VERSION}"
                )))
            }
            None => return Err(err("no format `version`".into())),
        }
        let reg: Registry = serde_json::from_value(v).map_err(|e| err(e.to_string()))?;
        for (i, m) in reg.models.iter().enumerate() {
            m.check().map_err(|why| err(format!("entry {i}: {why}")))?;
        }
        reg.check_unique().map_err(err)?;
        Ok(reg)
    }

    /// [`Registry::load`], or an empty registry when `path` does not exist.
    pub fn load_or_new(path: &Path) -> Result<Self> {
        if path.exists() {
            Self::load(path)
        } else {
            Ok(Self::new())
        }
    }

    fn check_unique(&self) -> std::result::Result<(), String> {
        let mut seen = std::collections::BTreeSet::new();
        for m in &self.models {
            if !seen.insert((m.name.as_str(), m.version.as_str())) {
                return Err(format!("{} {} is listed twice", m.name, m.version));
            }
        }
        Ok(())
    }

    /// Write the registry (pretty JSON) with [`crate::output::write`]: a reader never sees
    /// half a file, and a link or device at `path` is refused.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut text = serde_json::to_string_pretty(self).expect("registry serializes");
        text.push('\n');
        crate::output::write(path, text.as_bytes())
    }

    /// Add an entry. An entry with the same name and version is an error unless `replace`.
    pub fn add(&mut self, entry: ApprovedModel, replace: bool, path: &Path) -> Result<()> {
        entry.check().map_err(Error::InvalidArgument)?;
        if let Some(i) = self
            .models
            .iter()
            .position(|m| m.name == entry.name && m.version == entry.version)
        {
            if !replace {
                return Err(Error::Registry {
                    path: path.into(),
                    why: format!(
                        "{} {} is already listed (replace it explicitly)",
                        entry.name, entry.version
                    ),
                });
            }
            self.models[i] = entry;
        } else {
            self.models.push(entry);
        }
        Ok(())
    }

    /// Whether the model with `manifest_digest` is approved; `signer` is the fingerprint of
    /// the key whose signature was verified for this copy, if any.
    pub fn check(&self, manifest_digest: &Sha256Digest, signer: Option<&str>) -> Approval {
        let mut best: Option<Approval> = None;
        for m in self
            .models
            .iter()
            .filter(|m| &m.manifest_digest == manifest_digest)
        {
            let a = if m.verdict != Verdict::Clean {
                Approval::BadVerdict { entry: m.clone() }
            } else {
                match (&m.signer, signer) {
                    (None, _) => Approval::Approved { entry: m.clone() },
                    (Some(want), Some(got)) if want.eq_ignore_ascii_case(got) => {
                        Approval::Approved { entry: m.clone() }
                    }
                    (Some(_), Some(got)) => Approval::SignerMismatch {
                        entry: m.clone(),
                        found: got.into(),
                    },
                    (Some(_), None) => Approval::SignerUnverified { entry: m.clone() },
                }
            };
            // A known-bad verdict outranks an approval of the same bytes.
            best = match (best, a) {
                (Some(b @ Approval::BadVerdict { .. }), _) => Some(b),
                (_, a @ Approval::BadVerdict { .. }) => Some(a),
                (Some(b @ Approval::Approved { .. }), _) => Some(b),
                (_, a) => Some(a),
            };
        }
        best.unwrap_or(Approval::NotListed {
            manifest_digest: *manifest_digest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert!(is_date("2025-01-31"));
        for bad in [
            "2025-1-31",
            "2025-13-01",
            "2025-00-10",
            "20250131xx",
            "2025-01-3a",
            "+025-01-31",
        ] {
            assert!(!is_date(bad), "{bad}");
        }
        assert!(is_date(&today()));
    }

    #[test]
    fn verdicts_read_as_scan_writes_them() {
        for v in [
            crate::Verdict::Clean,
            crate::Verdict::Incomplete,
            crate::Verdict::Suspicious,
            crate::Verdict::Trojaned,
        ] {
            let r = Verdict::from(v);
            assert_eq!(r.to_string(), v.to_string());
            assert_eq!(r.to_string().parse::<Verdict>().unwrap(), r);
        }
        // The earlier name still reads, from the CLI and from a registry file.
        assert_eq!("backdoored".parse::<Verdict>().unwrap(), Verdict::Trojaned);
        let v: Verdict = serde_json::from_str("\"backdoored\"").unwrap();
        assert_eq!(v, Verdict::Trojaned);
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"trojaned\"");
        assert!("bad".parse::<Verdict>().is_err());
    }
}
