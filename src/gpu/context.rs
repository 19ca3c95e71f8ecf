//! Instance, adapter choice, device with the adapter's limits, and wgpu errors as typed errors.

use crate::error::{Error, Result, Setting};
use crate::settings::DeviceInfo;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::pipeline_cache::{default_pipeline_cache_dir, DiskCache, PipelineCacheStatus};

/// How to pick an adapter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdapterOptions {
    /// Case-insensitive substring of the adapter name (`--adapter`, else `WGPU_ADAPTER_NAME`).
    pub name: Option<String>,
    /// Only software adapters (`--force-fallback`).
    pub force_fallback: bool,
    /// Prefer integrated over discrete GPUs (`WGPU_POWER_PREF=low`).
    pub low_power: bool,
    /// Comma-separated backends to consider: `vulkan`, `gl`, `metal`, `dx12` (`--backend`, else
    /// `WGPU_BACKEND`); all when `None`.
    pub backend: Option<String>,
    /// Directory where each adapter's pipeline cache is kept between runs, where the adapter
    /// supports one (Vulkan); `None`: no cache file. [`AdapterOptions::from_env`] takes
    /// `PERTURB_PIPELINE_CACHE` (a directory, or `off`), else the platform's cache directory.
    pub pipeline_cache: Option<PathBuf>,
}

impl AdapterOptions {
    /// Options from `WGPU_ADAPTER_NAME`, `WGPU_BACKEND`, `WGPU_POWER_PREF` and
    /// `PERTURB_PIPELINE_CACHE`.
    pub fn from_env() -> AdapterOptions {
        let var = |k: &str| std::env::var(k).ok().filter(|s| !s.trim().is_empty());
        AdapterOptions {
            name: var("WGPU_ADAPTER_NAME"),
            force_fallback: false,
            low_power: matches!(
                std::env::var("WGPU_POWER_PREF").as_deref(),
                Ok("low") | Ok("low_power") | Ok("low-power")
            ),
            backend: var("WGPU_BACKEND"),
            pipeline_cache: match var("PERTURB_PIPELINE_CACHE") {
                Some(v) if matches!(v.trim(), "off" | "0") => None,
                Some(v) => Some(PathBuf::from(v)),
                None => default_pipeline_cache_dir(),
            },
        }
    }

    /// The backends [`AdapterOptions::backend`] names, or a [`Error::Config`] for an unknown name
    /// (wgpu itself would ignore it and find no adapter).
    pub fn backends(&self) -> Result<wgpu::Backends> {
        let Some(list) = &self.backend else {
            return Ok(wgpu::Backends::all());
        };
        let mut out = wgpu::Backends::empty();
        for name in list.split(',').map(|b| b.trim().to_lowercase()) {
            out |= match name.as_str() {
                "vulkan" | "vk" => wgpu::Backends::VULKAN,
                "gl" | "gles" | "opengl" => wgpu::Backends::GL,
                "metal" | "mtl" => wgpu::Backends::METAL,
                "dx12" | "d3d12" => wgpu::Backends::DX12,
                _ => {
                    return Err(Error::invalid(
                        Setting::Backend,
                        format!("{list:?} has the unknown backend {name:?} (expected vulkan, gl, metal or dx12)"),
                    ))
                }
            };
        }
        Ok(out)
    }
}

/// One adapter as `perturb devices` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterSummary {
    /// Adapter name as the driver reports it.
    pub name: String,
    /// wgpu backend.
    pub backend: String,
    /// Discrete, integrated, virtual, CPU or other.
    pub device_type: String,
    /// Driver name and version.
    pub driver: String,
    /// Whether it can run compute shaders at all.
    pub compute: bool,
    /// Largest storage buffer binding in bytes (bounds the evaluations per chunk).
    pub max_storage_binding: u64,
    /// Most workgroups per dispatch dimension.
    pub max_workgroups_per_dim: u32,
    /// Most invocations in one workgroup.
    pub max_invocations: u32,
    /// Whether `train` would pick it with the same options.
    pub chosen: bool,
}

/// Mesa's Vulkan drivers that find devices through DRM render nodes (`/dev/dri`) only, by the
/// names of their loader manifests: without `/dev/dri` none of them can find a device.
const DRM_ONLY_VULKAN_DRIVERS: &[&str] = &[
    "intel_icd*",
    "intel_hasvk_icd*",
    "radeon_icd*",
    "nouveau_icd*",
    "freedreno_icd*",
    "broadcom_icd*",
    "panfrost_icd*",
    "powervr_mesa_icd*",
    "asahi_icd*",
    "virtio_icd*",
];

