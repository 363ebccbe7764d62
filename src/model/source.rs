//! Finding a model on disk: which format it is in and which files make it up.

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
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
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
        let config = dir.join("config.json");
        let index = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let weights = if index.is_file() {
            Some(WeightFiles::Sharded(index))
        } else if single.is_file() {
            Some(WeightFiles::Single(single))
        } else {
            None
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
        if !config.is_file() {
            return Err(Error::NoModel {
                path: dir,
                why: "config.json is missing".into(),
            });
        }
        let tokenizer = dir.join("tokenizer.json");
        if !tokenizer.is_file() {
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

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let e = e.map_err(|e| Error::io(dir, e))?;
        if e.file_type().map(|t| t.is_file()).unwrap_or(false) {
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
