//! Atomic file writes: the content goes to a temporary file in the destination's directory,
//! is flushed to disk, and is renamed over the destination, and the directory entry itself is
//! flushed. A reader (or a crash) sees the old file or the new one, never half of one.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};

/// Writes `bytes` to `path` atomically.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(path, |tmp| {
        let mut file = File::create(tmp)?;
        file.write_all(bytes)?;
        Ok(())
    })
}

/// Atomically replaces `path` with what `fill` writes to the temporary path it is given; for
/// writers, such as libtorch's, that only take a file name. On error nothing is replaced and
/// the temporary file is removed.
pub fn write_with(path: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let inner = || -> Result<()> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        // The name keeps the destination's extension: some writers choose a format by it.
        let tmp = tempfile::Builder::new().prefix(".tmp-").suffix(&format!("-{name}")).tempfile_in(dir)?;
        // tempfile creates files private (0600); artifacts are for sharing, like any file.
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644))?;
        fill(tmp.path())?;
        File::open(tmp.path())?.sync_all()?;
        tmp.persist(path)?;
        File::open(dir)?.sync_all()?;
        Ok(())
    };
    inner().with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        write(&path, b"one").unwrap();
        write(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_fill_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        write(&path, b"old").unwrap();
        let err = write_with(&path, |_| anyhow::bail!("disk on fire")).unwrap_err();
        assert!(format!("{err:#}").contains("cannot write") && format!("{err:#}").contains("disk on fire"));
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_the_file() {
        let err = write(Path::new("/nonexistent-dir/x.json"), b"{}").unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/x.json"));
    }
}
