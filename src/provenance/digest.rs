//! Streaming SHA-256 of files, many files hashed in parallel.
//!
//! Each file is read in [`HASH_CHUNK_BYTES`] chunks into one reused buffer, so memory stays
//! flat whatever the file size; files are spread over a rayon pool. `sha2` picks the CPU's
//! SHA extensions at run time when present.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use sha2::{Digest as _, Sha256};

use crate::{Error, Result};

/// Bytes read per `read` call while hashing.
pub const HASH_CHUNK_BYTES: usize = 1 << 20;

/// A SHA-256 digest. Serialized (and displayed) as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// The digest of `bytes`.
    ///
    /// ```
    /// use trojanscan::provenance::Sha256Digest;
    /// assert_eq!(
    ///     Sha256Digest::of_bytes(b"abc").to_hex(),
    ///     "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    /// );
    /// ```
    pub fn of_bytes(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex_encode(&self.0)
    }

    /// Parse 64 hex digits (either case); `None` for anything else.
    pub fn from_hex(s: &str) -> Option<Self> {
        let bytes = hex_decode(s)?;
        Some(Self(bytes.try_into().ok()?))
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({})", self.to_hex())
    }
}

impl serde::Serialize for Sha256Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Sha256Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::from_hex(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("`{s}` is not a SHA-256 digest (64 hex digits)"))
        })
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Bytes of a hex string (either case); `None` on odd length or a non-hex digit.
pub(crate) fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    let val = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(val(p[0])? << 4 | val(p[1])?))
        .collect()
}

/// SHA-256 of everything `r` yields, and the number of bytes read.
pub fn sha256_reader<R: Read>(mut r: R) -> std::io::Result<(Sha256Digest, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; HASH_CHUNK_BYTES];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((Sha256Digest(hasher.finalize().into()), total))
}

/// SHA-256 of one file, streamed, and its length in bytes.
///
/// The file is opened as every file of a model is, so what is hashed is what a load
/// reads: a symbolic link is [`Error::Symlink`], a FIFO or device [`Error::SpecialFile`]
/// (never a hash that waits forever for a writer).
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// let p = dir.path().join("w.bin");
/// std::fs::write(&p, b"abc")?;
/// let (d, len) = trojanscan::provenance::sha256_file(&p)?;
/// assert_eq!(len, 3);
/// assert!(d.to_hex().starts_with("ba7816bf"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn sha256_file(path: &Path) -> Result<(Sha256Digest, u64)> {
    let f = crate::model::source::open_regular(path)?;
    sha256_reader(f).map_err(|e| Error::io(path, e))
}

/// One line of `sha256sum` output for `path`, escaped as GNU sha256sum escapes it: a name
/// holding a backslash, newline or carriage return is written with `\\`, `\n` and `\r`
/// and the line starts with a backslash, so no file name can forge another line.
///
/// ```
/// use trojanscan::provenance::{sha256sum_line, Sha256Digest};
/// let d = Sha256Digest::of_bytes(b"");
/// let plain = sha256sum_line(&d, std::path::Path::new("m/config.json"));
/// assert_eq!(plain, format!("{d}  m/config.json"));
/// let forged = sha256sum_line(&d, std::path::Path::new("a\nfff  b"));
/// assert_eq!(forged, format!("\\{d}  a\\nfff  b"));
/// ```
pub fn sha256sum_line(digest: &Sha256Digest, path: &Path) -> String {
    let name = path.to_string_lossy();
    if !name.contains(['\\', '\n', '\r']) {
        return format!("{digest}  {name}");
    }
    let escaped = name
        .replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('\r', "\\r");
    format!("\\{digest}  {escaped}")
}

/// The most hashing threads a caller may ask for.
pub const MAX_THREADS: usize = 256;

/// SHA-256 of many files, hashed in parallel; results are in the order of `paths`.
///
/// `threads` caps the workers (`Some(1)` hashes on the calling thread, one file after the
/// other); `None` uses rayon's global pool (one worker per core).
pub fn sha256_files(paths: &[PathBuf], threads: Option<usize>) -> Result<Vec<(Sha256Digest, u64)>> {
    match threads {
        Some(0) => Err(Error::InvalidArgument(
            "hashing threads must be at least 1".into(),
        )),
        Some(n) if n > MAX_THREADS => Err(Error::InvalidArgument(format!(
            "{n} hashing threads asked for; at most {MAX_THREADS}"
        ))),
        Some(1) => paths.iter().map(|p| sha256_file(p)).collect(),
        Some(n) => {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .map_err(|e| Error::InvalidArgument(format!("hashing thread pool: {e}")))?;
            pool.install(|| paths.par_iter().map(|p| sha256_file(p)).collect())
        }
        None => paths.par_iter().map(|p| sha256_file(p)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let d = Sha256Digest::of_bytes(b"");
        assert_eq!(
            d.to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Sha256Digest::from_hex(&d.to_hex().to_uppercase()), Some(d));
        assert_eq!(Sha256Digest::from_hex("abc"), None);
        assert_eq!(Sha256Digest::from_hex(&"zz".repeat(32)), None);
        assert_eq!(Sha256Digest::from_hex(&"00".repeat(31)), None);
    }

    #[test]
    fn streaming_matches_one_shot_across_chunks() {
        let data: Vec<u8> = (0..(HASH_CHUNK_BYTES * 2 + 17))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let (d, n) = sha256_reader(&data[..]).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(d, Sha256Digest::of_bytes(&data));
    }
}