/// The Vulkan loader's variables that choose drivers: where the user set any, perturb leaves the
/// choice to them.
const LOADER_DRIVER_VARS: &[&str] = &[
    "VK_DRIVER_FILES",
    "VK_ICD_FILENAMES",
    "VK_ADD_DRIVER_FILES",
    "VK_LOADER_DRIVERS_SELECT",
    "VK_LOADER_DRIVERS_DISABLE",
];

/// The value for `VK_LOADER_DRIVERS_DISABLE` that skips the drivers of [`DRM_ONLY_VULKAN_DRIVERS`]
/// where they cannot find a device (no `/dev/dri`) and no loader variable of the user's is set;
/// `None` to leave the loader as it is. Skipping them changes no adapter list: it saves loading
/// their libraries (about 10 ms of the README command on lavapipe, measured on the dev machine).
fn drivers_to_skip(has_dev_dri: bool, var_set: impl Fn(&str) -> bool) -> Option<String> {
    if has_dev_dri || LOADER_DRIVER_VARS.iter().any(|v| var_set(v)) {
        return None;
    }
    Some(DRM_ONLY_VULKAN_DRIVERS.join(","))
}

/// Applies [`drivers_to_skip`] once per process, before the first instance: no driver code runs
/// yet that could read the environment while it changes.
fn skip_absent_drm_drivers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if !cfg!(target_os = "linux") {
            return;
        }
        let has_dri = Path::new("/dev/dri").exists();
        if let Some(v) = drivers_to_skip(has_dri, |k| std::env::var_os(k).is_some()) {
            std::env::set_var("VK_LOADER_DRIVERS_DISABLE", v);
        }
    });
}

/// An instance over wgpu's default backends narrowed to `backends`. `WGPU_BACKEND` is read into
/// [`AdapterOptions::backend`] instead of by wgpu, so that `--backend` can override it.
fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    skip_absent_drm_drivers();
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = wgpu::InstanceDescriptor::new_without_display_handle().backends & backends;
    wgpu::Instance::new(desc)
}

fn enumerate(backends: wgpu::Backends) -> Vec<wgpu::Adapter> {
    mark("start");
    let instance = instance(backends);
    mark(&format!("instance over {backends:?}"));
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    mark(&format!("{} adapters enumerated", adapters.len()));
    adapters
}

fn has_compute(a: &wgpu::Adapter) -> bool {
    a.get_downlevel_capabilities()
        .flags
        .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
}

fn rank(info: &wgpu::AdapterInfo, low_power: bool) -> (u8, u8) {
    use wgpu::DeviceType as T;
    let ty = match (info.device_type, low_power) {
        (T::DiscreteGpu, false) | (T::IntegratedGpu, true) => 0,
        (T::IntegratedGpu, false) | (T::DiscreteGpu, true) => 1,
        (T::VirtualGpu, _) => 2,
        (T::Other, _) => 3,
        (T::Cpu, _) => 4,
    };
    let backend = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        _ => 1,
    };
    (ty, backend)
}

/// Index of the adapter `opts` selects among `adapters`, or why none fits.
fn choose(adapters: &[wgpu::Adapter], opts: &AdapterOptions) -> Result<usize> {
    let describe = |a: &wgpu::Adapter| {
        let i = a.get_info();
        format!("{} ({:?}, {:?})", i.name, i.backend, i.device_type)
    };
    let all = || {
        if adapters.is_empty() {
            "none".to_string()
        } else {
            adapters.iter().map(describe).collect::<Vec<_>>().join("; ")
        }
    };
    let mut candidates: Vec<usize> = (0..adapters.len())
        .filter(|&i| has_compute(&adapters[i]))
        .filter(|&i| {
            !opts.force_fallback || adapters[i].get_info().device_type == wgpu::DeviceType::Cpu
        })
        .collect();
    if let Some(want) = &opts.name {
        let w = want.to_lowercase();
        candidates.retain(|&i| adapters[i].get_info().name.to_lowercase().contains(&w));
        if candidates.is_empty() {
            return Err(Error::AdapterNotFound {
                wanted: want.clone(),
                available: all(),
            });
        }
    }
    candidates
        .into_iter()
        .min_by_key(|&i| rank(&adapters[i].get_info(), opts.low_power))
        .ok_or_else(|| Error::NoAdapter {
            found: if adapters.is_empty() {
                String::new()
            } else {
                format!(
                    " that can run compute shaders{} (saw: {})",
                    if opts.force_fallback {
                        " in software"
                    } else {
                        ""
                    },
                    all()
                )
            },
        })
}

