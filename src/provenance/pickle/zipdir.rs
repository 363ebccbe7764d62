//! The member table of a zip checkpoint, read from its central directory with every count,
//! offset and length checked against the file before anything is allocated or read.
//!
//! Torch reads zip checkpoints through miniz, by central-directory entry and by name
//! (ignoring ASCII case), so a hostile archive can point many entries at the same bytes,
//! give two entries one name (the scan would read one, torch another), or place members
//! inside the central directory. All of these are refused: entries must have distinct
//! names, and the byte ranges of their local headers and data must be disjoint and lie
//! before the central directory. Members then sum to less than the file, so no byte of a
//! pickle member is scanned twice.

use std::collections::HashSet;
use std::io::{BufReader, Read, Seek};

use super::{goto, MAX_ZIP_CENTRAL_DIRECTORY, MAX_ZIP_ENTRIES};

/// Why a zip checkpoint's layout is refused (the source of
/// [`Error::ZipArchive`](crate::Error::ZipArchive)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ZipArchiveError {
    /// No end-of-central-directory record, or the last one does not end the file exactly.
    #[error("no end-of-central-directory record ending the file")]
    NoEndRecord,

    /// A record of the archive is malformed.
    #[error("malformed {what}")]
    Malformed {
        /// Which record or field.
        what: &'static str,
    },

    /// The archive claims to span several disks.
    #[error("multi-disk archives are not read")]
    MultiDisk,

    /// The central directory lists more entries than allowed.
    #[error("{count} entries exceed the limit of {max}")]
    TooManyEntries {
        /// Entries claimed by the end record.
        count: u64,
        /// The limit ([`MAX_ZIP_ENTRIES`]).
        max: u64,
    },

    /// The central directory is larger than allowed.
    #[error("a central directory of {len} bytes exceeds the limit of {max}")]
    CentralDirectoryTooLarge {
        /// Its size claimed by the end record.
        len: u64,
        /// The limit ([`MAX_ZIP_CENTRAL_DIRECTORY`]).
        max: u64,
    },

    /// An offset or length points outside the file, or a member runs into the central
    /// directory.
    #[error("{what} lies outside the archive's data")]
    OutOfBounds {
        /// `central directory`, or the member.
        what: String,
    },

    /// Two entries share bytes: the same local-header offset, or overlapping local-header
    /// and data ranges.
    #[error("members `{first}` and `{second}` share bytes")]
    OverlappingMembers {
        /// The entry that starts first.
        first: String,
        /// The entry that starts inside it (or at the same offset).
        second: String,
    },

    /// Two entries have the same name, compared ignoring ASCII case as torch's reader does.
    #[error("two members are named `{name}`")]
    DuplicateName {
        /// The second entry's name.
        name: String,
    },

    /// A pickle member is compressed or encrypted: only stored members (what `torch.save`
    /// writes) are scanned.
    #[error("pickle member `{member}` is compressed (method {method}) or encrypted")]
    UnsupportedMember {
        /// The member.
        member: String,
        /// Its compression method (0 is stored).
        method: u16,
        /// Whether it is encrypted.
        encrypted: bool,
    },
}

type Zr<T> = std::result::Result<T, ZipArchiveError>;

/// One entry of the central directory, validated.
pub(super) struct Member {
    /// Name (lossy UTF-8).
    pub name: String,
    /// Compression method.
    pub method: u16,
    /// Whether it is encrypted.
    pub encrypted: bool,
    /// Where its data starts in the file.
    pub data_start: u64,
    /// Bytes of data in the file.
    pub size: u64,
    /// Bytes once decompressed.
    pub uncompressed: u64,
    /// Whether torch would unpickle it (`*.pkl`, any ASCII case).
    pub pickle: bool,
}

const EOCD_SIG: u32 = 0x0605_4b50;
const EOCD_LEN: u64 = 22;
const LOCATOR_SIG: u32 = 0x0706_4b50;
const LOCATOR_LEN: u64 = 20;
const EOCD64_SIG: u32 = 0x0606_4b50;
const EOCD64_LEN: u64 = 56;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const CENTRAL_LEN: usize = 46;
const LOCAL_SIG: u32 = 0x0403_4b50;
const LOCAL_LEN: u64 = 30;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Read `n` bytes at `at` (both already checked against the file length).
fn read_at<R: Read + Seek>(
    r: &mut BufReader<R>,
    pos: &mut u64,
    at: u64,
    n: usize,
) -> std::io::Result<Vec<u8>> {
    goto(r, *pos, at)?;
    let mut v = vec![0u8; n];
    r.read_exact(&mut v)?;
    *pos = at + n as u64;
    Ok(v)
}

