//! The GPU-resident training loop: many epochs per submission (each the step's dispatches, then
//! `update`), or for tiny models whole epochs in one `fused_epochs` dispatch; losses and the
//! tripwire come back once per submission. With mini-batches or an optimiser besides sgd
//! ([`GpuEvaluator::train_steps`]), one submission per epoch whose steps copy their batch in
//! before the step's dispatches and `update`.

use super::evaluator::GpuEvaluator;
use super::kernels::KernelId;
use super::plan::{ChunkUniform, RESIDENT_MAX_BATCH};
use crate::batches::{batches, epoch_order};
use crate::error::{Error, Fix, Result, Setting};
use crate::estimate::{Estimator, Shape, StepMode};
use crate::evaluator::{check_batch, History, ResidentEpoch, ResidentHistory, ResidentJob};
use crate::optim::{power, OptState, Optimizer};
use crate::settings::{Hyper, Method, Outcome};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

impl GpuEvaluator {
    /// Whether [`GpuEvaluator::train_resident`] runs whole batches of epochs in one dispatch.
    pub fn is_fused(&self) -> bool {
        self.plan.fused_epochs > 0
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
        self.check_resident(hyper, init)?;
        let start = Instant::now();
        self.write_uniforms(&[hyper.probe(1)], hyper.lr as f32);
        // The book's sgd, whatever an earlier step loop left in the optimiser's block.
        self.upload_state(init, &OptState::default(), &Optimizer::Sgd);
        let mut per = epochs_per_submit.clamp(1, RESIDENT_MAX_BATCH);
        if self.plan.fused_epochs > 0 {
            per = per.min(self.plan.fused_epochs as usize);
        }
        let pbytes = 4 * self.num_params as u64;
        let mut losses = Vec::with_capacity(hyper.epochs);
        let mut batch = vec![0.0f32; per + 1];
        while losses.len() < hyper.epochs && !stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            let n = per.min(hyper.epochs - losses.len());
            let mut save = self.ctx.device.create_command_encoder(&Default::default());
            save.copy_buffer_to_buffer(&self.bufs.params, 0, &self.bufs.saved, 0, Some(pbytes));
            let mut encoder = if self.plan.fused_epochs > 0 {
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
        encoder.copy_buffer_to_buffer(&self.bufs.params, 0, &self.bufs.readback, 0, Some(pbytes));
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
        encoder.copy_buffer_to_buffer(&self.bufs.saved, 0, &self.bufs.readback, 0, Some(pbytes));
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
                let (slot, g) = (self.plan.chunks.len(), self.plan.update_grid);
                pass.set_bind_group(
                    0,
                    &self.bind_group,
                    &[(slot as u64 * self.uniform_stride) as u32],
                );
                pass.set_pipeline(self.pipelines.get(KernelId::Update));
                pass.dispatch_workgroups(g.0, g.1, 1);
            }
            encoder.copy_buffer_to_buffer(
                &self.bufs.out,
                0,
                &self.bufs.readback,
                4 * e as u64,
                Some(4),
            );
            encoder.copy_buffer_to_buffer(&self.bufs.next, 0, &self.bufs.params, 0, Some(pbytes));
        }
        encoder
    }

    /// `n` epochs in one `fused_epochs` dispatch; the losses and the final parameters are copied out.
    fn encode_fused(&self, n: usize, pbytes: u64) -> wgpu::CommandEncoder {
        let slot = self.plan.chunks.len() + 1;
        let u = ChunkUniform {
            eval_count: n as u32,
            ..self.written[0]
        };
        let at = slot as u64 * self.uniform_stride;
        self.ctx
            .queue
            .write_buffer(&self.bufs.uniforms, at, bytemuck::bytes_of(&u));
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
        encoder.copy_buffer_to_buffer(
            &self.bufs.cache,
            0,
            &self.bufs.readback,
            0,
            Some(4 * n as u64),
        );
        // After n epochs the parameters sit in half n % 2 of `next`.
        encoder.copy_buffer_to_buffer(
            &self.bufs.next,
            (n % 2) as u64 * pbytes,
            &self.bufs.params,
            0,
            Some(pbytes),
        );
        encoder
    }
}

