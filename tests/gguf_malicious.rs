//! The GGUF reader against hostile and broken files, each built from bytes in the test and
//! asserted to fail with the exact `GgufError` variant; plus round trips through candle and
//! the real SmolLM2 file when it has been fetched.

use std::io::{Cursor, Read, Seek, SeekFrom};
use std::path::PathBuf;

use candle_core::quantized::GgmlDType;
use candle_core::Device;
use trojanscan::model::gguf::{
    read_path, GgufError, GgufFile, GgufLimits, GgufTensorInfo, GgufValue,
};

// GGUF metadata value type ids.
const U8: u32 = 0;
const U32: u32 = 4;
const F32: u32 = 6;
const BOOL: u32 = 7;
const STRING: u32 = 8;
const ARRAY: u32 = 9;
const U64: u32 = 10;
const I32: u32 = 5;
// GGML tensor type ids.
const GGML_F32: u32 = 0;
const GGML_Q8_0: u32 = 8;
const GGML_Q8_1: u32 = 9;

/// Little-endian GGUF byte writer.
#[derive(Default, Clone)]
struct B(Vec<u8>);

impl B {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Self {
        let mut b = B::default();
        b.raw(b"GGUF").u32(version).u64(n_tensors).u64(n_kv);
        b
    }
    fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }
    fn u8(&mut self, v: u8) -> &mut Self {
        self.raw(&[v])
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }
    fn f32(&mut self, v: f32) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64).raw(s.as_bytes())
    }
    /// A key followed by a value type id; the caller writes the value.
    fn key(&mut self, key: &str, ty: u32) -> &mut Self {
        self.str(key).u32(ty)
    }
    fn kv_str(&mut self, key: &str, v: &str) -> &mut Self {
        self.key(key, STRING).str(v)
    }
    fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.key(key, U32).u32(v)
    }
    /// A tensor info: `ne` innermost first, `offset` relative to the data section.
    fn tensor(&mut self, name: &str, ne: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name).u32(ne.len() as u32);
        for &d in ne {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    fn pad(&mut self, align: usize) -> &mut Self {
        let n = self.0.len().next_multiple_of(align);
        self.0.resize(n, 0);
        self
    }
    fn zeros(&mut self, n: usize) -> &mut Self {
        self.0.resize(self.0.len() + n, 0);
        self
    }
    fn bytes(&self) -> Vec<u8> {
        self.0.clone()
    }
}

fn parse(bytes: &[u8]) -> Result<GgufFile, GgufError> {
    GgufFile::read(&mut Cursor::new(bytes), &GgufLimits::default())
}

fn parse_with(bytes: &[u8], limits: &GgufLimits) -> Result<GgufFile, GgufError> {
    GgufFile::read(&mut Cursor::new(bytes), limits)
}

/// A file with one tensor `t` of the given GGUF dims and type at data offset 0, followed by
/// `data_len` zero bytes of data.
fn one_tensor(ne: &[u64], ty: u32, offset: u64, data_len: usize) -> Vec<u8> {
    let mut b = B::header(3, 1, 0);
    b.tensor("t", ne, ty, offset).pad(32).zeros(data_len);
    b.bytes()
}

/// A file with one metadata entry whose value the closure writes after `key`/`ty`.
fn one_kv(ty: u32, value: impl FnOnce(&mut B)) -> Vec<u8> {
    let mut b = B::header(3, 0, 1);
    b.key("k", ty);
    value(&mut b);
    b.bytes()
}

/// Q8_0 values used by the valid file: two blocks of 32.
fn q8_blocks() -> (Vec<u8>, Vec<f32>) {
    let mut bytes = Vec::new();
    let mut values = Vec::new();
    for (d, base) in [(0.5f32, -16i32), (1.0f32, 0i32)] {
        bytes.extend(half::f16::from_f32(d).to_le_bytes());
        for i in 0..32 {
            let q = (base + i) as i8;
            bytes.push(q as u8);
            values.push(d * f32::from(q));
        }
    }
    (bytes, values)
}

/// The header of [`valid_file`], up to the end of the tensor infos.
fn valid_header() -> B {
    let mut b = B::header(3, 2, 5);
    b.kv_str("general.architecture", "llama")
        .kv_u32("llama.block_count", 2)
        .key("llama.rope.freq_base", F32)
        .f32(10000.0)
        .key("tokenizer.ggml.tokens", ARRAY)
        .u32(STRING)
        .u64(3)
        .str("<s>")
        .str("a")
        .str("é")
        .key("tokenizer.ggml.add_bos_token", BOOL)
        .u8(1);
    b.tensor("a", &[3, 2], GGML_F32, 0)
        .tensor("q", &[32, 2], GGML_Q8_0, 32);
    b
}

