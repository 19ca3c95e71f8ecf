//! The plan of a step: which kernel runs where, chosen once from the model, the data's size, the
//! options and what the adapter is ([`AdapterFacts`]). Pure: no device is touched, so every choice
//! can be tested without a GPU.
//!
//! The policy, in one place ([`Policy::choose`]): CPU adapters (llvmpipe) sum losses in one
//! invocation per slot (`reduce_seq`) and run the reuse method's last two layers one invocation per
//! parameter (`reuse_seq`, with the tiled unperturbed pass); hardware GPUs use a workgroup per slot
//! or parameter. On llvmpipe every kernel's exact loop-pass count ([`loop_passes`]) decides: a
//! kernel that would pass the cap gives way to one that does not, or the plan is refused.

use super::context::GpuContext;
use super::kernels::{
    loop_passes, seq_part_inputs, seq_part_is_weights, seq_parts, seq_repeat, seq_unit_shape,
    KernelId, LoopPlan, GUARD_PASSES, KERNEL_PASS_BUDGET, LLVMPIPE_LOOP_CAP, SEQ_WG, TILE_S,
    TILE_U, WG_SIZE,
};
use crate::data::Dataset;
use crate::error::{Error, Fix, Result, Setting};
use crate::estimate::{Shape, MAX_OFFSETS, MAX_SPSA_SAMPLES};
use crate::model::{Loss, Model};
use crate::precision::inv_count;
use crate::settings::Method;
use crate::shard::{share_len, Share};

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

/// The `Chunk` uniform of `shaders/common.wgsl`, one per dispatch group.
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
    /// 1 / [`Loss::mean_count`] (B · outputs for MSE, B for cross-entropy), rounded to float32 on
    /// the host.
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
    /// Reuse with an identity output layer: where the closed-form sums (MSE) or the series terms
    /// (cross-entropy) start in a run's cache (0: not used).
    pub ab_off: u32,
    /// The kernel ([`KernelId::code`]) whose tripwire also runs `burn` loop passes (0: none).
    /// While one is set the cross-entropy series is off, so every item takes the exact difference:
    /// the costliest path, the one [`crate::gpu::loop_passes`] counts.
    pub burn_kernel: u32,
    /// Extra loop passes for `burn_kernel`, to measure its headroom under llvmpipe's cap.
    pub burn: u32,
    /// Where in the output buffer a kernel cut short by the loop cap writes its code.
    pub trip_at: u32,
}

/// One dispatch group of a plan: a kernel over a range of slots, and its reduction's grid.
#[derive(Clone, Copy, Debug)]
pub(super) struct Chunk {
    pub(super) kernel: KernelId,
    /// The run whose parameters it evaluates.
    pub(super) run: usize,
    /// Which of the probe's coordinate offsets it applies.
    pub(super) offset: usize,
    pub(super) uniform: ChunkUniform,
    pub(super) grid: (u32, u32),
    pub(super) reduce_grid: (u32, u32),
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

/// Options of a [`GpuEvaluator`](super::GpuEvaluator).
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
    /// The loss (the CPU evaluator reads it too).
    pub loss: Loss,
    /// The part of every probe's nudges to evaluate (`--shard`, `--distributed`; the CPU evaluator
    /// reads it too); the rest of the values are left as they were.
    pub share: Share,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions {
            method: Method::Naive,
            max_evals_per_chunk: u64::MAX,
            reuse_kernel: None,
            runs: 1,
            shape: Shape::Coordinates(1),
            loss: Loss::Mse,
            share: Share::ALL,
        }
    }
}

/// Splits `n` workgroups into an (x, y) grid within `max_dim` per dimension.
pub(super) fn grid(n: u64, max_dim: u32) -> (u32, u32) {
    let x = n.min(max_dim as u64).max(1);
    (x as u32, n.div_ceil(x) as u32)
}