/// The archive's end record, resolved through its zip64 records when it has them.
struct End {
    entries: u64,
    cd_offset: u64,
    cd_size: u64,
    /// Where the central directory must end: the zip64 end record, or the end record.
    cd_end: u64,
}

fn end_record<R: Read + Seek>(r: &mut BufReader<R>, pos: &mut u64, len: u64) -> Zr<End> {
    let io = |_| ZipArchiveError::Malformed {
        what: "end of archive (unreadable)",
    };
    if len < EOCD_LEN {
        return Err(ZipArchiveError::NoEndRecord);
    }
    // The record is 22 bytes plus a comment of at most 64 KiB. Like miniz, take the last
    // signature with room for a record after it; unlike it, insist that its comment ends the
    // file, so no bytes hide after the archive.
    let tail_len = len.min(EOCD_LEN + u64::from(u16::MAX));
    let tail_start = len - tail_len;
    let tail = read_at(r, pos, tail_start, tail_len as usize).map_err(io)?;
    let at = (0..=tail.len() - EOCD_LEN as usize)
        .rev()
        .find(|&i| u32_at(&tail, i) == EOCD_SIG)
        .ok_or(ZipArchiveError::NoEndRecord)?;
    let e = &tail[at..];
    if EOCD_LEN + u64::from(u16_at(e, 20)) != e.len() as u64 {
        return Err(ZipArchiveError::NoEndRecord);
    }
    let eocd_pos = tail_start + at as u64;
    let (disk, cd_disk) = (u16_at(e, 4), u16_at(e, 6));
    let (disk_entries, entries) = (u16_at(e, 8), u16_at(e, 10));
    let (cd_size, cd_offset) = (u32_at(e, 12), u32_at(e, 16));
    let has_locator = eocd_pos >= LOCATOR_LEN && {
        let l = read_at(r, pos, eocd_pos - LOCATOR_LEN, 4).map_err(io)?;
        u32_at(&l, 0) == LOCATOR_SIG
    };
    if !has_locator {
        // Without zip64 records a saturated field is taken at its face value (as Python's
        // zipfile does; 65,535 entries fit one), then checked like any other.
        if disk != 0 || cd_disk != 0 || disk_entries != entries {
            return Err(ZipArchiveError::MultiDisk);
        }
        return Ok(End {
            entries: entries.into(),
            cd_offset: cd_offset.into(),
            cd_size: cd_size.into(),
            cd_end: eocd_pos,
        });
    }
    let locator_pos = eocd_pos - LOCATOR_LEN;
    let l = read_at(r, pos, locator_pos, LOCATOR_LEN as usize).map_err(io)?;
    if u32_at(&l, 4) != 0 || u32_at(&l, 16) != 1 {
        return Err(ZipArchiveError::MultiDisk);
    }
    let eocd64_pos = u64_at(&l, 8);
    // The zip64 end record (without extensible data, which no reader here needs) must end
    // where the locator starts.
    if eocd64_pos.checked_add(EOCD64_LEN) != Some(locator_pos) {
        return Err(ZipArchiveError::Malformed {
            what: "zip64 end-record locator",
        });
    }
    let z = read_at(r, pos, eocd64_pos, EOCD64_LEN as usize).map_err(io)?;
    if u32_at(&z, 0) != EOCD64_SIG || u64_at(&z, 4) != EOCD64_LEN - 12 {
        return Err(ZipArchiveError::Malformed {
            what: "zip64 end record",
        });
    }
    if u32_at(&z, 16) != 0 || u32_at(&z, 20) != 0 || u64_at(&z, 24) != u64_at(&z, 32) {
        return Err(ZipArchiveError::MultiDisk);
    }
    Ok(End {
        entries: u64_at(&z, 32),
        cd_size: u64_at(&z, 40),
        cd_offset: u64_at(&z, 48),
        cd_end: eocd64_pos,
    })
}

/// A central-directory entry as listed, before its local header is read.
struct Listed {
    name: String,
    folded: Vec<u8>,
    method: u16,
    encrypted: bool,
    size: u64,
    uncompressed: u64,
    header: u64,
}