/// A valid v3 file: metadata of several types, an F32 tensor `a` of shape [2, 3] and a
/// Q8_0 tensor `q` of shape [2, 32].
fn valid_file() -> Vec<u8> {
    let mut b = valid_header();
    b.pad(32);
    for x in [1f32, 2., 3., 4., 5., 6.] {
        b.f32(x);
    }
    b.pad(32);
    b.raw(&q8_blocks().0);
    b.bytes()
}

// ---------------------------------------------------------------- valid files

#[test]
fn valid_file_parses_and_round_trips() {
    let bytes = valid_file();
    let f = parse(&bytes).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.alignment, 32);
    assert_eq!(f.file_len, bytes.len() as u64);
    assert_eq!(f.data_offset % 32, 0);
    assert_eq!(f.architecture(), Some("llama"));
    assert_eq!(f.metadata["llama.block_count"].as_u32(), Some(2));
    assert_eq!(f.metadata["llama.rope.freq_base"].as_f32(), Some(10000.0));
    assert_eq!(
        f.metadata["tokenizer.ggml.add_bos_token"].as_bool(),
        Some(true)
    );
    let tokens: Vec<&str> = f.metadata["tokenizer.ggml.tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(tokens, ["<s>", "a", "é"]);

    let a = f.tensor("a").unwrap().clone();
    assert_eq!(a.shape, [2, 3]);
    assert_eq!(a.dtype, GgmlDType::F32);
    assert_eq!(a.offset, f.data_offset);
    assert_eq!(a.len, 24);
    assert_eq!(a.elem_count(), 6);
    let q = f.tensor("q").unwrap().clone();
    assert_eq!(q.shape, [2, 32]);
    assert_eq!(q.dtype, GgmlDType::Q8_0);
    assert_eq!(q.offset, f.data_offset + 32);
    assert_eq!(q.len, 68);
    assert!(f.tensor("missing").is_none());

    let mut r = Cursor::new(&bytes);
    let raw = f.tensor_bytes(&mut r, &a).unwrap();
    assert_eq!(raw.len(), 24);
    assert_eq!(&raw[..4], &1f32.to_le_bytes());

    let dev = Device::Cpu;
    let qa = f.qtensor(&mut r, &a, &dev).unwrap();
    assert_eq!(qa.dtype(), GgmlDType::F32);
    let va = qa.dequantize(&dev).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(va, [[1., 2., 3.], [4., 5., 6.]]);

    let qq = f.qtensor(&mut r, &q, &dev).unwrap();
    assert_eq!(qq.dtype(), GgmlDType::Q8_0);
    let vq = qq.dequantize(&dev).unwrap().to_vec2::<f32>().unwrap();
    let expected = q8_blocks().1;
    assert_eq!(vq.concat(), expected);
}

/// The committed fuzz seeds are valid files, so the fuzzer starts past the magic and counts.
#[test]
fn fuzz_seeds_parse() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/gguf_header");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if !path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("seed-")
        {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let f = parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for t in &f.tensors {
            let raw = f.tensor_bytes(&mut Cursor::new(&bytes), t).unwrap();
            assert_eq!(raw.len() as u64, t.len);
        }
        n += 1;
    }
    assert!(n >= 3, "{n} seeds");
}

#[test]
fn version_2_is_read() {
    let mut bytes = valid_file();
    bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(parse(&bytes).unwrap().version, 2);
}

#[test]
fn custom_alignment_is_honoured() {
    let mut b = B::header(3, 2, 1);
    b.kv_u32("general.alignment", 64)
        .tensor("x", &[4], GGML_F32, 0)
        .tensor("y", &[4], GGML_F32, 64)
        .pad(64)
        .zeros(128);
    let f = parse(&b.bytes()).unwrap();
    assert_eq!(f.alignment, 64);
    assert_eq!(f.data_offset % 64, 0);
    assert_eq!(f.tensor("y").unwrap().offset, f.data_offset + 64);
}

#[test]
fn file_without_tensors_is_fine() {
    let bytes = B::header(3, 0, 0).bytes();
    let f = parse(&bytes).unwrap();
    assert!(f.tensors.is_empty() && f.metadata.is_empty());
}