/// Epochs one `fused_epochs` dispatch can run for this model (0 when it does not apply): MSE (its
/// per-thread forward pass has no cross-entropy tail; the resident loop then runs the step's
/// dispatches and `update`, which compute either loss), naive method, one chunk, layers at most [`FUSED_MAX_WIDTH`] wide, at most `FUSED_MAX_ITEMS` (slot,
/// sample) items, and the most epochs whose [`loop_passes`] stay within [`KERNEL_PASS_BUDGET`].
fn fused_epochs_per_dispatch(
    model: &Model,
    samples: usize,
    opts: &GpuOptions,
    chunks: usize,
) -> u64 {
    let items = (model.num_params() as u64 + 1) * samples as u64;
    if opts.method != Method::Naive
        || opts.loss != Loss::Mse
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
            loss: opts.loss,
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

/// What the planner needs to know about the adapter, as plain data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterFacts {
    /// The adapter's name (for messages).
    pub name: String,
    /// llvmpipe: loops are cut silently at [`LLVMPIPE_LOOP_CAP`] passes, so every choice is made
    /// by the kernels' loop counts.
    pub capped: bool,
    /// A CPU-backed adapter (barriers and per-lane loads are dear).
    pub cpu: bool,
    /// Largest storage binding (and buffer) in bytes.
    pub max_binding: u64,
    /// Most workgroups per dispatch dimension.
    pub max_dim: u32,
}

impl AdapterFacts {
    /// The facts of `ctx`'s adapter.
    pub fn of(ctx: &GpuContext) -> AdapterFacts {
        let limits = &ctx.limits;
        AdapterFacts {
            name: ctx.info.name.clone(),
            capped: ctx.is_llvmpipe(),
            cpu: ctx.info.device_type == wgpu::DeviceType::Cpu,
            max_binding: limits
                .max_storage_buffer_binding_size
                .min(limits.max_buffer_size),
            max_dim: limits.max_compute_workgroups_per_dimension,
        }
    }
}

/// Buffer sizes of a plan, in floats unless named otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Sizes {
    /// Runs evaluated together.
    pub(super) runs: usize,
    /// Parameters per run.
    pub(super) p: usize,
    /// Samples.
    pub(super) b: usize,
    /// Sum of all layer widths.
    pub(super) total_units: usize,
    /// Last hidden layer's width when the output layer is summed in closed form (MSE) or by the
    /// series (cross-entropy), else 0.
    pub(super) hidden: usize,
    /// Losses (or deltas) of one run: 1 + the probe's values.
    pub(super) out_per_run: usize,
    /// Losses of all runs (the tripwire's word follows them).
    pub(super) out_floats: u64,
    /// Reuse cache of one run: z and a of every unit, the inputs transposed, the closed-form sums.
    pub(super) cache_per_run: usize,
    /// Reuse cache of all runs (at least 1; at least the fused epochs' losses).
    pub(super) cache_floats: usize,
    /// Where the closed-form sums start in a run's cache (0: not used).
    pub(super) ab_off: usize,
    /// Most slots one chunk writes per-sample values for (the `sse` buffer holds them).
    pub(super) max_slots: u64,
    /// The readback buffer: losses, a batch of epochs' losses or the parameters, and the tripwire.
    pub(super) readback_floats: u64,
}

