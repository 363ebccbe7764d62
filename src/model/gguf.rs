//! Validating GGUF reader.
//!
//! GGUF files are downloaded from strangers, so this reader treats every byte of the header
//! as hostile. Every count, length, dimension and offset is checked against [`GgufLimits`]
//! *and* against the bytes left in the file before anything is allocated, all arithmetic is
//! checked, and every failure is a typed [`GgufError`] variant, never a panic. Tensor data is
//! read only on request ([`GgufFile::tensor_bytes`], [`GgufFile::qtensor`]), after its extent
//! has been validated against the file, through ordinary reads (no memory map: a file that
//! changes under a map can crash the process).
//!
//! Layout handled (GGUF v2 and v3, little-endian):
//!
//! ```text
//! "GGUF" u32 magic · u32 version · u64 n_tensors · u64 n_kv
//! n_kv × (string key · u32 value_type · value)
//! n_tensors × (string name · u32 n_dims · n_dims × u64 ne (innermost first) · u32 ggml_type · u64 offset)
//! padding to `general.alignment` (default 32) · tensor data (offsets relative to here)
//! string = u64 len · bytes;  array value = u32 elem_type · u64 len · elems
//! ```

use std::collections::{BTreeMap, HashSet};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;

/// The `GGUF` magic as a little-endian `u32`.
pub const GGUF_MAGIC: u32 = 0x4655_4747;

/// Alignment of the data section and of every tensor when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// Hard ceiling on array nesting regardless of [`GgufLimits::max_array_depth`]: arrays are
/// parsed recursively, and this keeps a caller-supplied limit from turning a deeply nested
/// file into a stack overflow.
pub const HARD_MAX_ARRAY_DEPTH: u32 = 64;

// GGUF metadata value type ids.
const T_U8: u32 = 0;
const T_I8: u32 = 1;
const T_U16: u32 = 2;
const T_I16: u32 = 3;
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;
const T_U64: u32 = 10;
const T_I64: u32 = 11;
const T_F64: u32 = 12;

/// Smallest possible encoding of one metadata entry: key length, value type, 1-byte value.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// Smallest possible encoding of one tensor info: name length, n_dims, one dim, type, offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 8 + 4 + 8;
/// Bytes charged to the budget per metadata entry besides its key and value payloads
/// (the key's `String` header, the value slot and map-node overhead, roughly).
const KV_OVERHEAD: u64 = 64;
/// Slack allocated around tensor data so that it can be placed at this alignment:
/// candle reinterprets the bytes as `f32`/`f16`/block structs.
const DATA_ALIGN: usize = 16;