#[test]
fn nesting_up_to_the_limit_is_accepted() {
    // array(array(array(u8))) is three levels, the default limit.
    let bytes = one_kv(ARRAY, |b| {
        b.u32(ARRAY)
            .u64(1)
            .u32(ARRAY)
            .u64(1)
            .u32(U8)
            .u64(2)
            .u8(7)
            .u8(9);
    });
    let f = parse(&bytes).unwrap();
    let inner = &f.metadata["k"].as_array().unwrap()[0].as_array().unwrap()[0];
    assert_eq!(
        inner,
        &GgufValue::Array(vec![GgufValue::U8(7), GgufValue::U8(9)])
    );
}

#[test]
fn value_accessors() {
    assert_eq!(GgufValue::I32(5).as_u32(), Some(5));
    assert_eq!(GgufValue::I32(-5).as_u32(), None);
    assert_eq!(GgufValue::U64(1 << 40).as_u32(), None);
    assert_eq!(GgufValue::U64(1 << 40).as_u64(), Some(1 << 40));
    assert_eq!(GgufValue::U8(3).as_u64(), Some(3));
    assert_eq!(GgufValue::I64(-3).as_i64(), Some(-3));
    assert_eq!(GgufValue::U64(u64::MAX).as_i64(), None);
    assert_eq!(GgufValue::F64(0.5).as_f32(), Some(0.5));
    assert_eq!(GgufValue::U32(1).as_f32(), None);
    assert_eq!(GgufValue::String("x".into()).as_str(), Some("x"));
    assert_eq!(GgufValue::Bool(false).as_bool(), Some(false));
    assert_eq!(GgufValue::U8(1).as_bool(), None);
    assert_eq!(GgufValue::Array(vec![]).as_array(), Some(&[][..]));
    assert_eq!(GgufValue::U16(1).type_name(), "u16");
}

#[test]
fn types_are_send_sync() {
    fn check<T: Send + Sync + 'static>() {}
    check::<GgufFile>();
    check::<GgufError>();
    check::<GgufLimits>();
}

// ---------------------------------------------------------------- header framing

#[test]
fn bad_magic() {
    let mut bytes = valid_file();
    bytes[..4].copy_from_slice(b"GGML");
    assert_eq!(parse(&bytes).unwrap_err(), GgufError::BadMagic(0x4c4d_4747));
    assert!(matches!(
        parse(b"\0\0\0\0\0\0\0\0"),
        Err(GgufError::BadMagic(0))
    ));
}

#[test]
fn unsupported_versions() {
    for v in [0u32, 1, 4, 3u32.swap_bytes()] {
        let mut bytes = valid_file();
        bytes[4..8].copy_from_slice(&v.to_le_bytes());
        assert_eq!(parse(&bytes).unwrap_err(), GgufError::UnsupportedVersion(v));
    }
}

#[test]
fn every_truncation_is_a_typed_error() {
    let bytes = valid_file();
    let header_end = valid_header().0.len();
    for cut in 0..bytes.len() {
        let err = parse(&bytes[..cut]).unwrap_err();
        if cut < 4 {
            assert!(
                matches!(err, GgufError::Truncated { what: "magic" }),
                "{err:?}"
            );
        } else if cut < 8 {
            assert!(
                matches!(err, GgufError::Truncated { what: "version" }),
                "{err:?}"
            );
        } else if cut < header_end {
            assert!(
                matches!(err, GgufError::Truncated { .. }),
                "cut at {cut}: {err:?}"
            );
        } else {
            // The header is whole; padding or data is missing.
            assert!(
                matches!(err, GgufError::TensorOutOfBounds { .. }),
                "cut at {cut}: {err:?}"
            );
        }
    }
}

#[test]
fn truncation_inside_header_structures() {
    // Cut inside a key, a value, a tensor name and a tensor's dims.
    let bytes = valid_file();
    let header_end = valid_header().0.len();
    let find = |needle: &[u8]| {
        bytes
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap()
    };
    let cases = [
        (find(b"general.architecture") + 3, "header"), // the counts cannot fit
        (find(b"tokenizer.ggml.add_bos") + 3, "metadata key"),
        (find(b"<s>") + 1, "array"), // the three elements cannot fit
        (find("é".as_bytes()) + 1, "string value"),
        (find("é".as_bytes()) - 3, "string value"), // in the length prefix
        (find(b"add_bos_token") + 13 + 4, "bool"),
        (header_end - 12 - 8 - 8, "tensor dimensions"), // the dims cannot all fit
        (header_end - 3, "tensor offset"),
    ];
    for (cut, what) in cases {
        let err = parse(&bytes[..cut]).unwrap_err();
        assert_eq!(err, GgufError::Truncated { what }, "cut at {cut}");
    }
}

