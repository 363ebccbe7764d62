//! Writing what trojanscan produces: reports, activations, signature bundles, registries
//! and fuzz corpora.
//!
//! Every output goes to a new temporary file beside its path (created exclusively, so a
//! link planted under the temporary name is not followed) and is renamed into place, so a
//! reader never sees half a file. The path itself must be absent or a regular file: a
//! symbolic link would be replaced by a new file (or, written through, change whatever it
//! points at), and renaming over a device such as `/dev/full` would replace the device
//! while reporting success. Both are [`Error::RefusedOutput`].

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Refuse `path` unless it is absent or a regular file (never following a link).
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let report = dir.path().join("report.json");
/// trojanscan::output::check(&report)?; // absent: fine
/// std::fs::write(&report, "{}")?;
/// trojanscan::output::check(&report)?; // a regular file: fine
/// assert!(matches!(
///     trojanscan::output::check(dir.path()),
///     Err(trojanscan::Error::RefusedOutput { .. })
/// ));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn check(path: &Path) -> Result<()> {
    let refuse = |why| {
        Err(Error::RefusedOutput {
            path: path.to_path_buf(),
            why,
        })
    };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
        Ok(m) if m.file_type().is_symlink() => refuse("it is a symbolic link"),
        Ok(m) if !m.is_file() => refuse("it is not a regular file"),
        Ok(_) => Ok(()),
    }
}

/// Write `bytes` to `path` through a temporary file and a rename, after [`check`].
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let out = dir.path().join("out.txt");
/// trojanscan::output::write(&out, b"one")?;
/// trojanscan::output::write(&out, b"two")?; // replaces a regular file
/// assert_eq!(std::fs::read(&out)?, b"two");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(path, |f| f.write_all(bytes))
}

/// Like [`write()`], with the contents written by `fill` (for outputs built line by line).
pub fn write_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    check(path)?;
    let tmp = temporary_name(path)?;
    let result = (|| {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        let mut w = std::io::BufWriter::new(file);
        fill(&mut w)?;
        w.flush()?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    // Checked again just before the rename: the path may have changed while writing.
    if let Err(e) = check(path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// `.NAME.PID.tmp` beside `path`.
fn temporary_name(path: &Path) -> Result<PathBuf> {
    let name = path.file_name().ok_or(Error::RefusedOutput {
        path: path.to_path_buf(),
        why: "it names no file",
    })?;
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".{}.tmp", std::process::id()));
    Ok(path.with_file_name(tmp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(unix)]
    fn links_and_devices_are_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target.txt");
        std::fs::write(&target, b"keep").unwrap();
        let link = dir.path().join("link.txt");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            write(&link, b"x"),
            Err(Error::RefusedOutput {
                why: "it is a symbolic link",
                ..
            })
        ));
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        if Path::new("/dev/null").exists() {
            assert!(matches!(
                write(Path::new("/dev/null"), b"x"),
                Err(Error::RefusedOutput {
                    why: "it is not a regular file",
                    ..
                })
            ));
        }
        // Nothing is left behind.
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 2);
    }

    #[test]
    fn a_path_with_no_file_name_is_refused() {
        assert!(matches!(
            write(Path::new("/"), b"x"),
            Err(Error::RefusedOutput { .. })
        ));
    }
}
