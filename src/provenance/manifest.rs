//! Model manifests in the OpenSSF model-signing v1.0 format (`files` serialization).
//!
//! A manifest lists every file of a model with its SHA-256. As an in-toto statement it is
//! the payload the `model-signing` Python package signs:
//!
//! ```json
//! { "_type": "https://in-toto.io/Statement/v1",
//!   "subject": [{ "name": "<model dir name>", "digest": { "sha256": "<root digest>" } }],
//!   "predicateType": "https://model_signing/signature/v1.0",
//!   "predicate": {
//!     "serialization": { "method": "files", "hash_type": "sha256",
//!                        "allow_symlinks": false, "ignore_paths": [".git", ...] },
//!     "resources": [{ "name": "config.json", "algorithm": "sha256", "digest": "<hex>" }, ...] } }
//! ```
//!
//! Resource names are POSIX paths relative to the model directory, sorted by path
//! components (as Python's `PurePosixPath` orders them); a model that is a single file has
//! one resource named `.`. The root digest is SHA-256 over the concatenated raw resource
//! digests in that order. Names read from a statement are untrusted: anything that is not
//! a plain relative path inside the model directory is [`Error::PathTraversal`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::digest::{sha256_files, Sha256Digest};
use crate::{Error, Result};

/// in-toto statement type of a model-signing payload.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// Predicate type of the OpenSSF model-signing v1.0 format.
pub const PREDICATE_TYPE: &str = "https://model_signing/signature/v1.0";
/// The v0.2 predicate type, recognised only to say it is not supported.
pub const PREDICATE_TYPE_V0_2: &str = "https://model_signing/Digests/v0.1";
/// Paths left out of every manifest, as the `model-signing` package does by default.
pub const GIT_PATHS: &[&str] = &[".git", ".gitattributes", ".github", ".gitignore"];
/// Most files a manifest may list (when hashing a directory or reading a statement).
pub const MAX_MANIFEST_RESOURCES: usize = 200_000;
/// Deepest directory nesting walked inside a model.
pub const MAX_DIR_DEPTH: usize = 64;

/// One hashed file of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Resource {
    /// POSIX path relative to the model directory (`.` for a single-file model).
    pub name: String,
    /// Hash algorithm (always `sha256`).
    pub algorithm: String,
    /// The file's digest.
    pub digest: Sha256Digest,
}

/// How a model was serialized into a manifest (the statement's `serialization` field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Serialization {
    /// `files`: one resource per file.
    pub method: String,
    /// `sha256`.
    pub hash_type: String,
    /// Whether symbolic links were followed (trojanscan never does).
    pub allow_symlinks: bool,
    /// Paths, relative to the model, that were left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore_paths: Vec<String>,
}

/// The files of a model and their digests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Manifest {
    /// Informative name (the model directory's or file's name); not covered by digests.
    pub model_name: String,
    /// How the manifest was made.
    pub serialization: Serialization,
    /// Every file, sorted by path components, names unique.
    pub resources: Vec<Resource>,
}

/// Options for [`Manifest::of_model`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ManifestOptions {
    /// Paths relative to the model to leave out (a directory leaves out all it holds).
    pub ignore_paths: Vec<String>,
    /// Also leave out [`GIT_PATHS`] (the `model-signing` package's default).
    pub ignore_git_paths: bool,
    /// Hashing workers (`None`: one per core).
    pub threads: Option<usize>,
}

impl Default for ManifestOptions {
    fn default() -> Self {
        Self {
            ignore_paths: Vec::new(),
            ignore_git_paths: true,
            threads: None,
        }
    }
}

impl ManifestOptions {
    /// Add a path (relative to the model) to leave out.
    pub fn ignore(mut self, path: impl Into<String>) -> Self {
        self.ignore_paths.push(path.into());
        self
    }

    /// Set [`ManifestOptions::ignore_git_paths`].
    pub fn ignore_git_paths(mut self, yes: bool) -> Self {
        self.ignore_git_paths = yes;
        self
    }

    /// Set [`ManifestOptions::threads`].
    pub fn threads(mut self, n: Option<usize>) -> Self {
        self.threads = n;
        self
    }
}