/// The zip64 extended-information extra field supplies, in this order, each of
/// uncompressed size, compressed size and local-header offset whose 32-bit field is saturated.
fn zip64_extra(extra: &[u8], wanted: [bool; 3]) -> Zr<[Option<u64>; 3]> {
    let bad = ZipArchiveError::Malformed {
        what: "zip64 extra field",
    };
    let mut rest = extra;
    while rest.len() >= 4 {
        let (id, n) = (u16_at(rest, 0), usize::from(u16_at(rest, 2)));
        let body = rest.get(4..4 + n).ok_or(bad.clone())?;
        if id == 0x0001 {
            let mut out = [None; 3];
            let mut at = 0;
            for (slot, want) in out.iter_mut().zip(wanted) {
                if want {
                    let b = body.get(at..at + 8).ok_or(bad.clone())?;
                    *slot = Some(u64_at(b, 0));
                    at += 8;
                }
            }
            return Ok(out);
        }
        rest = &rest[4 + n..];
    }
    if wanted.iter().any(|&w| w) {
        return Err(bad);
    }
    Ok([None; 3])
}

fn list_entries(cd: &[u8], count: u64) -> Zr<Vec<Listed>> {
    let bad = |what| ZipArchiveError::Malformed { what };
    let mut out = Vec::with_capacity(count as usize);
    let mut names = HashSet::with_capacity(count as usize);
    let mut at = 0usize;
    for _ in 0..count {
        let h = cd
            .get(at..at + CENTRAL_LEN)
            .ok_or(bad("central directory (entries run past its end)"))?;
        if u32_at(h, 0) != CENTRAL_SIG {
            return Err(bad("central directory entry signature"));
        }
        let flags = u16_at(h, 8);
        let method = u16_at(h, 10);
        let size32 = u32_at(h, 20);
        let usize32 = u32_at(h, 24);
        let (name_len, extra_len, comment_len) = (
            usize::from(u16_at(h, 28)),
            usize::from(u16_at(h, 30)),
            usize::from(u16_at(h, 32)),
        );
        let disk = u16_at(h, 34);
        let header32 = u32_at(h, 42);
        let var = at + CENTRAL_LEN;
        let next = var + name_len + extra_len + comment_len;
        let raw_name = cd
            .get(var..var + name_len)
            .ok_or(bad("central directory (entries run past its end)"))?;
        let extra = cd
            .get(var + name_len..var + name_len + extra_len)
            .ok_or(bad("central directory (entries run past its end)"))?;
        if next > cd.len() {
            return Err(bad("central directory (entries run past its end)"));
        }
        let [u64s, c64, h64] = zip64_extra(
            extra,
            [
                usize32 == u32::MAX,
                size32 == u32::MAX,
                header32 == u32::MAX,
            ],
        )?;
        if disk != 0 && disk != u16::MAX {
            return Err(ZipArchiveError::MultiDisk);
        }
        let name = String::from_utf8_lossy(raw_name).into_owned();
        let folded = raw_name.to_ascii_lowercase();
        if !names.insert(folded.clone()) {
            return Err(ZipArchiveError::DuplicateName { name });
        }
        out.push(Listed {
            name,
            folded,
            method,
            encrypted: flags & 1 != 0,
            size: c64.unwrap_or(size32.into()),
            uncompressed: u64s.unwrap_or(usize32.into()),
            header: h64.unwrap_or(header32.into()),
        });
        at = next;
    }
    if at != cd.len() {
        return Err(bad("central directory (bytes after its last entry)"));
    }
    Ok(out)
}

