//! `perturb check`: how good is each gradient estimator? The analytic gradient by backpropagation in
//! float64 is the reference; every estimator is measured against it (relative error, largest
//! error, cosine similarity, overall and per layer), and an eps sweep shows truncation error
//! falling and rounding error rising as eps shrinks.

use crate::data::Dataset;
use crate::error::{Error, Result, Setting};
use crate::estimate::{gradient, Estimator, StepMode};
use crate::evaluator::Evaluator;
use crate::gpu::GpuOptions;
use crate::model::{Activation, Loss, Model};
use crate::precision::Real;
use crate::session::{Backend, Build, Job};
use serde::Serialize;

/// The mean squared error (float64, the CPU reference's f64 arithmetic) and its gradient by
/// backpropagation: [`backprop_loss`] with [`Loss::Mse`].
pub fn backprop(model: &Model, data: &Dataset) -> Result<(f64, Vec<f64>)> {
    backprop_loss(model, data, Loss::Mse)
}

/// The loss `loss` in float64 and its gradient by backpropagation. Cross-entropy is the mean over
/// samples of `Σ_j p_j (logsumexp(z) − z_j)` (a class label is a one-hot `p`), so its gradient at
/// the logits is `(Σ_j p_j)·softmax(z) − p` over the sample count; it needs an identity output layer
/// ([`Loss::check`]), as training does.
pub fn backprop_loss(model: &Model, data: &Dataset, loss_kind: Loss) -> Result<(f64, Vec<f64>)> {
    loss_kind.check(model)?;
    data.check_fits(model, "data")?;
    let layers = model.layers();
    let p: Vec<f64> = model.params.iter().map(|&v| f64::from(v)).collect();
    let mut grad = vec![0.0f64; p.len()];
    let count = loss_kind.mean_count(data.len(), model.outputs()) as f64;
    let mut loss = 0.0;
    for s in 0..data.len() {
        // Forward, keeping every layer's output (acts[0] is the input).
        let mut acts: Vec<Vec<f64>> = vec![data.x.row(s).iter().map(|&v| f64::from(v)).collect()];
        for (l, layer) in layers.iter().enumerate() {
            let (w, b) = (model.weight_offset(l), model.bias_offset(l));
            let input = &acts[l];
            let out = (0..layer.outputs)
                .map(|u| {
                    let z = (0..layer.inputs)
                        .map(|i| input[i] * p[w + i * layer.outputs + u])
                        .sum::<f64>()
                        + p[b + u];
                    z.activate(layer.activation)
                })
                .collect();
            acts.push(out);
        }
        // dL/da of the output layer, then back through each layer.
        let target: Vec<f64> = data.y.row(s).iter().map(|&v| f64::from(v)).collect();
        let (sample_loss, mut da) = output_gradient(loss_kind, &acts[layers.len()], &target);
        loss += sample_loss;
        da.iter_mut().for_each(|g| *g /= count);
        for (l, layer) in layers.iter().enumerate().rev() {
            let (w, b) = (model.weight_offset(l), model.bias_offset(l));
            let dz: Vec<f64> = da
                .iter()
                .zip(&acts[l + 1])
                .map(|(&g, &a)| g * derivative(layer.activation, a))
                .collect();
            let input = &acts[l];
            let mut d_in = vec![0.0; layer.inputs];
            for i in 0..layer.inputs {
                for u in 0..layer.outputs {
                    grad[w + i * layer.outputs + u] += input[i] * dz[u];
                    d_in[i] += p[w + i * layer.outputs + u] * dz[u];
                }
            }
            for u in 0..layer.outputs {
                grad[b + u] += dz[u];
            }
            da = d_in;
        }
    }
    Ok((loss / count, grad))
}

