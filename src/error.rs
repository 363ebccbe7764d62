//! The crate's error type.
//!
//! Every failure a caller may want to react to has its own variant; variants carry the
//! offending file, tensor or value so that the message alone says what went wrong.

use std::path::PathBuf;

use crate::model::gguf::GgufError;
use crate::model::tokenizer_json::TokenizerJsonError;

/// Result alias used throughout trojanscan.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while loading or scanning a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file being read or written.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// The path holds no model trojanscan can read.
    #[error("{path}: no model found ({why})")]
    NoModel {
        /// The path given by the caller.
        path: PathBuf,
        /// What was looked for.
        why: String,
    },

    /// A pickle-based checkpoint (`.bin`, `.pt`, `.ckpt`, `.pth`), which is never loaded:
    /// unpickling runs arbitrary code chosen by whoever made the file.
    #[error(
        "{path}: refusing to load a pickle checkpoint: unpickling executes code embedded in \
         the file; convert it to safetensors in a sandbox first (`trojanscan pickle-scan` \
         lists the imports it would run, without running them)"
    )]
    PickleRefused {
        /// The pickle file.
        path: PathBuf,
    },

    /// `config.json` (or GGUF metadata) is malformed or describes something unsupported.
    #[error("invalid model config: {0}")]
    Config(String),

    /// The architecture is recognised but not supported.
    #[error("unsupported architecture `{0}` (supported: bert, llama, mistral, qwen2)")]
    UnsupportedArchitecture(String),

    /// A weight the architecture needs is absent from the checkpoint.
    #[error("missing tensor `{name}`")]
    MissingTensor {
        /// The tensor's name in the checkpoint.
        name: String,
    },

    /// A weight has a different shape than the config implies.
    #[error("tensor `{name}` has shape {found:?}, config implies {expected:?}")]
    ShapeMismatch {
        /// The tensor's name in the checkpoint.
        name: String,
        /// Shape implied by the config.
        expected: Vec<usize>,
        /// Shape stored in the file.
        found: Vec<usize>,
    },

    /// A tensor is stored in a dtype trojanscan does not read.
    #[error("tensor `{name}` has unsupported dtype {dtype}")]
    UnsupportedDtype {
        /// The tensor's name in the checkpoint.
        name: String,
        /// The dtype as the file names it.
        dtype: String,
    },

    /// The safetensors file failed validation.
    #[error("{path}: invalid safetensors file: {source}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What the validator found.
        source: safetensors::SafeTensorError,
    },

    /// The sharded-checkpoint index is malformed or points outside the model directory.
    #[error("{path}: invalid shard index: {why}")]
    ShardIndex {
        /// The index file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },

    /// The GGUF file failed validation.
    #[error("{path}: invalid GGUF file: {source}")]
    Gguf {
        /// The file.
        path: PathBuf,
        /// What the validator found.
        source: GgufError,
    },

    /// The tokenizer could not be built or failed on an input.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// A `tokenizer.json` failed validation, or the `tokenizers` library refused or
    /// panicked on it (see [`crate::model::tokenizer_json`]).
    #[error("{path}: invalid tokenizer.json: {source}")]
    TokenizerJson {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: TokenizerJsonError,
    },

    /// The `tokenizers` library panicked while encoding or decoding; the panic was caught.
    #[error("tokenizer panicked while {during}: {message}")]
    TokenizerPanic {
        /// `encoding` or `decoding`.
        during: &'static str,
        /// The panic's message.
        message: String,
    },

    /// A model's chat template could not be read or rendered for one user turn: not
    /// Jinja, too large, out of fuel (a loop that never ends), or a prompt that does not
    /// hold the user's message exactly once.
    #[error("chat template: {0}")]
    ChatTemplate(String),

    /// The caller asked for something invalid (bad option, empty batch, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// Data with no variance where a direction of variance is needed (PCA of rows that
    /// are all the same): a property of the data, not a wrong argument, so callers can
    /// tell the two apart (the audit reads it as "activations do not vary").
    #[error("the [{rows}, {cols}] data has no variance: every row is the same")]
    NoVariance {
        /// Rows of the data.
        rows: usize,
        /// Columns of the data.
        cols: usize,
    },

    /// CUDA was requested but this build has no CUDA support, or the device failed.
    #[error("device: {0}")]
    Device(String),

    /// An error from the tensor library.
    #[error("tensor op: {0}")]
    Candle(#[from] candle_core::Error),

    /// A file is larger than the limit trojanscan reads for its kind (signature bundle,
    /// registry, pickle stream, `tokenizer.json`); checked before anything is parsed.
    #[error("{path}: {len} bytes exceeds the {limit}-byte limit for a {what}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// What kind of file it was read as.
        what: &'static str,
        /// Its size (or the bytes seen before giving up).
        len: u64,
        /// The limit.
        limit: u64,
    },

    /// An input text is longer than trojanscan runs through a model: [`crate::model::MAX_TEXT_BYTES`]
    /// before tokenizing, then the model's context or [`crate::model::MAX_TOKENS`], whichever is
    /// smaller. Checked before anything is allocated for it.
    #[error("an input of {len} {unit} exceeds the {limit}-{unit} limit")]
    InputTooLong {
        /// Its length.
        len: usize,
        /// `bytes` or `tokens`.
        unit: &'static str,
        /// The limit.
        limit: usize,
    },

    /// The tokenizer can produce a token id the model has no embedding row for.
    #[error("the tokenizer produces token id {id}, but the model embeds only {rows} tokens")]
    TokenizerBeyondEmbedding {
        /// The largest id the tokenizer produces.
        id: u32,
        /// Rows of the input-embedding matrix.
        rows: usize,
    },

    /// An output path trojanscan will not write: a symbolic link, or something other than a
    /// regular file (a device, a directory, a pipe). Outputs replace regular files only.
    #[error("{path}: refusing to write: {why}")]
    RefusedOutput {
        /// The path.
        path: PathBuf,
        /// What it is.
        why: &'static str,
    },

    /// A model directory holds two weight sets that different loaders would choose between
    /// (`model.safetensors` beside `model.safetensors.index.json`).
    #[error("{path}: competing weight sets ({}); keep one", .files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "))]
    CompetingWeights {
        /// The directory.
        path: PathBuf,
        /// The competing files.
        files: Vec<PathBuf>,
    },

    /// A model whose config makes its loader run code shipped with it (`auto_map`):
    /// what runs is not what the weights alone describe.
    #[error("{path}: `{key}` makes transformers run the repository's own code; refused")]
    CustomCode {
        /// The config file.
        path: PathBuf,
        /// The key.
        key: String,
    },

    /// A signature file is not a well-formed Sigstore bundle holding a DSSE envelope.
    #[error("{path}: malformed signature: {why}")]
    MalformedSignature {
        /// The signature file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },

    /// A key file is not a usable ECDSA P-256 PEM key.
    #[error("{path}: unusable key: {why}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },

    /// The signature names another public key than the one given (its key hint differs).
    #[error(
        "signature was made with another key: it names key {expected}, the given key is {found}"
    )]
    WrongKey {
        /// The key fingerprint the signature names.
        expected: String,
        /// The fingerprint of the key given for verification.
        found: String,
    },

    /// The signature does not verify under the given key: the signed statement was
    /// altered, or the key is not the signer's.
    #[error("signature does not verify: {why}")]
    BadSignature {
        /// What failed.
        why: String,
    },

    /// A signed statement is not a valid OpenSSF model-signing v1.0 manifest.
    #[error("invalid manifest: {why}")]
    Manifest {
        /// What is wrong with it.
        why: String,
    },

    /// A manifest names a file outside the model directory (absolute, `..`, or empty parts).
    #[error("manifest names `{name}`, which is not a path inside the model directory")]
    PathTraversal {
        /// The offending resource name.
        name: String,
    },

    /// A symbolic link inside a model directory: never followed, since it could point
    /// anywhere.
    #[error("{path}: symbolic links in a model are refused")]
    Symlink {
        /// The link.
        path: PathBuf,
    },

    /// A file of a model that is not a regular file: a FIFO, a device or a socket, found
    /// while walking the model or after opening one of its files. Reading it could block
    /// forever or never end, and it is not what a loader would read later.
    #[error("{path}: not a regular file (a pipe, device or socket); refused")]
    SpecialFile {
        /// The file.
        path: PathBuf,
    },

    /// The model's files do not match its signed manifest: every changed, missing or extra
    /// file is named.
    #[error("{0}")]
    Integrity(crate::provenance::IntegrityFailure),

    /// The approved-model registry is malformed, or an operation conflicts with it.
    #[error("{path}: registry: {why}")]
    Registry {
        /// The registry file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },

    /// A pickle stream could not be scanned (malformed, truncated, or over a limit).
    #[error("{path}: pickle scan: {why}")]
    PickleScan {
        /// The checkpoint file (and member, for zip checkpoints).
        path: PathBuf,
        /// What stopped the scan.
        why: String,
    },

    /// Bytes follow a complete pickle in a file (or zip member) and do not form another
    /// pickle, nor (in a legacy torch file) the storage records its pickles declare. A scan
    /// never calls such a file clean: what other readers make of those bytes is unknown.
    #[error(
        "{path}: {len} bytes at offset {offset} (in `{member}`) follow a complete pickle and \
         are not one"
    )]
    PickleTrailingData {
        /// The checkpoint file.
        path: PathBuf,
        /// The pickle they would be: `#n` in a plain file, `name#n` in zip member `name`.
        member: String,
        /// Where they start, from the start of the file.
        offset: u64,
        /// How many bytes are left from there to the end of the file or member.
        len: u64,
    },

    /// A zip checkpoint whose layout is refused before any member is scanned: members that
    /// overlap or repeat, offsets or lengths outside the file, too many entries, ...
    #[error("{path}: zip checkpoint refused: {source}")]
    ZipArchive {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with its layout.
        source: crate::provenance::pickle::ZipArchiveError,
    },

    /// A plot for the HTML report could not be drawn.
    #[error("drawing the report: {0}")]
    Render(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
