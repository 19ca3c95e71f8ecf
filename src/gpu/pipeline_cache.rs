//! wgpu's pipeline cache kept on disk between runs, where the adapter supports one (Vulkan).
//!
//! The driver's data is stored inside a header of perturb's own (magic, length, FNV-1a of the
//! data), so a truncated or corrupted file never reaches the driver; wgpu's header inside the data
//! refuses data of another adapter, driver or wgpu version (wgpu then starts an empty cache). A file
//! that fails either check is replaced when the device is dropped. The cache is best-effort: a file
//! that cannot be read or written never fails a run.

use crate::fileio::{fnv1a64, read_at_most, write_atomic};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The first bytes of every cache file perturb writes.
const MAGIC: &[u8; 8] = b"PRTBPC01";
/// Magic, data length (u64 LE), FNV-1a of the data (u64 LE).
const HEADER: usize = 24;
/// Files larger than this are not read: a driver's cache of perturb's few pipelines is far smaller.
const MAX_FILE_BYTES: u64 = 256 << 20;

/// What became of the cache file when the device was opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheLoad {
    /// There was no file yet.
    Missing,
    /// The file's data went to wgpu: `bytes` long (wgpu or the driver may still decline it, as
    /// data of another adapter or driver version, and start empty).
    Loaded {
        /// Length of the driver data handed over.
        bytes: usize,
    },
    /// The file was not used, for the reason given (unreadable, too large, truncated, not
    /// perturb's, or its checksum does not match).
    Ignored(String),
}

/// Where a device's pipeline cache lives and what was found there at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineCacheStatus {
    /// The cache file: the directory of [`crate::gpu::AdapterOptions::pipeline_cache`] and wgpu's
    /// key for the adapter (`wgpu_pipeline_cache_vulkan_VENDOR_DEVICE.bin`).
    pub path: PathBuf,
    /// What the file held when the device was opened.
    pub load: CacheLoad,
}

/// The platform's cache directory for perturb: `$XDG_CACHE_HOME/perturb` or `~/.cache/perturb` on
/// Linux and the BSDs, `~/Library/Caches/perturb` on macOS, `%LOCALAPPDATA%\perturb` on Windows.
/// `None` when the environment names no home.
pub fn default_pipeline_cache_dir() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).map(PathBuf::from);
    if cfg!(windows) {
        return var("LOCALAPPDATA").map(|d| d.join("perturb"));
    }
    if cfg!(target_os = "macos") {
        return var("HOME").map(|h| h.join("Library/Caches/perturb"));
    }
    xdg_cache_dir(var("XDG_CACHE_HOME"), var("HOME"))
}

/// `$XDG_CACHE_HOME/perturb`, or `$HOME/.cache/perturb` where that is unset, empty or relative
/// (the XDG specification says to ignore a relative one).
fn xdg_cache_dir(xdg: Option<PathBuf>, home: Option<PathBuf>) -> Option<PathBuf> {
    let base = match xdg.filter(|p| p.is_absolute()) {
        Some(x) => x,
        None => home.filter(|h| !h.as_os_str().is_empty())?.join(".cache"),
    };
    Some(base.join("perturb"))
}

/// The cache file for `info`'s adapter in `dir`; `None` where wgpu keeps no cache for its backend.
pub(super) fn cache_file(dir: &Path, info: &wgpu::AdapterInfo) -> Option<PathBuf> {
    wgpu::util::pipeline_cache_key(info).map(|key| dir.join(format!("{key}.bin")))
}