/// Read and validate a zip archive's member table (file order is the central directory's).
pub(super) fn members<R: Read + Seek>(
    r: &mut BufReader<R>,
    len: u64,
) -> std::result::Result<Vec<Member>, ZipArchiveError> {
    let mut pos = r
        .stream_position()
        .map_err(|_| ZipArchiveError::Malformed {
            what: "archive (unreadable)",
        })?;
    let end = end_record(r, &mut pos, len)?;
    if end.entries > MAX_ZIP_ENTRIES as u64 {
        return Err(ZipArchiveError::TooManyEntries {
            count: end.entries,
            max: MAX_ZIP_ENTRIES as u64,
        });
    }
    if end.cd_size > MAX_ZIP_CENTRAL_DIRECTORY {
        return Err(ZipArchiveError::CentralDirectoryTooLarge {
            len: end.cd_size,
            max: MAX_ZIP_CENTRAL_DIRECTORY,
        });
    }
    // The central directory must fill the gap before the end records exactly (nothing can
    // hide between them), and hold at least the fixed part of every entry it claims.
    if end.cd_offset.checked_add(end.cd_size) != Some(end.cd_end) {
        return Err(ZipArchiveError::OutOfBounds {
            what: "central directory".into(),
        });
    }
    if end.entries.saturating_mul(CENTRAL_LEN as u64) > end.cd_size {
        return Err(ZipArchiveError::Malformed {
            what: "central directory (too small for its entries)",
        });
    }
    let cd = read_at(r, &mut pos, end.cd_offset, end.cd_size as usize).map_err(|_| {
        ZipArchiveError::Malformed {
            what: "central directory (unreadable)",
        }
    })?;
    let listed = list_entries(&cd, end.entries)?;
    drop(cd);

    // Walk entries by local-header offset: each range (local header and data) must end
    // before the next one starts, so a repeated offset fails at its second entry, before
    // that entry's header is read, and entries pointing into one member fail just as fast.
    let mut order: Vec<usize> = (0..listed.len()).collect();
    order.sort_by_key(|&i| listed[i].header);
    let mut data = vec![(0u64, 0u64); listed.len()];
    let mut prev: Option<(usize, u64)> = None;
    for &i in &order {
        let e = &listed[i];
        if let Some((p, prev_end)) = prev {
            if e.header < prev_end {
                return Err(ZipArchiveError::OverlappingMembers {
                    first: listed[p].name.clone(),
                    second: e.name.clone(),
                });
            }
        }
        let outside = || ZipArchiveError::OutOfBounds {
            what: format!("member `{}`", e.name),
        };
        if e.header
            .checked_add(LOCAL_LEN)
            .is_none_or(|h| h > end.cd_offset)
        {
            return Err(outside());
        }
        let h = read_at(r, &mut pos, e.header, LOCAL_LEN as usize).map_err(|_| {
            ZipArchiveError::Malformed {
                what: "local header (unreadable)",
            }
        })?;
        if u32_at(&h, 0) != LOCAL_SIG {
            return Err(ZipArchiveError::Malformed {
                what: "local header signature",
            });
        }
        let data_start =
            e.header + LOCAL_LEN + u64::from(u16_at(&h, 26)) + u64::from(u16_at(&h, 28));
        let data_end = data_start
            .checked_add(e.size)
            .filter(|&d| d <= end.cd_offset)
            .ok_or_else(outside)?;
        data[i] = (data_start, e.size);
        prev = Some((i, data_end));
    }
    Ok(listed
        .into_iter()
        .zip(data)
        .map(|(e, (data_start, size))| Member {
            pickle: e.folded.ends_with(b".pkl"),
            name: e.name,
            method: e.method,
            encrypted: e.encrypted,
            data_start,
            size,
            uncompressed: e.uncompressed,
        })
        .collect())
}

/// Check that a pickle member can be read as it is stored.
pub(super) fn check_readable(m: &Member) -> Zr<()> {
    if m.method != 0 || m.encrypted {
        return Err(ZipArchiveError::UnsupportedMember {
            member: m.name.clone(),
            method: m.method,
            encrypted: m.encrypted,
        });
    }
    if m.uncompressed != m.size {
        return Err(ZipArchiveError::Malformed {
            what: "stored member (sizes differ)",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zip64_extra_holds_only_the_saturated_fields() {
        // id 1, 16 bytes: compressed size and local-header offset (uncompressed was not saturated).
        let mut extra = vec![0x0a, 0x00, 0x00, 0x00];
        extra.extend([1, 0, 16, 0]);
        extra.extend(7u64.to_le_bytes());
        extra.extend(9u64.to_le_bytes());
        assert_eq!(
            zip64_extra(&extra, [false, true, true]),
            Ok([None, Some(7), Some(9)])
        );
        // A saturated field without its value, or a field running past the extra data.
        assert!(zip64_extra(&extra, [true, true, true]).is_err());
        assert!(zip64_extra(&[1, 0, 16, 0, 1, 2], [true, false, false]).is_err());
        assert!(zip64_extra(&[], [false, false, true]).is_err());
    }
}
