//! A scan of pickle checkpoints (`.bin`, `.pt`, `.pth`, `.ckpt`, `.pkl`) that never
//! executes them.
//!
//! Unpickling calls whatever callables the stream imports (`GLOBAL`, `STACK_GLOBAL`,
//! `INST`, extension codes), so trojanscan refuses to load pickles
//! ([`Error::PickleRefused`]) and offers this scan instead: a bounded walk over the
//! opcodes that simulates only the stack and memo (to resolve `STACK_GLOBAL` operands) and
//! reports every import outside an allow-list of what PyTorch checkpoints need.
//!
//! Every byte of the file is accounted for, since loaders read more than one pickle:
//!
//! - A plain file (a legacy torch checkpoint, or any pickle file) is read pickle after
//!   pickle, of any protocol (0 to 5; protocols 0 and 1 have no `PROTO` opcode), to its
//!   end. In a legacy torch file (magic number, protocol version, system info, the object,
//!   its storage keys) the raw storage records that follow the fifth pickle are walked as
//!   torch reads them (a size, then that many elements of the type the object's persistent
//!   ids declare), never unpickled; whatever follows them is read as pickles again.
//! - A zip checkpoint (`torch.save` since 1.6) has its member table validated first
//!   ([`ZipArchiveError`]: members that overlap, repeat or share a name are refused), then
//!   every `*.pkl` member (any ASCII case, as torch matches names) is read the same way, to
//!   the member's end.
//!
//! Bytes after a complete pickle that are not another pickle are an error
//! ([`Error::PickleTrailingData`]), never skipped: a scan that cannot say what they are does
//! not call the file clean. Work is bounded per stream ([`PickleScanOptions::max_bytes`],
//! [`PickleScanOptions::max_ops`]) and per checkpoint: at most
//! [`PickleScanOptions::max_total_bytes`] opcode bytes, never more than the file holds, in
//! at most [`MAX_PICKLE_STREAMS`] pickles.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufReader, Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use serde::Serialize;

use crate::{Error, Result};

mod zipdir;

pub use self::zipdir::ZipArchiveError;

/// Imports a PyTorch state dict legitimately needs (`module.name`).
pub const DEFAULT_ALLOWED: &[&str] = &[
    "collections.OrderedDict",
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch.Size",
    "torch.device",
    "torch.FloatStorage",
    "torch.DoubleStorage",
    "torch.HalfStorage",
    "torch.BFloat16Storage",
    "torch.LongStorage",
    "torch.IntStorage",
    "torch.ShortStorage",
    "torch.CharStorage",
    "torch.ByteStorage",
    "torch.BoolStorage",
    "torch.storage.UntypedStorage",
    "torch.float32",
    "torch.float16",
    "torch.bfloat16",
    "torch.float64",
    "torch.int64",
    "torch.int32",
    "torch.int16",
    "torch.int8",
    "torch.uint8",
    "torch.bool",
];

/// Most bytes of pickle opcodes walked in one stream.
pub const MAX_PICKLE_BYTES: u64 = 1 << 30;
/// Most bytes of pickle opcodes walked in one checkpoint, all its pickles together (a scan
/// also never walks more bytes than the file holds: no byte is read twice).
pub const MAX_PICKLE_TOTAL_BYTES: u64 = 1 << 32;
/// Most opcodes walked in one stream.
pub const MAX_PICKLE_OPS: u64 = 50_000_000;
/// Deepest simulated stack (and most memo entries, list items and storage records kept).
pub const MAX_PICKLE_STACK: usize = 1 << 20;
/// Longest string kept for resolving imports (longer ones are skipped, not stored).
pub const MAX_KEPT_STRING: u64 = 4096;
/// Most pickles read from one checkpoint, all files or members together; a checkpoint
/// holding more is refused.
pub const MAX_PICKLE_STREAMS: usize = 1 << 16;
/// Most entries in a zip checkpoint's central directory.
pub const MAX_ZIP_ENTRIES: usize = 1 << 16;
/// Largest zip central directory read (checked before it is read).
pub const MAX_ZIP_CENTRAL_DIRECTORY: u64 = 64 << 20;

/// The first pickle of a legacy torch file: `torch.serialization.MAGIC_NUMBER`.
const TORCH_LEGACY_MAGIC: i128 = 0x1950_a86a_20f9_469c_fc6c;
/// The second: `torch.serialization.PROTOCOL_VERSION`.
const TORCH_LEGACY_PROTOCOL: i128 = 1001;
/// Elements of a tuple kept by the simulation (a torch storage id has 5 or 6).
const MAX_KEPT_TUPLE: usize = 8;

/// Options for [`scan_pickle`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PickleScanOptions {
    /// Imports accepted besides [`DEFAULT_ALLOWED`] (`module.name`).
    pub allow: Vec<String>,
    /// Most bytes walked per pickle stream.
    pub max_bytes: u64,
    /// Most opcodes walked per pickle stream.
    pub max_ops: u64,
    /// Most bytes walked in the whole checkpoint (capped further by the file's size).
    pub max_total_bytes: u64,
}

impl Default for PickleScanOptions {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            max_bytes: MAX_PICKLE_BYTES,
            max_ops: MAX_PICKLE_OPS,
            max_total_bytes: MAX_PICKLE_TOTAL_BYTES,
        }
    }
}

impl PickleScanOptions {
    /// Accept one more import, `module.name`.
    pub fn allow(mut self, global: impl Into<String>) -> Self {
        self.allow.push(global.into());
        self
    }

    /// Set [`PickleScanOptions::max_bytes`].
    pub fn max_bytes(mut self, n: u64) -> Self {
        self.max_bytes = n;
        self
    }

    /// Set [`PickleScanOptions::max_ops`].
    pub fn max_ops(mut self, n: u64) -> Self {
        self.max_ops = n;
        self
    }

