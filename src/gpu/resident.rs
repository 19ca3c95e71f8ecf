//! The GPU-resident training loop: many epochs per submission (each the step's dispatches, then
//! `update`), or for tiny models whole epochs in one `fused_epochs` dispatch; losses and the
//! tripwire come back once per submission.

use super::evaluator::GpuEvaluator;
use super::kernels::KernelId;
use super::plan::{ChunkUniform, RESIDENT_MAX_BATCH};
use crate::batches::epoch_order;
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

/// One epoch's data in batch order, uploaded to the GPU, and what a step copies from it.
struct EpochData {
    x: wgpu::Buffer,
    y: wgpu::Buffer,
    /// For the reuse method: each batch's inputs transposed, `[batch][input][sample]`.
    xt: Option<wgpu::Buffer>,
    /// Bytes of one batch's inputs and targets.
    x_bytes: u64,
    y_bytes: u64,
}

/// The resident step loop's host-side state between submissions.
struct Stepper<'a> {
    job: &'a ResidentJob<'a>,
    data: Option<EpochData>,
    /// Per step bc1, bc2 (and the rest of the block) for Adam.
    table: wgpu::Buffer,
    readback: wgpu::Buffer,
    steps: usize,
    state_floats: usize,
}

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

    /// The resident loop with an optimiser and mini-batches ([`Evaluator::resident_steps`]): one
    /// submission per epoch, each step copying its batch (uploaded per epoch in the order of
    /// [`epoch_order`]) into the evaluator's data, the step's kernels, then `update` with the
    /// optimiser's rule; losses, parameters and state come back once per epoch. A non-finite
    /// loss or parameter replays the epoch step by step from its start to stop where the host
    /// loop stops, with the same parameters, state and message.
    pub fn train_steps(
        &mut self,
        job: &ResidentJob<'_>,
        on_epoch: &mut dyn FnMut(&ResidentEpoch<'_>),
    ) -> Result<ResidentHistory> {
        let (hyper, p) = (job.hyper, self.num_params);
        self.check_resident(hyper, job.init)?;
        job.optimizer.validate()?;
        job.state
            .check(&job.optimizer, p)
            .map_err(|m| Error::Config(format!("optimiser state: {m}")))?;
        let steps = self.resident_batches(job)?;
        if job.skip_steps >= steps {
            return Err(Error::Config(format!(
                "{} steps already taken in an epoch of {steps}",
                job.skip_steps
            )));
        }
        self.write_uniforms(&[hyper.probe(1)], hyper.lr as f32);
        let state_floats = if job.state.m.is_empty() { 1 } else { 2 } * p;
        let mut st = Stepper {
            job,
            data: None,
            table: self.scratch("adam table", 4 * (OPT_BLOCK_FLOATS * steps) as u64, false),
            readback: self.scratch("step readback", 4 * (steps + 1 + 3 * p) as u64, true),
            steps,
            state_floats,
        };
        let (mut params, mut state) = (job.init.to_vec(), job.state.clone());
        self.upload_state(&params, &state, &job.optimizer);
        let (mut epoch, mut skip) = (job.first_epoch, job.skip_steps);
        let mut buf = vec![0.0f32; steps + 1 + 3 * p];
        while epoch < hyper.epochs && !job.stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            st.data = self.upload_epoch(job, epoch, st.data.take())?;
            let n = steps - skip;
            self.write_table(&st, &state, n);
            let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
            self.encode_steps(&mut encoder, &st, skip..steps);
            let got = &mut buf[..n + 1 + p + state_floats];
            self.read_epoch(encoder, &st, n, got)?;
            let (losses, rest) = got.split_at(n);
            let new_params = &rest[1..1 + p];
            if losses.iter().any(|l| !l.is_finite()) || new_params.iter().any(|w| !w.is_finite()) {
                return self.replay(&st, epoch, skip, params, state);
            }
            params.copy_from_slice(new_params);
            unpack_state(&mut state, &rest[1 + p..], p, n);
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

    /// Steps per epoch of `job`, after checking its data against this evaluator: the batch it
    /// was built for, the same columns, and (for now) a batch size that divides the samples.
    fn resident_batches(&self, job: &ResidentJob<'_>) -> Result<usize> {
        let Some(bt) = job.batches else {
            return Ok(1);
        };
        let n = bt.data.len();
        let b = self.plan.sizes.b;
        check_batch(bt.data, n, self.io.0, self.io.1)?;
        if n % b != 0 || bt.batching.size.min(n).max(1) != b.min(n) {
            return Err(Error::refused(
                &[(Setting::Loop, "resident"), (Setting::BatchSize, "")],
                "runs batch sizes that divide the samples (a shorter last batch needs the host loop)",
                Some(Fix::Use(Setting::Loop, "host")),
            ));
        }
        Ok(n / b)
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
        let first = if state.m.is_empty() { &state.velocity } else { &state.m };
        q.write_buffer(&self.bufs.next, 4 * 2 * p as u64, bytemuck::cast_slice(first));
        q.write_buffer(&self.bufs.next, 4 * 3 * p as u64, bytemuck::cast_slice(&state.v));
        q.write_buffer(
            &self.bufs.next,
            4 * opt_block(p) as u64,
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

    /// Uploads epoch `epoch`'s data in its batch order (once for an unshuffled run, never for a
    /// full batch, whose data the evaluator holds).
    fn upload_epoch(
        &self,
        job: &ResidentJob<'_>,
        epoch: usize,
        old: Option<EpochData>,
    ) -> Result<Option<EpochData>> {
        let Some(bt) = job.batches else {
            return Ok(None);
        };
        if old.is_some() && !bt.batching.shuffle {
            return Ok(old);
        }
        let (n, b) = (bt.data.len(), self.plan.sizes.b);
        let order = epoch_order(n, job.hyper.seed, epoch as u64, bt.batching.shuffle);
        let rows: Vec<usize> = order.iter().map(|&r| r as usize).collect();
        let d = crate::data::Dataset {
            x: bt.data.x.select(ndarray::Axis(0), &rows),
            y: bt.data.y.select(ndarray::Axis(0), &rows),
        };
        let x: Vec<f32> = d.x.iter().copied().collect();
        let y: Vec<f32> = d.y.iter().copied().collect();
        let fill = |label, v: &[f32]| {
            let buf = self.scratch(label, 4 * v.len() as u64, false);
            self.ctx.queue.write_buffer(&buf, 0, bytemuck::cast_slice(v));
            buf
        };
        let xt = (self.method == Method::Reuse).then(|| {
            let cols = d.x.ncols();
            let mut t = Vec::with_capacity(x.len());
            for k in 0..n / b {
                for i in 0..cols {
                    t.extend((k * b..(k + 1) * b).map(|s| d.x[[s, i]]));
                }
            }
            fill("epoch inputs transposed", &t)
        });
        self.ctx.take_error()?;
        Ok(Some(EpochData {
            x: fill("epoch inputs", &x),
            y: fill("epoch targets", &y),
            xt,
            x_bytes: 4 * (b * d.x.ncols()) as u64,
            y_bytes: 4 * (b * d.y.ncols()) as u64,
        }))
    }

    /// Records steps `ks` of the epoch: each copies its batch in (and Adam's block), runs the
    /// step's kernels and `update`, copies its loss to the readback buffer and the new
    /// parameters over the old.
    fn encode_steps(&self, encoder: &mut wgpu::CommandEncoder, st: &Stepper<'_>, ks: Range<usize>) {
        let p = self.num_params as u64;
        let s = &self.plan.sizes;
        let xt_at = 4 * (2 * s.total_units * s.b) as u64;
        let block = 4 * OPT_BLOCK_FLOATS as u64;
        let adam = matches!(st.job.optimizer, Optimizer::Adam { .. });
        let first = ks.start;
        for k in ks {
            let i = (k - first) as u64;
            if let Some(d) = &st.data {
                let k = k as u64;
                encoder.copy_buffer_to_buffer(&d.x, k * d.x_bytes, &self.bufs.xs, 0, Some(d.x_bytes));
                encoder.copy_buffer_to_buffer(&d.y, k * d.y_bytes, &self.bufs.ys, 0, Some(d.y_bytes));
                if let Some(xt) = &d.xt {
                    encoder.copy_buffer_to_buffer(xt, k * d.x_bytes, &self.bufs.cache, xt_at, Some(d.x_bytes));
                }
            }
            if adam {
                let at = 4 * opt_block(p as usize) as u64;
                encoder.copy_buffer_to_buffer(&st.table, i * block, &self.bufs.next, at, Some(block));
            }
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("resident step"),
                    timestamp_writes: None,
                });
                self.encode_step(&mut pass, &[true]);
                let (slot, g) = (self.plan.chunks.len(), self.plan.update_grid);
                pass.set_bind_group(0, &self.bind_group, &[(slot as u64 * self.uniform_stride) as u32]);
                pass.set_pipeline(self.pipelines.get(KernelId::Update));
                pass.dispatch_workgroups(g.0, g.1, 1);
            }
            encoder.copy_buffer_to_buffer(&self.bufs.out, 0, &st.readback, 4 * i, Some(4));
            encoder.copy_buffer_to_buffer(&self.bufs.next, 0, &self.bufs.params, 0, Some(4 * p));
        }
    }

    /// Submits `encoder` (its `n` losses already copied out), then copies the tripwire, the
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
        let out_floats = self.plan.sizes.out_floats;
        encoder.copy_buffer_to_buffer(&self.bufs.out, 4 * out_floats, &st.readback, at, Some(4));
        encoder.copy_buffer_to_buffer(&self.bufs.params, 0, &st.readback, at + 4, Some(4 * p));
        if dst.len() > n + 1 + p as usize {
            let bytes = 4 * (dst.len() - n - 1) as u64 - 4 * p;
            encoder.copy_buffer_to_buffer(&self.bufs.next, 8 * p, &st.readback, at + 4 + 4 * p, Some(bytes));
        }
        self.ctx.queue.submit([encoder.finish()]);
        self.read_from(&st.readback, dst)?;
        self.check_tripwire(dst[n])
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
        let mut buf = vec![0.0f32; 2 + p + st.state_floats];
        for k in skip..st.steps {
            self.write_table(st, &state, 1);
            let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
            self.encode_steps(&mut encoder, st, k..k + 1);
            self.read_epoch(encoder, st, 1, &mut buf)?;
            let loss = buf[0];
            let next = &buf[2..2 + p];
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
            unpack_state(&mut state, &buf[2 + p..], p, 1);
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
            let bc = |beta: f64| if t == 0 { 0.0 } else { (1.0 - power(beta, t)) as f32 };
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