#[test]
fn counts_larger_than_the_file_fail_fast() {
    // 1000 tensors and 1000 entries are within limits but cannot fit in 24 bytes.
    let bytes = B::header(3, 1000, 1000).bytes();
    assert!(matches!(
        parse(&bytes),
        Err(GgufError::Truncated { what: "header" })
    ));
}

#[test]
fn too_many_tensors() {
    let bytes = B::header(3, GgufLimits::MAX_TENSORS + 1, 0).bytes();
    assert!(matches!(
        parse(&bytes),
        Err(GgufError::TooManyTensors { n, max }) if n == GgufLimits::MAX_TENSORS + 1 && max == GgufLimits::MAX_TENSORS
    ));
    let bytes = B::header(3, u64::MAX, 0).bytes();
    assert!(matches!(
        parse(&bytes),
        Err(GgufError::TooManyTensors { .. })
    ));
}

#[test]
fn too_many_metadata_entries() {
    let bytes = B::header(3, 0, u64::MAX).bytes();
    assert!(matches!(
        parse(&bytes),
        Err(GgufError::TooManyMetadata { n: u64::MAX, .. })
    ));
}

// ---------------------------------------------------------------- metadata values

#[test]
fn huge_string_lengths() {
    // A key claiming u64::MAX bytes in a 32-byte file.
    let mut b = B::header(3, 0, 1);
    b.u64(u64::MAX).raw(b"abcdefgh");
    assert!(matches!(
        parse(&b.bytes()),
        Err(GgufError::StringTooLong {
            what: "metadata key",
            len: u64::MAX,
            ..
        })
    ));
    // A value claiming 1 TiB.
    let bytes = one_kv(STRING, |b| {
        b.u64(1 << 40).raw(b"abc");
    });
    assert!(matches!(
        parse(&bytes),
        Err(GgufError::StringTooLong { what: "string value", len, max }) if len == 1 << 40 && max == GgufLimits::MAX_STRING_LEN
    ));
    // Within the limit but longer than the file: truncated, without allocating first.
    let bytes = one_kv(STRING, |b| {
        b.u64(GgufLimits::MAX_STRING_LEN).raw(b"abc");
    });
    assert!(matches!(
        parse(&bytes),
        Err(GgufError::Truncated {
            what: "string value"
        })
    ));
}

#[test]
fn tensor_name_too_long() {
    let long = "x".repeat(GgufLimits::MAX_NAME_LEN as usize + 1);
    let mut b = B::header(3, 1, 0);
    b.tensor(&long, &[4], GGML_F32, 0).pad(32).zeros(16);
    assert!(matches!(
        parse(&b.bytes()),
        Err(GgufError::StringTooLong {
            what: "tensor name",
            ..
        })
    ));
}

#[test]
fn invalid_utf8() {
    let mut b = B::header(3, 0, 1);
    b.u64(2).raw(&[0xff, 0xfe]).u32(U8).u8(0);
    assert!(matches!(
        parse(&b.bytes()),
        Err(GgufError::InvalidUtf8 {
            what: "metadata key"
        })
    ));

    let bytes = one_kv(STRING, |b| {
        b.u64(3).raw(&[b'a', 0xc3, b'b']);
    });
    assert!(matches!(
        parse(&bytes),
        Err(GgufError::InvalidUtf8 {
            what: "string value"
        })
    ));
    let mut lossy = GgufLimits::default();
    lossy.lossy_utf8 = true;
    let f = parse_with(&bytes, &lossy).unwrap();
    assert_eq!(f.metadata["k"].as_str(), Some("a\u{fffd}b"));
}

#[test]
fn invalid_bool() {
    let bytes = one_kv(BOOL, |b| {
        b.u8(2);
    });
    assert!(matches!(parse(&bytes), Err(GgufError::InvalidBool(2))));
}

#[test]
fn huge_array_lengths() {
    let bytes = one_kv(ARRAY, |b| {
        b.u32(U64).u64(u64::MAX);
    });
    assert!(matches!(
        parse(&bytes),
        Err(GgufError::ArrayTooLong { len: u64::MAX, .. })
    ));
    // Within the limit, but 4 Mi u64s cannot fit in the file.
    let bytes = one_kv(ARRAY, |b| {
        b.u32(U64).u64(GgufLimits::MAX_ARRAY_LEN).u64(1);
    });
    assert!(matches!(
        parse(&bytes),
        Err(GgufError::Truncated { what: "array" })
    ));
    // 4 Mi strings each claiming 16 MiB: rejected from the element count alone.
    let bytes = one_kv(ARRAY, |b| {
        b.u32(STRING).u64(GgufLimits::MAX_ARRAY_LEN);
        for _ in 0..4 {
            b.u64(GgufLimits::MAX_STRING_LEN);
        }
    });
    assert!(matches!(
        parse(&bytes),
        Err(GgufError::Truncated { what: "array" })
    ));
}