    /// Set [`PickleScanOptions::max_total_bytes`].
    pub fn max_total_bytes(mut self, n: u64) -> Self {
        self.max_total_bytes = n;
        self
    }
}

/// One import a pickle performs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PickleImport {
    /// Module (`?` when a `STACK_GLOBAL` operand could not be resolved statically).
    pub module: String,
    /// Attribute.
    pub name: String,
    /// The opcode that imports it (`GLOBAL`, `STACK_GLOBAL`, `INST`, `EXT1`..`EXT4`).
    pub opcode: String,
    /// Byte offset of its first occurrence in the stream.
    pub offset: u64,
    /// How many times it is imported.
    pub count: u64,
    /// Whether it is on the allow-list.
    pub allowed: bool,
}

impl PickleImport {
    /// `module.name`.
    pub fn global(&self) -> String {
        format!("{}.{}", self.module, self.name)
    }
}

/// The scan of one pickle stream.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct PickleStream {
    /// Zip member name (`name#n` for the n-th pickle after its first), or `#n` for the
    /// n-th pickle of a plain file.
    pub member: String,
    /// Where the pickle starts, from the start of the file.
    pub offset: u64,
    /// Bytes it spans.
    pub len: u64,
    /// Opcodes walked.
    pub opcodes: u64,
    /// Distinct imports, in order of first occurrence.
    pub imports: Vec<PickleImport>,
}

/// The raw storage records of a legacy torch file: tensor bytes that torch reads after the
/// fifth pickle without unpickling them, walked record by record as torch does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct StorageRecords {
    /// Where the first record starts, from the start of the file.
    pub offset: u64,
    /// Bytes the records span.
    pub len: u64,
    /// How many records.
    pub count: u64,
}

/// What [`scan_pickle`] found.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct PickleReport {
    /// The checkpoint.
    pub path: PathBuf,
    /// `zip` (torch zip checkpoint) or `pickle`.
    pub container: String,
    /// Every stream scanned.
    pub streams: Vec<PickleStream>,
    /// A legacy torch file's storage records, when it has them.
    pub storage: Option<StorageRecords>,
}

impl PickleReport {
    /// Imports outside the allow-list, with the stream they occur in.
    pub fn offending(&self) -> Vec<(&str, &PickleImport)> {
        self.streams
            .iter()
            .flat_map(|s| {
                s.imports
                    .iter()
                    .filter(|i| !i.allowed)
                    .map(move |i| (s.member.as_str(), i))
            })
            .collect()
    }

    /// Whether every import is allowed.
    pub fn is_clean(&self) -> bool {
        self.offending().is_empty()
    }
}

/// Scan a pickle checkpoint without executing it.
///
/// ```
/// use trojanscan::provenance::pickle::{scan_pickle, PickleScanOptions};
/// # let dir = tempfile::tempdir()?;
/// let p = dir.path().join("evil.pkl");
/// // protocol 2: os.system("ls")
/// std::fs::write(&p, b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00ls\x85R.")?;
/// let report = scan_pickle(&p, &PickleScanOptions::default())?;
/// assert_eq!(report.offending()[0].1.global(), "os.system");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn scan_pickle(path: &Path, opts: &PickleScanOptions) -> Result<PickleReport> {
    check_options(opts)?;
    // Opened as every file of a model is: never through a link, never a pipe or device.
    let f = crate::model::source::open_regular(path)?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    scan_source(f, len, path, opts)
}

/// Scan a checkpoint held in memory, exactly as [`scan_pickle`] scans a file; the report
/// and errors name the path `<memory>`.
///
/// ```
/// use trojanscan::provenance::pickle::{scan_pickle_bytes, PickleScanOptions};
/// // A protocol-2 pickle of an int, then a protocol-0 one calling os.system.
/// let two = b"\x80\x02K\x01.cos\nsystem\n(S'ls'\ntR.";
/// let report = scan_pickle_bytes(two, &PickleScanOptions::default())?;
/// assert_eq!(report.offending()[0].0, "#1");
/// # Ok::<(), trojanscan::Error>(())
/// ```
pub fn scan_pickle_bytes(bytes: &[u8], opts: &PickleScanOptions) -> Result<PickleReport> {
    check_options(opts)?;
    scan_source(
        Cursor::new(bytes),
        bytes.len() as u64,
        Path::new("<memory>"),
        opts,
    )
}

/// Whether a 512-byte block is a tar header as Python's `tarfile` accepts one: the octal
/// checksum field matches the sum of the block's bytes (unsigned or signed) with that field
/// counted as spaces.
fn is_tar_header(block: &[u8; 512]) -> bool {
    let field = &block[148..156];
    let digits: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|b| (b'0'..=b'7').contains(b))
        .collect();
    if digits.is_empty() {
        return false;
    }
    let Some(want) = digits.iter().try_fold(0u64, |a, &d| {
        a.checked_mul(8)?.checked_add(u64::from(d - b'0'))
    }) else {
        return false;
    };
    let spaces = 8 * u64::from(b' ');
    let outside = |i: &usize| !(148..156).contains(i);
    let unsigned: u64 = block
        .iter()
        .enumerate()
        .filter(|(i, _)| outside(i))
        .map(|(_, &b)| u64::from(b))
        .sum::<u64>()
        + spaces;
    let signed: i64 = block
        .iter()
        .enumerate()
        .filter(|(i, _)| outside(i))
        .map(|(_, &b)| i64::from(b as i8))
        .sum::<i64>()
        + spaces as i64;
    want == unsigned || i64::try_from(want).is_ok_and(|w| w == signed)
}

