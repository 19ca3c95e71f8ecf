//! Instance, adapter choice, device with the adapter's limits, and wgpu errors as typed errors.

use crate::error::{Error, Result};
use std::sync::{Arc, Mutex};

/// How to pick an adapter. Backends come from `WGPU_BACKEND` (read by wgpu's instance).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdapterOptions {
    /// Case-insensitive substring of the adapter name (`--adapter`, else `WGPU_ADAPTER_NAME`).
    pub name: Option<String>,
    /// Only software adapters (`--force-fallback`).
    pub force_fallback: bool,
    /// Prefer integrated over discrete GPUs (`WGPU_POWER_PREF=low`).
    pub low_power: bool,
}

impl AdapterOptions {
    /// Options from `WGPU_ADAPTER_NAME` and `WGPU_POWER_PREF`.
    pub fn from_env() -> AdapterOptions {
        AdapterOptions {
            name: std::env::var("WGPU_ADAPTER_NAME")
                .ok()
                .filter(|s| !s.trim().is_empty()),
            force_fallback: false,
            low_power: matches!(
                std::env::var("WGPU_POWER_PREF").as_deref(),
                Ok("low") | Ok("low_power") | Ok("low-power")
            ),
        }
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
    /// Whether `train` would pick it with the same options.
    pub chosen: bool,
}

/// An instance over the backends `WGPU_BACKEND` allows, narrowed to `only` when given.
fn instance(only: Option<wgpu::Backends>) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    if let Some(only) = only {
        desc.backends &= only;
    }
    wgpu::Instance::new(desc)
}

fn enumerate(only: Option<wgpu::Backends>) -> Vec<wgpu::Adapter> {
    pollster::block_on(instance(only).enumerate_adapters(wgpu::Backends::all()))
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

/// Every adapter wgpu sees, marking the one `opts` selects.
pub fn list_adapters(opts: &AdapterOptions) -> Vec<AdapterSummary> {
    let adapters = enumerate(None);
    let chosen = choose(&adapters, opts).ok();
    adapters
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let info = a.get_info();
            AdapterSummary {
                name: info.name.clone(),
                backend: format!("{:?}", info.backend).to_lowercase(),
                device_type: format!("{:?}", info.device_type),
                driver: format!("{} {}", info.driver, info.driver_info)
                    .trim()
                    .to_string(),
                compute: has_compute(a),
                chosen: chosen == Some(i),
            }
        })
        .collect()
}

/// A device and queue on the chosen adapter, with every limit the adapter offers, and a sink for
/// errors wgpu reports outside error scopes (its default handler would panic).
#[derive(Debug)]
pub struct GpuContext {
    /// The device.
    pub device: wgpu::Device,
    /// Its queue.
    pub queue: wgpu::Queue,
    /// The adapter's description.
    pub info: wgpu::AdapterInfo,
    /// The limits the device was created with (the adapter's).
    pub limits: wgpu::Limits,
    errors: Arc<Mutex<Vec<String>>>,
}

impl GpuContext {
    /// Opens the adapter `opts` selects.
    pub fn new(opts: &AdapterOptions) -> Result<GpuContext> {
        // Vulkan, Metal and DX12 first: GL ranks below them anyway, and opening EGL on a headless
        // machine is slow and noisy. Only when none of them fits are GL adapters considered.
        let mut adapters = enumerate(Some(wgpu::Backends::PRIMARY));
        let index = match choose(&adapters, opts) {
            Ok(i) => i,
            Err(_) => {
                adapters = enumerate(None);
                choose(&adapters, opts)?
            }
        };
        let adapter = &adapters[index];
        let info = adapter.get_info();
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("perturb"),
            required_features: wgpu::Features::empty(),
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::Gpu(format!("could not open {}: {e}", info.name)))?;
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
        Ok(GpuContext {
            device,
            queue,
            info,
            limits,
            errors,
        })
    }

    /// True when the adapter is Mesa's llvmpipe (lavapipe or GL), which silently stops shader loops
    /// after 65,535 iterations per invocation.
    pub fn is_llvmpipe(&self) -> bool {
        self.info.name.to_lowercase().contains("llvmpipe")
    }

    /// The backend's lowercase name.
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

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
