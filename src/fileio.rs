//! Reading input files with a size cap, and replacing files atomically.

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Reads at most `max` bytes of `reader`; `Ok(None)` when there is more.
///
/// The cap holds for files whose size the metadata does not tell (pipes, `/dev/zero`, `/proc`), so a
/// wrong path can never make a loader read without end.
pub fn read_at_most(reader: impl Read, max: u64) -> io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    reader.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= max).then_some(bytes))
}

/// Reads a UTF-8 text file of at most `max` bytes. A larger file becomes the error `too_large`
/// builds from a one-line description; an unreadable or non-UTF-8 one an [`Error::Io`] naming it.
pub fn read_text_capped(
    path: &Path,
    max: u64,
    too_large: impl FnOnce(String) -> Error,
) -> Result<String> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    // Regular files are refused from their size alone, before anything is read.
    let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if size > max {
        return Err(too_large(format!("{size} bytes; the limit is {max}")));
    }
    let bytes = read_at_most(file, max)
        .map_err(|e| Error::io(path, e))?
        .ok_or_else(|| too_large(format!("more than {max} bytes (the limit)")))?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        Error::io(
            path,
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not UTF-8 text (invalid byte at offset {at})"),
            ),
        )
    })
}

/// Replaces `path` with `bytes` so that a crash at any moment leaves either the old file or the
/// new one, never a mix: writes a temporary file in the same directory, `sync_all`s it, renames it
/// over `path`, then syncs the directory where the platform allows. On failure the temporary file
/// is removed and `path` is untouched. (A symbolic link at `path` is replaced, not followed.)
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| {
        Error::io(
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "not a file name"),
        )
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // Unique per process and call, so concurrent writers never share a temporary file.
    let tmp = dir.join(format!(
        ".{}.{}-{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    // The rename is durable once the directory entry is; not every platform or file system lets a
    // directory be opened and synced, so failure here is not an error.
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_at_most_refuses_one_byte_over_the_cap() {
        const CAP: u64 = 8;
        let exact = read_at_most(&[7u8; CAP as usize][..], CAP).unwrap();
        assert_eq!(exact.as_deref(), Some(&[7u8; CAP as usize][..]));
        let over = read_at_most(&[7u8; CAP as usize + 1][..], CAP).unwrap();
        assert_eq!(over, None);
    }

    #[test]
    fn read_at_most_stops_on_an_endless_reader() {
        const CAP: u64 = 1 << 16;
        // io::repeat never ends, like /dev/zero; the cap still returns.
        assert_eq!(read_at_most(io::repeat(0), CAP).unwrap(), None);
    }

    #[cfg(unix)]
    #[test]
    fn dev_zero_is_refused_at_the_cap() {
        const CAP: u64 = 1 << 16;
        let e = read_text_capped(Path::new("/dev/zero"), CAP, Error::Config).unwrap_err();
        assert!(e.to_string().contains("more than 65536 bytes"), "{e}");
    }

    #[test]
    fn write_atomic_replaces_and_leaves_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("perturb-fileio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.txt");
        write_atomic(&path, b"old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["f.txt"], "left behind: {names:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