/// Where the optimiser's block starts in `next`, in floats, for `p` parameters: after the new
/// parameters, `fused_epochs`' second copy and the two state vectors (velocity or m, then v).
/// The block holds bc1, bc2 (the current step's), the kind, then β1 or μ, 1 − β1, β2, 1 − β2, ε.
pub(super) fn opt_block(p: usize) -> usize {
    4 * p
}

/// Floats of the optimiser block ([`opt_block`]).
pub(super) const OPT_BLOCK_FLOATS: usize = 8;

/// One epoch's data in batch order, uploaded to the GPU, and what each step copies from it.
struct EpochData {
    x: wgpu::Buffer,
    y: wgpu::Buffer,
    /// For the reuse method: each batch's inputs transposed, `[batch][input][sample]`.
    xt: Option<wgpu::Buffer>,
    /// Each step's positions in the epoch's order ([`batches`]).
    ranges: Vec<Range<usize>>,
    /// Inputs and targets per sample.
    cols: (usize, usize),
    /// The epoch whose order the buffers hold.
    epoch: usize,
}

/// The resident step loop's host-side state between submissions.
struct Stepper<'a> {
    job: &'a ResidentJob<'a>,
    /// The evaluator built for the epoch's last, shorter batch, if the batch size does not divide
    /// the samples (on the same device: its buffers are copied to and from in one submission).
    rest: Option<&'a GpuEvaluator>,
    data: Option<EpochData>,
    /// Per step, Adam's block ([`opt_constants`]) for that step.
    table: wgpu::Buffer,
    readback: wgpu::Buffer,
    steps: usize,
    /// Floats of optimiser state in `next` after the two copies of the parameters.
    state_floats: usize,
}

/// Floats of the step readback buffer before the parameters, after `n` losses: the tripwire
/// words of the evaluator and of the rest evaluator.
const TRIPWIRES: usize = 2;

impl GpuEvaluator {
    /// Refuses a resident loop this evaluator cannot run: anything but the book's forward
    /// difference over the nominal eps, or initial parameters of the wrong count.
    fn check_resident(&self, hyper: &Hyper, init: &[f32]) -> Result<()> {
        hyper.validate()?;
        if hyper.estimator != Estimator::Forward
            || hyper.step != StepMode::Nominal
            || self.shape != Shape::Coordinates(1)
        {
            return Err(Error::refused(
                &[(Setting::Loop, "resident")],
                "runs the book's forward difference over the nominal eps only",
                Some(Fix::Use(Setting::Loop, "host")),
            ));
        }
        if init.len() != self.num_params {
            return Err(Error::Config(format!(
                "{} initial parameters for a model of {}",
                init.len(),
                self.num_params
            )));
        }
        Ok(())
    }

