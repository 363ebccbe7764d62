//! A scan of pickle checkpoints (`.bin`, `.pt`, `.pth`, `.ckpt`, `.pkl`) that never
//! executes them.
//!
//! Unpickling calls whatever callables the stream imports (`GLOBAL`, `STACK_GLOBAL`,
//! `INST`, extension codes), so trojanscan refuses to load pickles
//! ([`Error::PickleRefused`]) and offers this scan instead: a bounded walk over the
//! opcodes that simulates only the stack and memo (to resolve `STACK_GLOBAL` operands) and
//! reports every import outside an allow-list of what PyTorch checkpoints need.
//! Zip-based torch checkpoints (`torch.save` since 1.6) have their member table validated
//! first ([`ZipArchiveError`]: members that overlap, repeat or share a name are refused),
//! then their `*.pkl` members (any ASCII case, as torch matches names) are scanned; legacy
//! torch files (a few pickles followed by raw storage bytes) are scanned pickle by pickle.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

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
/// Most opcodes walked in one stream.
pub const MAX_PICKLE_OPS: u64 = 50_000_000;
/// Deepest simulated stack (and most memo entries).
pub const MAX_PICKLE_STACK: usize = 1 << 20;
/// Longest string kept for resolving imports (longer ones are skipped, not stored).
pub const MAX_KEPT_STRING: u64 = 4096;
/// Most entries in a zip checkpoint's central directory.
pub const MAX_ZIP_ENTRIES: usize = 1 << 16;
/// Largest zip central directory read (checked before it is read).
pub const MAX_ZIP_CENTRAL_DIRECTORY: u64 = 64 << 20;
/// Most pickles read one after another from a legacy torch file.
pub const MAX_SEQUENTIAL_PICKLES: usize = 5;

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
}