/// Every adapter wgpu sees on the backends `opts` allows, marking the one `opts` selects.
pub fn list_adapters(opts: &AdapterOptions) -> Result<Vec<AdapterSummary>> {
    let adapters = enumerate(opts.backends()?);
    let chosen = choose(&adapters, opts).ok();
    Ok(adapters
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let info = a.get_info();
            let limits = a.limits();
            AdapterSummary {
                name: info.name.clone(),
                backend: format!("{:?}", info.backend).to_lowercase(),
                device_type: format!("{:?}", info.device_type),
                driver: format!("{} {}", info.driver, info.driver_info)
                    .trim()
                    .to_string(),
                compute: has_compute(a),
                max_storage_binding: limits.max_storage_buffer_binding_size,
                max_workgroups_per_dim: limits.max_compute_workgroups_per_dimension,
                max_invocations: limits.max_compute_invocations_per_workgroup,
                chosen: chosen == Some(i),
            }
        })
        .collect())
}

/// Opens every compute adapter on the backends `opts` allows whose name contains one of `names`
/// (case-insensitive; every adapter when `names` is empty), in the order wgpu lists them: one
/// context each, for a step split over adapters (`--shard`). Vulkan and GL are both enumerated, so
/// one machine's lavapipe and llvmpipe GL are two adapters.
pub fn open_adapters(opts: &AdapterOptions, names: &[String]) -> Result<Vec<GpuContext>> {
    let picked = compute_adapters(opts, names)?;
    let cache = opts.pipeline_cache.as_deref();
    picked.iter().map(|a| GpuContext::open(a, cache)).collect()
}

/// Opens compute adapter `index` (modulo their number) of those [`open_adapters`] would open for
/// every name: one rank per adapter by local rank (`--distributed mpi`).
pub fn open_adapter_at(opts: &AdapterOptions, index: usize) -> Result<GpuContext> {
    let picked = compute_adapters(opts, &[])?;
    GpuContext::open(
        &picked[index % picked.len()],
        opts.pipeline_cache.as_deref(),
    )
}

/// The compute adapters [`open_adapters`] opens, or why there are none.
fn compute_adapters(opts: &AdapterOptions, names: &[String]) -> Result<Vec<wgpu::Adapter>> {
    let backends = opts.backends()?;
    super::specialise::parse_in_background();
    let adapters = enumerate(backends);
    let wanted: Vec<String> = names.iter().map(|n| n.to_lowercase()).collect();
    let picked: Vec<wgpu::Adapter> = adapters
        .iter()
        .filter(|a| has_compute(a))
        .filter(|a| !opts.force_fallback || a.get_info().device_type == wgpu::DeviceType::Cpu)
        .filter(|a| {
            let name = a.get_info().name.to_lowercase();
            wanted.is_empty() || wanted.iter().any(|w| name.contains(w))
        })
        .cloned()
        .collect();
    if picked.is_empty() {
        return Err(Error::AdapterNotFound {
            wanted: names.join(","),
            available: adapters
                .iter()
                .map(|a| format!("{} ({:?})", a.get_info().name, a.get_info().backend))
                .collect::<Vec<_>>()
                .join("; "),
        });
    }
    Ok(picked)
}

/// A device and queue on the chosen adapter, with every limit the adapter offers, and a sink for
/// errors wgpu reports outside error scopes (its default handler would panic). A clone shares the
/// device, the queue and the sink: evaluators used one after another can share one context.
#[derive(Clone, Debug)]
pub struct GpuContext {
    /// The device.
    pub device: wgpu::Device,
    /// Its queue.
    pub queue: wgpu::Queue,
    /// The adapter's description.
    pub info: wgpu::AdapterInfo,
    /// The limits the device was created with (the adapter's).
    pub limits: wgpu::Limits,
    errors: ErrorSink,
    /// The pipeline cache kept on disk, where there is one (written back when the last clone of
    /// the context and of its pipelines is dropped).
    pipeline_cache: Option<Arc<DiskCache>>,
}

