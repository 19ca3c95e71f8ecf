//! Outputs are checked before anything runs, and a checkpoint is held by one run at a time.
//!
//! [`Outputs::check`] refuses an output that is one of the inputs or another output (by canonical
//! path and by device and inode, so links and `./` spellings are caught), an existing output that is
//! not a regular file (a directory, device, FIFO or socket: `--checkpoint /dev/null` would otherwise
//! rename a file over the device node), and a directory no file can be created in. A symbolic link
//! is written through: the file it points at is replaced, the link stays.
//!
//! [`Lock`] is `FILE.lock` next to a checkpoint, held with an advisory lock for the run's life, so
//! that a second run on the same checkpoint is refused; the kernel drops the lock when its holder
//! dies, so a lock file left by a killed run is taken over (with a note on stderr).

use crate::error::{Error, Result};
use crate::fileio;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

/// One output as the run will write it.
#[derive(Debug, Clone)]
pub struct Output {
    /// The flag that named it (`--report`), or what it is (`the fallback checkpoint`).
    pub flag: &'static str,
    /// The path as given.
    pub given: PathBuf,
    /// Where it is written: `given`, or the file a symbolic link at `given` points at.
    pub target: PathBuf,
    /// The canonical path of `target`, what outputs and inputs are compared by.
    canonical: PathBuf,
    /// Device and inode of `target` when it exists.
    id: Option<(u64, u64)>,
}

/// An output to check: its flag, its path, and whether its directory must be writable now (the
/// fallback checkpoint is a last resort, only written when something else failed).
pub struct Want<'a> {
    /// The flag that names it.
    pub flag: &'static str,
    /// Its path.
    pub path: &'a Path,
    /// Whether to refuse the run when its directory cannot be written.
    pub probe: bool,
    /// Given up instead of refused when it is an input or another output (a fallback).
    pub last_resort: bool,
}

/// The checked outputs of a run.
#[derive(Debug, Default)]
pub struct Outputs {
    list: Vec<Output>,
}

