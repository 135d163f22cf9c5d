//! Atomic file writes: a reader sees either the old file or the whole new
//! one, never a half-written result that looks finished.
//!
//! The content goes to a temporary file in the same folder (so the final
//! `rename` stays on one file system and is atomic), is flushed to disk, and
//! only then replaces the destination.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Result, SceneError};

/// Writes a file atomically through `fill`, which gets a buffered writer.
///
/// On any error (from `fill`, the disk, or the rename) the temporary file is
/// removed and the destination is left untouched.
pub fn write_atomic<F>(path: &Path, fill: F) -> Result<()>
where
    F: FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
{
    let tmp = temporary_sibling(path);
    let outcome = (|| {
        let file = File::create(&tmp)?;
        let mut writer = BufWriter::with_capacity(1 << 20, file);
        fill(&mut writer)?;
        writer.flush()?;
        let file = writer.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)
    })();
    if let Err(source) = outcome {
        let _ = std::fs::remove_file(&tmp);
        return Err(SceneError::io(path, source));
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |w| w.write_all(bytes))
}

/// A unique temporary name beside `path`, starting with a dot so that file
/// browsers and globs for the final name do not pick it up.
pub fn temporary_sibling(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let unique = format!(".{name}.{}.{}.partial", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    path.with_file_name(unique)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_keeps_old_content_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        write_bytes_atomic(&path, b"old").unwrap();
        let err = write_atomic(&path, |w| {
            w.write_all(b"half")?;
            Err(std::io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("a.txt"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "temporary file left behind");
    }

    #[test]
    fn unwritable_folder_names_the_file() {
        let err = write_bytes_atomic(Path::new("/nonexistent-dir/x.ply"), b"x").unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/x.ply"), "{err}");
    }
}