/// `data` inside perturb's header.
fn wrap(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(&fnv1a64(data).to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// The driver data inside a file [`wrap`] wrote, or why the file is not one.
fn unwrap(file: &[u8]) -> Result<&[u8], String> {
    if file.len() < HEADER {
        return Err(format!(
            "truncated: {} bytes, shorter than the header",
            file.len()
        ));
    }
    if &file[..8] != MAGIC {
        return Err("not a perturb pipeline cache (wrong magic)".into());
    }
    let word = |at: usize| u64::from_le_bytes(file[at..at + 8].try_into().expect("8 bytes"));
    let (len, hash, data) = (word(8), word(16), &file[HEADER..]);
    if len != data.len() as u64 {
        return Err(format!(
            "truncated or extended: {} bytes of data, the header says {len}",
            data.len()
        ));
    }
    if fnv1a64(data) != hash {
        return Err("corrupted: the checksum does not match".into());
    }
    Ok(data)
}

/// Reads the driver data of `path`: what the load was, and the data when it is usable.
fn read(path: &Path) -> (CacheLoad, Option<Vec<u8>>) {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (CacheLoad::Missing, None),
        Err(e) => return (CacheLoad::Ignored(format!("unreadable: {e}")), None),
    };
    let bytes = match read_at_most(file, MAX_FILE_BYTES) {
        Ok(Some(b)) => b,
        Ok(None) => {
            let why = format!("larger than {MAX_FILE_BYTES} bytes");
            return (CacheLoad::Ignored(why), None);
        }
        Err(e) => return (CacheLoad::Ignored(format!("unreadable: {e}")), None),
    };
    match unwrap(&bytes) {
        Ok(data) => (CacheLoad::Loaded { bytes: data.len() }, Some(data.to_vec())),
        Err(why) => (CacheLoad::Ignored(why), None),
    }
}

/// A device's pipeline cache and its file; written back, if its data changed, when dropped.
pub(super) struct DiskCache {
    pub(super) cache: wgpu::PipelineCache,
    pub(super) status: PipelineCacheStatus,
    /// FNV-1a of the data last read from or written to the file (`None`: nothing usable there).
    saved: Mutex<Option<u64>>,
}

impl std::fmt::Debug for DiskCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskCache")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl DiskCache {
    /// The cache of `device`, seeded from `path` where the file passes perturb's checks.
    pub(super) fn open(device: &wgpu::Device, path: PathBuf) -> DiskCache {
        let (load, data) = read(&path);
        // SAFETY: `data` passed the checksum of a file this module wrote from `get_data` of a
        // device whose adapter has the same wgpu cache key (the file name); wgpu checks its own
        // header (adapter, driver, wgpu version) before the driver sees the data and, with
        // `fallback`, starts an empty cache when that check fails.
        let cache = unsafe {
            device.create_pipeline_cache(&wgpu::PipelineCacheDescriptor {
                label: Some("perturb"),
                data: data.as_deref(),
                fallback: true,
            })
        };
        super::context::mark(&format!("pipeline cache {}: {load:?}", path.display()));
        DiskCache {
            cache,
            saved: Mutex::new(data.as_deref().map(fnv1a64)),
            status: PipelineCacheStatus { path, load },
        }
    }

    /// Writes the cache's data to its file if it differs from what the file holds. Returns whether
    /// it wrote.
    pub(super) fn save(&self) -> crate::error::Result<bool> {
        let Some(data) = self.cache.get_data() else {
            return Ok(false);
        };
        let hash = fnv1a64(&data);
        let mut saved = self.saved.lock().unwrap_or_else(|p| p.into_inner());
        if *saved == Some(hash) {
            return Ok(false);
        }
        let path = &self.status.path;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| crate::error::Error::io(dir, e))?;
        }
        write_atomic(path, &wrap(&data))?;
        *saved = Some(hash);
        Ok(true)
    }
}

impl Drop for DiskCache {
    fn drop(&mut self) {
        // Best-effort: a cache that cannot be written costs the next run its compile time only.
        let what = match self.save() {
            Ok(true) => "written".to_string(),
            Ok(false) => "unchanged".to_string(),
            Err(e) => format!("not written: {e}"),
        };
        super::context::mark(&format!("pipeline cache {what}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_data_unwraps_to_itself_and_any_damage_is_refused() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let file = wrap(&data);
        assert_eq!(unwrap(&file), Ok(&data[..]));
        assert_eq!(unwrap(&wrap(&[])), Ok(&[][..]));
        for cut in [0, 7, HEADER - 1, HEADER, file.len() - 1] {
            assert!(unwrap(&file[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = file.clone();
        longer.push(0);
        assert!(unwrap(&longer).unwrap_err().contains("extended"));
        for at in [0, 8, 16, HEADER, file.len() - 1] {
            let mut bad = file.clone();
            bad[at] ^= 1;
            assert!(unwrap(&bad).is_err(), "flipped byte {at}");
        }
    }

    #[test]
    fn the_cache_dir_follows_xdg_and_ignores_a_relative_or_empty_one() {
        let p = |s: &str| Some(PathBuf::from(s));
        assert_eq!(xdg_cache_dir(p("/x"), p("/h")), p("/x/perturb"));
        assert_eq!(xdg_cache_dir(p("rel"), p("/h")), p("/h/.cache/perturb"));
        assert_eq!(xdg_cache_dir(p(""), p("/h")), p("/h/.cache/perturb"));
        assert_eq!(xdg_cache_dir(None, p("/h")), p("/h/.cache/perturb"));
        assert_eq!(xdg_cache_dir(None, p("")), None);
        assert_eq!(xdg_cache_dir(None, None), None);
    }

    #[test]
    fn a_missing_an_alien_and_a_good_file_read_as_such() {
        let dir = std::env::temp_dir().join(format!("perturb-pc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.bin");
        assert_eq!(read(&path), (CacheLoad::Missing, None));
        std::fs::write(&path, b"not a cache at all, but long enough").unwrap();
        assert!(matches!(read(&path), (CacheLoad::Ignored(w), None) if w.contains("magic")));
        std::fs::write(&path, wrap(b"driver bytes")).unwrap();
        let good = (
            CacheLoad::Loaded { bytes: 12 },
            Some(b"driver bytes".to_vec()),
        );
        assert_eq!(read(&path), good);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