fn check_options(opts: &PickleScanOptions) -> Result<()> {
    if opts.max_bytes == 0 || opts.max_ops == 0 || opts.max_total_bytes == 0 {
        return Err(Error::InvalidArgument(
            "pickle scan limits must be positive".into(),
        ));
    }
    Ok(())
}

fn scan_source<R: Read + Seek>(
    r: R,
    len: u64,
    path: &Path,
    opts: &PickleScanOptions,
) -> Result<PickleReport> {
    let mut r = BufReader::new(r);
    let mut head = [0u8; 512];
    let n = read_up_to(&mut r, &mut head).map_err(|e| Error::io(path, e))?;
    r.seek(SeekFrom::Start(0)).map_err(|e| Error::io(path, e))?;
    // torch.load tries a non-zip file as a tar archive first (its oldest format) and
    // unpickles the members it extracts; a tar header can also open a pickle literal that
    // swallows the whole archive, so read as pickles it looks harmless.
    if n == 512 && is_tar_header(&head) {
        return Err(Error::PickleScan {
            path: path.into(),
            why: "a tar archive (torch's oldest checkpoint format, whose members torch.load \
                  unpickles): refused"
                .into(),
        });
    }
    let magic = &head[..4];
    let allow: Vec<&str> = DEFAULT_ALLOWED
        .iter()
        .copied()
        .chain(opts.allow.iter().map(String::as_str))
        .collect();
    let mut scan = Scanner {
        path,
        opts,
        allow: &allow,
        budget: opts.max_total_bytes.min(len),
        walked: 0,
        streams: Vec::new(),
    };
    // Torch takes a file for a zip checkpoint by these four bytes, and reads it as pickles
    // otherwise.
    let (container, storage) = if n >= 4 && magic == b"PK\x03\x04" {
        scan.zip(&mut r, len)?;
        ("zip", None)
    } else {
        ("pickle", scan.plain(&mut r, len)?)
    };
    Ok(PickleReport {
        path: path.into(),
        container: container.into(),
        streams: scan.streams,
        storage,
    })
}

fn read_up_to<R: Read>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Move a buffered reader from `from` to `to`, keeping its buffer when it can.
fn goto<R: Read + Seek>(r: &mut BufReader<R>, from: u64, to: u64) -> std::io::Result<()> {
    match i64::try_from(i128::from(to) - i128::from(from)) {
        Ok(0) => Ok(()),
        Ok(d) => r.seek_relative(d),
        Err(_) => r.seek(SeekFrom::Start(to)).map(drop),
    }
}

/// What one pickle left behind.
struct Walked {
    /// Bytes it spans.
    len: u64,
    /// The value its `STOP` returns.
    value: V,
    /// Storage records its persistent ids declare: key → (storage type, elements).
    storages: HashMap<Rc<str>, (Rc<str>, i128)>,
}

/// The scan of one checkpoint: its streams so far and the work spent on them.
struct Scanner<'a> {
    path: &'a Path,
    opts: &'a PickleScanOptions,
    allow: &'a [&'a str],
    /// Opcode bytes the whole checkpoint may take.
    budget: u64,
    walked: u64,
    streams: Vec<PickleStream>,
}

impl Scanner<'_> {
    fn err(&self, why: String) -> Error {
        Error::PickleScan {
            path: self.path.into(),
            why,
        }
    }

    /// Walk the pickle at `pos` (where `r` stands), which must end by `end`. `after` says
    /// whether a complete pickle precedes it in its file or member: then bytes that do not
    /// form a pickle are trailing data, not a malformed checkpoint.
    fn one<R: Read + Seek>(
        &mut self,
        r: &mut BufReader<R>,
        pos: u64,
        end: u64,
        member: String,
        after: bool,
    ) -> Result<Walked> {
        if self.streams.len() >= MAX_PICKLE_STREAMS {
            return Err(self.err(format!(
                "more than {MAX_PICKLE_STREAMS} pickles in one checkpoint"
            )));
        }
        let left = self.budget - self.walked;
        let (max, scope) = if left < self.opts.max_bytes {
            (left, "in the whole checkpoint")
        } else {
            (self.opts.max_bytes, "in one pickle")
        };
        let limits = Limits {
            avail: end - pos,
            max_bytes: max,
            scope,
            max_ops: self.opts.max_ops,
        };
        match scan_stream((&mut *r).take(end - pos), &limits, self.allow) {
            Ok((imports, opcodes, w)) => {
                self.walked += w.len;
                self.streams.push(PickleStream {
                    member,
                    offset: pos,
                    len: w.len,
                    opcodes,
                    imports,
                });
                Ok(w)
            }
            Err(StreamError::Io(e)) => Err(Error::io(self.path, e)),
            Err(StreamError::Malformed(_)) if after => Err(Error::PickleTrailingData {
                path: self.path.into(),
                member,
                offset: pos,
                len: end - pos,
            }),
            Err(StreamError::Malformed(why) | StreamError::Limit(why)) => {
                Err(self.err(format!("{member}: {why}")))
            }
        }
    }

    /// A plain file: pickles back to back until its end, with a legacy torch file's
    /// storage records walked where torch reads them.
    fn plain<R: Read + Seek>(
        &mut self,
        r: &mut BufReader<R>,
        len: u64,
    ) -> Result<Option<StorageRecords>> {
        if len == 0 {
            return Err(self.err("empty file".into()));
        }
        let path = self.path;
        let io = |e| Error::io(path, e);
        let mut pos = 0u64;
        let mut storage = None;
        // The values of the first five pickles and the fourth's storage records.
        let mut firsts: Vec<V> = Vec::new();
        let mut declared = HashMap::new();
        let mut i = 0usize;
        while pos < len {
            let w = self.one(r, pos, len, format!("#{i}"), i > 0)?;
            pos += w.len;
            if i < 5 {
                firsts.push(w.value);
                if i == 3 {
                    declared = w.storages;
                }
            }
            i += 1;
            if i == 5 {
                if let Some(keys) = legacy_storage_keys(&firsts) {
                    if let Some(rec) = walk_storages(r, pos, len, &keys, &declared).map_err(io)? {
                        pos = rec.offset + rec.len;
                        storage = Some(rec);
                    }
                }
            }
        }
        Ok(storage)
    }

    /// A zip checkpoint: its member table validated, then every pickle member to its end.
    fn zip<R: Read + Seek>(&mut self, r: &mut BufReader<R>, len: u64) -> Result<()> {
        let path = self.path;
        let zerr = |source| Error::ZipArchive {
            path: path.into(),
            source,
        };
        let io = |e| Error::io(path, e);
        let members = zipdir::members(r, len).map_err(zerr)?;
        let mut at = r.stream_position().map_err(io)?;
        let mut any = false;
        for m in members.iter().filter(|m| m.pickle) {
            zipdir::check_readable(m).map_err(zerr)?;
            any = true;
            goto(r, at, m.data_start).map_err(io)?;
            let (mut pos, end) = (m.data_start, m.data_start + m.size);
            let mut i = 0usize;
            // An empty member is no pickle at all, which a reader of it would reject.
            if end == pos {
                return Err(self.err(format!("{}: empty pickle member", m.name)));
            }
            while pos < end {
                let member = if i == 0 {
                    m.name.clone()
                } else {
                    format!("{}#{i}", m.name)
                };
                pos += self.one(r, pos, end, member, i > 0)?.len;
                i += 1;
            }
            at = pos;
        }
        if !any {
            return Err(self.err("zip holds no `.pkl` member (not a torch checkpoint)".into()));
        }
        Ok(())
    }
}

