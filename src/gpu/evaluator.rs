//! Pipelines, buffers and dispatches for the nudged losses, the host-driven step (one upload, one
//! readback) and the GPU-resident training loop.

use super::context::GpuContext;
use super::kernels::{
    loop_passes, seq_part_inputs, seq_part_is_weights, seq_part_layer, seq_parts, seq_repeat,
    KernelId, LoopPlan, GUARD_PASSES, KERNEL_PASS_BUDGET, LLVMPIPE_LOOP_CAP, SEQ_WG, TILE_S,
    TILE_U, WG_SIZE,
};
use crate::cpu::closed_form_output;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::estimate::{Estimator, Probe, Shape, StepMode, MAX_OFFSETS, MAX_SPSA_SAMPLES};
use crate::model::Model;
use crate::precision::inv_count;
use crate::train::{check_probe, DeviceInfo, Evaluator, History, Hyper, Method, Outcome};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use wgpu::util::DeviceExt;

/// Widest layer output the kernels keep in workgroup memory (`MAX_WIDTH`).
pub const MAX_WIDTH: usize = 2048;
/// Words per layer in the layer table (`LAYER_WORDS`).
pub const LAYER_WORDS: usize = 8;
/// Up to this many samples the loss sums run one invocation per slot (`reduce_seq`, no barriers);
/// beyond it a workgroup per slot (`reduce_losses`). Both compute the same tree.
pub const SEQ_REDUCE_MAX_BATCH: usize = 8192;
/// Most epochs the resident loop runs per submission (its losses come back together).
pub const RESIDENT_MAX_BATCH: usize = 1024;
/// Widest layer the one-workgroup `fused_epochs` kernel handles (`FUSED_MAX_WIDTH`).
pub const FUSED_MAX_WIDTH: usize = 32;
/// Most (slot, sample) items per epoch for `fused_epochs`: beyond this one workgroup is too little.
const FUSED_MAX_ITEMS: usize = 1024;
/// Upper bound on the per-sample squared-error buffer of one chunk of evaluations.
const SSE_BUDGET_BYTES: u64 = 256 << 20;

/// The `Chunk` uniform of `shaders/nudge.wgsl`, one per dispatch group.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ChunkUniform {
    /// Number of layers.
    pub num_layers: u32,
    /// Samples B.
    pub batch: u32,
    /// First slot of the chunk (0 = baseline, k + 1 = parameter k); for `forward_tile`, the layer.
    pub eval_base: u32,
    /// Slots in the chunk.
    pub eval_count: u32,
    /// Workgroups along x of the chunk's main dispatch.
    pub grid_x: u32,
    /// Workgroups along x of its `reduce_losses` dispatch.
    pub reduce_grid_x: u32,
    /// Width of the last layer.
    pub outputs: u32,
    /// Sum of all layer widths.
    pub total_units: u32,
    /// Parameter count P.
    pub num_params: u32,
    /// 0 naive, 1 reuse.
    pub method: u32,
    /// The nudge.
    pub eps: f32,
    /// Learning rate (resident loop).
    pub lr: f32,
    /// 1 / (B · outputs), rounded to float32 on the host.
    pub inv_count: f32,
    /// Always 0.0 (a runtime zero the shader compiler cannot fold away).
    pub zero: f32,
    /// First parameter of this chunk's run in the parameter buffer.
    pub param_base: u32,
    /// Where slot 0 of this chunk would go in the output buffer.
    pub out_base: u32,
    /// First float of this chunk's run in the reuse cache.
    pub cache_base: u32,
    /// SPSA: low word of the run's seed.
    pub seed_lo: u32,
    /// SPSA: high word of the run's seed.
    pub seed_hi: u32,
    /// SPSA: 0-based step.
    pub step: u32,
    /// SPSA: [`crate::rng::Direction::code`].
    pub dist: u32,
    /// Reuse with an identity output layer: where the closed-form sums start in a run's cache
    /// (0: not used).
    pub ab_off: u32,
    /// The kernel ([`KernelId::code`]) whose tripwire also runs `burn` loop passes (0: none).
    pub burn_kernel: u32,
    /// Extra loop passes for `burn_kernel`, to measure its headroom under llvmpipe's cap.
    pub burn: u32,
    /// Where in the output buffer a kernel cut short by the loop cap writes its code.
    pub trip_at: u32,
}

#[derive(Clone, Copy, Debug)]
struct Chunk {
    kernel: KernelId,
    /// The run whose parameters it evaluates.
    run: usize,
    /// Which of the probe's coordinate offsets it applies.
    offset: usize,
    uniform: ChunkUniform,
    grid: (u32, u32),
    reduce_grid: (u32, u32),
}

/// How the reuse method computes and sums the changes of the last two layers' parameters. All
/// three give the same numbers (the summation order is fixed); they differ in speed by adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReuseKernel {
    /// One invocation per (parameter, sample), the changes written out, then a reduction pass.
    Split,
    /// One workgroup per parameter, samples over its lanes, a tree reduction in workgroup memory:
    /// no per-sample memory traffic (the default on hardware GPUs).
    Workgroup,
    /// One invocation per parameter (or a few weights of one unit) looping over the samples: no
    /// barriers, no per-sample writes, and the unit's values loaded once for its weights (the
    /// default on CPU adapters such as llvmpipe, where barriers and loads are dear). Used where
    /// the loop fits llvmpipe's iteration cap, else `Split`.
    Invocation,
}