/// What can be wrong with a GGUF file.
///
/// Each check the reader makes has its own variant so that callers (and tests) can tell
/// a truncated download from a hostile header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// The file does not start with the `GGUF` magic.
    #[error("bad magic {0:#010x}")]
    BadMagic(u32),

    /// The GGUF version is not 2 or 3 (v1 used 32-bit lengths and is not read).
    #[error("unsupported GGUF version {0} (supported: 2, 3)")]
    UnsupportedVersion(u32),

    /// The file ends before the item being read, or a length claims more bytes than remain.
    #[error("file truncated while reading {what}")]
    Truncated {
        /// What was being read.
        what: &'static str,
    },

    /// A string is longer than the limit for its kind.
    #[error("{what} of {len} bytes exceeds the limit of {max}")]
    StringTooLong {
        /// Which kind of string (metadata key, string value, tensor name).
        what: &'static str,
        /// Length claimed by the file.
        len: u64,
        /// The limit.
        max: u64,
    },

    /// A key, tensor name or (unless [`GgufLimits::lossy_utf8`]) string value is not UTF-8.
    #[error("{what} is not valid UTF-8")]
    InvalidUtf8 {
        /// Which kind of string.
        what: &'static str,
    },

    /// A boolean value is neither 0 nor 1.
    #[error("invalid boolean byte {0}")]
    InvalidBool(u8),

    /// An array value has more elements than allowed.
    #[error("array of {len} elements exceeds the limit of {max}")]
    ArrayTooLong {
        /// Length claimed by the file.
        len: u64,
        /// The limit.
        max: u64,
    },

    /// Arrays of arrays nest deeper than allowed.
    #[error("arrays nested deeper than {max} levels")]
    NestedArrayTooDeep {
        /// The limit.
        max: u32,
    },

    /// A metadata value type id is not one GGUF defines.
    #[error("unknown metadata value type {0}")]
    UnknownValueType(u32),

    /// The header declares more tensors than allowed.
    #[error("{n} tensors exceed the limit of {max}")]
    TooManyTensors {
        /// Count claimed by the file.
        n: u64,
        /// The limit.
        max: u64,
    },

    /// The header declares more metadata entries than allowed.
    #[error("{n} metadata entries exceed the limit of {max}")]
    TooManyMetadata {
        /// Count claimed by the file.
        n: u64,
        /// The limit.
        max: u64,
    },

    /// The parsed header would need more memory than [`GgufLimits::max_header_bytes`].
    #[error("header needs more than {max} bytes of memory")]
    HeaderBudgetExceeded {
        /// The limit.
        max: u64,
    },

    /// The same metadata key appears twice.
    #[error("duplicate metadata key `{0}`")]
    DuplicateKey(String),

    /// `general.alignment` is 0 or not a power of two.
    #[error("alignment {0} is not a power of two")]
    BadAlignment(u64),

    /// `general.alignment` is not stored as a `u32`, as the GGUF spec requires.
    #[error("general.alignment has type {0}, expected u32")]
    BadAlignmentType(&'static str),

    /// A tensor has zero dimensions.
    #[error("tensor `{name}` has no dimensions")]
    NoDims {
        /// The tensor.
        name: String,
    },

    /// A tensor has more dimensions than allowed (GGML's maximum is 4).
    #[error("tensor `{name}` has {n} dimensions, limit is {max}")]
    TooManyDims {
        /// The tensor.
        name: String,
        /// Dimension count claimed by the file.
        n: u32,
        /// The limit.
        max: u32,
    },

    /// A tensor dimension is zero (an empty tensor is never a real weight).
    #[error("tensor `{name}` has a zero-sized dimension (GGUF axis {axis})")]
    ZeroDim {
        /// The tensor.
        name: String,
        /// The axis, in GGUF (innermost-first) order.
        axis: usize,
    },

    /// A tensor dimension does not fit in `i64` (GGML's type) or `usize`.
    #[error("tensor `{name}` has dimension {dim}, too large")]
    DimTooLarge {
        /// The tensor.
        name: String,
        /// The dimension.
        dim: u64,
    },

    /// A tensor's element count or byte length overflows.
    #[error("tensor `{name}`: element count overflows")]
    ElementCountOverflow {
        /// The tensor.
        name: String,
    },

    /// A tensor's GGML type id is unknown or not supported by candle.
    #[error("tensor `{name}` has unknown or unsupported ggml type {type_id}")]
    UnknownTensorType {
        /// The tensor.
        name: String,
        /// The type id from the file.
        type_id: u32,
    },

    /// A quantized tensor's innermost dimension is not a multiple of its block size.
    #[error("tensor `{name}`: innermost dimension {dim} is not a multiple of block size {block}")]
    BadBlockShape {
        /// The tensor.
        name: String,
        /// The innermost (GGUF `ne[0]`) dimension.
        dim: u64,
        /// The dtype's block size.
        block: usize,
    },

    /// The same tensor name appears twice.
    #[error("duplicate tensor `{0}`")]
    DuplicateTensor(String),

    /// A tensor's offset is not a multiple of the file's alignment.
    #[error("tensor `{name}` at data offset {offset} is not aligned")]
    MisalignedTensor {
        /// The tensor.
        name: String,
        /// Offset relative to the data section, as stored.
        offset: u64,
    },

    /// A tensor's data does not lie inside the file (or its end overflows `u64`).
    #[error("tensor `{name}`: {len} bytes at data offset {offset} exceed file length {file_len}")]
    TensorOutOfBounds {
        /// The tensor.
        name: String,
        /// Offset relative to the data section, as stored.
        offset: u64,
        /// Byte length implied by shape and dtype.
        len: u64,
        /// Length of the file.
        file_len: u64,
    },

    /// Two tensors' data ranges overlap (one weight aliasing another).
    #[error("tensors `{a}` and `{b}` overlap")]
    TensorsOverlap {
        /// The tensor that starts first.
        a: String,
        /// The tensor that starts inside `a`.
        b: String,
    },

    /// A [`GgufTensorInfo`] passed in has a length inconsistent with its shape and dtype.
    #[error("tensor `{name}`: length {len} does not match shape and dtype ({expected})")]
    TensorLenMismatch {
        /// The tensor.
        name: String,
        /// Length in the info.
        len: u64,
        /// Length implied by shape and dtype.
        expected: u64,
    },

    /// The dtype is valid GGUF but candle cannot build a `QTensor` of it (Q8_1, Q8_K).
    #[error("tensor `{name}`: dtype {dtype} cannot be loaded")]
    UnloadableDtype {
        /// The tensor.
        name: String,
        /// The dtype.
        dtype: String,
    },

    /// candle failed to build the tensor.
    #[error("tensor: {0}")]
    Tensor(String),

    /// An I/O error other than reaching the end of the file.
    #[error("I/O: {0}")]
    Io(String),
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum GgufValue {
    /// `uint8`.
    U8(u8),
    /// `int8`.
    I8(i8),
    /// `uint16`.
    U16(u16),
    /// `int16`.
    I16(i16),
    /// `uint32`.
    U32(u32),
    /// `int32`.
    I32(i32),
    /// `uint64`.
    U64(u64),
    /// `int64`.
    I64(i64),
    /// `float32`.
    F32(f32),
    /// `float64`.
    F64(f64),
    /// `bool` (stored as one byte, 0 or 1).
    Bool(bool),
    /// UTF-8 string.
    String(String),
    /// Array of values of one type (possibly arrays themselves).
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// The GGUF name of the value's type (`u32`, `string`, `array`, ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            GgufValue::U8(_) => "u8",
            GgufValue::I8(_) => "i8",
            GgufValue::U16(_) => "u16",
            GgufValue::I16(_) => "i16",
            GgufValue::U32(_) => "u32",
            GgufValue::I32(_) => "i32",
            GgufValue::U64(_) => "u64",
            GgufValue::I64(_) => "i64",
            GgufValue::F32(_) => "f32",
            GgufValue::F64(_) => "f64",
            GgufValue::Bool(_) => "bool",
            GgufValue::String(_) => "string",
            GgufValue::Array(_) => "array",
        }
    }

    /// Any integer type, if its value is non-negative (writers disagree on which integer
    /// type holds counts like `llama.block_count`).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer type, if its value is non-negative and fits in `u32`.
    pub fn as_u32(&self) -> Option<u32> {
        self.as_u64().and_then(|v| u32::try_from(v).ok())
    }

    /// Any integer type, if its value fits in `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            GgufValue::I8(v) => Some(v.into()),
            GgufValue::I16(v) => Some(v.into()),
            GgufValue::I32(v) => Some(v.into()),
            GgufValue::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// `F32`, or `F64` narrowed to `f32`.
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            GgufValue::F32(v) => Some(v),
            GgufValue::F64(v) => Some(v as f32),
            _ => None,
        }
    }

    /// The string, if this is a `String`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The elements, if this is an `Array`.
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The flag, if this is a `Bool`.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }
}