impl Default for PickleScanOptions {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            max_bytes: MAX_PICKLE_BYTES,
            max_ops: MAX_PICKLE_OPS,
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

/// The scan of one pickle stream (a zip member, or the whole file).
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct PickleStream {
    /// Zip member name, or `#n` for the n-th pickle of a plain file.
    pub member: String,
    /// Opcodes walked.
    pub opcodes: u64,
    /// Distinct imports, in order of first occurrence.
    pub imports: Vec<PickleImport>,
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
    if opts.max_bytes == 0 || opts.max_ops == 0 {
        return Err(Error::InvalidArgument(
            "pickle scan limits must be positive".into(),
        ));
    }
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut magic = [0u8; 4];
    let n = read_up_to(&mut f, &mut magic).map_err(|e| Error::io(path, e))?;
    f.rewind().map_err(|e| Error::io(path, e))?;
    let allow: Vec<&str> = DEFAULT_ALLOWED
        .iter()
        .copied()
        .chain(opts.allow.iter().map(String::as_str))
        .collect();
    if n == 4 && &magic == b"PK\x03\x04" {
        let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
        return scan_zip(path, f, len, opts, &allow);
    }
    let mut r = BufReader::new(f);
    let mut streams = Vec::new();
    for i in 0..MAX_SEQUENTIAL_PICKLES {
        let mut first = [0u8; 1];
        let got = read_up_to(&mut r, &mut first).map_err(|e| Error::io(path, e))?;
        if got == 0 || (i > 0 && first[0] != 0x80) {
            break;
        }
        let member = format!("#{i}");
        let chained = (&first[..]).chain(&mut r);
        let s = scan_stream(chained, &member, opts, &allow).map_err(|why| Error::PickleScan {
            path: path.into(),
            why: format!("{member}: {why}"),
        })?;
        streams.push(s);
    }
    if streams.is_empty() {
        return Err(Error::PickleScan {
            path: path.into(),
            why: "empty file".into(),
        });
    }
    Ok(PickleReport {
        path: path.into(),
        container: "pickle".into(),
        streams,
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

fn scan_zip(
    path: &Path,
    f: File,
    len: u64,
    opts: &PickleScanOptions,
    allow: &[&str],
) -> Result<PickleReport> {
    let err = |why: String| Error::PickleScan {
        path: path.into(),
        why,
    };
    let zerr = |source| Error::ZipArchive {
        path: path.into(),
        source,
    };
    let io = |e| Error::io(path, e);
    let mut r = BufReader::new(f);
    let members = zipdir::members(&mut r, len).map_err(zerr)?;
    let mut at = r.stream_position().map_err(io)?;
    let mut streams = Vec::new();
    for m in members.iter().filter(|m| m.pickle) {
        zipdir::check_readable(m).map_err(zerr)?;
        goto(&mut r, at, m.data_start).map_err(io)?;
        let s = scan_stream((&mut r).take(m.size), &m.name, opts, allow)
            .map_err(|why| err(format!("{}: {why}", m.name)))?;
        streams.push(s);
        at = r.stream_position().map_err(io)?;
    }
    if streams.is_empty() {
        return Err(err(
            "zip holds no `.pkl` member (not a torch checkpoint)".into()
        ));
    }
    Ok(PickleReport {
        path: path.into(),
        container: "zip".into(),
        streams,
    })
}

/// A simulated stack value: only strings and imports matter.
#[derive(Clone)]
enum V {
    Mark,
    Str(String),
    Global,
    Other,
}

struct Reader<R> {
    r: R,
    pos: u64,
    max: u64,
}

impl<R: Read> Reader<R> {
    fn byte(&mut self) -> std::result::Result<Option<u8>, String> {
        let mut b = [0u8; 1];
        match read_up_to(&mut self.r, &mut b) {
            Ok(0) => Ok(None),
            Ok(_) => {
                self.pos += 1;
                if self.pos > self.max {
                    return Err(format!("more than {} bytes of opcodes", self.max));
                }
                Ok(Some(b[0]))
            }
            Err(e) => Err(format!("read error: {e}")),
        }
    }

    fn exact(&mut self, n: usize) -> std::result::Result<Vec<u8>, String> {
        let mut v = vec![0u8; n];
        let got = read_up_to(&mut self.r, &mut v).map_err(|e| format!("read error: {e}"))?;
        self.pos += got as u64;
        if got < n {
            return Err(format!("truncated at byte {}", self.pos));
        }
        if self.pos > self.max {
            return Err(format!("more than {} bytes of opcodes", self.max));
        }
        Ok(v)
    }

    fn uint(&mut self, n: usize) -> std::result::Result<u64, String> {
        let b = self.exact(n)?;
        Ok(b.iter().rev().fold(0u64, |a, &x| (a << 8) | u64::from(x)))
    }

    /// Skip `n` bytes without storing them.
    fn skip(&mut self, n: u64) -> std::result::Result<(), String> {
        if self.pos.saturating_add(n) > self.max {
            return Err(format!(
                "an argument of {n} bytes runs past the {}-byte limit",
                self.max
            ));
        }
        let copied = std::io::copy(&mut (&mut self.r).take(n), &mut std::io::sink())
            .map_err(|e| format!("read error: {e}"))?;
        self.pos += copied;
        if copied < n {
            return Err(format!("truncated at byte {}", self.pos));
        }
        Ok(())
    }

    /// A string argument of `n` bytes: kept when short, skipped otherwise.
    fn string(&mut self, n: u64) -> std::result::Result<V, String> {
        if n <= MAX_KEPT_STRING {
            let b = self.exact(n as usize)?;
            Ok(V::Str(String::from_utf8_lossy(&b).into_owned()))
        } else {
            self.skip(n)?;
            Ok(V::Other)
        }
    }

    /// A newline-terminated argument (protocol 0), at most 64 KiB.
    fn line(&mut self) -> std::result::Result<String, String> {
        let mut v = Vec::new();
        loop {
            match self.byte()? {
                None => return Err(format!("truncated line at byte {}", self.pos)),
                Some(b'\n') => break,
                Some(b) => v.push(b),
            }
            if v.len() > 65_536 {
                return Err("a text argument longer than 64 KiB".into());
            }
        }
        Ok(String::from_utf8_lossy(&v).into_owned())
    }
}

struct Sim<'a> {
    stack: Vec<V>,
    memo: BTreeMap<u64, V>,
    imports: Vec<PickleImport>,
    allow: &'a [&'a str],
}

impl Sim<'_> {
    fn push(&mut self, v: V) -> std::result::Result<(), String> {
        if self.stack.len() >= MAX_PICKLE_STACK {
            return Err(format!("stack deeper than {MAX_PICKLE_STACK}"));
        }
        self.stack.push(v);
        Ok(())
    }

    /// Pop one value; an underflow means a malformed stream.
    fn pop(&mut self) -> std::result::Result<V, String> {
        self.stack
            .pop()
            .ok_or_else(|| "stack underflow".to_string())
    }

    fn pop_n(&mut self, n: usize) -> std::result::Result<(), String> {
        for _ in 0..n {
            self.pop()?;
        }
        Ok(())
    }

    fn pop_mark(&mut self) -> std::result::Result<(), String> {
        loop {
            if let V::Mark = self.pop().map_err(|_| "no MARK on the stack".to_string())? {
                return Ok(());
            }
        }
    }

    fn top(&self) -> std::result::Result<V, String> {
        self.stack
            .last()
            .cloned()
            .ok_or_else(|| "stack underflow".to_string())
    }

    fn memo_put(&mut self, idx: u64) -> std::result::Result<(), String> {
        if self.memo.len() >= MAX_PICKLE_STACK && !self.memo.contains_key(&idx) {
            return Err(format!("more than {MAX_PICKLE_STACK} memo entries"));
        }
        let v = self.top()?;
        self.memo.insert(idx, v);
        Ok(())
    }

    fn memo_get(&mut self, idx: u64) -> std::result::Result<(), String> {
        let v = self
            .memo
            .get(&idx)
            .cloned()
            .ok_or_else(|| format!("memo {idx} read before it is written"))?;
        self.push(v)
    }

    fn import(&mut self, module: &str, name: &str, opcode: &str, offset: u64) {
        let global = format!("{module}.{name}");
        if let Some(i) = self
            .imports
            .iter_mut()
            .find(|i| i.module == module && i.name == name && i.opcode == opcode)
        {
            i.count += 1;
            return;
        }
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
}

fn text_global(r: &mut Reader<impl Read>) -> std::result::Result<(String, String), String> {
    let module = r.line()?;
    let name = r.line()?;
    Ok((module, name))
}

/// Walk one pickle stream up to its STOP opcode.
fn scan_stream<R: Read>(
    r: R,
    member: &str,
    opts: &PickleScanOptions,
    allow: &[&str],
) -> std::result::Result<PickleStream, String> {
    let mut r = Reader {
        r,
        pos: 0,
        max: opts.max_bytes,
    };
    let mut sim = Sim {
        stack: Vec::new(),
        memo: BTreeMap::new(),
        imports: Vec::new(),
        allow,
    };
    let mut ops = 0u64;
    loop {
        let offset = r.pos;
        let Some(op) = r.byte()? else {
            return Err(format!(
                "no STOP opcode before the end ({ops} opcodes read)"
            ));
        };
        ops += 1;
        if ops > opts.max_ops {
            return Err(format!("more than {} opcodes", opts.max_ops));
        }
        match op {
            b'.' => break,                 // STOP
            b'(' => sim.push(V::Mark)?,    // MARK
            b'0' => drop(sim.pop()?),      // POP
            b'1' => sim.pop_mark()?,       // POP_MARK
            b'2' => sim.push(sim.top()?)?, // DUP
            b'F' | b'I' | b'L' => {
                r.line()?;
                sim.push(V::Other)?
            } // FLOAT, INT, LONG
            b'J' => {
                r.exact(4)?;
                sim.push(V::Other)?
            } // BININT
            b'K' => {
                r.exact(1)?;
                sim.push(V::Other)?
            } // BININT1
            b'M' => {
                r.exact(2)?;
                sim.push(V::Other)?
            } // BININT2
            b'G' => {
                r.exact(8)?;
                sim.push(V::Other)?
            } // BINFLOAT
            b'N' | b'}' | b']' | b')' | 0x88 | 0x89 | 0x8f => sim.push(V::Other)?,
            b'P' => {
                r.line()?;
                sim.push(V::Other)?
            } // PERSID
            b'Q' => {
                sim.pop()?;
                sim.push(V::Other)?
            } // BINPERSID
            b'R' => {
                sim.pop_n(2)?;
                sim.push(V::Other)?
            } // REDUCE
            b'S' => {
                let l = r.line()?;
                let s = l.trim().trim_matches(|c| c == '\'' || c == '"').to_string();
                sim.push(V::Str(s))?
            } // STRING
            b'V' => {
                let l = r.line()?;
                sim.push(V::Str(l))?
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
                r.skip(n)?;
                sim.push(V::Other)?
            } // LONG1
            0x8b => {
                let n = r.uint(4)?;
                r.skip(n)?;
                sim.push(V::Other)?
            } // LONG4
            b'a' | b'b' => drop(sim.pop()?),       // APPEND, BUILD
            b's' => sim.pop_n(2)?,                 // SETITEM
            b'e' | b'u' | 0x90 => sim.pop_mark()?, // APPENDS, SETITEMS, ADDITEMS
            b'd' | b'l' | b't' | 0x91 => {
                sim.pop_mark()?;
                sim.push(V::Other)?
            } // DICT, LIST, TUPLE, FROZENSET
            b'o' => {
                sim.pop_mark()?;
                sim.push(V::Other)?
            } // OBJ
            b'c' => {
                let (m, n) = text_global(&mut r)?;
                sim.import(&m, &n, "GLOBAL", offset);
                sim.push(V::Global)?
            } // GLOBAL
            b'i' => {
                let (m, n) = text_global(&mut r)?;
                sim.import(&m, &n, "INST", offset);
                sim.pop_mark()?;
                sim.push(V::Other)?
            } // INST
            0x93 => {
                let name = sim.pop()?;
                let module = sim.pop()?;
                match (module, name) {
                    (V::Str(m), V::Str(n)) => sim.import(&m, &n, "STACK_GLOBAL", offset),
                    _ => sim.import("?", "?", "STACK_GLOBAL", offset),
                }
                sim.push(V::Global)?
            } // STACK_GLOBAL
            0x82..=0x84 => {
                let width = [1, 2, 4][(op - 0x82) as usize];
                let code = r.uint(width)?;
                let opname = format!("EXT{width}");
                sim.import("copyreg.extension", &code.to_string(), &opname, offset);
                sim.push(V::Global)?
            } // EXT1, EXT2, EXT4
            b'g' => {
                let idx = r
                    .line()?
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| "GET with a bad index".to_string())?;
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
                let idx = r
                    .line()?
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| "PUT with a bad index".to_string())?;
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
                sim.pop_n((op - 0x84) as usize)?;
                sim.push(V::Other)?
            } // TUPLE1..3
            0x97 => sim.push(V::Other)?, // NEXT_BUFFER
            0x98 => {}                   // READONLY_BUFFER
            other => return Err(format!("unknown opcode 0x{other:02x} at byte {offset}")),
        }
    }
    Ok(PickleStream {
        member: member.into(),
        opcodes: ops,
        imports: sim.imports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(bytes: &[u8]) -> std::result::Result<PickleStream, String> {
        scan_stream(bytes, "t", &PickleScanOptions::default(), DEFAULT_ALLOWED)
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
        let s = scan(&p).unwrap();
        assert_eq!(s.imports.len(), 1);
        assert_eq!(s.imports[0].global(), "builtins.eval");
        assert!(!s.imports[0].allowed);
    }

    #[test]
    fn malformed_streams_are_errors_not_panics() {
        for bad in [
            &b"\x80\x02"[..],
            b"\xff.",
            b"0.",
            b"h\x05.",
            b"X\xff\xff\xff\xff",
            b"(((e",
        ] {
            assert!(scan(bad).is_err(), "{bad:?}");
        }
    }
}