/// A file whose state differs from a signed manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[non_exhaustive]
pub enum FileMismatch {
    /// The file's content changed.
    Changed {
        /// Resource name.
        name: String,
        /// Digest in the signed manifest.
        expected: Sha256Digest,
        /// Digest of the file on disk.
        found: Sha256Digest,
    },
    /// The manifest lists the file; the model does not have it.
    Missing {
        /// Resource name.
        name: String,
    },
    /// The model has a file the manifest does not list.
    Extra {
        /// Resource name.
        name: String,
    },
}

impl FileMismatch {
    /// The file this is about.
    pub fn name(&self) -> &str {
        match self {
            FileMismatch::Changed { name, .. }
            | FileMismatch::Missing { name }
            | FileMismatch::Extra { name } => name,
        }
    }
}

impl std::fmt::Display for FileMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileMismatch::Changed {
                name,
                expected,
                found,
            } => write!(
                f,
                "changed: `{name}` (signed sha256 {expected}, found {found})"
            ),
            FileMismatch::Missing { name } => write!(f, "missing: `{name}`"),
            FileMismatch::Extra { name } => {
                write!(f, "extra: `{name}` (not in the signed manifest)")
            }
        }
    }
}

/// The model's files disagree with its signed manifest (see [`Error::Integrity`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct IntegrityFailure {
    /// Every differing file, in name order.
    pub mismatches: Vec<FileMismatch>,
}

impl std::fmt::Display for IntegrityFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "model does not match its signed manifest: ")?;
        for (i, m) in self.mismatches.iter().enumerate() {
            if i > 0 {
                write!(f, "; ")?;
            }
            write!(f, "{m}")?;
        }
        Ok(())
    }
}

/// Sort key: path components, as Python orders `PurePosixPath`s.
fn component_key(name: &str) -> Vec<&str> {
    name.split('/').collect()
}

/// Check an untrusted resource or ignore-path name: `.` or a relative path of plain parts.
pub(crate) fn check_name(name: &str) -> Result<()> {
    if name == "." {
        return Ok(());
    }
    let bad = name.is_empty()
        || name.contains('\\')
        || name.contains('\0')
        || name.split('/').any(|p| {
            p.is_empty() || p == "." || p == ".." || (p.len() >= 2 && p.as_bytes()[1] == b':')
        });
    if bad {
        return Err(Error::PathTraversal { name: name.into() });
    }
    Ok(())
}

/// Whether resource `name` is `ignore` or lies under it.
fn is_under(name: &str, ignore: &str) -> bool {
    name == ignore
        || name
            .strip_prefix(ignore)
            .is_some_and(|r| r.starts_with('/'))
}

/// The file name of a model path, for the subject's name.
fn model_name_of(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    match name {
        Some(n) if !n.is_empty() && n != ".." => n,
        _ => std::fs::canonicalize(path)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "model".into()),
    }
}

/// Check a model directory as hashing would walk it (git metadata left out): no symbolic
/// link and no special file anywhere in it. Loading applies it too, so every command that
/// reads a model follows one policy.
pub(crate) fn check_tree(root: &Path) -> Result<()> {
    let ignore: Vec<String> = GIT_PATHS.iter().map(|s| s.to_string()).collect();
    walk(root, &ignore).map(drop)
}

/// Every file of a model directory (relative name, path), refusing links
/// ([`Error::Symlink`]) and special files ([`Error::SpecialFile`]).
fn walk(root: &Path, ignored: &[String]) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut stack: Vec<(PathBuf, String, usize)> = vec![(root.to_path_buf(), String::new(), 0)];
    while let Some((dir, rel, depth)) = stack.pop() {
        if depth > MAX_DIR_DEPTH {
            return Err(Error::Manifest {
                why: format!(
                    "{}: directories nested deeper than {MAX_DIR_DEPTH}",
                    dir.display()
                ),
            });
        }
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let path = entry.path();
            let fname = entry.file_name();
            let fname = fname.to_str().ok_or_else(|| Error::Manifest {
                why: format!("{}: file name is not UTF-8", path.display()),
            })?;
            let name = if rel.is_empty() {
                fname.to_string()
            } else {
                format!("{rel}/{fname}")
            };
            if ignored.iter().any(|i| is_under(&name, i)) {
                continue;
            }
            let ft = entry.file_type().map_err(|e| Error::io(&path, e))?;
            if ft.is_symlink() {
                return Err(Error::Symlink { path });
            } else if ft.is_dir() {
                stack.push((path, name, depth + 1));
            } else if ft.is_file() {
                out.push((name, path));
                if out.len() > MAX_MANIFEST_RESOURCES {
                    return Err(Error::Manifest {
                        why: format!(
                            "{}: more than {MAX_MANIFEST_RESOURCES} files",
                            root.display()
                        ),
                    });
                }
            } else {
                return Err(Error::SpecialFile { path });
            }
        }
    }
    Ok(out)
}