/// One tensor's header entry, validated against the file it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Row-major shape (GGUF stores dims innermost-first; this is reversed).
    pub shape: Vec<usize>,
    /// Storage type.
    pub dtype: GgmlDType,
    /// Absolute byte offset of the data in the file.
    pub offset: u64,
    /// Byte length of the data, implied by shape and dtype.
    pub len: u64,
}

impl GgufTensorInfo {
    /// Number of elements (product of the shape; cannot overflow once validated).
    pub fn elem_count(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Limits on untrusted headers. The defaults admit every real model we know of with room
/// to spare, while bounding what a hostile header can make the reader allocate.
///
/// ```
/// use trojanscan::model::gguf::GgufLimits;
///
/// let mut strict = GgufLimits::default();
/// strict.max_header_bytes = 64 << 20; // a small model's vocabulary needs ~10 MiB
/// assert_eq!(GgufLimits::default().max_tensors, GgufLimits::MAX_TENSORS);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GgufLimits {
    /// Longest string value. Chat templates reach tens of KiB; 16 MiB is far beyond any.
    pub max_string_len: u64,
    /// Longest metadata key (the GGUF spec caps keys at 65535 bytes).
    pub max_key_len: u64,
    /// Longest tensor name (GGML itself caps names at 64 bytes).
    pub max_name_len: u64,
    /// Most elements in one array. Vocabularies reach ~260k tokens, merge lists similar.
    pub max_array_len: u64,
    /// Deepest nesting of arrays (1 = flat arrays only); clamped to [`HARD_MAX_ARRAY_DEPTH`].
    pub max_array_depth: u32,
    /// Most metadata entries (real files have tens).
    pub max_metadata: u64,
    /// Most tensors (large MoE models have a few thousand).
    pub max_tensors: u64,
    /// Most dimensions per tensor (GGML_MAX_DIMS is 4).
    pub max_dims: u32,
    /// Memory budget for the parsed header (metadata, tensor infos), approximate bytes.
    /// Stops e.g. millions of tiny array elements, each a 32-byte [`GgufValue`], from
    /// inflating a small file into gigabytes.
    pub max_header_bytes: u64,
    /// Replace invalid UTF-8 in string *values* with U+FFFD instead of failing. Some
    /// converters wrote non-UTF-8 token bytes; off by default so nothing changes silently.
    /// Keys and tensor names are always strict.
    pub lossy_utf8: bool,
}

impl GgufLimits {
    /// Default [`GgufLimits::max_string_len`]: 16 MiB.
    pub const MAX_STRING_LEN: u64 = 16 << 20;
    /// Default [`GgufLimits::max_key_len`]: 65535 bytes.
    pub const MAX_KEY_LEN: u64 = 65_535;
    /// Default [`GgufLimits::max_name_len`]: 1024 bytes.
    pub const MAX_NAME_LEN: u64 = 1024;
    /// Default [`GgufLimits::max_array_len`]: 4 Mi elements.
    pub const MAX_ARRAY_LEN: u64 = 4 << 20;
    /// Default [`GgufLimits::max_array_depth`]: 3.
    pub const MAX_ARRAY_DEPTH: u32 = 3;
    /// Default [`GgufLimits::max_metadata`]: 65536 entries.
    pub const MAX_METADATA: u64 = 65_536;
    /// Default [`GgufLimits::max_tensors`]: 65536 tensors.
    pub const MAX_TENSORS: u64 = 65_536;
    /// Default [`GgufLimits::max_dims`]: 4.
    pub const MAX_DIMS: u32 = 4;
    /// Default [`GgufLimits::max_header_bytes`]: 512 MiB.
    pub const MAX_HEADER_BYTES: u64 = 512 << 20;
}

impl Default for GgufLimits {
    fn default() -> Self {
        Self {
            max_string_len: Self::MAX_STRING_LEN,
            max_key_len: Self::MAX_KEY_LEN,
            max_name_len: Self::MAX_NAME_LEN,
            max_array_len: Self::MAX_ARRAY_LEN,
            max_array_depth: Self::MAX_ARRAY_DEPTH,
            max_metadata: Self::MAX_METADATA,
            max_tensors: Self::MAX_TENSORS,
            max_dims: Self::MAX_DIMS,
            max_header_bytes: Self::MAX_HEADER_BYTES,
            lossy_utf8: false,
        }
    }
}

/// A parsed, validated GGUF header.
///
/// Every tensor in [`GgufFile::tensors`] lies inside the file, is aligned, and overlaps no
/// other tensor; its shape, dtype and length agree.
#[derive(Debug, Clone)]
pub struct GgufFile {
    /// GGUF version (2 or 3).
    pub version: u32,
    /// Metadata entries by key.
    pub metadata: BTreeMap<String, GgufValue>,
    /// Tensor infos in header order.
    pub tensors: Vec<GgufTensorInfo>,
    /// Alignment of the data section and of every tensor.
    pub alignment: u64,
    /// Absolute offset of the data section (header end rounded up to `alignment`).
    pub data_offset: u64,
    /// Length of the file when it was read.
    pub file_len: u64,
}

/// Reads `path` (buffered, no memory map) and validates its header.
///
/// The file is opened as every file of a model is: a symbolic link is
/// [`crate::Error::Symlink`], a FIFO or device [`crate::Error::SpecialFile`]. I/O failures
/// (cannot open, read error other than end of file) are [`crate::Error::Io`]; everything
/// the validator finds, truncation included, is [`crate::Error::Gguf`].
pub fn read_path(path: &Path, limits: &GgufLimits) -> crate::Result<GgufFile> {
    let file = super::source::open_regular(path)?;
    let mut r = BufReader::new(file);
    GgufFile::read(&mut r, limits).map_err(|source| match source {
        GgufError::Io(msg) => crate::Error::io(path, std::io::Error::other(msg)),
        source => crate::Error::Gguf {
            path: path.to_path_buf(),
            source,
        },
    })
}

impl GgufFile {
    /// Parses and validates a GGUF header from the start of `r`.
    ///
    /// Reads only the header; tensor data is checked for extent, not read. Pass a buffered
    /// reader: the header is read in many small pieces.
    ///
    /// ```
    /// use std::io::Cursor;
    /// use trojanscan::model::gguf::{GgufFile, GgufLimits};
    ///
    /// fn string(b: &mut Vec<u8>, s: &str) {
    ///     b.extend((s.len() as u64).to_le_bytes());
    ///     b.extend(s.as_bytes());
    /// }
    /// let mut b = b"GGUF".to_vec();
    /// b.extend(3u32.to_le_bytes()); // version
    /// b.extend(1u64.to_le_bytes()); // one tensor
    /// b.extend(1u64.to_le_bytes()); // one metadata entry
    /// string(&mut b, "general.architecture");
    /// b.extend(8u32.to_le_bytes()); // value type: string
    /// string(&mut b, "llama");
    /// string(&mut b, "w");
    /// b.extend(2u32.to_le_bytes()); // two dims, innermost first: 3 columns, 2 rows
    /// b.extend(3u64.to_le_bytes());
    /// b.extend(2u64.to_le_bytes());
    /// b.extend(0u32.to_le_bytes()); // F32
    /// b.extend(0u64.to_le_bytes()); // at the start of the data section
    /// b.resize(b.len().next_multiple_of(32), 0);
    /// for x in [1f32, 2., 3., 4., 5., 6.] {
    ///     b.extend(x.to_le_bytes());
    /// }
    ///
    /// let f = GgufFile::read(&mut Cursor::new(&b), &GgufLimits::default())?;
    /// assert_eq!(f.architecture(), Some("llama"));
    /// let w = f.tensor("w").unwrap();
    /// assert_eq!(w.shape, [2, 3]);
    /// assert_eq!(w.len, 24);
    /// # Ok::<(), trojanscan::model::gguf::GgufError>(())
    /// ```
    pub fn read<R: Read + Seek>(r: &mut R, limits: &GgufLimits) -> Result<Self, GgufError> {
        let file_len = r
            .seek(SeekFrom::End(0))
            .map_err(|e| io_err(e, "file length"))?;
        r.seek(SeekFrom::Start(0))
            .map_err(|e| io_err(e, "file start"))?;
        let mut p = Parser {
            r,
            pos: 0,
            file_len,
            limits,
            used: 0,
            max_depth: limits.max_array_depth.min(HARD_MAX_ARRAY_DEPTH),
        };
        p.parse()
    }

