//! The evaluator's GPU buffers, sized by the plan, and the layer table the kernels read.

use super::context::GpuContext;
use super::plan::{ChunkUniform, Plan, LAYER_WORDS};
use crate::data::Dataset;
use crate::error::Result;
use crate::model::Model;
use crate::settings::Method;
use wgpu::util::DeviceExt;

/// Every buffer of an evaluator. Bindings 1 to 8 are, in order, `params`, `layers`, `xs`, `ys`,
/// `sse`, `out`, `cache`, `next` (see [`Buffers::bound`]).
#[derive(Debug)]
pub(super) struct Buffers {
    /// Each run's parameters, end to end.
    pub(super) params: wgpu::Buffer,
    /// The layer table ([`layer_table`]).
    pub(super) layers: wgpu::Buffer,
    /// Inputs, `[sample][input]`.
    pub(super) xs: wgpu::Buffer,
    /// Targets, `[sample][output]`.
    pub(super) ys: wgpu::Buffer,
    /// Per-sample values of one chunk, `[slot in chunk][sample]`.
    pub(super) sse: wgpu::Buffer,
    /// Losses of every run, then the tripwire's word.
    pub(super) out: wgpu::Buffer,
    /// The reuse cache (and `fused_epochs`' losses).
    pub(super) cache: wgpu::Buffer,
    /// The resident loop's updated parameters (two copies for `fused_epochs`' ping-pong).
    pub(super) next: wgpu::Buffer,
    /// Mapped for reading back losses, parameters and the tripwire.
    pub(super) readback: wgpu::Buffer,
    /// One [`ChunkUniform`] per chunk, then the `update` slot and the `fused_epochs` slot.
    pub(super) uniforms: wgpu::Buffer,
    /// The resident loop's parameters at the start of the current batch of epochs (what a
    /// diverged batch falls back to).
    pub(super) saved: wgpu::Buffer,
}

/// Per layer [`LAYER_WORDS`] words: inputs, outputs, weight offset, activation code, first unit,
/// bias offset, two spare (`layer_info` in `shaders/common.wgsl`).
pub(super) fn layer_table(model: &Model) -> Vec<u32> {
    model
        .layer_spans()
        .iter()
        .flat_map(|s| {
            let row: [u32; LAYER_WORDS] = [
                s.inputs as u32,
                s.outputs as u32,
                s.w_off as u32,
                s.activation.code(),
                s.unit_off as u32,
                s.b_off as u32,
                0,
                0,
            ];
            row
        })
        .collect()
}

impl Buffers {
    /// Allocates every buffer `plan` needs (uniform slots `uniform_stride` bytes apart) and uploads
    /// the parameters, the layer table and the data; for the reuse method also the inputs
    /// transposed into each run's cache.
    pub(super) fn new(
        ctx: &GpuContext,
        model: &Model,
        data: &Dataset,
        plan: &Plan,
        method: Method,
        uniform_stride: u64,
    ) -> Result<Buffers> {
        let device = &ctx.device;
        let s = &plan.sizes;
        let storage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
        let out_usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
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
        let bufs = ctx.scoped("allocating GPU buffers", || {
            let xs: Vec<f32> = data.x.iter().copied().collect();
            let ys: Vec<f32> = data.y.iter().copied().collect();
            Buffers {
                params: init(
                    "params",
                    bytemuck::cast_slice(&model.params.repeat(s.runs)),
                    storage | wgpu::BufferUsages::COPY_SRC,
                ),
                layers: init("layers", bytemuck::cast_slice(&layer_table(model)), storage),
                xs: init("xs", bytemuck::cast_slice(&xs), storage),
                ys: init("ys", bytemuck::cast_slice(&ys), storage),
                sse: empty(
                    "sse",
                    s.max_slots * 4 * s.b as u64,
                    wgpu::BufferUsages::STORAGE,
                ),
                // The tripwire's word after the losses.
                out: empty(
                    "out",
                    4 * (s.out_floats + 1),
                    out_usage | wgpu::BufferUsages::COPY_DST,
                ),
                cache: empty(
                    "reuse cache",
                    4 * s.cache_floats as u64,
                    out_usage | wgpu::BufferUsages::COPY_DST,
                ),
                // Two copies of the parameters, the optimiser's two state vectors and its block.
                next: empty(
                    "next params",
                    4 * (4 * s.p + super::resident::OPT_BLOCK_FLOATS) as u64,
                    out_usage | wgpu::BufferUsages::COPY_DST,
                ),
                readback: empty(
                    "readback",
                    4 * s.readback_floats,
                    wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                ),
                uniforms: empty(
                    "chunk uniforms",
                    uniform_stride * (plan.chunks.len() as u64 + 2),
                    wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                ),
                saved: empty(
                    "saved params",
                    4 * s.p as u64,
                    wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                ),
            }
        })?;
        bufs.write_inputs_t(ctx, data, plan, method);
        Ok(bufs)
    }

    /// For the reuse method: the inputs transposed (`[input][sample]`) into each run's cache.
    fn write_inputs_t(&self, ctx: &GpuContext, data: &Dataset, plan: &Plan, method: Method) {
        if method != Method::Reuse {
            return;
        }
        let s = &plan.sizes;
        let xt: Vec<f32> = data.x.t().iter().copied().collect();
        for run in 0..s.runs {
            let at = 4 * (run * s.cache_per_run + 2 * s.total_units * s.b) as u64;
            ctx.queue
                .write_buffer(&self.cache, at, bytemuck::cast_slice(&xt));
        }
    }

    /// Replaces the data with `data` of the same shape (a mini-batch): inputs, targets and the
    /// reuse cache's transposed inputs; the next submission sees them.
    pub(super) fn write_data(&self, ctx: &GpuContext, data: &Dataset, plan: &Plan, method: Method) {
        let xs: Vec<f32> = data.x.iter().copied().collect();
        let ys: Vec<f32> = data.y.iter().copied().collect();
        ctx.queue
            .write_buffer(&self.xs, 0, bytemuck::cast_slice(&xs));
        ctx.queue
            .write_buffer(&self.ys, 0, bytemuck::cast_slice(&ys));
        self.write_inputs_t(ctx, data, plan, method);
    }

    /// The storage buffers of bindings 1 to 8, in binding order.
    pub(super) fn bound(&self) -> [&wgpu::Buffer; 8] {
        [
            &self.params,
            &self.layers,
            &self.xs,
            &self.ys,
            &self.sse,
            &self.out,
            &self.cache,
            &self.next,
        ]
    }
}

/// Bytes between uniform slots: a [`ChunkUniform`] rounded up to the adapter's offset alignment.
pub(super) fn uniform_stride(ctx: &GpuContext) -> u64 {
    let align = ctx.limits.min_uniform_buffer_offset_alignment as u64;
    (std::mem::size_of::<ChunkUniform>() as u64).div_ceil(align) * align
}
