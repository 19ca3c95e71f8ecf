//! Pipelines, buffers and dispatches for the nudged losses; one upload and one readback per step.

use super::context::GpuContext;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::precision::inv_count;
use crate::train::{DeviceInfo, Evaluator};
use wgpu::util::DeviceExt;

/// Invocations per `nudged_sse` workgroup (`WG_SIZE` in `shaders/nudge.wgsl`).
pub const WG_SIZE: u32 = 64;
/// Invocations per `reduce_losses` workgroup (`REDUCE_WG`); equals [`crate::cpu::REDUCE_LANES`].
pub const REDUCE_WG: u32 = 256;
/// Widest layer output the kernel keeps in workgroup memory (`MAX_WIDTH`).
pub const MAX_WIDTH: usize = 2048;
/// Loop iterations one invocation may run on llvmpipe, which silently ends every loop of an
/// invocation after 65,535 iterations in total; kept below that with a margin.
pub const LOOP_BUDGET: u64 = 60_000;
/// Upper bound on the per-sample squared-error buffer of one chunk of evaluations.
const SSE_BUDGET_BYTES: u64 = 256 << 20;

/// The `Chunk` uniform of `shaders/nudge.wgsl`, one per chunk of evaluations.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ChunkUniform {
    /// Number of layers.
    pub num_layers: u32,
    /// Samples B.
    pub batch: u32,
    /// Global index of the chunk's first evaluation.
    pub eval_base: u32,
    /// Evaluations in the chunk.
    pub eval_count: u32,
    /// Workgroups along x of the `nudged_sse` dispatch.
    pub grid_x: u32,
    /// Workgroups along x of the `reduce_losses` dispatch.
    pub reduce_grid_x: u32,
    /// Width of the last layer.
    pub outputs: u32,
    /// Padding.
    pub _pad: u32,
    /// The nudge.
    pub eps: f32,
    /// 1 / (B · outputs), rounded to float32 on the host.
    pub inv_count: f32,
    /// Padding to 16 bytes.
    pub _pad2: [u32; 2],
}

#[derive(Clone, Copy, Debug)]
struct Chunk {
    uniform: ChunkUniform,
    grid: (u32, u32),
    reduce_grid: (u32, u32),
}

/// Splits `n` workgroups into an (x, y) grid within `max_dim` per dimension.
fn grid(n: u64, max_dim: u32) -> (u32, u32) {
    let x = n.min(max_dim as u64).max(1);
    (x as u32, n.div_ceil(x) as u32)
}

/// Loop iterations one `nudged_sse` invocation runs for `model` (each layer: units per invocation ×
/// (inputs + 1); then the squared error over the outputs).
pub fn loop_iterations(model: &Model) -> u64 {
    let layers: u64 = model
        .layers()
        .iter()
        .map(|l| (l.outputs as u64).div_ceil(WG_SIZE as u64) * (l.inputs as u64 + 1))
        .sum();
    layers + model.layers().len() as u64 + model.outputs() as u64
}

/// Evaluates nudged losses on the GPU. Pipelines, bind group and buffers are built once; each step
/// uploads the parameters, runs two dispatches per chunk and reads the P + 1 losses back.
#[derive(Debug)]
pub struct GpuEvaluator {
    ctx: GpuContext,
    forward: wgpu::ComputePipeline,
    reduce: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    params: wgpu::Buffer,
    uniforms: wgpu::Buffer,
    losses: wgpu::Buffer,
    readback: wgpu::Buffer,
    chunks: Vec<Chunk>,
    uniform_stride: u64,
    eps: Option<f32>,
    num_params: usize,
}

impl GpuEvaluator {
    /// Builds pipelines and buffers for `model`'s shape and `data` on `ctx`'s device, after checking
    /// that they fit its limits.
    pub fn new(ctx: GpuContext, model: &Model, data: &Dataset) -> Result<GpuEvaluator> {
        GpuEvaluator::with_chunk_limit(ctx, model, data, u64::MAX)
    }