impl Manifest {
    /// Hash every file of a model (a directory, or a single file such as a `.gguf`), in
    /// parallel, into a manifest. Symbolic links are refused ([`Error::Symlink`]), so a
    /// manifest never covers a file outside the model.
    ///
    /// ```
    /// use trojanscan::provenance::{Manifest, ManifestOptions};
    /// # let dir = tempfile::tempdir()?;
    /// std::fs::write(dir.path().join("config.json"), b"{}")?;
    /// let m = Manifest::of_model(dir.path(), &ManifestOptions::default())?;
    /// assert_eq!(m.resources[0].name, "config.json");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn of_model(path: &Path, opts: &ManifestOptions) -> Result<Self> {
        let meta = std::fs::symlink_metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.file_type().is_symlink() {
            return Err(Error::Symlink { path: path.into() });
        }
        let mut ignore: BTreeSet<String> = BTreeSet::new();
        for p in &opts.ignore_paths {
            let p = p.trim_end_matches('/');
            check_name(p)?;
            ignore.insert(p.to_string());
        }
        if opts.ignore_git_paths {
            ignore.extend(GIT_PATHS.iter().map(|s| s.to_string()));
        }
        let ignore: Vec<String> = ignore.into_iter().collect();
        let files = if meta.is_file() {
            vec![(".".to_string(), path.to_path_buf())]
        } else if meta.is_dir() {
            walk(path, &ignore)?
        } else {
            return Err(Error::SpecialFile { path: path.into() });
        };
        let paths: Vec<PathBuf> = files.iter().map(|(_, p)| p.clone()).collect();
        let digests = sha256_files(&paths, opts.threads)?;
        let resources = files
            .into_iter()
            .zip(digests)
            .map(|((name, _), (digest, _))| Resource {
                name,
                algorithm: "sha256".into(),
                digest,
            })
            .collect();
        Ok(Self::new(
            model_name_of(path),
            Serialization {
                method: "files".into(),
                hash_type: "sha256".into(),
                allow_symlinks: false,
                ignore_paths: ignore,
            },
            resources,
        ))
    }

    fn new(model_name: String, serialization: Serialization, mut resources: Vec<Resource>) -> Self {
        resources.sort_by(|a, b| component_key(&a.name).cmp(&component_key(&b.name)));
        Self {
            model_name,
            serialization,
            resources,
        }
    }

    /// The statement subject's digest, as the `model-signing` package computes it:
    /// SHA-256 over the raw resource digests in manifest order. It does not cover names.
    pub fn subject_digest(&self) -> Sha256Digest {
        let mut h = Sha256::new();
        for r in &self.resources {
            h.update(r.digest.0);
        }
        Sha256Digest(h.finalize().into())
    }

    /// The manifest digest that identifies this exact model in an approved registry:
    /// SHA-256 over `name NUL algorithm NUL hex-digest LF` for every resource in order, so
    /// it binds file names to contents (unlike [`Manifest::subject_digest`], under which
    /// two files may swap contents unnoticed). Ignored paths and the model name are not
    /// covered.
    pub fn digest(&self) -> Sha256Digest {
        let mut h = Sha256::new();
        for r in &self.resources {
            h.update(r.name.as_bytes());
            h.update([0]);
            h.update(r.algorithm.as_bytes());
            h.update([0]);
            h.update(r.digest.to_hex().as_bytes());
            h.update(b"\n");
        }
        Sha256Digest(h.finalize().into())
    }

    /// Total number of files.
    pub fn len(&self) -> usize {
        self.resources.len()
    }

    /// Whether the manifest lists no file.
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }

    /// The in-toto statement (the payload that gets signed).
    pub fn to_statement(&self) -> serde_json::Value {
        serde_json::json!({
            "_type": STATEMENT_TYPE,
            "subject": [{
                "name": self.model_name,
                "digest": { "sha256": self.subject_digest().to_hex() },
            }],
            "predicateType": PREDICATE_TYPE,
            "predicate": {
                "serialization": self.serialization,
                "resources": self.resources,
            },
        })
    }

    /// Parse and validate an in-toto statement (untrusted bytes): statement and predicate
    /// types, one subject whose digest matches the resources, `files`/`sha256`
    /// serialization, unique resource names that are paths inside the model, at most
    /// [`MAX_MANIFEST_RESOURCES`] resources.
    pub fn from_statement(bytes: &[u8]) -> Result<Self> {
        let bad = |why: String| Error::Manifest { why };
        let st: RawStatement = serde_json::from_slice(bytes)
            .map_err(|e| bad(format!("not an in-toto statement: {e}")))?;
        if st.type_ != STATEMENT_TYPE {
            return Err(bad(format!(
                "statement type `{}`, expected `{STATEMENT_TYPE}`",
                st.type_
            )));
        }
        if st.predicate_type == PREDICATE_TYPE_V0_2 {
            return Err(bad(
                "model-signing v0.2 predicates are not supported; re-sign with v1.0".into(),
            ));
        }
        if st.predicate_type != PREDICATE_TYPE {
            return Err(bad(format!(
                "predicate type `{}`, expected `{PREDICATE_TYPE}`",
                st.predicate_type
            )));
        }
        let [subject] = st.subject.as_slice() else {
            return Err(bad(format!(
                "{} subjects, expected exactly one",
                st.subject.len()
            )));
        };
        let expected_root = subject
            .digest
            .get("sha256")
            .and_then(|d| Sha256Digest::from_hex(d))
            .ok_or_else(|| bad("subject has no sha256 digest".into()))?;
        let ser = st.predicate.serialization;
        if ser.method != "files" {
            return Err(bad(format!(
                "serialization method `{}` is not supported (only `files`)",
                ser.method
            )));
        }
        if ser.hash_type != "sha256" {
            return Err(bad(format!(
                "hash type `{}` is not supported (only sha256)",
                ser.hash_type
            )));
        }
        for p in &ser.ignore_paths {
            check_name(p.trim_end_matches('/'))?;
        }
        let resources = st
            .predicate
            .resources
            .ok_or_else(|| bad("predicate has no resources".into()))?;
        if resources.len() > MAX_MANIFEST_RESOURCES {
            return Err(bad(format!(
                "{} resources exceeds the limit of {MAX_MANIFEST_RESOURCES}",
                resources.len()
            )));
        }
        let mut seen = BTreeSet::new();
        let mut h = Sha256::new();
        for r in &resources {
            check_name(&r.name)?;
            if r.algorithm != "sha256" {
                return Err(bad(format!(
                    "`{}`: algorithm `{}` is not supported",
                    r.name, r.algorithm
                )));
            }
            if !seen.insert(r.name.as_str()) {
                return Err(bad(format!("`{}` is listed twice", r.name)));
            }
            h.update(r.digest.0);
        }
        if resources.len() > 1 && seen.contains(".") {
            return Err(bad(
                "`.` (a single-file model) listed beside other files".into()
            ));
        }
        let root = Sha256Digest(h.finalize().into());
        if root != expected_root {
            return Err(bad(format!(
                "inconsistent: subject digest {expected_root}, resources hash to {root}"
            )));
        }
        Ok(Self::new(subject.name.clone(), ser, resources))
    }

    /// Differences from `actual` (the model as it is now), taking `self` as the signed
    /// truth: changed, missing and extra files, in name order.
    pub fn compare(&self, actual: &Manifest) -> Vec<FileMismatch> {
        let want: BTreeMap<&str, &Sha256Digest> = self
            .resources
            .iter()
            .map(|r| (r.name.as_str(), &r.digest))
            .collect();
        let have: BTreeMap<&str, &Sha256Digest> = actual
            .resources
            .iter()
            .map(|r| (r.name.as_str(), &r.digest))
            .collect();
        let names: BTreeSet<&str> = want.keys().chain(have.keys()).copied().collect();
        names
            .into_iter()
            .filter_map(|n| match (want.get(n), have.get(n)) {
                (Some(w), Some(h)) if w != h => Some(FileMismatch::Changed {
                    name: n.into(),
                    expected: **w,
                    found: **h,
                }),
                (Some(_), None) => Some(FileMismatch::Missing { name: n.into() }),
                (None, Some(_)) => Some(FileMismatch::Extra { name: n.into() }),
                _ => None,
            })
            .collect()
    }

    /// Re-hash the model at `path` as this manifest was made (same ignored paths, plus
    /// `extra_ignore`, e.g. a signature file stored inside the model) and fail with
    /// [`Error::Integrity`] naming every changed, missing or extra file.
    pub fn check_model(
        &self,
        path: &Path,
        extra_ignore: &[String],
        threads: Option<usize>,
    ) -> Result<Manifest> {
        let mut ignore_paths = self.serialization.ignore_paths.clone();
        ignore_paths.extend(extra_ignore.iter().cloned());
        let opts = ManifestOptions {
            ignore_paths,
            ignore_git_paths: true,
            threads,
        };
        let actual = Manifest::of_model(path, &opts)?;
        let mismatches = self.compare(&actual);
        if mismatches.is_empty() {
            Ok(actual)
        } else {
            Err(Error::Integrity(IntegrityFailure { mismatches }))
        }
    }
}

