//! Writing result files so that a crash never leaves a half-written file that
//! looks whole: each file is written under a temporary name in the same
//! directory, flushed to disk, and renamed over its final name.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Writes `path` atomically: `fill` writes the content into a buffered
/// temporary file, which is synced and renamed to `path` only if `fill`
/// succeeds.
///
/// # Errors
/// When the directory is not writable or `fill` fails; the temporary file is
/// removed then, and `path` keeps its previous content, if any.
pub fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> io::Result<()> {
    let temporary = temporary_name(path);
    let result = (|| {
        let mut writer = BufWriter::with_capacity(1 << 20, File::create(&temporary)?);
        fill(&mut writer)?;
        let file = writer.into_inner().map_err(|err| err.into_error())?;
        file.sync_all()?;
        fs::rename(&temporary, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result.map_err(|err| io::Error::new(err.kind(), format!("writing {}: {err}", path.display())))
}

/// `dir/.name.tmp-PID`: hidden, in the same directory (so the rename is
/// atomic), and distinct per process.
fn temporary_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes `value` as pretty JSON to `path`, atomically.
///
/// # Errors
/// As [`write_atomic`].
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> io::Result<()> {
    write_atomic(path, |writer| {
        serde_json::to_writer_pretty(&mut *writer, value)?;
        writer.write_all(b"\n")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_keeps_the_previous_file_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("deltarec-output-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("result.txt");
        write_atomic(&path, |writer| writer.write_all(b"first")).unwrap();
        let failed = write_atomic(&path, |writer| {
            writer.write_all(b"half")?;
            Err(io::Error::other("disk full"))
        });
        assert!(failed.unwrap_err().to_string().contains("result.txt"));
        assert_eq!(fs::read_to_string(&path).unwrap(), "first");
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .filter(|entry| {
                entry
                    .as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".tmp-")
            })
            .collect();
        assert!(leftovers.is_empty());
    }
}