#[test]
fn array_of_strings_exceeding_the_budget() {
    let mut small = GgufLimits::default();
    small.max_header_bytes = 16 << 10;
    // 64 strings of 1 KiB fit in the file but not in a 16 KiB budget.
    let s = "y".repeat(1024);
    let bytes = one_kv(ARRAY, |b| {
        b.u32(STRING).u64(64);
        for _ in 0..64 {
            b.str(&s);
        }
    });
    assert!(parse(&bytes).is_ok());
    assert!(matches!(
        parse_with(&bytes, &small),
        Err(GgufError::HeaderBudgetExceeded { max }) if max == 16 << 10
    ));
    // Many empty strings: tiny on disk, but every element costs a value slot in memory.
    let bytes = one_kv(ARRAY, |b| {
        b.u32(STRING).u64(4096);
        for _ in 0..4096 {
            b.u64(0);
        }
    });
    assert!(matches!(
        parse_with(&bytes, &small),
        Err(GgufError::HeaderBudgetExceeded { .. })
    ));
}

#[test]
fn unknown_value_types() {
    let bytes = one_kv(99, |b| {
        b.u64(0);
    });
    assert!(matches!(
        parse(&bytes),
        Err(GgufError::UnknownValueType(99))
    ));
    // Unknown element type, even for an empty array.
    let bytes = one_kv(ARRAY, |b| {
        b.u32(13).u64(0);
    });
    assert!(matches!(
        parse(&bytes),
        Err(GgufError::UnknownValueType(13))
    ));
}

#[test]
fn nested_arrays_too_deep() {
    let bytes = one_kv(ARRAY, |b| {
        for _ in 0..3 {
            b.u32(ARRAY).u64(1);
        }
        b.u32(U8).u64(1).u8(0);
    });
    assert!(matches!(
        parse(&bytes),
        Err(GgufError::NestedArrayTooDeep {
            max: GgufLimits::MAX_ARRAY_DEPTH
        })
    ));
    // A caller's absurd limit is clamped, so deep nesting cannot overflow the stack.
    let mut deep = GgufLimits::default();
    deep.max_array_depth = u32::MAX;
    let bytes = one_kv(ARRAY, |b| {
        for _ in 0..100_000 {
            b.u32(ARRAY).u64(1);
        }
        b.u32(U8).u64(0);
    });
    assert!(matches!(
        parse_with(&bytes, &deep),
        Err(GgufError::NestedArrayTooDeep { max: 64 })
    ));
}

#[test]
fn duplicate_key() {
    let mut b = B::header(3, 0, 2);
    b.kv_u32("a.b", 1).kv_str("a.b", "again");
    assert_eq!(
        parse(&b.bytes()).unwrap_err(),
        GgufError::DuplicateKey("a.b".into())
    );
}

#[test]
fn bad_alignment() {
    for a in [0u32, 3, 48] {
        let mut b = B::header(3, 0, 1);
        b.kv_u32("general.alignment", a);
        assert_eq!(
            parse(&b.bytes()).unwrap_err(),
            GgufError::BadAlignment(a.into())
        );
    }
    let mut b = B::header(3, 0, 1);
    b.key("general.alignment", U64).u64(32);
    assert_eq!(
        parse(&b.bytes()).unwrap_err(),
        GgufError::BadAlignmentType("u64")
    );
    let mut b = B::header(3, 0, 1);
    b.key("general.alignment", I32).u32(32);
    assert!(matches!(
        parse(&b.bytes()),
        Err(GgufError::BadAlignmentType("i32"))
    ));
}

// ---------------------------------------------------------------- tensor infos

#[test]
fn tensor_dim_counts() {
    let mut b = B::header(3, 1, 0);
    b.tensor("t", &[], GGML_F32, 0).pad(32);
    assert!(matches!(parse(&b.bytes()), Err(GgufError::NoDims { name }) if name == "t"));
    let bytes = one_tensor(&[1, 1, 1, 1, 1], GGML_F32, 0, 4);
    assert!(matches!(
        parse(&bytes),
        Err(GgufError::TooManyDims { n: 5, max: 4, .. })
    ));
    // A huge n_dims is caught by the limit before any dims are read.
    let mut b = B::header(3, 1, 0);
    b.str("t").u32(u32::MAX).u64(1).zeros(32);
    assert!(matches!(
        parse(&b.bytes()),
        Err(GgufError::TooManyDims { n: u32::MAX, .. })
    ));
}