    /// The tensor called `name`, if any.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// `general.architecture`, if present and a string.
    pub fn architecture(&self) -> Option<&str> {
        self.metadata.get("general.architecture")?.as_str()
    }

    /// Reads exactly `info.len` bytes of tensor data from `r` (the file this header came from).
    pub fn tensor_bytes<R: Read + Seek>(
        &self,
        r: &mut R,
        info: &GgufTensorInfo,
    ) -> Result<Vec<u8>, GgufError> {
        let len = self.check_extent(info)?;
        let mut buf = vec![0u8; len];
        r.seek(SeekFrom::Start(info.offset))
            .map_err(|e| io_err(e, "tensor data"))?;
        r.read_exact(&mut buf)
            .map_err(|e| io_err(e, "tensor data"))?;
        Ok(buf)
    }

    /// Build a candle `QTensor` for `info` from bytes already in memory (for example after
    /// a row permutation). `raw` must be exactly the tensor's bytes; it is copied to an
    /// aligned buffer, since candle reinterprets it as `f32`/`f16`/block structs.
    pub fn qtensor_from_bytes(
        info: &GgufTensorInfo,
        raw: &[u8],
        device: &Device,
    ) -> Result<QTensor, GgufError> {
        if matches!(info.dtype, GgmlDType::Q8_1 | GgmlDType::Q8K) {
            return Err(GgufError::UnloadableDtype {
                name: info.name.clone(),
                dtype: format!("{:?}", info.dtype),
            });
        }
        let expected = tensor_len(&info.name, info.dtype, &info.shape)?;
        if expected != raw.len() as u64 {
            return Err(GgufError::TensorLenMismatch {
                name: info.name.clone(),
                len: raw.len() as u64,
                expected,
            });
        }
        let mut buf = vec![0u8; raw.len() + DATA_ALIGN];
        let start = buf.as_ptr().align_offset(DATA_ALIGN);
        if start >= DATA_ALIGN {
            return Err(GgufError::Tensor("cannot align tensor buffer".into()));
        }
        buf[start..start + raw.len()].copy_from_slice(raw);
        candle_core::quantized::ggml_file::qtensor_from_ggml(
            info.dtype,
            &buf[start..start + raw.len()],
            info.shape.clone(),
            device,
        )
        .map_err(|e| GgufError::Tensor(e.to_string()))
    }

