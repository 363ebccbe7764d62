//! Tokenizers: `tokenizer.json` as shipped, or rebuilt from GGUF metadata. (Being written.)

use std::path::Path;

use tokenizers::Tokenizer;

use crate::model::gguf::GgufFile;
use crate::{Error, Result};

/// Load a `tokenizer.json`.
pub fn from_json_file(path: &Path) -> Result<Tokenizer> {
    Tokenizer::from_file(path).map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))
}

/// Rebuild the tokenizer stored in GGUF metadata.
pub fn from_gguf(_gguf: &GgufFile) -> Result<Tokenizer> {
    Err(Error::Tokenizer("GGUF tokenizer not yet supported".into()))
}
