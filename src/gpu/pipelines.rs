//! The bind group layout and bind group, and a pipeline for each kernel the plan dispatches (and
//! no other), each built at its first dispatch from a module of its own.

use super::context::{ErrorSink, GpuContext};
use super::kernels::KernelId;
use super::pipeline_cache::DiskCache;
use super::plan::ChunkUniform;
use super::specialise::{parsed, specialise, Parsed};
use super::variants::Variant;
use crate::error::{Error, Result};
use crate::model::{Loss, Model};
use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

/// The pipelines of the kernels a plan dispatches, and only those, each built the first time it
/// is asked for: the host loop never builds the resident loop's `update` and `fused_epochs`, and a
/// run that goes straight to `fused_epochs` never builds the per-step kernels. On llvmpipe each
/// pipeline costs milliseconds of NIR work at creation (its LLVM code is compiled, or found in
/// Mesa's shader cache, at the first dispatch either way), so an unused one is start-up wasted.
pub(super) struct Pipelines {
    device: wgpu::Device,
    errors: ErrorSink,
    parsed: Arc<Parsed>,
    layout: wgpu::PipelineLayout,
    planned: Vec<(Variant, OnceLock<wgpu::ComputePipeline>)>,
    /// The device's persisted pipeline cache, where it has one (`pipeline_cache.rs`).
    cache: Option<Arc<DiskCache>>,
}

impl std::fmt::Debug for Pipelines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipelines")
            .field("planned", &self.planned)
            .finish_non_exhaustive()
    }
}

impl Pipelines {
    /// The pipeline of `kernel`, built now if this is its first use. Creation errors go to the
    /// context's error sink, read at the next readback like any other device error.
    pub(super) fn get(&self, kernel: KernelId) -> &wgpu::ComputePipeline {
        let (variant, cell) = self
            .planned
            .iter()
            .find(|(v, _)| v.kernel == kernel)
            .expect("every planned kernel has its pipeline");
        if cell.get().is_none() && is_step_kernel(kernel) {
            self.build_step_kernels();
        }
        cell.get_or_init(|| self.build_marked(variant))
    }

    /// Builds every planned kernel of the step (all but the resident loop's own) that is not built
    /// yet, on as many threads as there are cores: a step dispatches them all, and on llvmpipe
    /// each is milliseconds of single-threaded driver work (medium reuse: six pipelines, about
    /// 200 ms of CPU), which otherwise all lands, one after another, on the first step.
    fn build_step_kernels(&self) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let todo: Vec<_> = self
            .planned
            .iter()
            .filter(|(v, c)| is_step_kernel(v.kernel) && c.get().is_none())
            .collect();
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(todo.len());
        if threads < 2 {
            return; // `get` builds the one asked for
        }
        let next = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    while let Some((variant, cell)) = todo.get(next.fetch_add(1, Ordering::Relaxed))
                    {
                        cell.get_or_init(|| self.build_marked(variant));
                    }
                });
            }
        });
    }

    fn build_marked(&self, variant: &Variant) -> wgpu::ComputePipeline {
        let pipeline = self.build(variant);
        super::context::mark(&format!("pipeline {}", variant.name()));
        pipeline
    }

    /// How many pipelines have been built so far (of the planned ones).
    #[cfg(test)]
    pub(super) fn built(&self) -> usize {
        self.planned
            .iter()
            .filter(|(_, c)| c.get().is_some())
            .count()
    }

    /// The pipeline of `variant` from a module of its own (`specialise.rs`): the driver compiles
    /// only the entry point's code with its constants applied, not the whole assembled module.
    /// The module `perturb shaders` translates is made by the same function.
    fn build(&self, variant: &Variant) -> wgpu::ComputePipeline {
        let (module, constants) = match specialise(&self.parsed, variant) {
            Ok(m) => (wgpu::ShaderSource::Naga(Cow::Owned(m)), Vec::new()),
            Err(e) => {
                // Reported at the next readback; the whole module stands in meanwhile.
                if let Ok(mut v) = self.errors.lock() {
                    v.push(format!("specialising {}: {e}", variant.name()));
                }
                let source = Cow::Owned(super::nudge_shader_source());
                (wgpu::ShaderSource::Wgsl(source), variant.constants())
            }
        };
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(variant.entry_point()),
                source: module,
            });
        self.device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(variant.entry_point()),
                layout: Some(&self.layout),
                module: &module,
                entry_point: Some(variant.entry_point()),
                // Every workgroup value is written before it is read; zeroing 16 KiB per
                // workgroup (a shader loop on GL) would dominate small evaluations.
                compilation_options: wgpu::PipelineCompilationOptions {
                    zero_initialize_workgroup_memory: false,
                    constants: &constants,
                },
                cache: self.cache.as_ref().map(|c| &c.cache),
            })
    }
}

/// Every kernel but the resident loop's `update` and `fused_epochs` is dispatched by each step.
fn is_step_kernel(kernel: KernelId) -> bool {
    !matches!(kernel, KernelId::Update | KernelId::FusedEpochs)
}