/// Options of a [`GpuEvaluator`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuOptions {
    /// Naive or reuse.
    pub method: Method,
    /// At most this many evaluations per pair of dispatches (device limits may force fewer; the
    /// per-parameter reuse kernel rounds it up to whole units, at least one).
    pub max_evals_per_chunk: u64,
    /// Reuse method: how the last two layers' deltas are computed and summed, or `None` to choose
    /// by adapter. Results are identical either way.
    pub reuse_kernel: Option<ReuseKernel>,
    /// Runs evaluated together (a sweep), each with its own parameters, eps and seed.
    pub runs: usize,
    /// What every probe evaluates (see [`crate::estimate::Shape`]).
    pub shape: Shape,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions {
            method: Method::Naive,
            max_evals_per_chunk: u64::MAX,
            reuse_kernel: None,
            runs: 1,
            shape: Shape::Coordinates(1),
        }
    }
}

/// Splits `n` workgroups into an (x, y) grid within `max_dim` per dimension.
fn grid(n: u64, max_dim: u32) -> (u32, u32) {
    let x = n.min(max_dim as u64).max(1);
    (x as u32, n.div_ceil(x) as u32)
}

/// Epochs one `fused_epochs` dispatch can run for this model (0 when it does not apply): naive
/// method, one chunk, layers at most [`FUSED_MAX_WIDTH`] wide, at most `FUSED_MAX_ITEMS` (slot,
/// sample) items, and the most epochs whose [`loop_passes`] stay within [`KERNEL_PASS_BUDGET`].
fn fused_epochs_per_dispatch(
    model: &Model,
    samples: usize,
    opts: &GpuOptions,
    chunks: usize,
) -> u64 {
    let items = (model.num_params() as u64 + 1) * samples as u64;
    if opts.method != Method::Naive
        || opts.runs != 1
        || opts.shape != Shape::Coordinates(1)
        || chunks != 1
        || model.max_width() > FUSED_MAX_WIDTH
        || items > FUSED_MAX_ITEMS as u64
    {
        return 0;
    }
    let most = RESIDENT_MAX_BATCH as u64;
    // On every adapter: llvmpipe's cap there; elsewhere a bound on what one workgroup runs in
    // one dispatch (as before the counts were exact), far from any watchdog.
    let fits = |epochs: u64| {
        let plan = LoopPlan {
            model,
            batch: samples,
            closed: false,
            epochs,
        };
        loop_passes(KernelId::FusedEpochs, &plan) <= KERNEL_PASS_BUDGET
    };
    // The count grows with the epochs: the largest that fits, by bisection on the count itself.
    let (mut lo, mut hi) = (0, most + 1);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    if lo < 4 {
        0
    } else {
        lo
    }
}

/// Every kernel a plan dispatches (the chunks' kernels, their reduction, the resident loop's
/// `update` and `fused_epochs`) with its [`loop_passes`], the largest over its dispatches.
fn dispatched_loop_counts(
    chunks: &[Chunk],
    reduce: KernelId,
    fused_epochs: u64,
    plan: &LoopPlan,
) -> Vec<(KernelId, u64)> {
    let mut kernels: Vec<KernelId> = chunks.iter().map(|c| c.kernel).collect();
    if chunks.iter().any(|c| c.kernel.is_reduced()) {
        kernels.push(reduce);
    }
    kernels.push(KernelId::Update);
    let mut counts: Vec<(KernelId, u64)> = Vec::new();
    for k in kernels {
        if !counts.iter().any(|&(seen, _)| seen == k) {
            counts.push((k, loop_passes(k, plan)));
        }
    }
    if fused_epochs > 0 {
        let fused = LoopPlan {
            epochs: fused_epochs,
            ..*plan
        };
        counts.push((
            KernelId::FusedEpochs,
            loop_passes(KernelId::FusedEpochs, &fused),
        ));
    }
    counts
}

/// Evaluates nudged losses on the GPU. Pipelines, bind group and buffers are built once; each
/// host-driven step uploads the parameters, runs the dispatches and reads P + 1 floats back.
#[derive(Debug)]
pub struct GpuEvaluator {
    ctx: GpuContext,
    pipelines: Pipelines,
    bind_group: wgpu::BindGroup,
    params: wgpu::Buffer,
    next: wgpu::Buffer,
    /// The resident loop's parameters at the start of the current batch of epochs (what a
    /// diverged batch falls back to).
    saved: wgpu::Buffer,
    cache: wgpu::Buffer,
    uniforms: wgpu::Buffer,
    out: wgpu::Buffer,
    readback: wgpu::Buffer,
    chunks: Vec<Chunk>,
    /// The `update` dispatch's uniform slot and grid.
    update: (usize, (u32, u32)),
    /// Epochs one `fused_epochs` dispatch may run (0: the model is not tiny enough).
    fused_epochs: usize,
    uniform_stride: u64,
    /// The uniforms as last written (chunks, then the `update` slot), to skip unchanged writes.
    written: Vec<ChunkUniform>,
    method: Method,
    num_params: usize,
    runs: usize,
    shape: Shape,
    out_scratch: Vec<f32>,
    reuse_kernel: Option<ReuseKernel>,
    /// Every dispatched kernel's loop passes per invocation, from the plan.
    loop_counts: Vec<(KernelId, u64)>,
    /// Extra tripwire passes for one kernel ([`GpuEvaluator::set_loop_burn`]).
    burn: Option<(KernelId, u32)>,
    /// Where the output buffer holds the tripwire's word.
    trip_at: u32,
    /// The reduction that follows kernels writing per-sample values.
    reduce_kernel: KernelId,
}

/// The pipelines of the kernels a plan dispatches, and only those.
#[derive(Debug)]
struct Pipelines(Vec<(KernelId, wgpu::ComputePipeline)>);

impl Pipelines {
    fn get(&self, kernel: KernelId) -> &wgpu::ComputePipeline {
        self.0
            .iter()
            .find(|(k, _)| *k == kernel)
            .map(|(_, p)| p)
            .expect("every planned kernel has its pipeline")
    }
}