/// The storage keys of a legacy torch file, when its first five pickles are torch's: the
/// magic number, the protocol version, system info, the object, and a list of strings.
fn legacy_storage_keys(firsts: &[V]) -> Option<Vec<Rc<str>>> {
    match firsts {
        [V::Int(TORCH_LEGACY_MAGIC), V::Int(TORCH_LEGACY_PROTOCOL), _, _, V::List(keys)] => {
            let keys = keys.borrow();
            keys.exact.then(|| keys.items.clone())
        }
        _ => None,
    }
}

/// Bytes per element of a torch storage type, as `torch._utils._element_size` gives them.
fn element_size(storage_type: &str) -> Option<u64> {
    let name = storage_type
        .strip_prefix("torch.cuda.")
        .or_else(|| storage_type.strip_prefix("torch."))?;
    Some(match name {
        "BoolStorage" | "ByteStorage" | "CharStorage" | "QUInt8Storage" | "QInt8Storage"
        | "QUInt4x2Storage" | "QUInt2x4Storage" => 1,
        "HalfStorage" | "BFloat16Storage" | "ShortStorage" => 2,
        "FloatStorage" | "IntStorage" | "QInt32Storage" => 4,
        "DoubleStorage" | "LongStorage" | "ComplexFloatStorage" => 8,
        "ComplexDoubleStorage" => 16,
        _ => return None,
    })
}

/// Walk a legacy torch file's storage records from `start` as `torch.load` does: for each
/// key in order, a little-endian `i64` element count equal to the one the object declared,
/// then that many elements. `None` (with `r` back at `start`) when they do not add up
/// inside the file; the bytes are then held to the rule for any other bytes.
fn walk_storages<R: Read + Seek>(
    r: &mut BufReader<R>,
    start: u64,
    len: u64,
    keys: &[Rc<str>],
    declared: &HashMap<Rc<str>, (Rc<str>, i128)>,
) -> std::io::Result<Option<StorageRecords>> {
    let mut pos = start;
    let mut ok = true;
    for key in keys {
        let Some((ty, numel)) = declared.get(key) else {
            ok = false;
            break;
        };
        let (Some(size), Ok(numel)) = (element_size(ty), u64::try_from(*numel)) else {
            ok = false;
            break;
        };
        let end = numel
            .checked_mul(size)
            .and_then(|n| n.checked_add(pos)?.checked_add(8))
            .filter(|&e| e <= len);
        let Some(end) = end else {
            ok = false;
            break;
        };
        let mut count = [0u8; 8];
        r.read_exact(&mut count)?;
        if u64::from_le_bytes(count) != numel {
            pos += 8;
            ok = false;
            break;
        }
        goto(r, pos + 8, end)?;
        pos = end;
    }
    if !ok {
        goto(r, pos, start)?;
        return Ok(None);
    }
    Ok(Some(StorageRecords {
        offset: start,
        len: pos - start,
        count: keys.len() as u64,
    }))
}

/// How a stream's walk failed.
enum StreamError {
    /// Not a well-formed pickle.
    Malformed(String),
    /// Over a bound on work.
    Limit(String),
    /// The file could not be read.
    Io(std::io::Error),
}

type Walk<T> = std::result::Result<T, StreamError>;

fn malformed<T>(why: impl Into<String>) -> Walk<T> {
    Err(StreamError::Malformed(why.into()))
}

/// Bounds on one stream's walk.
struct Limits {
    /// Bytes left in its file or member: an argument running past them is truncation, not
    /// a limit.
    avail: u64,
    max_bytes: u64,
    /// Which bound `max_bytes` is, for the message.
    scope: &'static str,
    max_ops: u64,
}

/// A simulated stack value. Kept: strings, small ints, imports, flat tuples and lists of
/// strings (enough to resolve `STACK_GLOBAL` operands and a legacy torch file's storage
/// records); all else is `Other`. Shared, so `DUP` and memo reads copy nothing.
#[derive(Clone)]
enum V {
    Mark,
    Str(Rc<str>),
    Int(i128),
    /// `module.name`.
    Global(Rc<str>),
    /// At most [`MAX_KEPT_TUPLE`] values, none of them a tuple or list (so values never
    /// nest, and dropping them never recurses deeply).
    Tuple(Rc<[V]>),
    /// Mutable through every copy, like a Python list.
    List(Rc<RefCell<StrList>>),
    Other,
}