    /// The resident loop with an optimiser and mini-batches ([`crate::Evaluator::resident_steps`]): one
    /// submission per epoch. Each step copies its batch (the epoch's samples, gathered in the
    /// order of [`epoch_order`] and uploaded once per epoch) into the evaluator's data, runs the
    /// step's kernels, then `update` with the optimiser's rule; the last, shorter batch of an
    /// epoch runs on `rest` (built for it on the same device), the parameters and state copied
    /// over and back within the submission. Losses, parameters and state come back once per
    /// epoch. A non-finite loss or parameter replays the epoch step by step from its start to
    /// stop where the host loop stops, with the same parameters, state and message.
    pub fn train_steps(
        &mut self,
        rest: Option<&mut GpuEvaluator>,
        job: &ResidentJob<'_>,
        on_epoch: &mut dyn FnMut(&ResidentEpoch<'_>),
    ) -> Result<ResidentHistory> {
        let (hyper, p) = (job.hyper, self.num_params);
        self.check_resident(hyper, job.init)?;
        job.optimizer.validate()?;
        job.state
            .check(&job.optimizer, p)
            .map_err(|m| Error::Config(format!("optimiser state: {m}")))?;
        let steps = self.resident_batches(rest.as_deref(), job)?;
        if job.skip_steps >= steps {
            return Err(Error::Config(format!(
                "{} steps already taken in an epoch of {steps}",
                job.skip_steps
            )));
        }
        self.write_uniforms(&[hyper.probe(1)], hyper.lr as f32);
        let state_floats = p * (job.state.velocity.len().min(1) + 2 * job.state.m.len().min(1));
        let rest = rest.map(|r| {
            r.write_uniforms(&[hyper.probe(1)], hyper.lr as f32);
            r.upload_block(&job.optimizer);
            &*r
        });
        let floats = steps + TRIPWIRES + p + state_floats;
        let mut st = Stepper {
            job,
            rest,
            data: None,
            table: self.scratch("adam table", 4 * (OPT_BLOCK_FLOATS * steps) as u64, false),
            readback: self.scratch("step readback", 4 * floats as u64, true),
            steps,
            state_floats,
        };
        let (mut params, mut state) = (job.init.to_vec(), job.state.clone());
        self.upload_state(&params, &state, &job.optimizer);
        let (mut epoch, mut skip) = (job.first_epoch, job.skip_steps);
        let mut buf = vec![0.0f32; floats];
        while epoch < hyper.epochs && !job.stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            self.upload_epoch(&mut st, epoch)?;
            let n = steps - skip;
            self.write_table(&st, &state, n);
            let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
            self.encode_steps(&mut encoder, &st, skip..steps);
            let got = &mut buf[..n + TRIPWIRES + p + state_floats];
            self.read_epoch(encoder, &st, n, got)?;
            let (losses, rest) = got.split_at(n);
            let new_params = &rest[TRIPWIRES..TRIPWIRES + p];
            if losses.iter().any(|l| !l.is_finite()) || new_params.iter().any(|w| !w.is_finite()) {
                return self.replay(&st, epoch, skip, params, state);
            }
            params.copy_from_slice(new_params);
            unpack_state(&mut state, &rest[TRIPWIRES + p..], p, n);
            epoch += 1;
            skip = 0;
            on_epoch(&ResidentEpoch {
                epoch,
                step_losses: losses,
                params: &params,
                state: &state,
            });
        }
        Ok(ResidentHistory {
            params,
            state,
            tail_steps: Vec::new(),
            outcome: Outcome::Finished,
        })
    }

    /// Steps per epoch of `job`, after checking its data against this evaluator (built for the
    /// batch size, the same columns) and, when the batch size does not divide the samples,
    /// against `rest` (built for the remainder, the same model and method).
    fn resident_batches(
        &self,
        rest: Option<&GpuEvaluator>,
        job: &ResidentJob<'_>,
    ) -> Result<usize> {
        let Some(bt) = job.batches else {
            return match rest {
                None => Ok(1),
                Some(_) => Err(Error::Config(
                    "an evaluator for a shorter last batch, but no mini-batches".into(),
                )),
            };
        };
        let n = bt.data.len();
        check_batch(bt.data, n, self.io.0, self.io.1)?;
        let sizes: Vec<usize> = batches(n, bt.batching.size).map(|r| r.len()).collect();
        let (b, last) = (
            sizes.first().copied().unwrap_or(0),
            sizes.last().copied().unwrap_or(0),
        );
        if b != self.plan.sizes.b {
            return Err(Error::Config(format!(
                "batches of {b} samples for an evaluator built for {}",
                self.plan.sizes.b
            )));
        }
        if last != b {
            let Some(r) = rest else {
                return Err(Error::refused(
                    &[(Setting::Loop, "resident"), (Setting::BatchSize, "")],
                    "needs an evaluator for the last, shorter batch when the batch size does not divide the samples",
                    Some(Fix::Use(Setting::Loop, "host")),
                ));
            };
            let fits = r.plan.sizes.b == last
                && r.ctx.same_device(&self.ctx)
                && r.num_params == self.num_params
                && r.method == self.method
                && r.io == self.io
                && r.runs == 1;
            if !fits {
                return Err(Error::Config(format!(
                    "the evaluator for the last batch of {last} samples was built for {} samples, another model, method or device",
                    r.plan.sizes.b
                )));
            }
        }
        Ok(sizes.len())
    }