#[test]
fn zero_sized_dim() {
    let bytes = one_tensor(&[4, 0], GGML_F32, 0, 0);
    assert!(matches!(
        parse(&bytes),
        Err(GgufError::ZeroDim { axis: 1, .. })
    ));
}

#[test]
fn dim_too_large() {
    let bytes = one_tensor(&[1 << 63], GGML_F32, 0, 0);
    assert!(matches!(parse(&bytes), Err(GgufError::DimTooLarge { dim, .. }) if dim == 1 << 63));
}

#[test]
fn element_count_overflow() {
    let bytes = one_tensor(&[1 << 32, 1 << 32, 1 << 32], GGML_F32, 0, 0);
    assert!(matches!(
        parse(&bytes),
        Err(GgufError::ElementCountOverflow { .. })
    ));
    // The element count fits but the byte length (x4) does not.
    let bytes = one_tensor(&[1 << 62], GGML_F32, 0, 0);
    assert!(matches!(
        parse(&bytes),
        Err(GgufError::ElementCountOverflow { .. })
    ));
}

#[test]
fn unknown_tensor_types() {
    // 99: unknown to ggml; 16: IQ2_XXS, known to ggml but not to candle; 4: removed Q4_2.
    for id in [99u32, 16, 4, u32::MAX] {
        let bytes = one_tensor(&[32], id, 0, 1024);
        assert!(
            matches!(parse(&bytes), Err(GgufError::UnknownTensorType { type_id, .. }) if type_id == id),
            "type {id}"
        );
    }
}

#[test]
fn quantized_innermost_dim_not_a_block_multiple() {
    let bytes = one_tensor(&[33, 64], GGML_Q8_0, 0, 4096);
    assert!(matches!(
        parse(&bytes),
        Err(GgufError::BadBlockShape {
            dim: 33,
            block: 32,
            ..
        })
    ));
    // The outer dims need not be multiples.
    let bytes = one_tensor(&[64, 33], GGML_Q8_0, 0, 33 * 2 * 34);
    assert!(parse(&bytes).is_ok());
}

#[test]
fn duplicate_tensor() {
    let mut b = B::header(3, 2, 0);
    b.tensor("w", &[4], GGML_F32, 0)
        .tensor("w", &[4], GGML_F32, 32)
        .pad(32)
        .zeros(64);
    assert_eq!(
        parse(&b.bytes()).unwrap_err(),
        GgufError::DuplicateTensor("w".into())
    );
}

#[test]
fn tensor_out_of_bounds() {
    let bytes = one_tensor(&[4], GGML_F32, 1024, 16);
    assert!(matches!(
        parse(&bytes),
        Err(GgufError::TensorOutOfBounds {
            offset: 1024,
            len: 16,
            ..
        })
    ));
    // Data one byte short.
    let bytes = one_tensor(&[4], GGML_F32, 0, 15);
    assert!(matches!(
        parse(&bytes),
        Err(GgufError::TensorOutOfBounds { offset: 0, .. })
    ));
}

#[test]
fn tensor_offset_plus_len_overflows() {
    let offset = !31u64; // aligned, so only the bounds check can catch it
    let bytes = one_tensor(&[4], GGML_F32, offset, 16);
    assert!(matches!(
        parse(&bytes),
        Err(GgufError::TensorOutOfBounds { offset: o, .. }) if o == offset
    ));
}

#[test]
fn misaligned_tensor() {
    let bytes = one_tensor(&[4], GGML_F32, 4, 64);
    assert!(matches!(
        parse(&bytes),
        Err(GgufError::MisalignedTensor { offset: 4, .. })
    ));
}

#[test]
fn overlapping_tensors() {
    // `b` starts inside `a` (64 bytes at 0).
    let mut b = B::header(3, 2, 0);
    b.tensor("a", &[16], GGML_F32, 0)
        .tensor("b", &[4], GGML_F32, 32)
        .pad(32)
        .zeros(128);
    assert_eq!(
        parse(&b.bytes()).unwrap_err(),
        GgufError::TensorsOverlap {
            a: "a".into(),
            b: "b".into()
        }
    );
    // Two names for the same bytes, listed in reverse order.
    let mut b = B::header(3, 2, 0);
    b.tensor("y", &[4], GGML_F32, 64)
        .tensor("x", &[4], GGML_F32, 64)
        .pad(32)
        .zeros(128);
    assert!(matches!(
        parse(&b.bytes()),
        Err(GgufError::TensorsOverlap { .. })
    ));
    // Adjacent is fine.
    let mut b = B::header(3, 2, 0);
    b.tensor("a", &[8], GGML_F32, 0)
        .tensor("b", &[8], GGML_F32, 32)
        .pad(32)
        .zeros(64);
    assert!(parse(&b.bytes()).is_ok());
}

