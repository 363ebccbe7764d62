//! Finding a model on disk: which format it is in and which files make it up.
//!
//! The files are resolved as the loaders that will run the model resolve them, so that what
//! is scanned (and hashed) is what is loaded:
//! - a directory's weights are `model.safetensors`, else the shards that
//!   `model.safetensors.index.json` names (transformers' order). A directory holding both
//!   is refused ([`Error::CompetingWeights`]): transformers would load the single file, a
//!   loader that prefers the index the shards, and the two may differ;
//! - a `config.json` or `tokenizer_config.json` with `auto_map` is refused
//!   ([`Error::CustomCode`]): with `trust_remote_code` transformers runs the repository's
//!   own Python (a model class from `config.json`'s, a tokenizer class from
//!   `tokenizer_config.json`'s), which can build any model or tokenizer from any file;
//! - other weights beside the safetensors (pickle checkpoints, `.gguf`, other
//!   `.safetensors` files, TensorFlow, Flax or ONNX exports) are not read, as transformers
//!   does not read them: they are listed as [`ModelInfo::unread_weights`](super::ModelInfo)
//!   so that no report presents them as scanned (`pickle-scan` inspects pickles);
//! - a directory with no safetensors loads its one `.gguf` file; with several, name one;
//! - a GGUF split into several files (`split.count` above 1) is refused by the GGUF loader;
//! - pickle checkpoints with no safetensors are refused ([`Error::PickleRefused`]);
//! - neither the path given nor anything in a model directory may be a symbolic link
//!   ([`Error::Symlink`]), nor a special file ([`Error::SpecialFile`]): the rule hashing and
//!   signing apply, so a link cannot point the scan at one file and a later load at
//!   another. Every file of a model is opened by one opener, which holds to that rule
//!   on the handle it reads, not on an earlier look at the path.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Extensions of pickle-based checkpoints, which are refused.
const PICKLE_EXTENSIONS: &[&str] = &["bin", "pt", "pth", "ckpt", "pkl", "pickle"];

/// Extensions of weight files other than pickles that a model directory may carry beside
/// the weights trojanscan loads: GGUF, safetensors variants (`consolidated.safetensors`,
/// `model.fp16.safetensors`), TensorFlow (`tf_model.h5`), Flax (`flax_model.msgpack`) and
/// ONNX exports.
const OTHER_WEIGHT_EXTENSIONS: &[&str] = &["gguf", "safetensors", "h5", "msgpack", "onnx"];

/// Cap on the size of a `tokenizer_config.json` read for `auto_map` (the same as a
/// `config.json`'s: real ones, added-token tables included, stay under a megabyte).
pub const MAX_TOKENIZER_CONFIG_BYTES: u64 = super::config::MAX_CONFIG_BYTES;

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
        /// The chat template and the text of its special tokens (from
        /// `chat_template.jinja` or `tokenizer_config.json`), if any.
        chat: ChatMeta,
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