/// Splits a plan's slot ranges into chunks (dispatch groups) that fit the device.
struct ChunkPlanner<'a> {
    model: &'a Model,
    opts: &'a GpuOptions,
    /// Samples.
    b: usize,
    /// Parameters per run.
    p: usize,
    max_dim: u32,
    /// Most slots whose per-sample values fit the `sse` budget.
    by_bytes: u64,
    seq_reduce: bool,
    base: ChunkUniform,
    out_per_run: usize,
    cache_per_run: usize,
    chunks: Vec<Chunk>,
}

impl ChunkPlanner<'_> {
    /// Slots [first, end) of `run`'s offset `offset` in chunks, `items_per_wg` (slot, sample)
    /// items per workgroup. Slot 0 is the unperturbed network, slot k + 1 parameter k (or SPSA
    /// evaluation k); offset j's slots land after the earlier offsets' P values.
    fn add(
        &mut self,
        kernel: KernelId,
        run: usize,
        offset: usize,
        first: u64,
        end: u64,
        items_per_wg: u64,
    ) {
        let by_grid = (self.max_dim as u64 * self.max_dim as u64 * items_per_wg) / self.b as u64;
        let mut per = self
            .by_bytes
            .min(by_grid)
            .min(self.opts.max_evals_per_chunk.max(1))
            .max(1);
        if let KernelId::ReuseSeq(part) = kernel {
            // Whole units: a weights chunk holds every input of its units.
            let n_in = seq_part_inputs(self.model, part);
            per = (self.opts.max_evals_per_chunk / n_in)
                .max(1)
                .saturating_mul(n_in);
        }
        let mut at = first;
        while at < end {
            let count = per.min(end - at);
            let g = if kernel == KernelId::ReuseFused {
                grid(count, self.max_dim)
            } else if kernel == KernelId::ForwardTile {
                let layer = self.model.layers()[at as usize];
                let tiles = (layer.outputs as u64).div_ceil(TILE_U as u64)
                    * (self.b as u64).div_ceil(TILE_S as u64);
                grid(tiles.div_ceil(WG_SIZE as u64), self.max_dim)
            } else if let KernelId::ReuseSeq(part) = kernel {
                if seq_part_is_weights(part) {
                    // A workgroup per (unit, block of SEQ_WG lanes).
                    let n_in = seq_part_inputs(self.model, part);
                    let lanes = n_in.div_ceil(seq_repeat(n_in) as u64);
                    grid((count / n_in) * lanes.div_ceil(SEQ_WG as u64), self.max_dim)
                } else {
                    grid(count.div_ceil(SEQ_WG as u64), self.max_dim)
                }
            } else {
                grid((count * self.b as u64).div_ceil(items_per_wg), self.max_dim)
            };
            let r = if self.seq_reduce {
                grid(count.div_ceil(WG_SIZE as u64), self.max_dim)
            } else {
                grid(count, self.max_dim)
            };
            self.chunks.push(Chunk {
                kernel,
                run,
                offset,
                uniform: ChunkUniform {
                    eval_base: at as u32,
                    eval_count: count as u32,
                    grid_x: g.0,
                    reduce_grid_x: r.0,
                    param_base: (run * self.p) as u32,
                    out_base: (run * self.out_per_run + offset * self.p) as u32,
                    cache_base: (run * self.cache_per_run) as u32,
                    ..self.base
                },
                grid: g,
                reduce_grid: r,
            });
            at += count;
        }
    }
}

/// The shader module, bind group layout and pipelines of the planned `kernels` (each `reuse_seq`
/// part specialised by its override constants), and the bind group over `uniforms` and the
/// storage buffers `bound` (bindings 1 to 8 in `shaders/nudge.wgsl`'s order).
fn build_pipelines(
    device: &wgpu::Device,
    model: &Model,
    closed: bool,
    kernels: &[(KernelId, u64)],
    uniforms: &wgpu::Buffer,
    bound: [&wgpu::Buffer; 8],
) -> (Pipelines, wgpu::BindGroup) {
    let num_layers = model.layers().len();
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("nudge.wgsl"),
        source: wgpu::ShaderSource::Wgsl(super::nudge_shader_source().into()),
    });
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
    let specialised = |name: &str, constants: &[(&str, f64)]| {
        device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(name),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some(name),
            // Every workgroup value is written before it is read; zeroing 16 KiB per
            // workgroup (a shader loop on GL) would dominate small evaluations.
            compilation_options: wgpu::PipelineCompilationOptions {
                zero_initialize_workgroup_memory: false,
                constants,
            },
            cache: None,
        })
    };
    let pipeline = |name: &str| specialised(name, &[]);
    let seq_pipeline = |part: u32| {
        let l = seq_part_layer(model, part);
        let n_in = seq_part_inputs(model, part);
        specialised(
            "reuse_seq",
            &[
                ("SEQ_PART", part as f64),
                ("SEQ_KIND", model.layers()[l].activation.code() as f64),
                ("SEQ_CLOSED", (closed && l + 1 < num_layers) as u32 as f64),
                (
                    "SEQ_FROM_INPUTS",
                    (l == 0 && seq_part_is_weights(part)) as u32 as f64,
                ),
                ("SEQ_R", seq_repeat(n_in) as f64),
            ],
        )
    };
    let pipelines = Pipelines(
        kernels
            .iter()
            .map(|&(k, _)| {
                let built = match k {
                    KernelId::ReuseSeq(part) => seq_pipeline(part),
                    k => pipeline(k.entry_point()),
                };
                (k, built)
            })
            .collect(),
    );
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
    (pipelines, bind_group)
}

fn bind(binding: u32, buffer: &wgpu::Buffer) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry {
        binding,
        resource: buffer.as_entire_binding(),
    }
}

impl GpuEvaluator {
    /// A naive-method evaluator for `model`'s shape and `data` on `ctx`'s device.
    pub fn new(ctx: GpuContext, model: &Model, data: &Dataset) -> Result<GpuEvaluator> {
        GpuEvaluator::with_options(ctx, model, data, GpuOptions::default())
    }