    /// Reads a tensor from `r` (the file this header came from) into a candle [`QTensor`]
    /// on `device`, keeping its storage type; `.dequantize(device)` gives f32.
    pub fn qtensor<R: Read + Seek>(
        &self,
        r: &mut R,
        info: &GgufTensorInfo,
        device: &Device,
    ) -> Result<QTensor, GgufError> {
        if matches!(info.dtype, GgmlDType::Q8_1 | GgmlDType::Q8K) {
            return Err(GgufError::UnloadableDtype {
                name: info.name.clone(),
                dtype: format!("{:?}", info.dtype),
            });
        }
        // candle reads `raw` through a raw-pointer cast without checking its length, so the
        // length must be exactly what shape and dtype imply, even for a hand-made `info`.
        let expected = tensor_len(&info.name, info.dtype, &info.shape)?;
        if expected != info.len {
            return Err(GgufError::TensorLenMismatch {
                name: info.name.clone(),
                len: info.len,
                expected,
            });
        }
        let len = self.check_extent(info)?;
        // ...and casts it to `f32`/`f16`/block structs, so place it at an aligned address
        // (a `Vec<u8>` is only guaranteed byte alignment).
        let padded = len
            .checked_add(DATA_ALIGN)
            .ok_or_else(|| GgufError::Tensor("tensor too large".into()))?;
        let mut buf = vec![0u8; padded];
        let start = buf.as_ptr().align_offset(DATA_ALIGN);
        if start >= DATA_ALIGN {
            return Err(GgufError::Tensor("cannot align tensor buffer".into()));
        }
        let raw = &mut buf[start..start + len];
        r.seek(SeekFrom::Start(info.offset))
            .map_err(|e| io_err(e, "tensor data"))?;
        r.read_exact(raw).map_err(|e| io_err(e, "tensor data"))?;
        candle_core::quantized::ggml_file::qtensor_from_ggml(
            info.dtype,
            raw,
            info.shape.clone(),
            device,
        )
        .map_err(|e| GgufError::Tensor(e.to_string()))
    }