impl Outputs {
    /// Checks `outputs` against `inputs` (flag, path; a path that does not exist is no file, and an
    /// `A,B` pair that does not exist as a whole is checked part by part) and against each other.
    /// `allowed` lists (output flag, input flag) pairs that may be one file: a resumed checkpoint
    /// continues in its own file.
    pub fn check(
        inputs: &[(&'static str, &Path)],
        outputs: &[Want<'_>],
        allowed: &[(&str, &str)],
    ) -> Result<Outputs> {
        let mut list: Vec<Output> = Vec::new();
        let files = input_files(inputs);
        for want in outputs {
            let out = match resolve(want) {
                Err(_) if want.last_resort => continue,
                r => r?,
            };
            if want.probe {
                fileio::check_writable(&out.target)?;
            }
            let input = files
                .iter()
                .find(|(flag, input)| !allowed.contains(&(out.flag, flag)) && same(&out, input));
            let other = list
                .iter()
                .find(|o| o.canonical == out.canonical || (o.id.is_some() && o.id == out.id));
            let clash = match (input, other) {
                (None, None) => {
                    list.push(out);
                    continue;
                }
                _ if want.last_resort => continue,
                (Some((flag, input)), _) => format!(
                    "{} {} is the {flag} file {}; an output never replaces an input, write it elsewhere",
                    out.flag,
                    out.given.display(),
                    input.display()
                ),
                (None, Some(other)) => format!(
                    "{} {} and {} {} are one file; give each output its own path",
                    other.flag,
                    other.given.display(),
                    out.flag,
                    out.given.display()
                ),
            };
            return Err(Error::Config(clash));
        }
        Ok(Outputs { list })
    }

    /// Where the output named `flag` is written (symbolic links resolved), if it was checked.
    pub fn target(&self, flag: &str) -> Option<&Path> {
        self.list
            .iter()
            .find(|o| o.flag == flag)
            .map(|o| o.target.as_path())
    }
}

/// Checks the outputs of a command that is not a training run (`sweep`, `check`, `bench`,
/// `predict`) as [`Outputs::check`] does, every output directory probed; absent flags are skipped.
pub fn check_plain(
    inputs: &[(&'static str, Option<&Path>)],
    outputs: &[(&'static str, Option<&Path>)],
) -> Result<Outputs> {
    let inputs: Vec<(&'static str, &Path)> = inputs
        .iter()
        .filter_map(|&(flag, p)| Some((flag, p?)))
        .collect();
    let wants: Vec<Want> = outputs
        .iter()
        .filter_map(|&(flag, path)| {
            Some(Want {
                flag,
                path: path?,
                probe: true,
                last_resort: false,
            })
        })
        .collect();
    Outputs::check(&inputs, &wants, &[])
}

/// The input files behind `inputs`: each that exists, and the parts of a pair (`x.npy,y.npy`,
/// `IMAGES,LABELS`) that does not exist as one name.
fn input_files(inputs: &[(&'static str, &Path)]) -> Vec<(&'static str, PathBuf)> {
    let mut files = Vec::new();
    for &(flag, path) in inputs {
        if path.exists() {
            files.push((flag, path.to_path_buf()));
            continue;
        }
        let text = path.to_string_lossy();
        for part in text.split(',') {
            let part = Path::new(part);
            if part.exists() {
                files.push((flag, part.to_path_buf()));
            }
        }
    }
    files
}

/// Whether output `out` is the existing file `input`.
fn same(out: &Output, input: &Path) -> bool {
    if out.id.is_some() && out.id == file_id(input) {
        return true;
    }
    input.canonicalize().is_ok_and(|c| c == out.canonical)
}

/// An output's target, canonical path and identity; refuses what cannot be replaced by a file.
fn resolve(want: &Want<'_>) -> Result<Output> {
    let path = want.path;
    let refuse = |why: String| {
        Error::io(
            path,
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{why}; {} needs a regular file", want.flag),
            ),
        )
    };
    let target = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => path.to_path_buf(),
        Err(e) => return Err(Error::io(path, e)),
        Ok(m) => {
            let (meta, target) = match m.file_type().is_symlink() {
                // Written through: the file the link points at is replaced, the link kept.
                true => match (std::fs::metadata(path), path.canonicalize()) {
                    (Ok(meta), Ok(target)) => (meta, target),
                    _ => return Err(refuse("a symbolic link to nothing".into())),
                },
                false => (m, path.to_path_buf()),
            };
            if !meta.is_file() {
                return Err(refuse(format!("is {}, not a regular file", kind(&meta))));
            }
            target
        }
    };
    let canonical = match target.canonicalize() {
        Ok(c) => c,
        Err(_) => {
            let dir = fileio::parent_dir(&target);
            let dir = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
            match target.file_name() {
                Some(name) => dir.join(name),
                None => return Err(refuse("not a file name".into())),
            }
        }
    };
    Ok(Output {
        flag: want.flag,
        given: path.to_path_buf(),
        id: file_id(&target),
        target,
        canonical,
    })
}

/// "a directory", "a FIFO", … for a file that is not a regular one.
fn kind(meta: &std::fs::Metadata) -> &'static str {
    if meta.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_block_device() || t.is_char_device() {
            return "a device";
        }
    }
    "not a file"
}

/// Device and inode of an existing file (through links); `None` where the platform has none.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        path.metadata().ok().map(|m| (m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// `FILE.lock` next to a checkpoint, held for the run's life and removed at its end.
#[derive(Debug)]
pub struct Lock {
    file: File,
    path: PathBuf,
}

/// Attempts at taking a lock whose file a finishing run removes in between.
const LOCK_TRIES: usize = 8;

impl Lock {
    /// Takes the lock of `checkpoint` (the written file: links resolved), or refuses when another
    /// running process holds it (naming its process id).
    pub fn take(checkpoint: &Path) -> Result<Lock> {
        let mut name = checkpoint.file_name().unwrap_or_default().to_os_string();
        name.push(".lock");
        let path = checkpoint.with_file_name(name);
        let fail = |e: io::Error| Error::io(&path, e);
        for _ in 0..LOCK_TRIES {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(fail)?;
            let mut before = String::new();
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let _ = file.read_to_string(&mut before);
                    let holder = match before.trim().parse::<u32>() {
                        Ok(pid) => format!("process {pid}"),
                        Err(_) => "another process".into(),
                    };
                    return Err(Error::Checkpoint {
                        origin: checkpoint.display().to_string(),
                        message: format!(
                            "in use by another run ({holder} holds {}); wait for it to end, or give another --checkpoint",
                            path.display()
                        ),
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(fail(e)),
            }
            // A run that ended removed the file after we opened it: lock the one there now.
            if file_id(&path) != fd_id(&file) {
                continue;
            }
            let _ = file.read_to_string(&mut before);
            if let Ok(pid) = before.trim().parse::<u32>() {
                eprintln!(
                    "perturb: note: took over {}, left by process {pid}, which no longer runs",
                    path.display()
                );
            }
            let mine = format!("{}\n", std::process::id());
            file.set_len(0)
                .and_then(|()| file.rewind())
                .and_then(|()| file.write_all(mine.as_bytes()))
                .map_err(fail)?;
            return Ok(Lock { file, path });
        }
        Err(fail(io::Error::other(
            "the lock file kept being replaced; try again",
        )))
    }
}

/// Device and inode of an open file.
fn fd_id(file: &File) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        file.metadata().ok().map(|m| (m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        None
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Removed while still held, so that no run locks a file about to disappear unnoticed (a
        // run that opened it meanwhile sees the inode change and retries).
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

/// `"; the trained model is saved in FILE"`, or that it could not be saved anywhere.
pub fn kept_note(what: &str, kept: Option<PathBuf>) -> String {
    match kept {
        Some(path) => format!("; {what} is saved in {}", path.display()),
        None => format!("; {what} could not be saved anywhere"),
    }
}

/// One error for several failed outputs: the first, with the others and `note` appended (its
/// class, and so the exit status, is the first's).
pub fn with_notes(failed: Vec<Error>, note: &str) -> Error {
    let mut failed = failed.into_iter();
    let Some(first) = failed.next() else {
        return Error::Config(note.trim_start_matches("; ").to_string());
    };
    let mut notes: String = failed
        .map(|e| format!("; also {}", super::exit::message(&e)))
        .collect();
    notes += note;
    append_note(first, &notes)
}

/// `e` with `note` at the end of its message, in its own class where the variant has a message.
fn append_note(e: Error, note: &str) -> Error {
    match e {
        Error::Io { path, source } => Error::Io {
            path,
            source: io::Error::new(source.kind(), format!("{source}{note}")),
        },
        Error::Config(m) => Error::Config(m + note),
        Error::Model { origin, message } => Error::Model {
            origin,
            message: message + note,
        },
        Error::Data { origin, message } => Error::Data {
            origin,
            message: message + note,
        },
        Error::Checkpoint { origin, message } => Error::Checkpoint {
            origin,
            message: message + note,
        },
        Error::Gpu(m) => Error::Gpu(m + note),
        other => Error::Config(format!("{}{note}", super::exit::message(&other))),
    }
}