/// One sample's loss term (before the mean) and its gradient at the output layer's outputs `a`
/// (before dividing by the mean's count).
fn output_gradient(loss: Loss, a: &[f64], target: &[f64]) -> (f64, Vec<f64>) {
    match loss {
        Loss::Mse => {
            let d: Vec<f64> = a.iter().zip(target).map(|(&a, &y)| a - y).collect();
            (
                d.iter().map(|d| d * d).sum(),
                d.iter().map(|d| 2.0 * d).collect(),
            )
        }
        Loss::CrossEntropy => {
            // Max subtracted so exp never overflows; a are the logits (identity output layer).
            let m = a.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = a.iter().map(|&z| (z - m).exp()).sum();
            let lse = m + sum.ln();
            let mass: f64 = target.iter().sum();
            let value = a.iter().zip(target).map(|(&z, &p)| p * (lse - z)).sum();
            let grad = a
                .iter()
                .zip(target)
                .map(|(&z, &p)| mass * (z - lse).exp() - p)
                .collect();
            (value, grad)
        }
    }
}

/// The activation's derivative from its output `a` (from z for relu: a > 0 exactly when z > 0).
fn derivative(act: Activation, a: f64) -> f64 {
    match act {
        Activation::Identity => 1.0,
        Activation::Sigmoid => a * (1.0 - a),
        Activation::Tanh => 1.0 - a * a,
        Activation::Relu => {
            if a > 0.0 {
                1.0
            } else {
                0.0
            }
        }
    }
}

/// How close an estimate is to the reference gradient.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Agreement {
    /// ‖g − g*‖ / ‖g*‖.
    pub relative_error: f64,
    /// max_k |g_k − g*_k|.
    pub max_error: f64,
    /// g·g* / (‖g‖ ‖g*‖).
    pub cosine: f64,
}

/// Compares `estimate` with `reference`.
pub fn agreement(estimate: &[f64], reference: &[f64]) -> Agreement {
    let (mut diff, mut norm_r, mut norm_e, mut dot, mut max) = (0.0, 0.0, 0.0, 0.0, 0.0f64);
    for (&e, &r) in estimate.iter().zip(reference) {
        diff += (e - r) * (e - r);
        norm_r += r * r;
        norm_e += e * e;
        dot += e * r;
        max = max.max((e - r).abs());
    }
    Agreement {
        relative_error: if norm_r > 0.0 {
            (diff / norm_r).sqrt()
        } else {
            diff.sqrt()
        },
        max_error: max,
        cosine: if norm_r > 0.0 && norm_e > 0.0 {
            dot / (norm_r.sqrt() * norm_e.sqrt())
        } else {
            f64::NAN
        },
    }
}

/// One estimator at one eps.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    /// `forward`, `central`, `richardson`, `spsa`.
    pub estimator: String,
    /// `nominal` or `exact`.
    pub step: String,
    /// The nudge.
    pub eps: f64,
    /// Against backprop, all parameters.
    pub overall: Agreement,
    /// Against backprop, per layer (weights and biases of layer l).
    pub layers: Vec<Agreement>,
    /// Parameters whose nudge vanished in float32.
    pub vanished: usize,
}

/// Everything `perturb check` reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckReport {
    /// The loss at the checked parameters (float64 backprop pass).
    pub loss: f64,
    /// The backprop gradient.
    pub backprop: Vec<f64>,
    /// Each estimator at the chosen eps.
    pub estimators: Vec<Row>,
    /// Each coordinate estimator over the eps sweep.
    pub sweep: Vec<Row>,
    /// For each estimator/step of the sweep, the eps with the smallest relative error.
    pub best: Vec<Row>,
    /// What computed the perturbed losses.
    pub device: crate::settings::DeviceInfo,
}

/// The eps values of the sweep: 1e-1 … 1e-7.
pub const SWEEP_EPS: [f64; 7] = [1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7];