    /// Checks that `info` lies inside this file (it may not come from [`GgufFile::read`]),
    /// returning its length as `usize`.
    fn check_extent(&self, info: &GgufTensorInfo) -> Result<usize, GgufError> {
        let oob = || GgufError::TensorOutOfBounds {
            name: info.name.clone(),
            offset: info.offset.wrapping_sub(self.data_offset),
            len: info.len,
            file_len: self.file_len,
        };
        match info.offset.checked_add(info.len) {
            Some(end) if info.offset >= self.data_offset && end <= self.file_len => {}
            _ => return Err(oob()),
        }
        usize::try_from(info.len).map_err(|_| oob())
    }
}

/// Maps an I/O error: end of file means truncation, anything else is passed on as text.
fn io_err(e: std::io::Error, what: &'static str) -> GgufError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        GgufError::Truncated { what }
    } else {
        GgufError::Io(format!("{what}: {e}"))
    }
}

/// GGML type id → candle dtype. Ids ggml knows but candle cannot hold (IQ*, TQ*, ...) are
/// rejected along with unknown ones.
fn dtype_from_id(id: u32) -> Option<GgmlDType> {
    Some(match id {
        0 => GgmlDType::F32,
        1 => GgmlDType::F16,
        2 => GgmlDType::Q4_0,
        3 => GgmlDType::Q4_1,
        6 => GgmlDType::Q5_0,
        7 => GgmlDType::Q5_1,
        8 => GgmlDType::Q8_0,
        9 => GgmlDType::Q8_1,
        10 => GgmlDType::Q2K,
        11 => GgmlDType::Q3K,
        12 => GgmlDType::Q4K,
        13 => GgmlDType::Q5K,
        14 => GgmlDType::Q6K,
        15 => GgmlDType::Q8K,
        30 => GgmlDType::BF16,
        _ => return None,
    })
}

/// Byte length of a tensor of `shape` (row-major) stored as `dtype`, checking that the
/// innermost dimension is a whole number of blocks.
fn tensor_len(name: &str, dtype: GgmlDType, shape: &[usize]) -> Result<u64, GgufError> {
    let overflow = || GgufError::ElementCountOverflow {
        name: name.to_string(),
    };
    let block = dtype.block_size();
    let inner = *shape.last().ok_or_else(|| GgufError::NoDims {
        name: name.to_string(),
    })?;
    if block == 0 || inner % block != 0 {
        return Err(GgufError::BadBlockShape {
            name: name.to_string(),
            dim: inner as u64,
            block,
        });
    }
    let elems = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(overflow)?;
    let bytes = (elems / block)
        .checked_mul(dtype.type_size())
        .ok_or_else(overflow)?;
    u64::try_from(bytes).map_err(|_| overflow())
}

/// Header parsing state: the reader, our position in it, and the memory budget spent.
struct Parser<'a, R> {
    r: &'a mut R,
    pos: u64,
    file_len: u64,
    limits: &'a GgufLimits,
    /// Approximate bytes of memory the parsed header holds so far.
    used: u64,
    max_depth: u32,
}

/// A tensor info before data-section placement is known.
struct RawTensor {
    name: String,
    /// GGUF order (innermost first).
    ne: Vec<u64>,
    dtype: GgmlDType,
    rel_offset: u64,
}