    /// Builds pipelines and buffers after checking that the model and data fit the device.
    pub fn with_options(
        ctx: GpuContext,
        model: &Model,
        data: &Dataset,
        opts: GpuOptions,
    ) -> Result<GpuEvaluator> {
        data.check_fits(model, "data")?;
        match opts.shape {
            Shape::Coordinates(count) if (1..=MAX_OFFSETS).contains(&count) => {}
            Shape::Directions(q) if (1..=MAX_SPSA_SAMPLES).contains(&q) => {
                if opts.method != Method::Naive {
                    return Err(Error::Config(
                        "SPSA moves every parameter, so nothing can be reused: use --method naive"
                            .into(),
                    ));
                }
            }
            shape => {
                return Err(Error::Config(format!(
                    "cannot evaluate probes of {shape:?}"
                )))
            }
        }
        if opts.runs == 0 {
            return Err(Error::Config(
                "a GPU evaluator needs at least one run".into(),
            ));
        }
        let limits = ctx.limits.clone();
        let runs = opts.runs;
        let p = model.num_params();
        let b = data.len();
        let num_layers = model.layers().len();
        let widest = model.max_width();
        if widest > MAX_WIDTH {
            return Err(Error::TooLarge(format!(
                "a layer has {widest} units; the GPU kernels keep at most {MAX_WIDTH} per layer in workgroup memory (use --device cpu)"
            )));
        }
        // Where the adapter caps loops, every choice below is made by the kernels' own loop counts.
        let capped = ctx.is_llvmpipe();
        let closed = opts.method == Method::Reuse && closed_form_output(model);
        let loop_plan = LoopPlan {
            model,
            batch: b,
            closed,
            epochs: 0,
        };
        let fits =
            |kernel: KernelId| !capped || loop_passes(kernel, &loop_plan) <= KERNEL_PASS_BUDGET;
        let total_units: usize = model.layers().iter().map(|l| l.outputs).sum();
        // Reuse cache: z and a of every unit, then the inputs transposed to [input][sample] so that
        // neighbouring invocations (neighbouring samples) read neighbouring words.
        // Closed-form output sums (identity output layer): ab [hidden][sample], then bb [hidden].
        let hidden = if closed {
            model.layers()[num_layers - 1].inputs
        } else {
            0
        };
        let ab_off = if closed {
            (2 * total_units + model.inputs()) * b
        } else {
            0
        };
        let cache_per_run = if opts.method == Method::Reuse {
            (2 * total_units + model.inputs()) * b + hidden * (b + 1)
        } else {
            0
        };
        let mut cache_floats = (runs * cache_per_run).max(1);
        let values = opts.shape.len(p);
        let out_per_run = 1 + values;
        let out_floats = runs as u64 * out_per_run as u64;
        let max_binding = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        for (what, bytes) in [
            ("the parameters", 4 * (runs * p) as u64),
            ("the inputs", 4 * data.x.len() as u64),
            ("the targets", 4 * data.y.len() as u64),
            ("the losses", 4 * (out_floats + 1)),
            (
                "the reuse cache (2 × units × samples)",
                4 * cache_floats as u64,
            ),
        ] {
            if bytes > max_binding {
                return Err(Error::TooLarge(format!(
                    "{what} need {bytes} bytes in one storage buffer; {} allows {max_binding}",
                    ctx.info.name
                )));
            }
        }
        if b > u32::MAX as usize / 2
            || runs * p > u32::MAX as usize / 2
            || out_floats > u32::MAX as u64 / 2
            || cache_floats > u32::MAX as usize / 2
        {
            return Err(Error::TooLarge(format!(
                "{runs} run(s) of {p} parameters × {b} samples overflow 32-bit indices"
            )));
        }

        let base = ChunkUniform {
            num_layers: num_layers as u32,
            batch: b as u32,
            outputs: model.outputs() as u32,
            total_units: total_units as u32,
            num_params: p as u32,
            method: (opts.method == Method::Reuse) as u32,
            inv_count: inv_count(b * model.outputs()),
            ab_off: ab_off as u32,
            trip_at: out_floats as u32,
            ..Default::default()
        };
        let max_dim = limits.max_compute_workgroups_per_dimension;
        let sample_bytes = 4 * b as u64;
        let by_bytes = max_binding.min(SSE_BUDGET_BYTES) / sample_bytes;
        if by_bytes == 0 {
            return Err(Error::TooLarge(format!(
                "{b} samples do not fit one dispatch on {} ({sample_bytes} bytes per evaluation, {max_binding} allowed)",
                ctx.info.name
            )));
        }
        // One invocation per slot suits CPU-backed adapters (llvmpipe pays for every barrier); a
        // real GPU wants a workgroup per slot, whose reads of the samples are coalesced.
        let cpu_adapter = ctx.info.device_type == wgpu::DeviceType::Cpu;
        let seq_reduce = b <= SEQ_REDUCE_MAX_BATCH && (cpu_adapter || b <= 32);
        let reuse_kernel = match opts.reuse_kernel {
            _ if opts.method != Method::Reuse => None,
            Some(k) => Some(k),
            None if cpu_adapter => Some(ReuseKernel::Invocation),
            None => Some(ReuseKernel::Workgroup),
        };
        let reuse_kernel = match reuse_kernel {
            Some(ReuseKernel::Invocation)
                if !seq_parts(model)
                    .iter()
                    .all(|&(part, _, _)| fits(KernelId::ReuseSeq(part))) =>
            {
                Some(ReuseKernel::Split)
            }
            k => k,
        };
        // The per-parameter reuse kernel's companion: the unperturbed pass in tiles, a dispatch
        // per layer, where its loop fits llvmpipe's cap.
        let tiled_forward =
            reuse_kernel == Some(ReuseKernel::Invocation) && fits(KernelId::ForwardTile);
        let mut planner = ChunkPlanner {
            model,
            opts: &opts,
            b,
            p,
            max_dim,
            by_bytes,
            seq_reduce,
            base,
            out_per_run,
            cache_per_run,
            chunks: Vec::new(),
        };
        let mut plan = |kernel: KernelId,
                        run: usize,
                        offset: usize,
                        first: u64,
                        end: u64,
                        items_per_wg: u64| {
            planner.add(kernel, run, offset, first, end, items_per_wg)
        };
        let p64 = p as u64;
        for run in 0..runs {
            match (opts.shape, opts.method) {
                (Shape::Directions(q), _) => {
                    plan(KernelId::SpsaSse, run, 0, 0, 1 + 2 * q as u64, 1)
                }
                (Shape::Coordinates(count), Method::Naive) => {
                    plan(KernelId::NudgedSse, run, 0, 0, p64 + 1, 1);
                    for j in 1..count {
                        plan(KernelId::NudgedSse, run, j, 1, p64 + 1, 1);
                    }
                }
                (Shape::Coordinates(count), Method::Reuse) => {
                    // Slot 0 (the unperturbed pass) is one "evaluation" of B samples (a workgroup
                    // each, or tiles per layer); every offset reuses what it stored.
                    if tiled_forward {
                        for l in 0..num_layers as u64 {
                            plan(KernelId::ForwardTile, run, 0, l, l + 1, 1);
                        }
                        plan(KernelId::ForwardLoss, run, 0, 0, 1, WG_SIZE as u64);
                    } else {
                        plan(KernelId::ForwardStore, run, 0, 0, 1, 1);
                    }
                    if closed {
                        plan(
                            KernelId::ReusePrepare,
                            run,
                            0,
                            0,
                            hidden as u64,
                            WG_SIZE as u64,
                        );
                    }
                    // Parameters of the last two layers need no workgroup memory; earlier ones do.
                    let shallow_from = model.weight_offset(num_layers.saturating_sub(2)) as u64;
                    for j in 0..count {
                        plan(KernelId::ReuseDeep, run, j, 1, 1 + shallow_from, 1);
                        match reuse_kernel {
                            Some(ReuseKernel::Invocation) => {
                                for (part, first, end) in seq_parts(model) {
                                    plan(KernelId::ReuseSeq(part), run, j, 1 + first, 1 + end, 1);
                                }
                            }
                            Some(ReuseKernel::Workgroup) => {
                                plan(KernelId::ReuseFused, run, j, 1 + shallow_from, 1 + p64, 1)
                            }
                            _ => plan(
                                KernelId::ReuseDsse,
                                run,
                                j,
                                1 + shallow_from,
                                1 + p64,
                                WG_SIZE as u64,
                            ),
                        }
                    }
                }
            }
        }
        let chunks = planner.chunks;
        let fused_epochs = fused_epochs_per_dispatch(model, b, &opts, chunks.len());
        let reduce_kernel = if seq_reduce {
            KernelId::ReduceSeq
        } else {
            KernelId::ReduceLosses
        };
        let loop_counts = dispatched_loop_counts(&chunks, reduce_kernel, fused_epochs, &loop_plan);
        if capped {
            if let Some(&(kernel, passes)) = loop_counts
                .iter()
                .find(|&&(_, passes)| passes > KERNEL_PASS_BUDGET)
            {
                return Err(Error::LoopsExceedCap {
                    kernel: kernel.name(),
                    passes: passes + GUARD_PASSES,
                    cap: LLVMPIPE_LOOP_CAP,
                    adapter: ctx.info.name.clone(),
                });
            }
        }
        let update_grid = grid((p as u64).div_ceil(WG_SIZE as u64), max_dim);
        let update_slot = chunks.len();
        // Only kernels that write per-sample values use `sse`.
        let max_slots = chunks
            .iter()
            .filter(|c| c.kernel.is_reduced())
            .map(|c| c.uniform.eval_count as u64)
            .max()
            .unwrap_or(1);
        // fused_epochs keeps each epoch's loss in the cache buffer.
        cache_floats = cache_floats.max(fused_epochs as usize);
        // Losses (or a batch of epochs' losses, or the parameters), then the tripwire's word.
        let readback_floats = out_floats.max(RESIDENT_MAX_BATCH as u64).max(p64) + 1;

        let device = &ctx.device;
        let align = limits.min_uniform_buffer_offset_alignment as u64;
        let uniform_stride = (std::mem::size_of::<ChunkUniform>() as u64).div_ceil(align) * align;
        let mut unit_off = 0u32;
        let layer_table: Vec<u32> = (0..num_layers)
            .flat_map(|l| {
                let layer = model.layers()[l];
                let row = [
                    layer.inputs as u32,
                    layer.outputs as u32,
                    model.weight_offset(l) as u32,
                    layer.activation.code(),
                    unit_off,
                    model.bias_offset(l) as u32,
                    0,
                    0,
                ];
                unit_off += layer.outputs as u32;
                row
            })
            .collect();
        let storage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
        let buffers = ctx.scoped("allocating GPU buffers", || {
            let init = |label: &str, contents: &[u8], usage| {
                device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(label),
                    contents,
                    usage,
                })
            };
            let empty = |label: &str, size: u64, usage| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size,
                    usage,
                    mapped_at_creation: false,
                })
            };
            let xs: Vec<f32> = data.x.iter().copied().collect();
            let ys: Vec<f32> = data.y.iter().copied().collect();
            let out_usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
            let out_usage_dst = out_usage | wgpu::BufferUsages::COPY_DST;
            [
                init(
                    "params",
                    bytemuck::cast_slice(&model.params.repeat(runs)),
                    storage | wgpu::BufferUsages::COPY_SRC,
                ),
                init("layers", bytemuck::cast_slice(&layer_table), storage),
                init("xs", bytemuck::cast_slice(&xs), storage),
                init("ys", bytemuck::cast_slice(&ys), storage),
                empty("sse", max_slots * sample_bytes, wgpu::BufferUsages::STORAGE),
                // The tripwire's word after the losses.
                empty("out", 4 * (out_floats + 1), out_usage_dst),
                empty(
                    "reuse cache",
                    4 * cache_floats as u64,
                    out_usage | wgpu::BufferUsages::COPY_DST,
                ),
                empty("next params", 4 * 2 * p as u64, out_usage),
                empty(
                    "readback",
                    4 * readback_floats,
                    wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                ),
                empty(
                    "chunk uniforms",
                    uniform_stride * (chunks.len() as u64 + 2),
                    wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                ),
                empty(
                    "saved params",
                    4 * p as u64,
                    wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                ),
            ]
        })?;
        let [params, layers, xs, ys, sse, out, cache, next, readback, uniforms, saved] = buffers;

        let (pipelines, bind_group) = ctx.scoped("building the nudge shaders", || {
            build_pipelines(
                device,
                model,
                closed,
                &loop_counts,
                &uniforms,
                [&params, &layers, &xs, &ys, &sse, &out, &cache, &next],
            )
        })?;
        if opts.method == Method::Reuse {
            let xt: Vec<f32> = data.x.t().iter().copied().collect();
            for run in 0..runs {
                let at = 4 * (run * cache_per_run + 2 * total_units * b) as u64;
                ctx.queue
                    .write_buffer(&cache, at, bytemuck::cast_slice(&xt));
            }
        }
        ctx.take_error()?;
        Ok(GpuEvaluator {
            ctx,
            pipelines,
            bind_group,
            params,
            next,
            saved,
            cache,
            uniforms,
            out,
            readback,
            chunks,
            update: (update_slot, update_grid),
            fused_epochs: fused_epochs as usize,
            uniform_stride,
            written: Vec::new(),
            method: opts.method,
            num_params: p,
            runs,
            shape: opts.shape,
            out_scratch: vec![0.0; out_floats as usize + 1],
            reuse_kernel,
            loop_counts,
            burn: None,
            trip_at: out_floats as u32,
            reduce_kernel,
        })
    }

    /// The context this evaluator runs on.
    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    /// The method this evaluator uses.
    pub fn method(&self) -> Method {
        self.method
    }

    /// The reuse kernel it runs (`None` for the naive method): the one asked for, or chosen by
    /// adapter, or `Split` where the per-parameter kernel's loop would pass llvmpipe's cap.
    pub fn reuse_kernel(&self) -> Option<ReuseKernel> {
        self.reuse_kernel
    }

    /// Number of dispatch groups a step is split into.
    pub fn num_chunks(&self) -> usize {
        self.chunks.len()
    }

    /// Every kernel this evaluator dispatches with the loop passes one invocation of it runs
    /// (the costliest, tripwire not included), as the planner counted them
    /// ([`crate::gpu::loop_passes`]).
    pub fn loop_counts(&self) -> &[(KernelId, u64)] {
        &self.loop_counts
    }

    /// Makes `kernel`'s tripwire run `burn` loop passes more (`None`: none more), and clears the
    /// tripwire. With it, the headroom a kernel leaves under llvmpipe's cap can be measured: the
    /// largest `burn` whose steps still succeed is the cap less the kernel's passes and the
    /// tripwire's own ([`crate::gpu::GUARD_PASSES`]). `tests/loop_cap.rs` holds every count to it.
    pub fn set_loop_burn(&mut self, burn: Option<(KernelId, u32)>) {
        self.burn = burn;
        self.written.clear();
        self.ctx.queue.write_buffer(
            &self.out,
            4 * self.trip_at as u64,
            bytemuck::bytes_of(&0.0f32),
        );
    }

    /// The error for a tripwire word read back (0.0: no kernel was cut short).
    fn check_tripwire(&self, word: f32) -> Result<()> {
        if word == 0.0 {
            return Ok(());
        }
        let kernel = KernelId::from_code(word as u32).map_or("unknown", KernelId::name);
        Err(Error::LoopCap {
            kernel,
            cap: LLVMPIPE_LOOP_CAP,
            adapter: self.ctx.info.name.clone(),
            checkpoint: None,
        })
    }

    /// Copies the tripwire's word to float `at` of the readback buffer.
    fn copy_tripwire(&self, encoder: &mut wgpu::CommandEncoder, at: usize) {
        encoder.copy_buffer_to_buffer(
            &self.out,
            4 * self.trip_at as u64,
            &self.readback,
            4 * at as u64,
            Some(4),
        );
    }

    /// Writes every uniform slot for `probes` (run r's chunks take probe r's eps, seed and step)
    /// and `lr`, skipping the write when nothing changed.
    fn write_uniforms(&mut self, probes: &[Probe], lr: f32) {
        let mut slots: Vec<ChunkUniform> = self
            .chunks
            .iter()
            .map(|c| {
                let mut u = ChunkUniform { lr, ..c.uniform };
                match probes.get(c.run) {
                    Some(&Probe::Coordinates { offsets, .. }) => u.eps = offsets[c.offset],
                    Some(&Probe::Directions {
                        eps,
                        seed,
                        step,
                        direction,
                        ..
                    }) => {
                        u.eps = eps;
                        u.seed_lo = seed as u32;
                        u.seed_hi = (seed >> 32) as u32;
                        u.step = step;
                        u.dist = direction.code();
                    }
                    None => {}
                }
                if let Some((kernel, burn)) = self.burn {
                    u.burn_kernel = kernel.code();
                    u.burn = burn;
                }
                u
            })
            .collect();
        slots.push(ChunkUniform {
            grid_x: self.update.1 .0,
            ..slots[0]
        });
        if slots == self.written {
            return;
        }
        let stride = self.uniform_stride as usize;
        let size = std::mem::size_of::<ChunkUniform>();
        let mut bytes = vec![0u8; stride * slots.len()];
        for (i, u) in slots.iter().enumerate() {
            bytes[i * stride..i * stride + size].copy_from_slice(bytemuck::bytes_of(u));
        }
        self.ctx.queue.write_buffer(&self.uniforms, 0, &bytes);
        self.written = slots;
    }

    /// Records one step's dispatches for the runs marked in `active` into `pass`.
    fn encode_step(&self, pass: &mut wgpu::ComputePass<'_>, active: &[bool]) {
        for (i, c) in self.chunks.iter().enumerate() {
            if !active.get(c.run).copied().unwrap_or(false) {
                continue;
            }
            pass.set_bind_group(
                0,
                &self.bind_group,
                &[(i as u64 * self.uniform_stride) as u32],
            );
            pass.set_pipeline(self.pipelines.get(c.kernel));
            pass.dispatch_workgroups(c.grid.0, c.grid.1, 1);
            if !c.kernel.is_reduced() {
                continue;
            }
            pass.set_pipeline(self.pipelines.get(self.reduce_kernel));
            pass.dispatch_workgroups(c.reduce_grid.0, c.reduce_grid.1, 1);
        }
    }

    /// Waits for the queue and copies `bytes` of the readback buffer into `dst`.
    fn read_back(&self, dst: &mut [f32]) -> Result<()> {
        let bytes = 4 * dst.len() as u64;
        let slice = self.readback.slice(..bytes);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.ctx
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")))?;
        self.ctx.take_error()?;
        rx.recv()
            .map_err(|_| Error::Gpu("readback was never answered".into()))?
            .map_err(|e| Error::Gpu(format!("reading results back: {e}")))?;
        {
            let view = slice
                .get_mapped_range()
                .map_err(|e| Error::Gpu(format!("reading results back: {e}")))?;
            dst.copy_from_slice(bytemuck::cast_slice(&view));
        }
        self.readback.unmap();
        Ok(())
    }

    /// Whether [`GpuEvaluator::train_resident`] runs whole batches of epochs in one dispatch.
    pub fn is_fused(&self) -> bool {
        self.fused_epochs > 0
    }

    /// Trains with the update on the GPU: up to `epochs_per_submit` epochs (at most
    /// [`RESIDENT_MAX_BATCH`]) are encoded per submission and their losses come back together (then
    /// `on_epoch` runs for each). Tiny models run a batch in one `fused_epochs` dispatch. Same float32
    /// arithmetic as [`crate::train::train`] with this evaluator; tests hold the two equal bit for bit.
    /// When `stop` is raised the run ends after the current batch, with fewer losses than epochs. A
    /// non-finite loss or parameter ends it as [`Outcome::Diverged`] with the losses and parameters
    /// of the start of the batch it happened in (the last state known finite).
    pub fn train_resident(
        &mut self,
        init: &[f32],
        hyper: &Hyper,
        epochs_per_submit: usize,
        stop: Option<&AtomicBool>,
        mut on_epoch: impl FnMut(usize, f64),
    ) -> Result<History> {
        hyper.validate()?;
        if hyper.estimator != Estimator::Forward
            || hyper.step != StepMode::Nominal
            || self.shape != Shape::Coordinates(1)
        {
            return Err(Error::Config(
                "--loop resident runs the book's forward difference over the nominal eps; use --loop host for other estimators".into(),
            ));
        }
        if init.len() != self.num_params {
            return Err(Error::Config(format!(
                "{} initial parameters for a model of {}",
                init.len(),
                self.num_params
            )));
        }
        let start = Instant::now();
        self.write_uniforms(&[hyper.probe(1)], hyper.lr as f32);
        self.ctx
            .queue
            .write_buffer(&self.params, 0, bytemuck::cast_slice(init));
        let mut per = epochs_per_submit.clamp(1, RESIDENT_MAX_BATCH);
        if self.fused_epochs > 0 {
            per = per.min(self.fused_epochs);
        }
        let pbytes = 4 * self.num_params as u64;
        let mut losses = Vec::with_capacity(hyper.epochs);
        let mut batch = vec![0.0f32; per + 1];
        while losses.len() < hyper.epochs && !stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            let n = per.min(hyper.epochs - losses.len());
            let mut save = self.ctx.device.create_command_encoder(&Default::default());
            save.copy_buffer_to_buffer(&self.params, 0, &self.saved, 0, Some(pbytes));
            let mut encoder = if self.fused_epochs > 0 {
                self.encode_fused(n, pbytes)
            } else {
                self.encode_epochs(n, pbytes)
            };
            self.copy_tripwire(&mut encoder, n);
            self.ctx.queue.submit([save.finish(), encoder.finish()]);
            self.read_back(&mut batch[..n + 1])?;
            self.check_tripwire(batch[n])?;
            if let Some(i) = batch[..n].iter().position(|l| !l.is_finite()) {
                // Fall back to the batch's start: its parameters are the last ones known finite
                // together with their epoch count.
                let epoch = losses.len() + i + 1;
                let what = format!("the loss is {}", batch[i]);
                return self.diverged(losses, epoch, what, start);
            }
            for &l in &batch[..n] {
                let epoch = losses.len() + 1;
                losses.push(l as f64);
                on_epoch(epoch, l as f64);
            }
        }
        let mut params = vec![0.0f32; self.num_params];
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&self.params, 0, &self.readback, 0, Some(pbytes));
        self.ctx.queue.submit([encoder.finish()]);
        self.read_back(&mut params)?;
        if let Some(k) = params.iter().position(|v| !v.is_finite()) {
            let batch_start = losses.len() - (losses.len() - 1) % per - 1;
            let epoch = losses.len();
            losses.truncate(batch_start);
            let what = format!("parameter {k} became {}", params[k]);
            return self.diverged(losses, epoch, what, start);
        }
        Ok(History {
            losses,
            params,
            seconds: start.elapsed().as_secs_f64(),
            outcome: Outcome::Finished,
        })
    }

    /// The history of a resident run that diverged in its current batch: the losses before the
    /// batch and the parameters saved at its start.
    fn diverged(
        &self,
        losses: Vec<f64>,
        epoch: usize,
        what: String,
        start: Instant,
    ) -> Result<History> {
        let mut params = vec![0.0f32; self.num_params];
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        let pbytes = 4 * self.num_params as u64;
        encoder.copy_buffer_to_buffer(&self.saved, 0, &self.readback, 0, Some(pbytes));
        self.ctx.queue.submit([encoder.finish()]);
        self.read_back(&mut params)?;
        Ok(History {
            losses,
            params,
            seconds: start.elapsed().as_secs_f64(),
            outcome: Outcome::Diverged { epoch, what },
        })
    }

    /// `n` epochs as separate dispatches: the step's kernels, `update`, then copies of the loss
    /// (into the readback buffer) and of the new parameters.
    fn encode_epochs(&self, n: usize, pbytes: u64) -> wgpu::CommandEncoder {
        let mut encoder = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("resident epochs"),
            });
        for e in 0..n {
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("epoch"),
                    timestamp_writes: None,
                });
                self.encode_step(&mut pass, &[true]);
                let (slot, g) = self.update;
                pass.set_bind_group(
                    0,
                    &self.bind_group,
                    &[(slot as u64 * self.uniform_stride) as u32],
                );
                pass.set_pipeline(self.pipelines.get(KernelId::Update));
                pass.dispatch_workgroups(g.0, g.1, 1);
            }
            encoder.copy_buffer_to_buffer(&self.out, 0, &self.readback, 4 * e as u64, Some(4));
            encoder.copy_buffer_to_buffer(&self.next, 0, &self.params, 0, Some(pbytes));
        }
        encoder
    }

    /// `n` epochs in one `fused_epochs` dispatch; the losses and the final parameters are copied out.
    fn encode_fused(&self, n: usize, pbytes: u64) -> wgpu::CommandEncoder {
        let slot = self.chunks.len() + 1;
        let u = ChunkUniform {
            eval_count: n as u32,
            ..self.written[0]
        };
        let at = slot as u64 * self.uniform_stride;
        self.ctx
            .queue
            .write_buffer(&self.uniforms, at, bytemuck::bytes_of(&u));
        let mut encoder = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("fused epochs"),
            });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("fused epochs"),
                timestamp_writes: None,
            });
            pass.set_bind_group(0, &self.bind_group, &[at as u32]);
            pass.set_pipeline(self.pipelines.get(KernelId::FusedEpochs));
            pass.dispatch_workgroups(1, 1, 1);
        }
        encoder.copy_buffer_to_buffer(&self.cache, 0, &self.readback, 0, Some(4 * n as u64));
        // After n epochs the parameters sit in half n % 2 of `next`.
        encoder.copy_buffer_to_buffer(
            &self.next,
            (n % 2) as u64 * pbytes,
            &self.params,
            0,
            Some(pbytes),
        );
        encoder
    }
}