/// A list as far as it holds strings.
struct StrList {
    items: Vec<Rc<str>>,
    /// Whether every item ever appended was a string and kept.
    exact: bool,
}

struct Reader<R> {
    r: R,
    pos: u64,
    avail: u64,
    max: u64,
    scope: &'static str,
}

impl<R: Read> Reader<R> {
    fn over(&self) -> StreamError {
        StreamError::Limit(format!(
            "more than {} bytes of opcodes {}",
            self.max, self.scope
        ))
    }

    fn byte(&mut self) -> Walk<Option<u8>> {
        let mut b = [0u8; 1];
        match read_up_to(&mut self.r, &mut b) {
            Ok(0) => Ok(None),
            Ok(_) => {
                self.pos += 1;
                if self.pos > self.max {
                    return Err(self.over());
                }
                Ok(Some(b[0]))
            }
            Err(e) => Err(StreamError::Io(e)),
        }
    }

    /// Check that `n` more bytes exist and are within the limit, before reading them.
    fn room(&self, n: u64) -> Walk<()> {
        let end = self.pos.saturating_add(n);
        if end > self.avail {
            return malformed(format!(
                "an argument of {n} bytes at byte {} runs past the end",
                self.pos
            ));
        }
        if end > self.max {
            return Err(self.over());
        }
        Ok(())
    }

    fn exact(&mut self, n: usize) -> Walk<Vec<u8>> {
        self.room(n as u64)?;
        let mut v = vec![0u8; n];
        let got = read_up_to(&mut self.r, &mut v).map_err(StreamError::Io)?;
        self.pos += got as u64;
        if got < n {
            return malformed(format!("truncated at byte {}", self.pos));
        }
        Ok(v)
    }

    fn uint(&mut self, n: usize) -> Walk<u64> {
        let b = self.exact(n)?;
        Ok(b.iter().rev().fold(0u64, |a, &x| (a << 8) | u64::from(x)))
    }

    /// Skip `n` bytes without storing them.
    fn skip(&mut self, n: u64) -> Walk<()> {
        self.room(n)?;
        let copied = std::io::copy(&mut (&mut self.r).take(n), &mut std::io::sink())
            .map_err(StreamError::Io)?;
        self.pos += copied;
        if copied < n {
            return malformed(format!("truncated at byte {}", self.pos));
        }
        Ok(())
    }

    /// A string argument of `n` bytes: kept when short, skipped otherwise.
    fn string(&mut self, n: u64) -> Walk<V> {
        if n <= MAX_KEPT_STRING {
            let b = self.exact(n as usize)?;
            Ok(V::Str(String::from_utf8_lossy(&b).into()))
        } else {
            self.skip(n)?;
            Ok(V::Other)
        }
    }

    /// A little-endian two's-complement integer of `n` bytes (`LONG1`, `LONG4`): kept when
    /// it fits 16 bytes, skipped otherwise.
    fn long(&mut self, n: u64) -> Walk<V> {
        if n > 16 {
            self.skip(n)?;
            return Ok(V::Other);
        }
        let b = self.exact(n as usize)?;
        let fill = if b.last().is_some_and(|&x| x & 0x80 != 0) {
            0xff
        } else {
            0
        };
        let mut w = [fill; 16];
        w[..b.len()].copy_from_slice(&b);
        Ok(V::Int(i128::from_le_bytes(w)))
    }

    /// A newline-terminated argument (protocol 0), at most 64 KiB.
    fn line(&mut self) -> Walk<String> {
        let mut v = Vec::new();
        loop {
            match self.byte()? {
                None => return malformed(format!("truncated line at byte {}", self.pos)),
                Some(b'\n') => break,
                Some(b) => v.push(b),
            }
            if v.len() > 65_536 {
                return malformed("a text argument longer than 64 KiB");
            }
        }
        Ok(String::from_utf8_lossy(&v).into_owned())
    }
}

struct Sim<'a> {
    stack: Vec<V>,
    memo: BTreeMap<u64, V>,
    imports: Vec<PickleImport>,
    /// Index into `imports` by (module, name, opcode).
    seen: HashMap<(String, String, &'static str), usize>,
    allow: &'a [&'a str],
    /// List items kept so far (bounded like the stack).
    kept_items: usize,
    storages: HashMap<Rc<str>, (Rc<str>, i128)>,
}