/// The estimator/step pairs `check` measures (SPSA is added with its own sample count).
pub const COORDINATE_ESTIMATORS: [(Estimator, StepMode); 6] = [
    (Estimator::Forward, StepMode::Nominal),
    (Estimator::Forward, StepMode::Exact),
    (Estimator::Central, StepMode::Nominal),
    (Estimator::Central, StepMode::Exact),
    (Estimator::Richardson, StepMode::Nominal),
    (Estimator::Richardson, StepMode::Exact),
];

/// One estimate of the gradient at `model`'s parameters with `evaluator` (built for `estimator`'s
/// shape), and the number of vanished nudges.
pub fn estimate<E: Evaluator>(
    evaluator: &mut E,
    params: &[f32],
    estimator: Estimator,
    step: StepMode,
    eps: f64,
    seed: u64,
) -> Result<(Vec<f64>, usize)> {
    let p = params.len();
    let probe = estimator.probe(eps as f32, seed, 0);
    let mut loss = [E::Loss::ZERO];
    let mut values = vec![E::Loss::ZERO; probe.len(p)];
    evaluator.probe(params, &[probe], &[true], &mut loss, &mut values)?;
    let mut grad = vec![E::Loss::ZERO; p];
    let vanished = gradient(estimator, step, eps, &probe, params, &values, &mut grad);
    Ok((grad.iter().map(|g| g.to_f64()).collect(), vanished.len()))
}

/// Measures one estimate against the reference, overall and per layer.
pub fn row(
    model: &Model,
    reference: &[f64],
    estimate: &[f64],
    estimator: Estimator,
    step: StepMode,
    eps: f64,
    vanished: usize,
) -> Row {
    let layers = (0..model.layers().len())
        .map(|l| {
            let from = model.weight_offset(l);
            let to = if l + 1 < model.layers().len() {
                model.weight_offset(l + 1)
            } else {
                model.num_params()
            };
            agreement(&estimate[from..to], &reference[from..to])
        })
        .collect();
    Row {
        estimator: estimator.name().into(),
        step: step.name().into(),
        eps,
        overall: agreement(estimate, reference),
        layers,
        vanished,
    }
}

/// [`run`] with the evaluators of `backend`, one per estimator, all on its one device.
pub fn run_on(
    backend: &Backend,
    model: &Model,
    data: &Dataset,
    loss: Loss,
    eps: f64,
    spsa: Option<(Estimator, u64)>,
) -> Result<CheckReport> {
    struct Check<'m> {
        model: &'m Model,
        data: &'m Dataset,
        loss: Loss,
        eps: f64,
        spsa: Option<(Estimator, u64)>,
    }
    impl Job for Check<'_> {
        type Output = Result<CheckReport>;
        fn run<B: Build>(self, build: &B) -> Result<CheckReport> {
            run(self.model, self.data, self.loss, self.eps, self.spsa, |e| {
                let opts = GpuOptions {
                    shape: e.shape(),
                    loss: self.loss,
                    ..Default::default()
                };
                build.build(self.model, self.data, &opts)
            })
        }
    }
    backend.with(Check {
        model,
        data,
        loss,
        eps,
        spsa,
    })
}