    /// A buffer of `bytes` for the step loop: mapped for reading, or a copy source and target.
    fn scratch(&self, label: &str, bytes: u64, read: bool) -> wgpu::Buffer {
        let usage = match read {
            true => wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            false => wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        };
        self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(4),
            usage,
            mapped_at_creation: false,
        })
    }

    /// Writes the parameters, the optimiser's state and its block (less the per-step bc1, bc2).
    fn upload_state(&self, params: &[f32], state: &OptState, opt: &Optimizer) {
        let p = self.num_params;
        let q = &self.ctx.queue;
        q.write_buffer(&self.bufs.params, 0, bytemuck::cast_slice(params));
        let first = if state.m.is_empty() {
            &state.velocity
        } else {
            &state.m
        };
        q.write_buffer(
            &self.bufs.next,
            4 * 2 * p as u64,
            bytemuck::cast_slice(first),
        );
        q.write_buffer(
            &self.bufs.next,
            4 * 3 * p as u64,
            bytemuck::cast_slice(&state.v),
        );
        self.upload_block(opt);
    }

    /// Writes the optimiser's block (less Adam's per-step bc1, bc2) after the state in `next`.
    fn upload_block(&self, opt: &Optimizer) {
        self.ctx.queue.write_buffer(
            &self.bufs.next,
            4 * opt_block(self.num_params) as u64,
            bytemuck::cast_slice(&opt_constants(opt, 0)),
        );
    }

    /// For Adam, the block of each of the next `n` steps (bc1 and bc2 of step t + 1, …).
    fn write_table(&self, st: &Stepper<'_>, state: &OptState, n: usize) {
        if !matches!(st.job.optimizer, Optimizer::Adam { .. }) {
            return;
        }
        let table: Vec<f32> = (1..=n as u64)
            .flat_map(|i| opt_constants(&st.job.optimizer, state.t + i))
            .collect();
        self.ctx
            .queue
            .write_buffer(&st.table, 0, bytemuck::cast_slice(&table));
    }

    /// Uploads epoch `epoch`'s data in its batch order into `st.data` (once for an unshuffled
    /// run, never for a full batch, whose data the evaluator holds). The buffers are allocated
    /// once and rewritten.
    fn upload_epoch(&self, st: &mut Stepper<'_>, epoch: usize) -> Result<()> {
        let Some(bt) = st.job.batches else {
            return Ok(());
        };
        if st
            .data
            .as_ref()
            .is_some_and(|d| d.epoch == epoch || !bt.batching.shuffle)
        {
            return Ok(());
        }
        let n = bt.data.len();
        let order = epoch_order(n, st.job.hyper.seed, epoch as u64, bt.batching.shuffle);
        let cols = (bt.data.x.ncols(), bt.data.y.ncols());
        let ranges: Vec<Range<usize>> = batches(n, bt.batching.size).collect();
        let mut x = Vec::with_capacity(n * cols.0);
        let mut y = Vec::with_capacity(n * cols.1);
        for &s in &order {
            x.extend(bt.data.x.row(s as usize).iter());
            y.extend(bt.data.y.row(s as usize).iter());
        }
        let mut xt = Vec::new();
        if self.method == Method::Reuse {
            xt.reserve(x.len());
            for r in &ranges {
                for i in 0..cols.0 {
                    xt.extend(r.clone().map(|s| x[s * cols.0 + i]));
                }
            }
        }
        let data = match st.data.take() {
            Some(d) => d,
            None => {
                let buf = |label, v: &[f32]| self.scratch(label, 4 * v.len() as u64, false);
                let d = EpochData {
                    x: buf("epoch inputs", &x),
                    y: buf("epoch targets", &y),
                    xt: (!xt.is_empty()).then(|| buf("epoch inputs transposed", &xt)),
                    ranges,
                    cols,
                    epoch,
                };
                self.ctx.take_error()?;
                d
            }
        };
        let q = &self.ctx.queue;
        q.write_buffer(&data.x, 0, bytemuck::cast_slice(&x));
        q.write_buffer(&data.y, 0, bytemuck::cast_slice(&y));
        if let Some(b) = &data.xt {
            q.write_buffer(b, 0, bytemuck::cast_slice(&xt));
        }
        st.data = Some(EpochData { epoch, ..data });
        Ok(())
    }

    /// Records steps `ks` of the epoch: each copies its batch in (and Adam's block), runs the
    /// step's kernels and `update`, copies its loss to the readback buffer and the new
    /// parameters over the old. The step of the shorter last batch runs on `st.rest`.
    fn encode_steps(&self, encoder: &mut wgpu::CommandEncoder, st: &Stepper<'_>, ks: Range<usize>) {
        let p = self.num_params as u64;
        let block = 4 * OPT_BLOCK_FLOATS as u64;
        let state = 4 * st.state_floats as u64;
        let adam = matches!(st.job.optimizer, Optimizer::Adam { .. });
        let first = ks.start;
        for k in ks {
            let i = (k - first) as u64;
            let range = st.data.as_ref().map(|d| d.ranges[k].clone());
            let ev = match (&range, st.rest) {
                (Some(r), Some(rest)) if r.len() != self.plan.sizes.b => rest,
                _ => self,
            };
            let moved = !std::ptr::eq(ev, self);
            if moved {
                encoder.copy_buffer_to_buffer(
                    &self.bufs.params,
                    0,
                    &ev.bufs.params,
                    0,
                    Some(4 * p),
                );
                if state > 0 {
                    encoder.copy_buffer_to_buffer(
                        &self.bufs.next,
                        8 * p,
                        &ev.bufs.next,
                        8 * p,
                        Some(state),
                    );
                }
            }
            if let (Some(d), Some(r)) = (&st.data, range) {
                let (cx, cy) = (4 * d.cols.0 as u64, 4 * d.cols.1 as u64);
                let (at, len) = (r.start as u64, r.len() as u64);
                encoder.copy_buffer_to_buffer(&d.x, at * cx, &ev.bufs.xs, 0, Some(len * cx));
                encoder.copy_buffer_to_buffer(&d.y, at * cy, &ev.bufs.ys, 0, Some(len * cy));
                if let Some(xt) = &d.xt {
                    let s = &ev.plan.sizes;
                    let xt_at = 4 * (2 * s.total_units * s.b) as u64;
                    encoder.copy_buffer_to_buffer(
                        xt,
                        at * cx,
                        &ev.bufs.cache,
                        xt_at,
                        Some(len * cx),
                    );
                }
            }
            if adam {
                let at = 4 * opt_block(p as usize) as u64;
                encoder.copy_buffer_to_buffer(&st.table, i * block, &ev.bufs.next, at, Some(block));
            }
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("resident step"),
                    timestamp_writes: None,
                });
                ev.encode_step(&mut pass, &[true]);
                let (slot, g) = (ev.plan.chunks.len(), ev.plan.update_grid);
                pass.set_bind_group(
                    0,
                    &ev.bind_group,
                    &[(slot as u64 * ev.uniform_stride) as u32],
                );
                pass.set_pipeline(ev.pipelines.get(KernelId::Update));
                pass.dispatch_workgroups(g.0, g.1, 1);
            }
            encoder.copy_buffer_to_buffer(&ev.bufs.out, 0, &st.readback, 4 * i, Some(4));
            encoder.copy_buffer_to_buffer(&ev.bufs.next, 0, &self.bufs.params, 0, Some(4 * p));
            if moved && state > 0 {
                encoder.copy_buffer_to_buffer(
                    &ev.bufs.next,
                    8 * p,
                    &self.bufs.next,
                    8 * p,
                    Some(state),
                );
            }
        }
    }

    /// Submits `encoder` (its `n` losses already copied out), then copies the tripwires, the
    /// parameters and the optimiser's state after them and reads all back into `dst`.
    fn read_epoch(
        &self,
        mut encoder: wgpu::CommandEncoder,
        st: &Stepper<'_>,
        n: usize,
        dst: &mut [f32],
    ) -> Result<()> {
        let p = self.num_params as u64;
        let at = 4 * n as u64;
        let trip = |ev: &GpuEvaluator| 4 * ev.plan.sizes.out_floats;
        encoder.copy_buffer_to_buffer(&self.bufs.out, trip(self), &st.readback, at, Some(4));
        if let Some(r) = st.rest {
            encoder.copy_buffer_to_buffer(&r.bufs.out, trip(r), &st.readback, at + 4, Some(4));
        }
        let params_at = at + 4 * TRIPWIRES as u64;
        encoder.copy_buffer_to_buffer(&self.bufs.params, 0, &st.readback, params_at, Some(4 * p));
        if st.state_floats > 0 {
            let bytes = 4 * st.state_floats as u64;
            encoder.copy_buffer_to_buffer(
                &self.bufs.next,
                8 * p,
                &st.readback,
                params_at + 4 * p,
                Some(bytes),
            );
        }
        self.ctx.queue.submit([encoder.finish()]);
        self.read_from(&st.readback, dst)?;
        self.check_tripwire(dst[n])?;
        match st.rest {
            Some(r) => r.check_tripwire(dst[n + 1]),
            None => Ok(()),
        }
    }

    /// Runs epoch `epoch` again from its start, one step per submission, and ends where the host
    /// loop ends: before the first step whose loss or new parameters are not finite.
    fn replay(
        &self,
        st: &Stepper<'_>,
        epoch: usize,
        skip: usize,
        mut params: Vec<f32>,
        mut state: OptState,
    ) -> Result<ResidentHistory> {
        let p = self.num_params;
        self.upload_state(&params, &state, &st.job.optimizer);
        let mut tail = Vec::new();
        let mut buf = vec![0.0f32; 1 + TRIPWIRES + p + st.state_floats];
        let at = 1 + TRIPWIRES;
        for k in skip..st.steps {
            self.write_table(st, &state, 1);
            let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
            self.encode_steps(&mut encoder, st, k..k + 1);
            self.read_epoch(encoder, st, 1, &mut buf)?;
            let loss = buf[0];
            let next = &buf[at..at + p];
            let what = if !loss.is_finite() {
                Some(format!("the loss is {:?}", f64::from(loss)))
            } else {
                let bad = next.iter().position(|w| !w.is_finite());
                bad.map(|i| format!("parameter {i} became {}", next[i]))
            };
            if let Some(what) = what {
                return Ok(ResidentHistory {
                    params,
                    state,
                    tail_steps: tail,
                    outcome: Outcome::Diverged {
                        epoch: epoch + 1,
                        what,
                    },
                });
            }
            params.copy_from_slice(next);
            unpack_state(&mut state, &buf[at + p..], p, 1);
            tail.push(loss);
        }
        Err(Error::Gpu(
            "an epoch that diverged did not diverge when replayed step by step".into(),
        ))
    }
}