impl Sim<'_> {
    fn push(&mut self, v: V) -> Walk<()> {
        if self.stack.len() >= MAX_PICKLE_STACK {
            return Err(StreamError::Limit(format!(
                "stack deeper than {MAX_PICKLE_STACK}"
            )));
        }
        self.stack.push(v);
        Ok(())
    }

    /// Pop one value; an underflow means a malformed stream.
    fn pop(&mut self) -> Walk<V> {
        self.stack
            .pop()
            .ok_or_else(|| StreamError::Malformed("stack underflow".into()))
    }

    fn pop_n(&mut self, n: usize) -> Walk<()> {
        for _ in 0..n {
            self.pop()?;
        }
        Ok(())
    }

    /// Pop everything down to the topmost MARK, and the MARK.
    fn pop_to_mark(&mut self) -> Walk<Vec<V>> {
        let Some(at) = self.stack.iter().rposition(|v| matches!(v, V::Mark)) else {
            return malformed("no MARK on the stack");
        };
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        Ok(items)
    }

    fn pop_mark(&mut self) -> Walk<()> {
        self.pop_to_mark().map(drop)
    }

    fn top(&self) -> Walk<V> {
        self.stack
            .last()
            .cloned()
            .ok_or_else(|| StreamError::Malformed("stack underflow".into()))
    }

    fn memo_put(&mut self, idx: u64) -> Walk<()> {
        if self.memo.len() >= MAX_PICKLE_STACK && !self.memo.contains_key(&idx) {
            return Err(StreamError::Limit(format!(
                "more than {MAX_PICKLE_STACK} memo entries"
            )));
        }
        let v = self.top()?;
        self.memo.insert(idx, v);
        Ok(())
    }

    fn memo_get(&mut self, idx: u64) -> Walk<()> {
        let Some(v) = self.memo.get(&idx).cloned() else {
            return malformed(format!("memo {idx} read before it is written"));
        };
        self.push(v)
    }

    /// Record an import and push it.
    fn import(&mut self, module: &str, name: &str, opcode: &'static str, offset: u64) -> Walk<()> {
        let global = format!("{module}.{name}");
        let key = (module.to_string(), name.to_string(), opcode);
        if let Some(&i) = self.seen.get(&key) {
            self.imports[i].count += 1;
        } else {
            self.seen.insert(key, self.imports.len());
            let allowed = self.allow.contains(&global.as_str());
            self.imports.push(PickleImport {
                module: module.into(),
                name: name.into(),
                opcode: opcode.into(),
                offset,
                count: 1,
                allowed,
            });
        }
        self.push(V::Global(global.into()))
    }

    /// A tuple of `items`, kept when short; nested tuples and lists become `Other`.
    fn tuple(items: Vec<V>) -> V {
        if items.len() > MAX_KEPT_TUPLE {
            return V::Other;
        }
        let flat: Vec<V> = items
            .into_iter()
            .map(|v| match v {
                V::Tuple(_) | V::List(_) | V::Mark => V::Other,
                v => v,
            })
            .collect();
        V::Tuple(flat.into())
    }

    /// A new list holding `items`.
    fn list(&mut self, items: Vec<V>) -> V {
        let l = V::List(Rc::new(RefCell::new(StrList {
            items: Vec::new(),
            exact: true,
        })));
        self.extend(&l, items);
        l
    }

    /// Python's `list.extend` on a simulated list (anything else is left alone).
    fn extend(&mut self, list: &V, items: Vec<V>) {
        let V::List(l) = list else { return };
        let mut l = l.borrow_mut();
        for v in items {
            match v {
                V::Str(s) if self.kept_items < MAX_PICKLE_STACK => {
                    self.kept_items += 1;
                    l.items.push(s);
                }
                _ => l.exact = false,
            }
        }
    }

    /// A persistent id: torch's storage ids are `("storage", type, key, location, numel)`
    /// (plus view metadata since torch 0.4); the first id of a key declares it.
    fn persistent_id(&mut self, pid: V) {
        let V::Tuple(t) = pid else { return };
        if let [V::Str(tag), V::Global(ty), V::Str(key), _, V::Int(numel), ..] = &t[..] {
            if &**tag == "storage"
                && t.len() <= 6
                && self.storages.len() < MAX_PICKLE_STACK
                && !self.storages.contains_key(key)
            {
                self.storages.insert(key.clone(), (ty.clone(), *numel));
            }
        }
    }
}

fn text_global(r: &mut Reader<impl Read>) -> Walk<(String, String)> {
    let module = r.line()?;
    let name = r.line()?;
    Ok((module, name))
}

/// An `INT` or `LONG` text argument, kept when it parses.
fn text_int(line: &str) -> V {
    let t = line.trim();
    t.strip_suffix('L')
        .unwrap_or(t)
        .parse::<i128>()
        .map_or(V::Other, V::Int)
}