impl Sizes {
    /// The sizes before chunking, checked against the adapter's binding size and 32-bit indices.
    fn new(
        facts: &AdapterFacts,
        model: &Model,
        data: &Dataset,
        opts: &GpuOptions,
    ) -> Result<Sizes> {
        let (runs, p, b) = (opts.runs, model.num_params(), data.len());
        let reuse = opts.method == Method::Reuse;
        let total_units = model.num_units();
        let mse = opts.loss == Loss::Mse;
        let hidden = if reuse { model.closed_form_units() } else { 0 };
        // Reuse cache: z and a of every unit, then the inputs transposed to [input][sample] so that
        // neighbouring invocations (neighbouring samples) read neighbouring words. Then for MSE
        // the closed-form output sums (identity output layer): ab [hidden][sample], then bb
        // [hidden]; for cross-entropy each sample's loss (`loss_row` in shaders/common.wgsl),
        // then (identity output layer) the series terms [4 hidden][sample] and the spreads
        // [hidden] (src/cpu/reuse.rs `xent_series`).
        let kept = if mse { 0 } else { b };
        let ab_off = if hidden > 0 {
            (2 * total_units + model.inputs()) * b + kept
        } else {
            0
        };
        let per_unit = if mse { b + 1 } else { 4 * b + 1 };
        let kept = kept + hidden * per_unit;
        let cache_per_run = if reuse {
            (2 * total_units + model.inputs()) * b + kept
        } else {
            0
        };
        let cache_floats = (runs * cache_per_run).max(1);
        let out_per_run = 1 + opts.shape.len(p);
        let out_floats = runs as u64 * out_per_run as u64;
        let max_binding = facts.max_binding;
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
                return Err(Error::TooLarge {
                    what: what.into(),
                    needed: bytes,
                    limit: max_binding,
                    unit: "bytes in one storage buffer",
                    adapter: facts.name.clone(),
                });
            }
        }
        if b > u32::MAX as usize / 2
            || runs * p > u32::MAX as usize / 2
            || out_floats > u32::MAX as u64 / 2
            || cache_floats > u32::MAX as usize / 2
        {
            let needed = [b as u64, (runs * p) as u64, out_floats, cache_floats as u64];
            return Err(Error::TooLarge {
                what: format!("{runs} run(s) of {p} parameters × {b} samples"),
                needed: needed.into_iter().max().unwrap_or_default(),
                limit: u32::MAX as u64 / 2,
                unit: "array elements",
                adapter: "32-bit indexing".into(),
            });
        }
        Ok(Sizes {
            runs,
            p,
            b,
            total_units,
            hidden,
            out_per_run,
            out_floats,
            cache_per_run,
            cache_floats,
            ab_off,
            max_slots: 1,
            readback_floats: 0,
        })
    }
}

/// The kernel choices of a plan: the adapter policy applied to this model and batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Policy {
    /// Sum losses one invocation per slot (`reduce_seq`) instead of a workgroup per slot.
    pub(super) seq_reduce: bool,
    /// How the reuse method handles the last two layers (`None` for the naive method).
    pub(super) reuse_kernel: Option<ReuseKernel>,
    /// The reuse method's unperturbed pass in tiles, a dispatch per layer (with `reuse_seq`).
    pub(super) tiled_forward: bool,
}

