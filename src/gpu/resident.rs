//! The GPU-resident training loop: many epochs per submission (each the step's dispatches, then
//! `update`), or for tiny models whole epochs in one `fused_epochs` dispatch; losses and the
//! tripwire come back once per submission.

use super::evaluator::GpuEvaluator;
use super::kernels::KernelId;
use super::plan::{ChunkUniform, RESIDENT_MAX_BATCH};
use crate::error::{Error, Fix, Result, Setting};
use crate::estimate::{Estimator, Shape, StepMode};
use crate::evaluator::History;
use crate::settings::{Hyper, Outcome};
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
        let start = Instant::now();
        self.write_uniforms(&[hyper.probe(1)], hyper.lr as f32);
        self.ctx
            .queue
            .write_buffer(&self.bufs.params, 0, bytemuck::cast_slice(init));
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
