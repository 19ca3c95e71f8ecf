//! Reading input files with a size cap, and replacing files atomically (every file perturb writes).

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// FNV-1a, 64-bit: the hash of data references, of a checkpoint's own text and of a pipeline
/// cache file's data.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

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

/// The prefix of every temporary file [`write_atomic`] makes: `.perturb-tmp-PID-N.NAME`, so that a
/// file left by a killed writer is recognisable (and removed by the next successful write of NAME),
/// and the temporary file keeps NAME's extension for writers that go by it (plots).
pub const TEMP_PREFIX: &str = ".perturb-tmp-";

/// Replaces `path` with `bytes` atomically ([`write_atomic_via`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_via(path, |tmp| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(tmp)?;
        f.write_all(bytes)
    })
}

/// Replaces `path` with what `write` puts in the file at the path it is given, so that a crash at
/// any moment leaves either the old file or the new one, never a mix: `write` fills a temporary
/// file in the same directory, which is `sync_all`ed, renamed over `path`, and the directory synced
/// where the platform allows. On failure the temporary file is removed, `path` is untouched and the
/// error names `path` (never the temporary file). After a successful write, temporary files of
/// `path` left by writers that no longer run are removed.
///
/// A symbolic link at `path` is replaced, not followed: callers that write through links resolve
/// them first (the command line does, `cli::outputs`).
pub fn write_atomic_via(path: &Path, write: impl FnOnce(&Path) -> io::Result<()>) -> Result<()> {
    let name = path.file_name().ok_or_else(|| {
        Error::io(
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "not a file name"),
        )
    })?;
    let dir = parent_dir(path);
    let tmp = temp_path(dir, name);
    let written = write(&tmp).and_then(|()| File::open(&tmp)?.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
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
    remove_stray_temporaries(dir, &name.to_string_lossy());
    Ok(())
}

/// A fresh temporary file name for `name` in `dir`: unique per process and call, so concurrent
/// writers never share one.
fn temp_path(dir: &Path, name: &std::ffi::OsStr) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    dir.join(format!(
        "{TEMP_PREFIX}{}-{}.{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        name.to_string_lossy()
    ))
}

/// Checks that [`write_atomic`] could write `path` now: creates (and removes) a temporary file in
/// its directory. The error names `path` and says why, before any work is spent on what it would
/// hold. (A full disk still fails at the write itself.)
pub fn check_writable(path: &Path) -> Result<()> {
    let name = path.file_name().ok_or_else(|| {
        Error::io(
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "not a file name"),
        )
    })?;
    let dir = parent_dir(path);
    let tmp = temp_path(dir, name);
    match OpenOptions::new().write(true).create_new(true).open(&tmp) {
        Ok(_) => {
            let _ = std::fs::remove_file(&tmp);
            Ok(())
        }
        Err(e) => Err(Error::io(
            path,
            io::Error::new(
                e.kind(),
                format!("cannot create a file in {}: {e}", dir.display()),
            ),
        )),
    }
}

/// The directory `path` is in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Removes `dir`'s temporary files of `name` whose writer no longer runs (a writer killed between
/// creating and renaming its file). Files of live processes, and all of them where liveness cannot
/// be told, are kept.
fn remove_stray_temporaries(dir: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(pid) = temp_owner(&file.to_string_lossy(), name) else {
            continue;
        };
        if pid != me && process_alive(pid) == Some(false) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The process id in a temporary file name `.perturb-tmp-PID-N.NAME` of `name`, if it is one.
fn temp_owner(file: &str, name: &str) -> Option<u32> {
    let rest = file.strip_prefix(TEMP_PREFIX)?.strip_suffix(name)?;
    let (pid, n) = rest.strip_suffix('.')?.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// Whether process `pid` runs: `None` where the platform does not tell (no `/proc`).
pub fn process_alive(pid: u32) -> Option<bool> {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return None;
    }
    Some(proc.join(pid.to_string()).exists())
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

    #[test]
    fn temporary_names_are_told_apart_by_file_and_owner() {
        let name = format!("{TEMP_PREFIX}123-4.c.json");
        assert_eq!(temp_owner(&name, "c.json"), Some(123));
        assert_eq!(temp_owner(&name, "b.c.json"), None);
        assert_eq!(
            temp_owner(&format!("{TEMP_PREFIX}123-4.xc.json"), "c.json"),
            None
        );
        assert_eq!(
            temp_owner(&format!("{TEMP_PREFIX}x-4.c.json"), "c.json"),
            None
        );
        assert_eq!(temp_owner("c.json", "c.json"), None);
    }

    #[test]
    fn a_failed_write_names_the_file_and_leaves_it_whole() {
        let dir = std::env::temp_dir().join(format!("perturb-fileio-fail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.txt");
        write_atomic(&path, b"old").unwrap();
        let e = write_atomic_via(&path, |tmp| {
            std::fs::write(tmp, b"half")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with(&path.display().to_string()), "{text}");
        assert!(!text.contains(TEMP_PREFIX), "{text}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["f.txt"], "left behind: {names:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