pub(crate) fn is_pickle(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| PICKLE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

impl ModelSource {
    /// Detect the format of `path`: a `.gguf` file (by magic, not name), or a directory
    /// holding safetensors (or a single GGUF file). Pickle checkpoints are refused.
    ///
    /// A directory's `config.json` and `tokenizer_config.json` (when present) are read
    /// here for `auto_map`, so every command that resolves a model refuses custom code
    /// ([`Error::CustomCode`]), not only those that build it.
    pub fn detect(path: &Path) -> Result<Self> {
        let meta = std::fs::symlink_metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.file_type().is_symlink() {
            return Err(Error::Symlink { path: path.into() });
        }
        if !meta.is_file() && !meta.is_dir() {
            return Err(Error::SpecialFile { path: path.into() });
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
        check_auto_map(&config, "config.json", super::config::MAX_CONFIG_BYTES)?;
        let tokenizer_config = dir.join("tokenizer_config.json");
        let mut chat = ChatMeta::default();
        if present(&tokenizer_config)? {
            let meta = check_auto_map(
                &tokenizer_config,
                "tokenizer_config.json",
                MAX_TOKENIZER_CONFIG_BYTES,
            )?;
            chat = ChatMeta::of(&meta);
        }
        // transformers reads a `chat_template.jinja` beside the tokenizer before the
        // template inside `tokenizer_config.json`.
        let jinja = dir.join("chat_template.jinja");
        if present(&jinja)? {
            let bytes = read_regular(
                &jinja,
                super::chat::MAX_TEMPLATE_BYTES as u64,
                "chat template",
            )?;
            chat.template = Some(
                String::from_utf8(bytes)
                    .map_err(|_| Error::ChatTemplate("chat_template.jinja is not UTF-8".into()))?,
            );
        }
        Ok(ModelSource::HfDir {
            dir,
            config,
            weights,
            tokenizer,
            chat,
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

/// Open a file of a model for reading: a regular file, never through a symbolic link.
///
/// The checks are made on what was opened, not on an earlier look at the path, so a link
/// or a pipe swapped in between is refused too. On unix the file is opened with
/// `O_NOFOLLOW` (a link as the last component fails to open: [`Error::Symlink`]) and
/// `O_NONBLOCK` (opening a FIFO with no writer returns at once instead of waiting for
/// one), then the handle's own metadata must say regular file, else
/// [`Error::SpecialFile`]. `O_NONBLOCK` changes nothing for reads of a regular file. A
/// file that does not exist is [`Error::NoModel`].
pub(crate) fn open_regular(path: &Path) -> Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    #[cfg(not(unix))]
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(Error::Symlink { path: path.into() });
    }
    let file = match opts.open(path) {
        Ok(f) => f,
        #[cfg(unix)]
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(Error::Symlink { path: path.into() })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NoModel {
                path: path.into(),
                why: "the file does not exist".into(),
            })
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::SpecialFile { path: path.into() });
    }
    Ok(file)
}

/// Read a file of a model whole, opened by [`open_regular`]: at most `limit` bytes, else
/// [`Error::TooLarge`] (`what` names the kind of file). The size is checked from the
/// handle's metadata before reading, and the read stops one byte past `limit`, so a file
/// that grows meanwhile is refused too.
pub(crate) fn read_regular(path: &Path, limit: u64, what: &'static str) -> Result<Vec<u8>> {
    read_capped(open_regular(path)?, path, limit, what)
}

/// Read the opened `file` (at `path`) whole: at most `limit` bytes, else
/// [`Error::TooLarge`]. The size is checked from the handle before reading, and the read
/// stops one byte past `limit`, so a file that grows meanwhile is refused too.
pub(crate) fn read_capped(
    file: std::fs::File,
    path: &Path,
    limit: u64,
    what: &'static str,
) -> Result<Vec<u8>> {
    use std::io::Read;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let too_large = |len| Error::TooLarge {
        path: path.into(),
        what,
        len,
        limit,
    };
    if len > limit {
        return Err(too_large(len));
    }
    let mut buf = Vec::with_capacity(len as usize);
    file.take(limit.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(path, e))?;
    if buf.len() as u64 > limit {
        return Err(too_large(buf.len() as u64));
    }
    Ok(buf)
}

/// Refuse a `config.json` or `tokenizer_config.json` naming code shipped with the model
/// (`auto_map`: transformers imports the named Python module from the repository when
/// asked to trust it). A file that is not a JSON object is [`Error::Config`], as a
/// malformed `config.json` always was; one over `limit` bytes is [`Error::TooLarge`].
fn check_auto_map(path: &Path, name: &str, limit: u64) -> Result<serde_json::Value> {
    let bytes = read_regular(path, limit, "model metadata file")?;
    let meta: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| Error::Config(format!("{name}: {e}")))?;
    if !meta.is_object() {
        return Err(Error::Config(format!("{name}: not a JSON object")));
    }
    if meta.get("auto_map").is_some_and(|v| !v.is_null()) {
        return Err(Error::CustomCode {
            path: path.into(),
            key: "auto_map".into(),
        });
    }
    Ok(meta)
}

/// The `tokenizer_config.json` keys that name a structural token.
const ROLE_KEYS: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

/// A chat template and the text of the tokens it names (`bos_token`, `eos_token`), as
/// `tokenizer_config.json` holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChatMeta {
    /// The Jinja template.
    pub template: Option<String>,
    /// `bos_token`'s text.
    pub bos: Option<String>,
    /// `eos_token`'s text.
    pub eos: Option<String>,
    /// Every token the tokenizer declares for a structural role (`bos_token`,
    /// `eos_token`, `unk_token`, `sep_token`, `pad_token`, `cls_token`, `mask_token`).
    pub roles: Vec<String>,
}

impl ChatMeta {
    /// From a `tokenizer_config.json`: `chat_template` is a string, or a list of named
    /// templates (the one named `default`, as transformers picks). Tokens are strings or
    /// `{"content": …}` objects. Anything else is left out.
    fn of(meta: &serde_json::Value) -> Self {
        let token = |k: &str| match meta.get(k) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(v) => v
                .get("content")
                .and_then(|c| c.as_str())
                .map(str::to_string),
            None => None,
        };
        let template = match meta.get("chat_template") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .and_then(|t| t.get("template"))
                .and_then(|t| t.as_str())
                .map(str::to_string),
            _ => None,
        };
        let roles = ROLE_KEYS.iter().filter_map(|k| token(k)).collect();
        Self {
            template,
            bos: token("bos_token"),
            eos: token("eos_token"),
            roles,
        }
    }
}

/// Weight files at the top of `dir` that are not among `loaded`: pickle checkpoints and
/// the kinds in [`OTHER_WEIGHT_EXTENSIONS`]. Loaders that read the directory as
/// transformers does leave them alone, and so does trojanscan; they are named so that a
/// report never suggests they were scanned.
pub(crate) fn unread_weights(dir: &Path, loaded: &[PathBuf]) -> Result<Vec<PathBuf>> {
    Ok(list_dir(dir)?
        .into_iter()
        .filter(|p| {
            let other = p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                OTHER_WEIGHT_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str())
            });
            (is_pickle(p) || other) && !loaded.contains(p)
        })
        .collect())
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
    let mut f = open_regular(path)?;
    let mut magic = [0u8; 4];
    match f.read_exact(&mut magic) {
        Ok(()) => Ok(&magic == b"GGUF"),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(Error::io(path, e)),
    }
}