/// Walk one pickle stream up to its STOP opcode: its imports, its opcode count, and what
/// else it leaves (length, value, storage records).
fn scan_stream<R: Read>(
    r: R,
    limits: &Limits,
    allow: &[&str],
) -> Walk<(Vec<PickleImport>, u64, Walked)> {
    let mut r = Reader {
        r,
        pos: 0,
        avail: limits.avail,
        max: limits.max_bytes,
        scope: limits.scope,
    };
    let mut sim = Sim {
        stack: Vec::new(),
        memo: BTreeMap::new(),
        imports: Vec::new(),
        seen: HashMap::new(),
        allow,
        kept_items: 0,
        storages: HashMap::new(),
    };
    let mut ops = 0u64;
    let value = loop {
        let offset = r.pos;
        let Some(op) = r.byte()? else {
            return malformed(format!(
                "no STOP opcode before the end ({ops} opcodes read)"
            ));
        };
        ops += 1;
        if ops > limits.max_ops {
            return Err(StreamError::Limit(format!(
                "more than {} opcodes",
                limits.max_ops
            )));
        }
        match op {
            // STOP returns the top of the stack, which must not be a MARK.
            b'.' => match sim.pop()? {
                V::Mark => return malformed("STOP on a MARK"),
                v => break v,
            },
            b'(' => sim.push(V::Mark)?,    // MARK
            b'0' => drop(sim.pop()?),      // POP
            b'1' => sim.pop_mark()?,       // POP_MARK
            b'2' => sim.push(sim.top()?)?, // DUP
            b'I' | b'L' => {
                let l = r.line()?;
                sim.push(text_int(&l))?
            } // INT, LONG
            b'F' => {
                r.line()?;
                sim.push(V::Other)?
            } // FLOAT
            b'J' => {
                let b = r.exact(4)?;
                let n = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                sim.push(V::Int(n.into()))?
            } // BININT
            b'K' => {
                let n = r.uint(1)?;
                sim.push(V::Int(n.into()))?
            } // BININT1
            b'M' => {
                let n = r.uint(2)?;
                sim.push(V::Int(n.into()))?
            } // BININT2
            b'G' => {
                r.exact(8)?;
                sim.push(V::Other)?
            } // BINFLOAT
            b'N' | b'}' | 0x88 | 0x89 | 0x8f => sim.push(V::Other)?,
            b')' => sim.push(V::Tuple(Rc::from([])))?, // EMPTY_TUPLE
            b']' => {
                let l = sim.list(Vec::new());
                sim.push(l)?
            } // EMPTY_LIST
            b'P' => {
                r.line()?;
                sim.push(V::Other)?
            } // PERSID
            b'Q' => {
                let pid = sim.pop()?;
                sim.persistent_id(pid);
                sim.push(V::Other)?
            } // BINPERSID
            b'R' => {
                sim.pop_n(2)?;
                sim.push(V::Other)?
            } // REDUCE
            b'S' => {
                let l = r.line()?;
                let s = l.trim().trim_matches(|c| c == '\'' || c == '"');
                sim.push(V::Str(s.into()))?
            } // STRING
            b'V' => {
                let l = r.line()?;
                sim.push(V::Str(l.into()))?
            } // UNICODE
            b'T' | b'X' => {
                let n = r.uint(4)?;
                let v = r.string(n)?;
                sim.push(v)?
            } // BINSTRING, BINUNICODE
            b'U' | 0x8c => {
                let n = r.uint(1)?;
                let v = r.string(n)?;
                sim.push(v)?
            } // SHORT_BINSTRING, SHORT_BINUNICODE
            0x8d => {
                let n = r.uint(8)?;
                let v = r.string(n)?;
                sim.push(v)?
            } // BINUNICODE8
            b'B' => {
                let n = r.uint(4)?;
                r.skip(n)?;
                sim.push(V::Other)?
            } // BINBYTES
            b'C' => {
                let n = r.uint(1)?;
                r.skip(n)?;
                sim.push(V::Other)?
            } // SHORT_BINBYTES
            0x8e | 0x96 => {
                let n = r.uint(8)?;
                r.skip(n)?;
                sim.push(V::Other)?
            } // BINBYTES8, BYTEARRAY8
            0x8a => {
                let n = r.uint(1)?;
                let v = r.long(n)?;
                sim.push(v)?
            } // LONG1
            0x8b => {
                let n = r.uint(4)?;
                let v = r.long(n)?;
                sim.push(v)?
            } // LONG4
            b'a' => {
                let v = sim.pop()?;
                let list = sim.top()?;
                sim.extend(&list, vec![v]);
            } // APPEND
            b'e' => {
                let items = sim.pop_to_mark()?;
                let list = sim.top()?;
                sim.extend(&list, items);
            } // APPENDS
            b'b' => drop(sim.pop()?),                  // BUILD
            b's' => sim.pop_n(2)?,                     // SETITEM
            b'u' | 0x90 => sim.pop_mark()?,            // SETITEMS, ADDITEMS
            b'd' | 0x91 => {
                sim.pop_mark()?;
                sim.push(V::Other)?
            } // DICT, FROZENSET
            b'l' => {
                let items = sim.pop_to_mark()?;
                let l = sim.list(items);
                sim.push(l)?
            } // LIST
            b't' => {
                let items = sim.pop_to_mark()?;
                sim.push(Sim::tuple(items))?
            } // TUPLE
            b'o' => {
                sim.pop_mark()?;
                sim.push(V::Other)?
            } // OBJ
            b'c' => {
                let (m, n) = text_global(&mut r)?;
                sim.import(&m, &n, "GLOBAL", offset)?
            } // GLOBAL
            b'i' => {
                let (m, n) = text_global(&mut r)?;
                sim.import(&m, &n, "INST", offset)?;
                sim.pop()?;
                sim.pop_mark()?;
                sim.push(V::Other)?
            } // INST
            0x93 => {
                let name = sim.pop()?;
                let module = sim.pop()?;
                match (module, name) {
                    (V::Str(m), V::Str(n)) => sim.import(&m, &n, "STACK_GLOBAL", offset)?,
                    _ => sim.import("?", "?", "STACK_GLOBAL", offset)?,
                }
            } // STACK_GLOBAL
            0x82..=0x84 => {
                let width = [1, 2, 4][(op - 0x82) as usize];
                let code = r.uint(width)?;
                let opname = ["EXT1", "EXT2", "EXT4"][(op - 0x82) as usize];
                sim.import("copyreg.extension", &code.to_string(), opname, offset)?
            } // EXT1, EXT2, EXT4
            b'g' => {
                let Ok(idx) = r.line()?.trim().parse::<u64>() else {
                    return malformed("GET with a bad index");
                };
                sim.memo_get(idx)?
            }
            b'h' => {
                let idx = r.uint(1)?;
                sim.memo_get(idx)?
            } // BINGET
            b'j' => {
                let idx = r.uint(4)?;
                sim.memo_get(idx)?
            } // LONG_BINGET
            b'p' => {
                let Ok(idx) = r.line()?.trim().parse::<u64>() else {
                    return malformed("PUT with a bad index");
                };
                sim.memo_put(idx)?
            }
            b'q' => {
                let idx = r.uint(1)?;
                sim.memo_put(idx)?
            } // BINPUT
            b'r' => {
                let idx = r.uint(4)?;
                sim.memo_put(idx)?
            } // LONG_BINPUT
            0x94 => {
                let idx = sim.memo.len() as u64;
                sim.memo_put(idx)?
            } // MEMOIZE
            0x80 => {
                r.exact(1)?;
            } // PROTO
            0x95 => {
                r.exact(8)?;
            } // FRAME
            0x81 => {
                sim.pop_n(2)?;
                sim.push(V::Other)?
            } // NEWOBJ
            0x92 => {
                sim.pop_n(3)?;
                sim.push(V::Other)?
            } // NEWOBJ_EX
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if sim.stack.len() < n {
                    return malformed("stack underflow");
                }
                let items = sim.stack.split_off(sim.stack.len() - n);
                sim.push(Sim::tuple(items))?
            } // TUPLE1..3
            0x97 => sim.push(V::Other)?, // NEXT_BUFFER
            0x98 => {}                   // READONLY_BUFFER
            other => return malformed(format!("unknown opcode 0x{other:02x} at byte {offset}")),
        }
    };
    let walked = Walked {
        len: r.pos,
        value,
        storages: sim.storages,
    };
    Ok((sim.imports, ops, walked))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ustar header for a member `name` of `size` bytes, its checksum filled in.
    fn tar_header(name: &[u8], size: u64) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name);
        h[100..108].copy_from_slice(b"0000644\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }

    #[test]
    fn a_tar_checkpoint_is_refused_even_when_its_header_opens_a_pickle() {
        // The header's name opens a protocol-3 BINBYTES literal that would swallow the
        // archive: read as pickles the file looks like one harmless bytes object.
        let mut name = b"\x80\x03B".to_vec();
        name.extend_from_slice(&1020u32.to_le_bytes());
        let mut file = tar_header(&name, 3).to_vec();
        file.extend_from_slice(&[b'x'; 512]);
        file.push(b'.');
        assert!(is_tar_header(file[..512].try_into().unwrap()));
        assert!(matches!(
            scan_pickle_bytes(&file, &PickleScanOptions::default()),
            Err(Error::PickleScan { .. })
        ));
        // A pickle of 512 bytes or more is not taken for a tar header.
        let mut long = b"\x80\x03B".to_vec();
        long.extend_from_slice(&600u32.to_le_bytes());
        long.extend_from_slice(&[b'y'; 600]);
        long.push(b'.');
        assert!(!is_tar_header(long[..512].try_into().unwrap()));
        assert!(scan_pickle_bytes(&long, &PickleScanOptions::default()).is_ok());
    }

    fn scan(bytes: &[u8]) -> Walk<(Vec<PickleImport>, u64, Walked)> {
        let limits = Limits {
            avail: bytes.len() as u64,
            max_bytes: MAX_PICKLE_BYTES,
            scope: "in one pickle",
            max_ops: MAX_PICKLE_OPS,
        };
        scan_stream(bytes, &limits, DEFAULT_ALLOWED)
    }

    #[test]
    fn stack_global_resolves_through_memo() {
        // protocol 4: SHORT_BINUNICODE "builtins" MEMOIZE, SHORT_BINUNICODE "eval" MEMOIZE,
        // BINGET 0, BINGET 1, STACK_GLOBAL, ... REDUCE STOP
        let mut p = vec![0x80, 4, 0x8c, 8];
        p.extend(b"builtins");
        p.extend([0x94, 0x8c, 4]);
        p.extend(b"eval");
        p.extend([
            0x94, b'0', b'0', b'h', 0, b'h', 1, 0x93, 0x8c, 1, b'1', 0x85, b'R', b'.',
        ]);
        let Ok((imports, _, _)) = scan(&p) else {
            panic!("scan failed")
        };
        assert_eq!(imports.len(), 1);
        assert_eq!(imports[0].global(), "builtins.eval");
        assert!(!imports[0].allowed);
    }

    #[test]
    fn legacy_torch_header_values_are_read() {
        // torch's magic number as LONG1, and a storage id behind BINPERSID.
        let magic = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.";
        let Ok((_, _, w)) = scan(magic) else {
            panic!("scan failed")
        };
        assert!(matches!(w.value, V::Int(TORCH_LEGACY_MAGIC)));
        let pid = b"\x80\x02(X\x07\x00\x00\x00storagectorch\nHalfStorage\nX\x01\x00\x00\x007X\x03\x00\x00\x00cpu\x8a\x02\x00\x01NtQ.";
        let Ok((_, _, w)) = scan(pid) else {
            panic!("scan failed")
        };
        let (ty, numel) = &w.storages[&Rc::from("7")];
        assert_eq!((&**ty, *numel), ("torch.HalfStorage", 256));
        assert_eq!(element_size(ty), Some(2));
        // Negative LONG1 values are sign-extended.
        let Ok((_, _, w)) = scan(b"\x8a\x01\xff.") else {
            panic!("scan failed")
        };
        assert!(matches!(w.value, V::Int(-1)));
    }

    #[test]
    fn lists_of_strings_are_shared_through_the_memo() {
        // EMPTY_LIST BINPUT 0, "a" APPEND, BINGET 0 (the same list), MARK "b" "c" APPENDS,
        // POP, STOP: the list on the stack holds all three, as in Python.
        let p = b"]q\x00X\x01\x00\x00\x00aah\x00(X\x01\x00\x00\x00bX\x01\x00\x00\x00ce0.";
        let Ok((_, _, w)) = scan(p) else {
            panic!("scan failed")
        };
        let V::List(l) = w.value else {
            panic!("not a list")
        };
        let l = l.borrow();
        assert!(l.exact);
        let items: Vec<&str> = l.items.iter().map(|s| &**s).collect();
        assert_eq!(items, ["a", "b", "c"]);
    }

    #[test]
    fn malformed_streams_are_errors_not_panics() {
        for bad in [
            &b"\x80\x02"[..],
            b"\xff.",
            b"0.",
            b".",
            b"(.",
            b"h\x05.",
            b"X\xff\xff\xff\xff",
            b"(((e",
        ] {
            assert!(
                matches!(scan(bad), Err(StreamError::Malformed(_))),
                "{bad:?}"
            );
        }
    }
}