/// The shader module, bind group layout and (unbuilt) pipelines of the planned `kernels` (each
/// specialised for `loss`, each `reuse_seq` part by its own override constants too), and the bind group over
/// `uniforms` and the storage buffers `bound` (bindings 1 to 8 in `shaders/common.wgsl`'s order).
pub(super) fn build_pipelines(
    ctx: &GpuContext,
    model: &Model,
    (closed, loss): (bool, Loss),
    kernels: &[(KernelId, u64)],
    uniforms: &wgpu::Buffer,
    bound: [&wgpu::Buffer; 8],
) -> Result<(Pipelines, wgpu::BindGroup)> {
    let parsed = parsed().map_err(|e| Error::Gpu(format!("the kernels' WGSL: {e}")))?;
    let device = &ctx.device;
    let entry =
        |binding: u32, ty: wgpu::BufferBindingType, dynamic: bool| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty,
                has_dynamic_offset: dynamic,
                min_binding_size: None,
            },
            count: None,
        };
    let ro = wgpu::BufferBindingType::Storage { read_only: true };
    let rw = wgpu::BufferBindingType::Storage { read_only: false };
    let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some("nudge"),
        entries: &[
            entry(0, wgpu::BufferBindingType::Uniform, true),
            entry(1, ro, false),
            entry(2, ro, false),
            entry(3, ro, false),
            entry(4, ro, false),
            entry(5, rw, false),
            entry(6, rw, false),
            entry(7, rw, false),
            entry(8, rw, false),
        ],
    });
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some("nudge"),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    let pipelines = Pipelines {
        device: device.clone(),
        errors: ctx.error_sink(),
        parsed,
        layout: pipeline_layout,
        cache: ctx.disk_cache(),
        planned: kernels
            .iter()
            .map(|&(k, _)| (Variant::planned(model, closed, loss, k), OnceLock::new()))
            .collect(),
    };
    let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("nudge"),
        layout: &layout,
        entries: &[wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: uniforms,
                offset: 0,
                size: wgpu::BufferSize::new(std::mem::size_of::<ChunkUniform>() as u64),
            }),
        }]
        .into_iter()
        .chain((1..).zip(bound).map(|(i, b)| bind(i, b)))
        .collect::<Vec<_>>(),
    });
    super::context::mark("layouts and bind group created");
    Ok((pipelines, bind_group))
}

fn bind(binding: u32, buffer: &wgpu::Buffer) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry {
        binding,
        resource: buffer.as_entire_binding(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{AdapterOptions, GpuContext, GpuEvaluator, KernelId};
    use crate::data::Dataset;
    use crate::evaluator::Evaluator;
    use crate::model::Model;
    use crate::settings::Hyper;

    /// A context, or `None` after saying the test is skipped; under `CI` a missing adapter fails.
    fn gpu() -> Option<GpuContext> {
        match GpuContext::new(&AdapterOptions::from_env()) {
            Ok(ctx) => Some(ctx),
            Err(e) => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "no GPU adapter under CI: {e}"
                );
                eprintln!("SKIPPED (no GPU adapter: {e})");
                None
            }
        }
    }

    fn built(ev: &GpuEvaluator, kernel: KernelId) -> bool {
        ev.pipelines
            .planned
            .iter()
            .any(|(v, c)| v.kernel == kernel && c.get().is_some())
    }

    #[test]
    fn pipelines_are_built_at_first_dispatch_and_only_those_the_loop_dispatches() {
        let Some(ctx) = gpu() else { return };
        let (model, data) = (Model::book(), Dataset::book());
        let mut ev = GpuEvaluator::new(ctx, &model, &data).expect("book evaluator");
        assert_eq!(ev.pipelines.built(), 0, "nothing is built before a step");
        let mut deltas = vec![0.0f32; model.num_params()];
        ev.evaluate(&model.params, 1e-4, &mut deltas)
            .expect("host step");
        assert!(built(&ev, KernelId::NudgedSse), "the host step's kernel");
        let step_kernels = ev
            .pipelines
            .planned
            .iter()
            .filter(|(v, _)| super::is_step_kernel(v.kernel))
            .count();
        assert_eq!(
            ev.pipelines.built(),
            step_kernels,
            "the step's kernels, together"
        );
        for k in [KernelId::Update, KernelId::FusedEpochs] {
            assert!(!built(&ev, k), "{} is the resident loop's", k.name());
        }
        let hyper = Hyper {
            epochs: 3,
            ..Hyper::book()
        };
        ev.resident_loop(&model.params, &hyper, 3, None, &mut |_, _| {})
            .expect("resident loop");
        assert!(
            built(&ev, KernelId::Update) || built(&ev, KernelId::FusedEpochs),
            "the resident loop built its kernels"
        );
    }

    #[test]
    fn lazily_built_pipelines_give_the_bits_of_pipelines_built_up_front() {
        let Some(ctx) = gpu() else { return };
        let (model, data) = (Model::book(), Dataset::book());
        let mut lazy = GpuEvaluator::new(ctx.clone(), &model, &data).expect("book evaluator");
        let mut eager = GpuEvaluator::new(ctx, &model, &data).expect("book evaluator");
        for (v, _) in &eager.pipelines.planned {
            eager.pipelines.get(v.kernel);
        }
        assert_eq!(eager.pipelines.built(), eager.pipelines.planned.len());
        let p = model.num_params();
        let (mut a, mut b) = (vec![0.0f32; p], vec![0.0f32; p]);
        let la = lazy.evaluate(&model.params, 1e-4, &mut a).expect("lazy");
        let lb = eager.evaluate(&model.params, 1e-4, &mut b).expect("eager");
        assert_eq!(
            la.to_bits(),
            lb.to_bits(),
            "base loss: lazy {la} eager {lb}"
        );
        let worst = (0..p).find(|&i| a[i].to_bits() != b[i].to_bits());
        assert!(
            worst.is_none(),
            "delta {worst:?}: lazy {:?} eager {:?}",
            worst.map(|i| a[i]),
            worst.map(|i| b[i])
        );
    }
}