impl<R: Read + Seek> Parser<'_, R> {
    fn parse(&mut self) -> Result<GgufFile, GgufError> {
        let lim = self.limits;
        let magic = self.u32("magic")?;
        if magic != GGUF_MAGIC {
            return Err(GgufError::BadMagic(magic));
        }
        let version = self.u32("version")?;
        if !matches!(version, 2 | 3) {
            return Err(GgufError::UnsupportedVersion(version));
        }
        let n_tensors = self.u64("tensor count")?;
        let n_kv = self.u64("metadata count")?;
        if n_tensors > lim.max_tensors {
            return Err(GgufError::TooManyTensors {
                n: n_tensors,
                max: lim.max_tensors,
            });
        }
        if n_kv > lim.max_metadata {
            return Err(GgufError::TooManyMetadata {
                n: n_kv,
                max: lim.max_metadata,
            });
        }
        // Both counts are bounded above, so this cannot overflow; checked anyway.
        let min_bytes = n_kv
            .checked_mul(MIN_KV_BYTES)
            .zip(n_tensors.checked_mul(MIN_TENSOR_INFO_BYTES))
            .and_then(|(a, b)| a.checked_add(b));
        self.need(min_bytes, "header")?;

        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            self.charge(Some(KV_OVERHEAD))?;
            let key = self.string(lim.max_key_len, "metadata key", false)?;
            let ty = self.u32("metadata value type")?;
            let value = self.value(ty, 0)?;
            if metadata.contains_key(&key) {
                return Err(GgufError::DuplicateKey(key));
            }
            metadata.insert(key, value);
        }

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(GgufValue::U32(a)) if a.is_power_of_two() => u64::from(*a),
            Some(GgufValue::U32(a)) => return Err(GgufError::BadAlignment(u64::from(*a))),
            Some(other) => return Err(GgufError::BadAlignmentType(other.type_name())),
        };

        // n_tensors <= max_tensors and fits the file, so reserving is bounded.
        let info_size = std::mem::size_of::<GgufTensorInfo>() as u64;
        self.charge(n_tensors.checked_mul(info_size))?;
        let cap = usize::try_from(n_tensors).map_err(|_| GgufError::TooManyTensors {
            n: n_tensors,
            max: lim.max_tensors,
        })?;
        let mut raw = Vec::with_capacity(cap);
        for _ in 0..n_tensors {
            raw.push(self.tensor_info()?);
        }
        let mut names = HashSet::with_capacity(raw.len());
        for t in &raw {
            if !names.insert(t.name.as_str()) {
                return Err(GgufError::DuplicateTensor(t.name.clone()));
            }
        }

        let header_end = self.pos;
        let data_offset =
            header_end
                .checked_next_multiple_of(alignment)
                .ok_or(GgufError::Truncated {
                    what: "data section",
                })?;

        let mut tensors = Vec::with_capacity(raw.len());
        for t in raw {
            tensors.push(self.place(t, alignment, data_offset)?);
        }

        let mut order: Vec<usize> = (0..tensors.len()).collect();
        order.sort_by_key(|&i| tensors[i].offset);
        for w in order.windows(2) {
            let (a, b) = (&tensors[w[0]], &tensors[w[1]]);
            // Both ends were checked to fit in the file, so this add cannot overflow.
            if a.offset.saturating_add(a.len) > b.offset {
                return Err(GgufError::TensorsOverlap {
                    a: a.name.clone(),
                    b: b.name.clone(),
                });
            }
        }

        Ok(GgufFile {
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
            file_len: self.file_len,
        })
    }

    fn tensor_info(&mut self) -> Result<RawTensor, GgufError> {
        let lim = self.limits;
        let name = self.string(lim.max_name_len, "tensor name", false)?;
        let n_dims = self.u32("tensor dimension count")?;
        if n_dims == 0 {
            return Err(GgufError::NoDims { name });
        }
        if n_dims > lim.max_dims {
            return Err(GgufError::TooManyDims {
                name,
                n: n_dims,
                max: lim.max_dims,
            });
        }
        self.need(u64::from(n_dims).checked_mul(8), "tensor dimensions")?;
        self.charge(u64::from(n_dims).checked_mul(16))?; // the dims, twice (ne and shape)
        let mut ne = Vec::with_capacity(n_dims as usize);
        for axis in 0..n_dims as usize {
            let d = self.u64("tensor dimension")?;
            if d == 0 {
                return Err(GgufError::ZeroDim { name, axis });
            }
            if i64::try_from(d).is_err() || usize::try_from(d).is_err() {
                return Err(GgufError::DimTooLarge { name, dim: d });
            }
            ne.push(d);
        }
        let type_id = self.u32("tensor type")?;
        let dtype = dtype_from_id(type_id).ok_or(GgufError::UnknownTensorType {
            name: name.clone(),
            type_id,
        })?;
        let rel_offset = self.u64("tensor offset")?;
        Ok(RawTensor {
            name,
            ne,
            dtype,
            rel_offset,
        })
    }

    /// Computes a tensor's length and absolute offset and checks it against the file.
    fn place(
        &self,
        t: RawTensor,
        alignment: u64,
        data_offset: u64,
    ) -> Result<GgufTensorInfo, GgufError> {
        // Dims were checked to fit in usize when read.
        let shape: Vec<usize> = t.ne.iter().rev().map(|&d| d as usize).collect();
        let len = tensor_len(&t.name, t.dtype, &shape)?;
        if t.rel_offset % alignment != 0 {
            return Err(GgufError::MisalignedTensor {
                name: t.name,
                offset: t.rel_offset,
            });
        }
        let offset = data_offset.checked_add(t.rel_offset);
        match offset.and_then(|o| o.checked_add(len)) {
            Some(end) if end <= self.file_len => {}
            _ => {
                return Err(GgufError::TensorOutOfBounds {
                    name: t.name,
                    offset: t.rel_offset,
                    len,
                    file_len: self.file_len,
                })
            }
        }
        Ok(GgufTensorInfo {
            name: t.name,
            shape,
            dtype: t.dtype,
            offset: data_offset + t.rel_offset,
            len,
        })
    }

    /// Reads one value of type `ty`; `depth` is the number of enclosing arrays.
    fn value(&mut self, ty: u32, depth: u32) -> Result<GgufValue, GgufError> {
        Ok(match ty {
            T_U8 => GgufValue::U8(self.array::<1>("u8")?[0]),
            T_I8 => GgufValue::I8(i8::from_le_bytes(self.array("i8")?)),
            T_U16 => GgufValue::U16(u16::from_le_bytes(self.array("u16")?)),
            T_I16 => GgufValue::I16(i16::from_le_bytes(self.array("i16")?)),
            T_U32 => GgufValue::U32(self.u32("u32")?),
            T_I32 => GgufValue::I32(i32::from_le_bytes(self.array("i32")?)),
            T_F32 => GgufValue::F32(f32::from_le_bytes(self.array("f32")?)),
            T_U64 => GgufValue::U64(self.u64("u64")?),
            T_I64 => GgufValue::I64(i64::from_le_bytes(self.array("i64")?)),
            T_F64 => GgufValue::F64(f64::from_le_bytes(self.array("f64")?)),
            T_BOOL => match self.array::<1>("bool")?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(GgufError::InvalidBool(b)),
            },
            T_STRING => {
                GgufValue::String(self.string(self.limits.max_string_len, "string value", true)?)
            }
            T_ARRAY => {
                if depth >= self.max_depth {
                    return Err(GgufError::NestedArrayTooDeep {
                        max: self.max_depth,
                    });
                }
                let elem_ty = self.u32("array element type")?;
                let elem_min =
                    min_value_bytes(elem_ty).ok_or(GgufError::UnknownValueType(elem_ty))?;
                let len = self.u64("array length")?;
                if len > self.limits.max_array_len {
                    return Err(GgufError::ArrayTooLong {
                        len,
                        max: self.limits.max_array_len,
                    });
                }
                self.need(len.checked_mul(elem_min), "array")?;
                let slot = std::mem::size_of::<GgufValue>() as u64;
                self.charge(len.checked_mul(slot))?;
                // Bounded by max_array_len, the bytes left in the file, and the budget.
                let cap = usize::try_from(len).map_err(|_| GgufError::ArrayTooLong {
                    len,
                    max: self.limits.max_array_len,
                })?;
                let mut items = Vec::with_capacity(cap);
                for _ in 0..len {
                    items.push(self.value(elem_ty, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            other => return Err(GgufError::UnknownValueType(other)),
        })
    }

    /// Reads a length-prefixed string of at most `max` bytes, charging it to the budget
    /// before allocating.
    fn string(
        &mut self,
        max: u64,
        what: &'static str,
        lossy_ok: bool,
    ) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        if len > max {
            return Err(GgufError::StringTooLong { what, len, max });
        }
        self.need(Some(len), what)?;
        self.charge(Some(len))?;
        let n = usize::try_from(len).map_err(|_| GgufError::StringTooLong { what, len, max })?;
        let mut buf = vec![0u8; n];
        self.read(&mut buf, what)?;
        match String::from_utf8(buf) {
            Ok(s) => Ok(s),
            Err(e) if lossy_ok && self.limits.lossy_utf8 => {
                Ok(String::from_utf8_lossy(e.as_bytes()).into_owned())
            }
            Err(_) => Err(GgufError::InvalidUtf8 { what }),
        }
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], GgufError> {
        let mut b = [0u8; N];
        self.read(&mut b, what)?;
        Ok(b)
    }

    fn read(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), GgufError> {
        self.r.read_exact(buf).map_err(|e| io_err(e, what))?;
        self.pos = self.pos.saturating_add(buf.len() as u64);
        Ok(())
    }

    /// Fails with `Truncated` unless `n` bytes (`None`: overflowed) remain in the file.
    fn need(&self, n: Option<u64>, what: &'static str) -> Result<(), GgufError> {
        match n {
            Some(n) if n <= self.file_len.saturating_sub(self.pos) => Ok(()),
            _ => Err(GgufError::Truncated { what }),
        }
    }

    /// Adds `bytes` (`None`: overflowed) to the memory spent, failing past the budget.
    fn charge(&mut self, bytes: Option<u64>) -> Result<(), GgufError> {
        let max = self.limits.max_header_bytes;
        match bytes.and_then(|b| self.used.checked_add(b)) {
            Some(used) if used <= max => {
                self.used = used;
                Ok(())
            }
            _ => Err(GgufError::HeaderBudgetExceeded { max }),
        }
    }
}

/// Fewest bytes one value of type `ty` occupies in the file (`None`: unknown type).
fn min_value_bytes(ty: u32) -> Option<u64> {
    Some(match ty {
        T_U8 | T_I8 | T_BOOL => 1,
        T_U16 | T_I16 => 2,
        T_U32 | T_I32 | T_F32 => 4,
        T_U64 | T_I64 | T_F64 | T_STRING => 8,
        T_ARRAY => 4 + 8,
        _ => return None,
    })
}