    /// As [`GpuEvaluator::new`], with at most `max_evals_per_chunk` evaluations per pair of
    /// dispatches (the device limits may force smaller chunks). Results do not depend on it.
    pub fn with_chunk_limit(
        ctx: GpuContext,
        model: &Model,
        data: &Dataset,
        max_evals_per_chunk: u64,
    ) -> Result<GpuEvaluator> {
        data.check_fits(model, "data")?;
        let limits = ctx.limits.clone();
        let p = model.num_params();
        let b = data.len();
        let evals = p as u64 + 1;
        let hidden = model.max_width();
        if hidden > MAX_WIDTH {
            return Err(Error::TooLarge(format!(
                "a layer has {hidden} units; the GPU kernel keeps at most {MAX_WIDTH} per layer in workgroup memory (use --device cpu)"
            )));
        }
        let iterations = loop_iterations(model);
        if ctx.is_llvmpipe() && iterations > LOOP_BUDGET {
            return Err(Error::TooLarge(format!(
                "{} would run {iterations} loop iterations per shader invocation; llvmpipe silently stops at 65,535 (use --device cpu or a hardware GPU)",
                ctx.info.name
            )));
        }
        let max_binding = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        for (what, bytes) in [
            ("the parameters", 4 * p as u64),
            ("the inputs", 4 * data.x.len() as u64),
            ("the targets", 4 * data.y.len() as u64),
            ("the losses", 4 * evals),
        ] {
            if bytes > max_binding {
                return Err(Error::TooLarge(format!(
                    "{what} need {bytes} bytes in one storage buffer; {} allows {max_binding}",
                    ctx.info.name
                )));
            }
        }
        let sample_bytes = 4 * b as u64;
        let max_dim = limits.max_compute_workgroups_per_dimension;
        let by_bytes = max_binding.min(SSE_BUDGET_BYTES) / sample_bytes;
        let by_grid = (max_dim as u64 * max_dim as u64) / b as u64;
        let per_chunk = by_bytes
            .min(by_grid)
            .min(evals)
            .min(max_evals_per_chunk.max(1))
            .min(u32::MAX as u64);
        if per_chunk == 0 {
            return Err(Error::TooLarge(format!(
                "{b} samples do not fit one dispatch on {} (squared errors need {sample_bytes} bytes per evaluation, {max_binding} allowed)",
                ctx.info.name
            )));
        }

        let base = ChunkUniform {
            num_layers: model.layers().len() as u32,
            batch: b as u32,
            outputs: model.outputs() as u32,
            inv_count: inv_count(b * model.outputs()),
            ..Default::default()
        };
        let chunks: Vec<Chunk> = (0..evals)
            .step_by(per_chunk as usize)
            .map(|first| {
                let count = per_chunk.min(evals - first);
                let g = grid(count * b as u64, max_dim);
                let r = grid(count, max_dim);
                Chunk {
                    uniform: ChunkUniform {
                        eval_base: first as u32,
                        eval_count: count as u32,
                        grid_x: g.0,
                        reduce_grid_x: r.0,
                        ..base
                    },
                    grid: g,
                    reduce_grid: r,
                }
            })
            .collect();

        let device = &ctx.device;
        let align = limits.min_uniform_buffer_offset_alignment as u64;
        let uniform_stride = (std::mem::size_of::<ChunkUniform>() as u64).div_ceil(align) * align;
        let layer_table: Vec<u32> = (0..model.layers().len())
            .flat_map(|l| {
                let layer = model.layers()[l];
                [
                    layer.inputs as u32,
                    layer.outputs as u32,
                    model.weight_offset(l) as u32,
                    layer.activation.code(),
                ]
            })
            .collect();
        let storage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
        let (params, layers, xs, ys, sse, losses, readback, uniforms) =
            ctx.scoped("allocating GPU buffers", || {
                let init = |label: &str, contents: &[u8]| {
                    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some(label),
                        contents,
                        usage: storage,
                    })
                };
                let params = init("params", bytemuck::cast_slice(&model.params));
                let layers = init("layers", bytemuck::cast_slice(&layer_table));
                let xs = init(
                    "xs",
                    bytemuck::cast_slice(&data.x.iter().copied().collect::<Vec<f32>>()),
                );
                let ys = init(
                    "ys",
                    bytemuck::cast_slice(&data.y.iter().copied().collect::<Vec<f32>>()),
                );
                let sse = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("sse"),
                    size: per_chunk * sample_bytes,
                    usage: wgpu::BufferUsages::STORAGE,
                    mapped_at_creation: false,
                });
                let losses = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("losses"),
                    size: 4 * evals,
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                });
                let readback = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("losses readback"),
                    size: 4 * evals,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                let uniforms = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("chunk uniforms"),
                    size: uniform_stride * chunks.len() as u64,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                (params, layers, xs, ys, sse, losses, readback, uniforms)
            })?;

        let (forward, reduce, bind_group) = ctx.scoped("building the nudge shaders", || {
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("nudge.wgsl"),
                source: wgpu::ShaderSource::Wgsl(super::nudge_shader_source().into()),
            });
            let storage_entry = |binding: u32, read_only: bool| wgpu::BindGroupLayoutEntry {
                binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            };
            let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("nudge"),
                entries: &[
                    wgpu::BindGroupLayoutEntry {
                        binding: 0,
                        visibility: wgpu::ShaderStages::COMPUTE,
                        ty: wgpu::BindingType::Buffer {
                            ty: wgpu::BufferBindingType::Uniform,
                            has_dynamic_offset: true,
                            min_binding_size: wgpu::BufferSize::new(
                                std::mem::size_of::<ChunkUniform>() as u64,
                            ),
                        },
                        count: None,
                    },
                    storage_entry(1, true),
                    storage_entry(2, true),
                    storage_entry(3, true),
                    storage_entry(4, true),
                    storage_entry(5, false),
                    storage_entry(6, false),
                ],
            });
            let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some("nudge"),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
            let pipeline = |entry: &str| {
                device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(entry),
                    layout: Some(&pipeline_layout),
                    module: &module,
                    entry_point: Some(entry),
                    // Every workgroup value is written before it is read; zeroing 16 KiB per
                    // workgroup (a shader loop on GL) would dominate small evaluations.
                    compilation_options: wgpu::PipelineCompilationOptions {
                        zero_initialize_workgroup_memory: false,
                        ..Default::default()
                    },
                    cache: None,
                })
            };
            let forward = pipeline("nudged_sse");
            let reduce = pipeline("reduce_losses");
            let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("nudge"),
                layout: &layout,
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &uniforms,
                            offset: 0,
                            size: wgpu::BufferSize::new(std::mem::size_of::<ChunkUniform>() as u64),
                        }),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: params.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: layers.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 3,
                        resource: xs.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 4,
                        resource: ys.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 5,
                        resource: sse.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 6,
                        resource: losses.as_entire_binding(),
                    },
                ],
            });
            (forward, reduce, bind_group)
        })?;
        ctx.take_error()?;
        Ok(GpuEvaluator {
            ctx,
            forward,
            reduce,
            bind_group,
            params,
            uniforms,
            losses,
            readback,
            chunks,
            uniform_stride,
            eps: None,
            num_params: p,
        })
    }

    /// The context this evaluator runs on.
    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    /// Number of dispatch chunks the evaluations are split into.
    pub fn num_chunks(&self) -> usize {
        self.chunks.len()
    }

    fn write_uniforms(&mut self, eps: f32) {
        let mut bytes = vec![0u8; (self.uniform_stride as usize) * self.chunks.len()];
        for (i, c) in self.chunks.iter().enumerate() {
            let u = ChunkUniform { eps, ..c.uniform };
            let at = i * self.uniform_stride as usize;
            bytes[at..at + std::mem::size_of::<ChunkUniform>()]
                .copy_from_slice(bytemuck::bytes_of(&u));
        }
        self.ctx.queue.write_buffer(&self.uniforms, 0, &bytes);
        self.eps = Some(eps);
    }
}