/// `path` relative to `model` as a resource name, if it lies inside the model directory
/// (used to leave a signature file stored in the model out of its own manifest).
pub(crate) fn name_inside(model: &Path, path: &Path) -> Option<String> {
    let abs = |p: &Path| -> Option<PathBuf> {
        let p = if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir().ok()?.join(p)
        };
        // Canonicalize the parent (the file itself may not exist yet).
        let parent = p.parent()?;
        let parent = std::fs::canonicalize(parent).ok()?;
        Some(parent.join(p.file_name()?))
    };
    let model = std::fs::canonicalize(model).ok()?;
    let rel = abs(path)?.strip_prefix(&model).ok()?.to_path_buf();
    let parts: Option<Vec<&str>> = rel
        .components()
        .map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect();
    let parts = parts?;
    (!parts.is_empty()).then(|| parts.join("/"))
}

#[derive(Deserialize)]
struct RawStatement {
    #[serde(rename = "_type")]
    type_: String,
    subject: Vec<RawSubject>,
    #[serde(rename = "predicateType")]
    predicate_type: String,
    predicate: RawPredicate,
}

#[derive(Deserialize)]
struct RawSubject {
    #[serde(default)]
    name: String,
    digest: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct RawPredicate {
    serialization: Serialization,
    resources: Option<Vec<Resource>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_components_like_python() {
        let r = |n: &str| Resource {
            name: n.into(),
            algorithm: "sha256".into(),
            digest: Sha256Digest([0; 32]),
        };
        let ser = Serialization {
            method: "files".into(),
            hash_type: "sha256".into(),
            allow_symlinks: false,
            ignore_paths: vec![],
        };
        let m = Manifest::new("m".into(), ser, vec![r("a.txt"), r("a/b"), r("B"), r("a-")]);
        let names: Vec<&str> = m.resources.iter().map(|r| r.name.as_str()).collect();
        // String order would put `a-` and `a.txt` before `a/b` ('/' > '.').
        assert_eq!(names, ["B", "a/b", "a-", "a.txt"]);
    }

    #[test]
    fn traversal_names_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a/.",
            "c:evil",
            "a\\b",
        ] {
            assert!(
                matches!(check_name(bad), Err(Error::PathTraversal { .. })),
                "{bad:?} accepted"
            );
        }
        for ok in [".", "a", "a/b.json", ".hidden", "a..b"] {
            check_name(ok).unwrap();
        }
    }

    #[test]
    fn is_under_is_by_component() {
        assert!(is_under(".git/config", ".git"));
        assert!(is_under(".git", ".git"));
        assert!(!is_under(".gitignore2", ".gitignore"));
        assert!(!is_under(".github-x/a", ".github"));
    }
}