/// The optimiser's block ([`opt_block`]) for Adam's step `t` (bc1, bc2 zero for other rules or
/// `t = 0`): every value rounded to float32 from the float64 the host's [`OptState::step`] uses.
fn opt_constants(opt: &Optimizer, t: u64) -> [f32; OPT_BLOCK_FLOATS] {
    let kind = |k: u32| f32::from_bits(k);
    match *opt {
        Optimizer::Sgd => [0.0, 0.0, kind(0), 0.0, 0.0, 0.0, 0.0, 0.0],
        Optimizer::Momentum { momentum } => {
            [0.0, 0.0, kind(1), momentum as f32, 0.0, 0.0, 0.0, 0.0]
        }
        Optimizer::Adam { beta1, beta2, eps } => {
            let bc = |beta: f64| {
                if t == 0 {
                    0.0
                } else {
                    (1.0 - power(beta, t)) as f32
                }
            };
            [
                bc(beta1),
                bc(beta2),
                kind(2),
                beta1 as f32,
                (1.0 - beta1) as f32,
                beta2 as f32,
                (1.0 - beta2) as f32,
                eps as f32,
            ]
        }
    }
}

/// Copies the state read back after `steps` steps into `state` (velocity, or m then v, and t).
fn unpack_state(state: &mut OptState, got: &[f32], p: usize, steps: usize) {
    if !state.velocity.is_empty() {
        state.velocity.copy_from_slice(&got[..p]);
    } else if !state.m.is_empty() {
        state.m.copy_from_slice(&got[..p]);
        state.v.copy_from_slice(&got[p..2 * p]);
        state.t += steps as u64;
    }
}