/// Where errors wgpu reports outside error scopes wait for [`GpuContext::take_error`].
pub(super) type ErrorSink = Arc<Mutex<Vec<String>>>;

impl GpuContext {
    /// The pipeline cache file and what it held when the device was opened; `None` when there is
    /// none (no [`AdapterOptions::pipeline_cache`], or an adapter without cache support, as GL).
    pub fn pipeline_cache(&self) -> Option<&PipelineCacheStatus> {
        self.pipeline_cache.as_deref().map(|c| &c.status)
    }

    /// The pipeline cache the context's pipelines are created with.
    pub(super) fn disk_cache(&self) -> Option<Arc<DiskCache>> {
        self.pipeline_cache.clone()
    }

    /// The context's error sink, for errors found outside wgpu (read at the next readback).
    pub(super) fn error_sink(&self) -> ErrorSink {
        self.errors.clone()
    }

    /// Whether `other` is this context or a clone of it (the same device). wgpu's own device
    /// equality compares ids, which two contexts' separate instances can share.
    pub(crate) fn same_device(&self, other: &GpuContext) -> bool {
        Arc::ptr_eq(&self.errors, &other.errors)
    }

    /// Opens the adapter `opts` selects.
    pub fn new(opts: &AdapterOptions) -> Result<GpuContext> {
        // Vulkan, Metal and DX12 first: GL ranks below them anyway, and opening EGL on a headless
        // machine is slow and noisy. Only when none of them fits are GL adapters considered.
        let allowed = opts.backends()?;
        super::specialise::parse_in_background();
        let mut adapters = enumerate(allowed & wgpu::Backends::PRIMARY);
        let index = match choose(&adapters, opts) {
            Ok(i) => i,
            Err(_) => {
                adapters = enumerate(allowed);
                choose(&adapters, opts).map_err(|e| match e {
                    Error::NoAdapter { found } if found.is_empty() && opts.backend.is_some() => {
                        Error::NoAdapter {
                            found: format!(
                                " on backend {}",
                                opts.backend.as_deref().unwrap_or_default()
                            ),
                        }
                    }
                    other => other,
                })?
            }
        };
        GpuContext::open(&adapters[index], opts.pipeline_cache.as_deref())
    }

    /// A device and queue on `adapter`, with its limits, the error sink and, with `cache_dir`
    /// where the adapter supports it, the pipeline cache kept in that directory.
    fn open(adapter: &wgpu::Adapter, cache_dir: Option<&Path>) -> Result<GpuContext> {
        let info = adapter.get_info();
        let limits = adapter.limits();
        let cache_file = cache_dir
            .filter(|_| adapter.features().contains(wgpu::Features::PIPELINE_CACHE))
            .and_then(|dir| super::pipeline_cache::cache_file(dir, &info));
        let features = match cache_file {
            Some(_) => wgpu::Features::PIPELINE_CACHE,
            None => wgpu::Features::empty(),
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("perturb"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::Gpu(format!("could not open {}: {e}", info.name)))?;
        mark("device created");
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut v) = sink.lock() {
                v.push(one_line(&e.to_string()));
            }
        }));
        let sink = errors.clone();
        device.set_device_lost_callback(move |reason, msg| {
            if reason != wgpu::DeviceLostReason::Destroyed {
                if let Ok(mut v) = sink.lock() {
                    v.push(format!("device lost: {}", one_line(&msg)));
                }
            }
        });
        let pipeline_cache = cache_file.map(|path| Arc::new(DiskCache::open(&device, path)));
        Ok(GpuContext {
            device,
            queue,
            info,
            limits,
            errors,
            pipeline_cache,
        })
    }

    /// True when the adapter is Mesa's llvmpipe (lavapipe or GL), which silently stops shader loops
    /// after 65,535 loop passes per invocation (see [`crate::gpu::LLVMPIPE_LOOP_CAP`]).
    pub fn is_llvmpipe(&self) -> bool {
        self.info.name.to_lowercase().contains("llvmpipe")
    }

    /// The adapter as reports name it.
    pub fn device_info(&self) -> DeviceInfo {
        DeviceInfo {
            kind: "gpu".into(),
            adapter: self.info.name.clone(),
            backend: self.backend(),
            shards: Vec::new(),
        }
    }

    /// The wgpu backend's name (`"vulkan"`, `"gl"`, …).
    pub fn backend(&self) -> String {
        format!("{:?}", self.info.backend).to_lowercase()
    }

    /// Returns the first error wgpu reported outside an error scope since the last call, if any.
    pub fn take_error(&self) -> Result<()> {
        let mut v = self
            .errors
            .lock()
            .map_err(|_| Error::Gpu("error sink poisoned".into()))?;
        let first = v.drain(..).next();
        match first {
            Some(e) => Err(Error::Gpu(e)),
            None => Ok(()),
        }
    }

    /// Runs `f` inside validation and out-of-memory error scopes and turns what they catch into an
    /// error naming `what`.
    pub fn scoped<T>(&self, what: &str, f: impl FnOnce() -> T) -> Result<T> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let value = f();
        let v = pollster::block_on(validation.pop());
        let o = pollster::block_on(oom.pop());
        match v.or(o) {
            Some(e) => Err(Error::Gpu(format!("{what}: {}", one_line(&e.to_string())))),
            None => Ok(value),
        }
    }
}