// ---------------------------------------------------------------- reading data

#[test]
fn forged_tensor_infos_are_rejected() {
    let bytes = valid_file();
    let f = parse(&bytes).unwrap();
    let mut r = Cursor::new(&bytes);
    let a = f.tensor("a").unwrap();

    let beyond = GgufTensorInfo {
        offset: f.file_len - 8,
        ..a.clone()
    };
    assert!(matches!(
        f.tensor_bytes(&mut r, &beyond),
        Err(GgufError::TensorOutOfBounds { .. })
    ));
    let wrapping = GgufTensorInfo {
        offset: u64::MAX - 4,
        ..a.clone()
    };
    assert!(matches!(
        f.tensor_bytes(&mut r, &wrapping),
        Err(GgufError::TensorOutOfBounds { .. })
    ));

    // A length shorter than the shape needs would let candle read past the buffer.
    let short = GgufTensorInfo {
        len: 8,
        ..a.clone()
    };
    assert!(matches!(
        f.qtensor(&mut r, &short, &Device::Cpu),
        Err(GgufError::TensorLenMismatch {
            len: 8,
            expected: 24,
            ..
        })
    ));
    let bad_shape = GgufTensorInfo {
        shape: vec![2, 5],
        dtype: GgmlDType::Q8_0,
        ..a.clone()
    };
    assert!(matches!(
        f.qtensor(&mut r, &bad_shape, &Device::Cpu),
        Err(GgufError::BadBlockShape { .. })
    ));

    // Reading from a shorter file than the header was parsed from.
    let mut short_file = Cursor::new(&bytes[..bytes.len() - 10]);
    let q = f.tensor("q").unwrap();
    assert!(matches!(
        f.tensor_bytes(&mut short_file, q),
        Err(GgufError::Truncated {
            what: "tensor data"
        })
    ));
}

#[test]
fn dtypes_candle_cannot_load() {
    let bytes = one_tensor(&[32], GGML_Q8_1, 0, 64);
    let f = parse(&bytes).unwrap();
    let t = &f.tensors[0];
    assert_eq!(t.dtype, GgmlDType::Q8_1);
    assert!(matches!(
        f.qtensor(&mut Cursor::new(&bytes), t, &Device::Cpu),
        Err(GgufError::UnloadableDtype { .. })
    ));
}

/// A reader whose reads fail after `ok` bytes with a non-EOF error.
struct Flaky {
    inner: Cursor<Vec<u8>>,
    ok: u64,
}

impl Read for Flaky {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.inner.position() >= self.ok {
            return Err(std::io::Error::other("disk on fire"));
        }
        let n = buf.len().min((self.ok - self.inner.position()) as usize);
        self.inner.read(&mut buf[..n])
    }
}

impl Seek for Flaky {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

#[test]
fn io_errors_are_reported_as_io() {
    let mut r = Flaky {
        inner: Cursor::new(valid_file()),
        ok: 30,
    };
    let err = GgufFile::read(&mut r, &GgufLimits::default()).unwrap_err();
    assert!(
        matches!(&err, GgufError::Io(m) if m.contains("disk on fire")),
        "{err:?}"
    );
}

#[test]
fn read_path_maps_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.gguf");
    // Every file of a model is opened one way (`O_NOFOLLOW`, regular files only): a
    // missing one is no model.
    assert!(matches!(
        read_path(&missing, &GgufLimits::default()),
        Err(trojanscan::Error::NoModel { .. })
    ));
    let bad = dir.path().join("bad.gguf");
    std::fs::write(&bad, b"GGML\x03\0\0\0").unwrap();
    match read_path(&bad, &GgufLimits::default()) {
        Err(trojanscan::Error::Gguf { path, source }) => {
            assert_eq!(path, bad);
            assert!(matches!(source, GgufError::BadMagic(_)));
        }
        other => panic!("{other:?}"),
    }
    let good = dir.path().join("good.gguf");
    std::fs::write(&good, valid_file()).unwrap();
    assert_eq!(
        read_path(&good, &GgufLimits::default())
            .unwrap()
            .tensors
            .len(),
        2
    );
}