impl Evaluator for GpuEvaluator {
    type Loss = f32;

    fn num_params(&self) -> usize {
        self.num_params
    }

    fn nudged_losses(&mut self, params: &[f32], eps: f32, losses: &mut [f32]) -> Result<()> {
        if params.len() != self.num_params || losses.len() != self.num_params + 1 {
            return Err(Error::Config(format!(
                "nudged_losses: {} params and {} loss slots for a model of {} parameters",
                params.len(),
                losses.len(),
                self.num_params
            )));
        }
        if self.eps.map(f32::to_bits) != Some(eps.to_bits()) {
            self.write_uniforms(eps);
        }
        let queue = &self.ctx.queue;
        queue.write_buffer(&self.params, 0, bytemuck::cast_slice(params));
        let mut encoder = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("step"),
            });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("nudged losses"),
                timestamp_writes: None,
            });
            for (i, c) in self.chunks.iter().enumerate() {
                let offset = [(i as u64 * self.uniform_stride) as u32];
                pass.set_bind_group(0, &self.bind_group, &offset);
                pass.set_pipeline(&self.forward);
                pass.dispatch_workgroups(c.grid.0, c.grid.1, 1);
                pass.set_pipeline(&self.reduce);
                pass.dispatch_workgroups(c.reduce_grid.0, c.reduce_grid.1, 1);
            }
        }
        let bytes = 4 * losses.len() as u64;
        encoder.copy_buffer_to_buffer(&self.losses, 0, &self.readback, 0, Some(bytes));
        queue.submit([encoder.finish()]);

        let slice = self.readback.slice(..bytes);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.ctx
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for the step: {e}")))?;
        self.ctx.take_error()?;
        rx.recv()
            .map_err(|_| Error::Gpu("readback was never answered".into()))?
            .map_err(|e| Error::Gpu(format!("reading losses back: {e}")))?;
        {
            let view = slice
                .get_mapped_range()
                .map_err(|e| Error::Gpu(format!("reading losses back: {e}")))?;
            losses.copy_from_slice(bytemuck::cast_slice(&view));
        }
        self.readback.unmap();
        Ok(())
    }

    fn device(&self) -> DeviceInfo {
        DeviceInfo {
            kind: "gpu".into(),
            adapter: self.ctx.info.name.clone(),
            backend: self.ctx.backend(),
        }
    }
}