impl Policy {
    /// One invocation per slot suits CPU adapters (llvmpipe pays for every barrier); a real GPU
    /// wants a workgroup per slot, whose reads of the samples are coalesced. A kernel whose loops
    /// would pass llvmpipe's cap gives way to its split form.
    fn choose(facts: &AdapterFacts, model: &Model, opts: &GpuOptions, plan: &LoopPlan) -> Policy {
        let b = plan.batch;
        let fits =
            |kernel: KernelId| !facts.capped || loop_passes(kernel, plan) <= KERNEL_PASS_BUDGET;
        let seq_reduce = b <= SEQ_REDUCE_MAX_BATCH && (facts.cpu || b <= 32);
        let reuse_kernel = match opts.reuse_kernel {
            _ if opts.method != Method::Reuse => None,
            Some(k) => Some(k),
            None if facts.cpu => Some(ReuseKernel::Invocation),
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
        let tiled_forward =
            reuse_kernel == Some(ReuseKernel::Invocation) && fits(KernelId::ForwardTile);
        Policy {
            seq_reduce,
            reuse_kernel,
            tiled_forward,
        }
    }
}

/// A step's plan: the chunks (kernel × slot range × run × offset), the reduction that follows
/// per-sample kernels, the resident loop's kernels, every dispatched kernel's loop-pass count, and
/// the buffer sizes.
#[derive(Clone, Debug)]
pub(super) struct Plan {
    /// The reuse method sums the output layer in closed form (MSE) or by the series
    /// (cross-entropy).
    pub(super) closed: bool,
    pub(super) sizes: Sizes,
    pub(super) policy: Policy,
    pub(super) chunks: Vec<Chunk>,
    /// The reduction after kernels that write per-sample values.
    pub(super) reduce_kernel: KernelId,
    /// Epochs one `fused_epochs` dispatch may run (0: the model is not tiny enough).
    pub(super) fused_epochs: u64,
    /// Every dispatched kernel's loop passes per invocation.
    pub(super) loop_counts: Vec<(KernelId, u64)>,
    /// The `update` dispatch's grid (its uniform slot follows the chunks').
    pub(super) update_grid: (u32, u32),
}

impl Plan {
    /// Plans `model` on `data` with `opts` for the adapter `facts` describes, after checking the
    /// options and that everything fits; refuses a plan whose loops would pass llvmpipe's cap.
    pub(super) fn new(
        facts: &AdapterFacts,
        model: &Model,
        data: &Dataset,
        opts: &GpuOptions,
    ) -> Result<Plan> {
        check_options(opts)?;
        opts.loss.check(model)?;
        let widest = model.max_width();
        if widest > MAX_WIDTH {
            return Err(Error::TooLarge {
                what: "the widest layer".into(),
                needed: widest as u64,
                limit: MAX_WIDTH as u64,
                unit: "units in workgroup memory",
                adapter: "the GPU kernels".into(),
            });
        }
        // The squared error's closed form, or cross-entropy's series.
        let closed = opts.method == Method::Reuse && model.closed_form_output();
        let loop_plan = LoopPlan {
            model,
            batch: data.len(),
            closed,
            epochs: 0,
            loss: opts.loss,
        };
        let mut sizes = Sizes::new(facts, model, data, opts)?;
        let (b, p) = (sizes.b, sizes.p);
        let sample_bytes = 4 * b as u64;
        let by_bytes = facts.max_binding.min(SSE_BUDGET_BYTES) / sample_bytes;
        if by_bytes == 0 {
            return Err(Error::TooLarge {
                what: format!("one evaluation of {b} samples"),
                needed: sample_bytes,
                limit: facts.max_binding,
                unit: "bytes in one dispatch",
                adapter: facts.name.clone(),
            });
        }
        let policy = Policy::choose(facts, model, opts, &loop_plan);
        let base = ChunkUniform {
            num_layers: model.layers().len() as u32,
            batch: b as u32,
            outputs: model.outputs() as u32,
            total_units: sizes.total_units as u32,
            num_params: p as u32,
            method: (opts.method == Method::Reuse) as u32,
            inv_count: inv_count(opts.loss.mean_count(b, model.outputs())),
            ab_off: sizes.ab_off as u32,
            trip_at: sizes.out_floats as u32,
            ..Default::default()
        };
        let mut planner = ChunkPlanner {
            model,
            opts,
            b,
            p,
            max_dim: facts.max_dim,
            by_bytes,
            seq_reduce: policy.seq_reduce,
            base,
            out_per_run: sizes.out_per_run,
            cache_per_run: sizes.cache_per_run,
            chunks: Vec::new(),
        };
        for run in 0..opts.runs {
            planner.add_run(run, &policy, sizes.hidden);
        }
        let chunks = planner.chunks;
        let fused_epochs = fused_epochs_per_dispatch(model, b, opts, chunks.len());
        let reduce_kernel = if policy.seq_reduce {
            KernelId::ReduceSeq
        } else {
            KernelId::ReduceLosses
        };
        let loop_counts = dispatched_loop_counts(&chunks, reduce_kernel, fused_epochs, &loop_plan);
        if facts.capped {
            if let Some(&(kernel, passes)) = loop_counts
                .iter()
                .find(|&&(_, passes)| passes > KERNEL_PASS_BUDGET)
            {
                return Err(Error::LoopsExceedCap {
                    kernel: kernel.name(),
                    passes: passes + GUARD_PASSES,
                    cap: LLVMPIPE_LOOP_CAP,
                    adapter: facts.name.clone(),
                });
            }
        }
        // Only kernels that write per-sample values use `sse`.
        sizes.max_slots = chunks
            .iter()
            .filter(|c| c.kernel.is_reduced())
            .map(|c| c.uniform.eval_count as u64)
            .max()
            .unwrap_or(1);
        // fused_epochs keeps each epoch's loss in the cache buffer.
        sizes.cache_floats = sizes.cache_floats.max(fused_epochs as usize);
        sizes.readback_floats = sizes
            .out_floats
            .max(RESIDENT_MAX_BATCH as u64)
            .max(p as u64)
            + 1;
        Ok(Plan {
            closed,
            sizes,
            policy,
            chunks,
            reduce_kernel,
            fused_epochs,
            loop_counts,
            update_grid: grid((p as u64).div_ceil(WG_SIZE as u64), facts.max_dim),
        })
    }
}

/// Probe shapes and run counts an evaluator can hold.
fn check_options(opts: &GpuOptions) -> Result<()> {
    match opts.shape {
        Shape::Coordinates(count) if (1..=MAX_OFFSETS).contains(&count) => {}
        Shape::Directions(q) if (1..=MAX_SPSA_SAMPLES).contains(&q) => {
            if opts.method != Method::Naive {
                return Err(Error::refused(
                    &[(Setting::Estimator, "spsa"), (Setting::Method, "reuse")],
                    "SPSA moves every parameter, so nothing can be reused",
                    Some(Fix::Use(Setting::Method, "naive")),
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
    Ok(())
}

/// The slot ranges of a `reuse_seq` weights part [first, end) (chunks of whole units, `n_in`
/// slots each) that hold the parameters of slots [lo, hi): weights are stored input-major
/// (`w_off + i·n_out + u`), so a parameter range touches the units its columns fall in — all of
/// them once it spans a row of `n_out`. The part's other parameters are computed too, not read.
fn seq_units(n_in: u64, first: u64, end: u64, (lo, hi): (u64, u64)) -> Vec<(u64, u64)> {
    let n_out = (end - first) / n_in;
    let units = |a: u64, b: u64| (first + a * n_in, first + b * n_in);
    if hi - lo >= n_out {
        return vec![units(0, n_out)];
    }
    let (ua, ub) = ((lo - first) % n_out, (hi - 1 - first) % n_out);
    if ua <= ub {
        vec![units(ua, ub + 1)]
    } else {
        vec![units(0, ub + 1), units(ua, n_out)]
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
    /// Every chunk of one run: the probe's slots by method and shape.
    fn add_run(&mut self, run: usize, policy: &Policy, hidden: usize) {
        let p64 = self.p as u64;
        let num_layers = self.model.layers().len();
        match (self.opts.shape, self.opts.method) {
            (Shape::Directions(q), _) => {
                self.add(KernelId::SpsaSse, run, 0, 0, 1 + 2 * q as u64, 1)
            }
            (Shape::Coordinates(count), Method::Naive) => {
                self.add(KernelId::NudgedSse, run, 0, 0, p64 + 1, 1);
                for j in 1..count {
                    self.add(KernelId::NudgedSse, run, j, 1, p64 + 1, 1);
                }
            }
            (Shape::Coordinates(count), Method::Reuse) => {
                // Slot 0 (the unperturbed pass) is one "evaluation" of B samples (a workgroup
                // each, or tiles per layer); every offset reuses what it stored.
                if policy.tiled_forward {
                    for l in 0..num_layers as u64 {
                        self.add(KernelId::ForwardTile, run, 0, l, l + 1, 1);
                    }
                    self.add(KernelId::ForwardLoss, run, 0, 0, 1, WG_SIZE as u64);
                } else {
                    self.add(KernelId::ForwardStore, run, 0, 0, 1, 1);
                }
                if hidden > 0 {
                    let wg = WG_SIZE as u64;
                    self.add(KernelId::ReusePrepare, run, 0, 0, hidden as u64, wg);
                }
                // Parameters of the last two layers need no workgroup memory; earlier ones do.
                let shallow = 1 + self.model.weight_offset(num_layers.saturating_sub(2)) as u64;
                for j in 0..count {
                    self.add(KernelId::ReuseDeep, run, j, 1, shallow, 1);
                    match policy.reuse_kernel {
                        Some(ReuseKernel::Invocation) => {
                            for (part, first, end) in seq_parts(self.model) {
                                self.add(KernelId::ReuseSeq(part), run, j, 1 + first, 1 + end, 1);
                            }
                        }
                        Some(ReuseKernel::Workgroup) => {
                            self.add(KernelId::ReuseFused, run, j, shallow, 1 + p64, 1)
                        }
                        _ => {
                            let wg = WG_SIZE as u64;
                            self.add(KernelId::ReuseDsse, run, j, shallow, 1 + p64, wg)
                        }
                    }
                }
            }
        }
    }
    /// The slots of [first, end) that the options' share needs: a nudge kernel's slots k + 1 for
    /// k in the share, and slot 0 (the unperturbed loss) wherever the range holds it; `None` when
    /// nothing is left. A `reuse_seq` weights part keeps whole units (its chunks hold every input
    /// of their units), so its range is widened to unit bounds; the extra values are not read.
    fn clip(&self, kernel: KernelId, first: u64, end: u64) -> Vec<(u64, u64)> {
        let nudges = matches!(
            kernel,
            KernelId::NudgedSse
                | KernelId::SpsaSse
                | KernelId::ReuseDeep
                | KernelId::ReuseSeq(_)
                | KernelId::ReuseFused
                | KernelId::ReuseDsse
        );
        let n = share_len(self.p, self.opts.shape);
        if !nudges || self.opts.share.covers(n) {
            return vec![(first, end)];
        }
        let r = self.opts.share.range(n);
        let (lo, hi) = (first.max(1 + r.start as u64), end.min(1 + r.end as u64));
        if let KernelId::ReuseSeq(part) = kernel {
            if seq_part_is_weights(part) && lo < hi {
                return seq_units(seq_part_inputs(self.model, part), first, end, (lo, hi));
            }
        }
        let mut ranges = Vec::new();
        if first == 0 {
            ranges.push((0, 1));
        }
        if lo < hi {
            match ranges.last_mut() {
                // Slot 0 and the share's slots from 1 on: one range when they touch.
                Some(zero) if lo == 1 => zero.1 = hi,
                _ => ranges.push((lo, hi)),
            }
        }
        ranges
    }

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
        for (first, end) in self.clip(kernel, first, end) {
            self.add_range(kernel, run, offset, first, end, items_per_wg);
        }
    }

    /// [`ChunkPlanner::add`] of one range the share kept.
    fn add_range(
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
                    // A workgroup per (block of U units, block of SEQ_WG lanes of R inputs).
                    let n_in = seq_part_inputs(self.model, part);
                    let (r, u) = seq_unit_shape(self.model, part, self.opts.loss)
                        .unwrap_or((seq_repeat(n_in), 1));
                    let lanes = n_in.div_ceil(r as u64);
                    let units = (count / n_in).div_ceil(u as u64);
                    grid(units * lanes.div_ceil(SEQ_WG as u64), self.max_dim)
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

#[cfg(test)]
mod tests {
    use super::seq_units;

    /// A part of 3 units × 4 inputs at slot 10: parameter column u of row i is slot 10 + 3i + u.
    #[test]
    fn a_weights_part_keeps_the_units_a_slot_range_touches() {
        let units = |lo, hi| seq_units(4, 10, 22, (lo, hi));
        // Unit 1 of row 0 alone, then columns 1..2 of one row.
        assert_eq!(units(11, 12), [(14, 18)]);
        assert_eq!(units(14, 16), [(14, 22)]);
        // Columns 2, 0 across a row break: units 0 and 2, not 1.
        assert_eq!(units(12, 14), [(10, 14), (18, 22)]);
        // A whole row's width or more: every unit.
        assert_eq!(units(11, 14), [(10, 22)]);
        assert_eq!(units(10, 22), [(10, 22)]);
    }
}
