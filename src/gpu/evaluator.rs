//! The GPU evaluator: built once from a plan (`plan.rs`), buffers (`buffers.rs`) and pipelines
//! (`pipelines.rs`); each host-driven step writes the uniforms, encodes the plan's dispatches, submits
//! and reads the losses and the tripwire back. The resident loop is in `resident.rs`.

use super::buffers::{uniform_stride, Buffers};
use super::context::GpuContext;
use super::kernels::{seq_unit_shape, KernelId, LLVMPIPE_LOOP_CAP, PART_HIDDEN_WEIGHTS};
use super::pipelines::{build_pipelines, Pipelines};
use super::plan::{AdapterFacts, ChunkUniform, GpuOptions, Plan, ReuseKernel};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::estimate::{Probe, Shape};
use crate::evaluator::{
    check_batch, check_probe, Evaluator, History, ResidentEpoch, ResidentHistory, ResidentJob,
};
use crate::model::Model;
use crate::settings::{DeviceInfo, Hyper, Method};
use crate::shard::{value_ranges, Share};
use std::sync::atomic::AtomicBool;

/// Evaluates nudged losses on the GPU. Pipelines, bind group and buffers are built once; each
/// host-driven step uploads the parameters, runs the dispatches and reads P + 1 floats back.
#[derive(Debug)]
pub struct GpuEvaluator {
    pub(super) ctx: GpuContext,
    pub(super) plan: Plan,
    pub(super) pipelines: Pipelines,
    pub(super) bind_group: wgpu::BindGroup,
    pub(super) bufs: Buffers,
    pub(super) uniform_stride: u64,
    /// The uniforms as last written (chunks, then the `update` slot), to skip unchanged writes.
    pub(super) written: Vec<ChunkUniform>,
    pub(super) method: Method,
    /// Inputs and targets per sample (a mini-batch must have the same).
    pub(super) io: (usize, usize),
    pub(super) num_params: usize,
    pub(super) runs: usize,
    pub(super) shape: Shape,
    pub(super) out_scratch: Vec<f32>,
    /// Extra tripwire passes for one kernel ([`GpuEvaluator::set_loop_burn`]).
    pub(super) burn: Option<(KernelId, u32)>,
    /// The part of each probe's values it computes ([`GpuOptions::share`]).
    pub(super) share: Share,
    /// One sample: `nudged_sse` and `spsa_sse` write their slots' losses themselves
    /// (`one_sample_loss` in `shaders/forward.wgsl`), so their reduction is not dispatched.
    pub(super) direct_losses: bool,
    /// The plan's kernels that are dispatched, with their loop passes.
    pub(super) dispatched: Vec<(KernelId, u64)>,
    /// `reuse_seq` runs its unit path for the last hidden layer's weights (`seq_unit_shape`).
    pub(super) unit_path: bool,
}

/// Whether `kernel` writes its slots' losses itself when a step has one sample.
fn writes_one_sample_loss(kernel: KernelId) -> bool {
    matches!(kernel, KernelId::NudgedSse | KernelId::SpsaSse)
}

impl GpuEvaluator {
    /// A naive-method evaluator for `model`'s shape and `data` on `ctx`'s device.
    pub fn new(ctx: GpuContext, model: &Model, data: &Dataset) -> Result<GpuEvaluator> {
        GpuEvaluator::with_options(ctx, model, data, GpuOptions::default())
    }