/// Runs the whole check. `evaluator(shape)` builds an evaluator for an estimator's shape (the GPU
/// plans its dispatches per shape; the CPU ignores it) computing `loss`, the loss backprop
/// differentiates too. `spsa` adds that SPSA estimator at `eps`.
pub fn run<E: Evaluator>(
    model: &Model,
    data: &Dataset,
    loss: Loss,
    eps: f64,
    spsa: Option<(Estimator, u64)>,
    mut evaluator: impl FnMut(Estimator) -> Result<E>,
) -> Result<CheckReport> {
    if !(eps > 0.0 && eps.is_finite()) {
        return Err(Error::invalid(
            Setting::Eps,
            format!("must be finite and > 0, got {eps}"),
        ));
    }
    let (value, reference) = backprop_loss(model, data, loss)?;
    let params = &model.params;
    let mut estimators = Vec::new();
    let mut sweep = Vec::new();
    let mut device = None;
    for estimator in [
        Estimator::Forward,
        Estimator::Central,
        Estimator::Richardson,
    ] {
        let mut ev = evaluator(estimator)?;
        device.get_or_insert_with(|| ev.device());
        for &(e, step) in COORDINATE_ESTIMATORS
            .iter()
            .filter(|(e, _)| *e == estimator)
        {
            let (g, v) = self::estimate(&mut ev, params, e, step, eps, 0)?;
            estimators.push(row(model, &reference, &g, e, step, eps, v));
            for &h in &SWEEP_EPS {
                let (g, v) = self::estimate(&mut ev, params, e, step, h, 0)?;
                sweep.push(row(model, &reference, &g, e, step, h, v));
            }
        }
    }
    if let Some((estimator, seed)) = spsa {
        let mut ev = evaluator(estimator)?;
        let (g, v) = self::estimate(&mut ev, params, estimator, StepMode::Nominal, eps, seed)?;
        estimators.push(row(
            model,
            &reference,
            &g,
            estimator,
            StepMode::Nominal,
            eps,
            v,
        ));
    }
    let best = COORDINATE_ESTIMATORS
        .iter()
        .filter_map(|(e, step)| {
            sweep
                .iter()
                .filter(|r| r.estimator == e.name() && r.step == step.name())
                .filter(|r| r.overall.relative_error.is_finite())
                .min_by(|a, b| {
                    a.overall
                        .relative_error
                        .total_cmp(&b.overall.relative_error)
                })
                .cloned()
        })
        .collect();
    Ok(CheckReport {
        loss: value,
        backprop: reference,
        estimators,
        sweep,
        best,
        device: device.expect("at least one evaluator"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Step of the float64 central differences the backprop gradient is held to.
    const H: f64 = 1e-6;
    /// Central differences at H err by O(H²) truncation plus O(ulp·|L|/H) rounding, about 1e-10
    /// here; a wrong term in backprop is of the order of the gradient (1e-2 and up), so it cannot
    /// pass.
    const TOLERANCE: f64 = 1e-7;

    /// `loss` as a float64 function of float64 parameters, written independently of `backprop`'s
    /// forward pass and of the f32 parameters.
    fn loss_at(model: &Model, data: &Dataset, loss: Loss, p: &[f64]) -> f64 {
        let mut total = 0.0;
        for s in 0..data.len() {
            let mut a: Vec<f64> = data.x.row(s).iter().map(|&v| f64::from(v)).collect();
            for (l, layer) in model.layers().iter().enumerate() {
                let (w, b) = (model.weight_offset(l), model.bias_offset(l));
                a = (0..layer.outputs)
                    .map(|u| {
                        let z: f64 = (0..layer.inputs)
                            .map(|i| a[i] * p[w + i * layer.outputs + u])
                            .sum::<f64>()
                            + p[b + u];
                        z.activate(layer.activation)
                    })
                    .collect();
            }
            let y = data.y.row(s);
            total += match loss {
                Loss::Mse => a
                    .iter()
                    .zip(y)
                    .map(|(o, &t)| (o - f64::from(t)).powi(2))
                    .sum::<f64>(),
                // −Σ p log softmax(z), log softmax straight from its definition.
                Loss::CrossEntropy => {
                    let norm: f64 = a.iter().map(|z| z.exp()).sum();
                    -a.iter()
                        .zip(y)
                        .map(|(z, &t)| f64::from(t) * (z.exp() / norm).ln())
                        .sum::<f64>()
                }
            };
        }
        total / loss.mean_count(data.len(), model.outputs()) as f64
    }

    /// Panics naming the worst parameter unless `backprop_loss` matches central differences of
    /// [`loss_at`] within [`TOLERANCE`], and its loss matches [`loss_at`].
    fn assert_matches_central_differences(model: &Model, data: &Dataset, loss: Loss, what: &str) {
        let (value, g) = backprop_loss(model, data, loss).unwrap();
        let p0: Vec<f64> = model.params.iter().map(|&v| f64::from(v)).collect();
        let direct = loss_at(model, data, loss, &p0);
        assert!(
            (value - direct).abs() < TOLERANCE,
            "{what}: backprop loss {value} vs direct {direct}"
        );
        let mut worst = (0, 0.0f64, 0.0f64);
        for k in 0..p0.len() {
            let (mut up, mut down) = (p0.clone(), p0.clone());
            up[k] += H;
            down[k] -= H;
            let fd =
                (loss_at(model, data, loss, &up) - loss_at(model, data, loss, &down)) / (2.0 * H);
            let err = (fd - g[k]).abs();
            if err > worst.1 {
                worst = (k, err, fd);
            }
        }
        let k = worst.0;
        assert!(
            worst.1 < TOLERANCE,
            "{what}: parameter {k}: backprop {} vs central differences {} (error {})",
            g[k],
            worst.2,
            worst.1
        );
    }

    fn inputs(samples: usize, width: usize) -> ndarray::Array2<f32> {
        ndarray::Array2::from_shape_fn((samples, width), |(i, j)| {
            ((i * 7 + j * 3) % 11) as f32 / 5.0 - 1.0
        })
    }

    const ACTIVATIONS: [Activation; 4] = [
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Relu,
        Activation::Identity,
    ];

    /// Backprop agrees with float64 central differences (an independent computation) on small
    /// random networks of every activation.
    #[test]
    fn backprop_matches_float64_central_differences() {
        for (seed, &act) in ACTIVATIONS.iter().enumerate() {
            let model =
                Model::random(&[3, 4, 2], &[act, Activation::Sigmoid], seed as u64).unwrap();
            let y = ndarray::Array2::from_shape_fn((5, 2), |(i, j)| ((i + j) % 3) as f32 / 2.0);
            let data = Dataset::new(inputs(5, 3), y).unwrap();
            assert_matches_central_differences(&model, &data, Loss::Mse, &format!("mse {act:?}"));
        }
    }

    /// Cross-entropy backprop agrees with float64 central differences of `−Σ p log softmax`, for
    /// class labels (one-hot rows) and for soft probability targets, behind every hidden activation.
    #[test]
    fn cross_entropy_backprop_matches_float64_central_differences() {
        for (seed, &act) in ACTIVATIONS.iter().enumerate() {
            let model =
                Model::random(&[3, 5, 4], &[act, Activation::Identity], 10 + seed as u64).unwrap();
            let labels = ndarray::Array2::from_shape_fn((6, 4), |(i, j)| {
                if (i * 3 + 1) % 4 == j {
                    1.0
                } else {
                    0.0
                }
            });
            let soft = ndarray::Array2::from_shape_fn((6, 4), |(i, j)| {
                [0.1f32, 0.2, 0.3, 0.4][(i + j) % 4]
            });
            for (kind, y) in [("labels", labels), ("probabilities", soft)] {
                let data = Dataset::new(inputs(6, 3), y).unwrap();
                let what = format!("cross-entropy {kind} {act:?}");
                assert_matches_central_differences(&model, &data, Loss::CrossEntropy, &what);
            }
        }
    }

    /// Cross-entropy of a non-identity output layer is refused, as training refuses it.
    #[test]
    fn cross_entropy_backprop_refuses_a_non_identity_output_layer() {
        let model = Model::random(&[3, 4, 2], &[Activation::Tanh, Activation::Sigmoid], 0).unwrap();
        let y = ndarray::Array2::from_shape_fn((2, 2), |(i, j)| if i == j { 1.0 } else { 0.0 });
        let data = Dataset::new(inputs(2, 3), y).unwrap();
        let err = backprop_loss(&model, &data, Loss::CrossEntropy).unwrap_err();
        assert!(err.to_string().contains("identity"), "{err}");
    }
}