/// Test hook, not a setting: with `PERTURB_TEST_FAULT_AFTER_READBACKS=N` in the environment the
/// device is destroyed (wgpu's `Device::destroy`) at the readback after the first `N`, so that
/// tests see a real device loss mid-run: its error, exit status and saved checkpoint.
pub(crate) fn injected_fault_due() -> bool {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::OnceLock;
    static AFTER: OnceLock<Option<usize>> = OnceLock::new();
    static READBACKS: AtomicUsize = AtomicUsize::new(0);
    let after = AFTER.get_or_init(|| {
        std::env::var("PERTURB_TEST_FAULT_AFTER_READBACKS")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    after.is_some_and(|n| READBACKS.fetch_add(1, Ordering::Relaxed) >= n)
}

/// `PERTURB_TIMINGS=1`: one stderr line per start-up phase (instance, adapters, device, shader
/// module, each pipeline, readbacks): wall milliseconds since the previous mark, the CPU
/// milliseconds the marking thread ran since its own previous mark (Linux; pipelines may be built
/// on helper threads), and wall milliseconds since the first mark. A diagnostic for
/// measuring start-up on a loaded machine, not a setting; silent without the variable.
pub(crate) fn mark(what: &str) {
    use std::sync::OnceLock;
    use std::time::Instant;
    static ON: OnceLock<bool> = OnceLock::new();
    static LAST: Mutex<Option<(Instant, Instant)>> = Mutex::new(None);
    thread_local!(static THREAD_CPU: std::cell::Cell<f64> = const { std::cell::Cell::new(0.0) });
    if !*ON.get_or_init(|| std::env::var_os("PERTURB_TIMINGS").is_some_and(|v| v != "0")) {
        return;
    }
    let now = Instant::now();
    // Nanoseconds this thread has run, the first field of schedstat; NaN where there is none.
    let cpu = std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |ns| ns / 1e6);
    let prev_cpu = THREAD_CPU.with(|c| c.replace(cpu));
    let Ok(mut last) = LAST.lock() else { return };
    let (first, prev) = last.unwrap_or((now, now));
    eprintln!(
        "perturb timings: {:8.2} ms wall {:8.2} ms cpu {:8.2} ms total  {what}",
        (now - prev).as_secs_f64() * 1e3,
        cpu - prev_cpu,
        (now - first).as_secs_f64() * 1e3
    );
    *last = Some((first, now));
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drm_only_drivers_are_skipped_only_without_dev_dri_and_without_the_users_choice() {
        let none = |_: &str| false;
        let skip = drivers_to_skip(false, none).expect("no /dev/dri, no variable: skip");
        assert!(skip.split(',').any(|d| d == "radeon_icd*"), "{skip}");
        assert!(!skip.contains("lvp"), "lavapipe is never skipped: {skip}");
        assert_eq!(drivers_to_skip(true, none), None, "/dev/dri present");
        for var in LOADER_DRIVER_VARS {
            let set = |k: &str| k == *var;
            assert_eq!(drivers_to_skip(false, set), None, "{var} set by the user");
        }
    }
}