impl Evaluator for GpuEvaluator {
    type Loss = f32;

    fn num_params(&self) -> usize {
        self.num_params
    }

    fn max_runs(&self) -> usize {
        self.runs
    }

    fn probe(
        &mut self,
        params: &[f32],
        probes: &[Probe],
        active: &[bool],
        losses: &mut [f32],
        values: &mut [f32],
    ) -> Result<()> {
        let p = self.num_params;
        let (runs, n) = check_probe(
            p,
            self.runs,
            params.len(),
            probes,
            active,
            losses.len(),
            values.len(),
        )?;
        if probes[0].shape() != self.shape {
            return Err(Error::Config(format!(
                "probe: this GPU evaluator was built for {:?}, not {:?}",
                self.shape,
                probes[0].shape()
            )));
        }
        let lr = self.written.first().map_or(0.0, |u| u.lr);
        self.write_uniforms(probes, lr);
        self.ctx
            .queue
            .write_buffer(&self.params, 0, bytemuck::cast_slice(params));
        let mut encoder = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("step"),
            });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("perturbed losses"),
                timestamp_writes: None,
            });
            self.encode_step(&mut pass, active);
        }
        let floats = runs * (1 + n);
        encoder.copy_buffer_to_buffer(&self.out, 0, &self.readback, 0, Some(4 * floats as u64));
        self.copy_tripwire(&mut encoder, floats);
        self.ctx.queue.submit([encoder.finish()]);
        let mut out = std::mem::take(&mut self.out_scratch);
        let read = self
            .read_back(&mut out[..floats + 1])
            .and_then(|()| self.check_tripwire(out[floats]));
        for r in (0..runs).filter(|&r| active[r]) {
            let row = &out[r * (1 + n)..(r + 1) * (1 + n)];
            let base = row[0];
            losses[r] = base;
            let dst = &mut values[r * n..(r + 1) * n];
            // Reuse sums each coordinate's change directly; full passes come back as losses.
            if self.method == Method::Reuse && matches!(self.shape, Shape::Coordinates(_)) {
                dst.copy_from_slice(&row[1..]);
            } else {
                for (d, &l) in dst.iter_mut().zip(&row[1..]) {
                    *d = l - base;
                }
            }
        }
        self.out_scratch = out;
        read
    }

    fn device(&self) -> DeviceInfo {
        DeviceInfo {
            kind: "gpu".into(),
            adapter: self.ctx.info.name.clone(),
            backend: self.ctx.backend(),
        }
    }
}