// ---------------------------------------------------------------- no panics

/// Every single-byte change to the header of a valid file parses or fails with an error;
/// none panics, and whatever parses has tensors inside the file.
#[test]
fn single_byte_mutations_never_panic() {
    let bytes = valid_file();
    let header_len = parse(&bytes).unwrap().data_offset as usize;
    for i in 0..header_len {
        for v in [
            0u8,
            1,
            0x7f,
            0x80,
            0xff,
            bytes[i] ^ 1,
            bytes[i].wrapping_add(32),
        ] {
            let mut m = bytes.clone();
            m[i] = v;
            if let Ok(f) = parse(&m) {
                for t in &f.tensors {
                    assert!(t.offset + t.len <= f.file_len);
                    let q = f.qtensor(&mut Cursor::new(&m), t, &Device::Cpu);
                    assert!(q.is_ok() || matches!(q, Err(GgufError::UnloadableDtype { .. })));
                }
            }
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    // xorshift64: deterministic, no extra dependency.
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let base = valid_file();
    for _ in 0..20_000 {
        let mut m = base.clone();
        let edits = 1 + next() % 8;
        for _ in 0..edits {
            let i = (next() % m.len() as u64) as usize;
            m[i] = next() as u8;
        }
        let cut = (next() % (m.len() as u64 + 1)) as usize;
        let _ = parse(&m[..cut]);
    }
}

// ---------------------------------------------------------------- the real SmolLM2 file

fn smollm2_path() -> PathBuf {
    let root = std::env::var_os("TROJANSCAN_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures"));
    root.join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
}

#[test]
fn real_smollm2_file() {
    let path = smollm2_path();
    if !path.exists() {
        println!("skipping: fixtures/smollm2 not fetched (run scripts/fetch_models.sh)");
        return;
    }
    let f = read_path(&path, &GgufLimits::default()).unwrap();
    assert!(matches!(f.version, 2 | 3));
    assert_eq!(f.architecture(), Some("llama"));
    assert_eq!(f.metadata["llama.block_count"].as_u32(), Some(30));
    println!(
        "version {}, {} tensors, {} metadata entries, alignment {}, data at {}",
        f.version,
        f.tensors.len(),
        f.metadata.len(),
        f.alignment,
        f.data_offset
    );
    for (k, v) in &f.metadata {
        match v {
            GgufValue::Array(a) => println!(
                "  {k}: array<{}>[{}]",
                a.first().map_or("?", GgufValue::type_name),
                a.len()
            ),
            GgufValue::String(s) if s.len() > 60 => {
                println!("  {k}: string ({} bytes)", s.len())
            }
            v => println!("  {k}: {} = {v:?}", v.type_name()),
        }
    }
    let mut by_dtype = std::collections::BTreeMap::<String, Vec<&str>>::new();
    for t in &f.tensors {
        by_dtype
            .entry(format!("{:?}", t.dtype))
            .or_default()
            .push(&t.name);
    }
    for (d, names) in &by_dtype {
        let sample: Vec<_> = names.iter().take(4).collect();
        println!("  {d}: {} tensors, e.g. {sample:?}", names.len());
    }

    let emb = f.tensor("token_embd.weight").unwrap();
    assert_eq!(emb.shape, [49152, 576]);
    assert_eq!(
        f.tensors
            .iter()
            .filter(|t| t.name.ends_with("attn_q.weight"))
            .count(),
        30
    );
    let tokens = f.metadata["tokenizer.ggml.tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 49152);

    let mut r = std::io::BufReader::new(std::fs::File::open(&path).unwrap());
    let dev = Device::Cpu;
    let norm = f.tensor("blk.0.attn_norm.weight").unwrap();
    assert_eq!(norm.shape, [576]);
    let n = f
        .qtensor(&mut r, norm, &dev)
        .unwrap()
        .dequantize(&dev)
        .unwrap();
    let n = n.to_vec1::<f32>().unwrap();
    assert!(n.iter().all(|x| x.is_finite()));
    let q = f.tensor("blk.0.attn_q.weight").unwrap();
    let w = f
        .qtensor(&mut r, q, &dev)
        .unwrap()
        .dequantize(&dev)
        .unwrap();
    assert_eq!(w.dims(), [576, 576]);
    let w = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(w.iter().all(|x| x.is_finite()));
    assert!(w.iter().any(|&x| x != 0.0));
    println!(
        "  blk.0.attn_q.weight: {:?} {:?}, first values {:?}",
        q.dtype,
        q.shape,
        &w[..4]
    );
}
