//! Finding a model on disk: which format it is in and which files make it up.
//!
//! The files are resolved as the loaders that will run the model resolve them, so that what
//! is scanned (and hashed) is what is loaded:
//! - a directory's weights are `model.safetensors`, else the shards that
//!   `model.safetensors.index.json` names (transformers' order). A directory holding both
//!   is refused ([`Error::CompetingWeights`]): transformers would load the single file, a
//!   loader that prefers the index the shards, and the two may differ;
//! - a `config.json` with `auto_map` is refused ([`Error::CustomCode`]): with
//!   `trust_remote_code` transformers runs the repository's own Python, which can build any
//!   model from any file;
//! - a directory with no safetensors loads its one `.gguf` file; with several, name one;
//! - a GGUF split into several files (`split.count` above 1) is refused by the GGUF loader;
//! - pickle checkpoints are refused ([`Error::PickleRefused`]);
//! - neither the path given nor anything in a model directory may be a symbolic link
//!   ([`Error::Symlink`]), nor a special file: the rule hashing and signing apply, so a link
//!   cannot point the scan at one file and a later load at another.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Extensions of pickle-based checkpoints, which are refused.
const PICKLE_EXTENSIONS: &[&str] = &["bin", "pt", "pth", "ckpt", "pkl", "pickle"];

/// The on-disk form of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModelSource {
    /// A Hugging Face directory: `config.json`, safetensors weights, `tokenizer.json`.
    HfDir {
        /// The directory.
        dir: PathBuf,
        /// `config.json`.
        config: PathBuf,
        /// The weight files (one, or the shards named by the index).
        weights: WeightFiles,
        /// `tokenizer.json`.
        tokenizer: PathBuf,
    },
    /// A single GGUF file (weights, config and tokenizer in one).
    Gguf {
        /// The file.
        path: PathBuf,
    },
}

/// Safetensors weight files of an HF directory.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WeightFiles {
    /// `model.safetensors`.
    Single(PathBuf),
    /// `model.safetensors.index.json` and its shards.
    Sharded(PathBuf),
}

fn is_pickle(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| PICKLE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

impl ModelSource {
    /// Detect the format of `path`: a `.gguf` file (by magic, not name), or a directory
    /// holding safetensors (or a single GGUF file). Pickle checkpoints are refused.
    pub fn detect(path: &Path) -> Result<Self> {
        let meta = std::fs::symlink_metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.file_type().is_symlink() {
            return Err(Error::Symlink { path: path.into() });
        }
        if meta.is_file() {
            if is_pickle(path) {
                return Err(Error::PickleRefused { path: path.into() });
            }
            if has_gguf_magic(path)? {
                return Ok(ModelSource::Gguf { path: path.into() });
            }
            if path.extension().is_some_and(|e| e == "safetensors") {
                return Err(Error::NoModel {
                    path: path.into(),
                    why: "a bare .safetensors file has no config; point at its directory".into(),
                });
            }
            return Err(Error::NoModel {
                path: path.into(),
                why: "not a GGUF file (bad magic) and not a model directory".into(),
            });
        }
        let dir = path.to_path_buf();
        crate::provenance::manifest::check_tree(&dir)?;
        let config = dir.join("config.json");
        let index = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let weights = match (present(&single)?, present(&index)?) {
            (true, true) => {
                return Err(Error::CompetingWeights {
                    path: dir,
                    files: vec![single, index],
                })
            }
            (true, false) => Some(WeightFiles::Single(single)),
            (false, true) => Some(WeightFiles::Sharded(index)),
            (false, false) => None,
        };
        let Some(weights) = weights else {
            // No safetensors: a lone GGUF in the directory, else explain what is there.
            let entries = list_dir(&dir)?;
            let ggufs: Vec<&PathBuf> = entries
                .iter()
                .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
                .collect();
            if ggufs.len() == 1 {
                return Ok(ModelSource::Gguf {
                    path: ggufs[0].clone(),
                });
            }
            if let Some(p) = entries.iter().find(|p| is_pickle(p)) {
                return Err(Error::PickleRefused { path: p.clone() });
            }
            let why = if ggufs.len() > 1 {
                "several .gguf files; name the one to load".to_string()
            } else {
                "no model.safetensors, model.safetensors.index.json or .gguf file".to_string()
            };
            return Err(Error::NoModel { path: dir, why });
        };
        if !present(&config)? {
            return Err(Error::NoModel {
                path: dir,
                why: "config.json is missing".into(),
            });
        }
        let tokenizer = dir.join("tokenizer.json");
        if !present(&tokenizer)? {
            return Err(Error::NoModel {
                path: dir,
                why: "tokenizer.json is missing".into(),
            });
        }
        Ok(ModelSource::HfDir {
            dir,
            config,
            weights,
            tokenizer,
        })
    }
}

/// Whether `path` is a regular file; a symbolic link is an error, whatever it points at.
pub(crate) fn present(path: &Path) -> Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(Error::Symlink { path: path.into() }),
        Ok(m) => Ok(m.is_file()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Open a file of a model: a regular file, never through a symbolic link.
pub(crate) fn open_regular(path: &Path) -> Result<std::fs::File> {
    if !present(path)? {
        return Err(Error::NoModel {
            path: path.into(),
            why: "not a regular file".into(),
        });
    }
    std::fs::File::open(path).map_err(|e| Error::io(path, e))
}

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let t = e.file_type().map_err(|err| Error::io(e.path(), err))?;
        if t.is_symlink() && e.path().extension().is_some_and(|x| x == "gguf") {
            return Err(Error::Symlink { path: e.path() });
        }
        if t.is_file() {
            v.push(e.path());
        }
    }
    v.sort();
    Ok(v)
}

fn has_gguf_magic(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut magic = [0u8; 4];
    match f.read_exact(&mut magic) {
        Ok(()) => Ok(&magic == b"GGUF"),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(Error::io(path, e)),
    }
}