    /// Builds pipelines and buffers after checking that the model and data fit the device: the
    /// plan first (pure, `Plan::new` in `gpu/plan.rs`), then the buffers it sizes, then the pipelines of the
    /// kernels it dispatches.
    pub fn with_options(
        ctx: GpuContext,
        model: &Model,
        data: &Dataset,
        opts: GpuOptions,
    ) -> Result<GpuEvaluator> {
        data.check_fits(model, "data")?;
        let plan = Plan::new(&AdapterFacts::of(&ctx), model, data, &opts)?;
        let direct_losses = plan.sizes.b == 1;
        let reduced = |k: KernelId| k.is_reduced() && !(direct_losses && writes_one_sample_loss(k));
        let reduce_used = plan.chunks.iter().any(|c| reduced(c.kernel));
        let dispatched: Vec<(KernelId, u64)> = plan
            .loop_counts
            .iter()
            .copied()
            .filter(|&(k, _)| reduce_used || k != plan.reduce_kernel)
            .collect();
        let uniform_stride = uniform_stride(&ctx);
        let bufs = Buffers::new(&ctx, model, data, &plan, opts.method, uniform_stride)?;
        let (pipelines, bind_group) = ctx.scoped("building the kernels' pipelines", || {
            build_pipelines(
                &ctx,
                model,
                (plan.closed, opts.loss),
                &dispatched,
                &bufs.uniforms,
                bufs.bound(),
            )
        })??;
        ctx.take_error()?;
        let unit_path = dispatched
            .iter()
            .any(|&(k, _)| k == KernelId::ReuseSeq(PART_HIDDEN_WEIGHTS))
            && seq_unit_shape(model, PART_HIDDEN_WEIGHTS, opts.loss).is_some();
        let out_floats = plan.sizes.out_floats as usize;
        Ok(GpuEvaluator {
            ctx,
            plan,
            pipelines,
            bind_group,
            bufs,
            uniform_stride,
            written: Vec::new(),
            method: opts.method,
            io: (data.x.ncols(), data.y.ncols()),
            num_params: model.num_params(),
            runs: opts.runs,
            shape: opts.shape,
            out_scratch: vec![0.0; out_floats + 1],
            burn: None,
            share: opts.share,
            direct_losses,
            dispatched,
            unit_path,
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
        self.plan.policy.reuse_kernel
    }

    /// Number of dispatch groups a step is split into.
    pub fn num_chunks(&self) -> usize {
        self.plan.chunks.len()
    }

    /// Every kernel this evaluator dispatches with the loop passes one invocation of it runs
    /// (the costliest, tripwire not included), as the planner counted them
    /// ([`crate::gpu::loop_passes`]).
    pub fn loop_counts(&self) -> &[(KernelId, u64)] {
        &self.dispatched
    }

    /// Makes `kernel`'s tripwire run `burn` loop passes more (`None`: none more), and clears the
    /// tripwire. With it, the headroom a kernel leaves under llvmpipe's cap can be measured: the
    /// largest `burn` whose steps still succeed is the cap less the kernel's passes and the
    /// tripwire's own ([`crate::gpu::GUARD_PASSES`]). `tests/loop_cap.rs` holds every count to it.
    pub fn set_loop_burn(&mut self, burn: Option<(KernelId, u32)>) {
        self.burn = burn;
        self.written.clear();
        self.ctx.queue.write_buffer(
            &self.bufs.out,
            4 * self.plan.sizes.out_floats,
            bytemuck::bytes_of(&0.0f32),
        );
    }

    /// The error for a tripwire word read back (0.0: no kernel was cut short).
    pub(super) fn check_tripwire(&self, word: f32) -> Result<()> {
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
    pub(super) fn copy_tripwire(&self, encoder: &mut wgpu::CommandEncoder, at: usize) {
        encoder.copy_buffer_to_buffer(
            &self.bufs.out,
            4 * self.plan.sizes.out_floats,
            &self.bufs.readback,
            4 * at as u64,
            Some(4),
        );
    }

    /// Writes every uniform slot for `probes` (run r's chunks take probe r's eps, seed and step)
    /// and `lr`, skipping the write when nothing changed.
    pub(super) fn write_uniforms(&mut self, probes: &[Probe], lr: f32) {
        let mut slots: Vec<ChunkUniform> = self
            .plan
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
            grid_x: self.plan.update_grid.0,
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
        self.ctx.queue.write_buffer(&self.bufs.uniforms, 0, &bytes);
        self.written = slots;
    }

    /// Records one step's dispatches for the runs marked in `active` into `pass`.
    pub(super) fn encode_step(&self, pass: &mut wgpu::ComputePass<'_>, active: &[bool]) {
        for (i, c) in self.plan.chunks.iter().enumerate() {
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
            if !c.kernel.is_reduced() || self.direct_losses && writes_one_sample_loss(c.kernel) {
                continue;
            }
            pass.set_pipeline(self.pipelines.get(self.plan.reduce_kernel));
            pass.dispatch_workgroups(c.reduce_grid.0, c.reduce_grid.1, 1);
        }
    }

    /// Waits for the queue and copies `bytes` of the readback buffer into `dst`.
    pub(super) fn read_back(&self, dst: &mut [f32]) -> Result<()> {
        self.read_from(&self.bufs.readback, dst)
    }

    /// Waits for the queue and copies the first floats of the mapped-for-reading `buf` into `dst`.
    pub(super) fn read_from(&self, buf: &wgpu::Buffer, dst: &mut [f32]) -> Result<()> {
        if super::context::injected_fault_due() {
            self.ctx.device.destroy();
        }
        let bytes = 4 * dst.len() as u64;
        let slice = buf.slice(..bytes);
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
        buf.unmap();
        super::context::mark("readback");
        Ok(())
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
            .write_buffer(&self.bufs.params, 0, bytemuck::cast_slice(params));
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
        encoder.copy_buffer_to_buffer(
            &self.bufs.out,
            0,
            &self.bufs.readback,
            0,
            Some(4 * floats as u64),
        );
        self.copy_tripwire(&mut encoder, floats);
        self.ctx.queue.submit([encoder.finish()]);
        let mut out = std::mem::take(&mut self.out_scratch);
        let read = self
            .read_back(&mut out[..floats + 1])
            .and_then(|()| self.check_tripwire(out[floats]));
        // The share's values of one run (all of them without --shard).
        let mine = value_ranges(p, self.shape, 1, self.share);
        for r in (0..runs).filter(|&r| active[r]) {
            let row = &out[r * (1 + n)..(r + 1) * (1 + n)];
            let base = row[0];
            losses[r] = base;
            for range in &mine {
                let dst = &mut values[r * n + range.start..r * n + range.end];
                let src = &row[1 + range.start..1 + range.end];
                // Reuse sums each coordinate's change directly; full passes come back as losses.
                if self.method == Method::Reuse && matches!(self.shape, Shape::Coordinates(_)) {
                    dst.copy_from_slice(src);
                } else {
                    for (d, &l) in dst.iter_mut().zip(src) {
                        *d = l - base;
                    }
                }
            }
        }
        self.out_scratch = out;
        read
    }

    fn device(&self) -> DeviceInfo {
        self.ctx.device_info()
    }

    fn batch_len(&self) -> usize {
        self.plan.sizes.b
    }

    fn set_batch(&mut self, data: &Dataset) -> Result<()> {
        check_batch(data, self.plan.sizes.b, self.io.0, self.io.1)?;
        self.bufs
            .write_data(&self.ctx, data, &self.plan, self.method);
        Ok(())
    }

    fn kernel_note(&self) -> Option<String> {
        let path = if self.unit_path { " (unit path)" } else { "" };
        self.reuse_kernel()
            .map(|k| format!("{k:?} kernel{path}").to_lowercase())
    }

    fn resident_loop(
        &mut self,
        init: &[f32],
        hyper: &Hyper,
        epochs_per_submit: usize,
        stop: Option<&AtomicBool>,
        on_epoch: &mut dyn FnMut(usize, f64),
    ) -> Result<History> {
        if !self
            .share
            .covers(crate::shard::share_len(self.num_params, self.shape))
        {
            return Err(crate::shard::refuse_resident());
        }
        self.train_resident(init, hyper, epochs_per_submit, stop, on_epoch)
    }

    fn resident_steps(
        &mut self,
        rest: Option<&mut GpuEvaluator>,
        job: &ResidentJob<'_>,
        on_epoch: &mut dyn FnMut(&ResidentEpoch<'_>),
    ) -> Result<ResidentHistory> {
        self.train_steps(rest, job, on_epoch)
    }
}
