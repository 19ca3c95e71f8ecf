//! `perturb check`: how good is each gradient estimator? The analytic gradient by backpropagation in
//! float64 is the reference; every estimator is measured against it (relative error, largest
//! error, cosine similarity, overall and per layer), and an eps sweep shows truncation error
//! falling and rounding error rising as eps shrinks.

use crate::data::Dataset;
use crate::error::{Error, Result, Setting};
use crate::estimate::{gradient, Estimator, StepMode};
use crate::evaluator::Evaluator;
use crate::gpu::GpuOptions;
use crate::model::{Activation, Model};
use crate::precision::Real;
use crate::session::{Backend, Build, Job};
use serde::Serialize;

/// The loss (float64, the CPU reference's f64 arithmetic) and its gradient by backpropagation.
pub fn backprop(model: &Model, data: &Dataset) -> Result<(f64, Vec<f64>)> {
    data.check_fits(model, "data")?;
    let layers = model.layers();
    let p: Vec<f64> = model.params.iter().map(|&v| f64::from(v)).collect();
    let mut grad = vec![0.0f64; p.len()];
    let count = (data.len() * model.outputs()) as f64;
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
        let last = &acts[layers.len()];
        let mut da: Vec<f64> = last
            .iter()
            .zip(data.y.row(s))
            .map(|(&a, &y)| {
                let d = a - f64::from(y);
                loss += d * d;
                2.0 * d / count
            })
            .collect();
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
    eps: f64,
    spsa: Option<(Estimator, u64)>,
) -> Result<CheckReport> {
    struct Check<'m> {
        model: &'m Model,
        data: &'m Dataset,
        eps: f64,
        spsa: Option<(Estimator, u64)>,
    }
    impl Job for Check<'_> {
        type Output = Result<CheckReport>;
        fn run<B: Build>(self, build: &B) -> Result<CheckReport> {
            run(self.model, self.data, self.eps, self.spsa, |e| {
                let opts = GpuOptions {
                    shape: e.shape(),
                    ..Default::default()
                };
                build.build(self.model, self.data, &opts)
            })
        }
    }
    backend.with(Check {
        model,
        data,
        eps,
        spsa,
    })
}

/// Runs the whole check. `evaluator(shape)` builds an evaluator for an estimator's shape (the GPU
/// plans its dispatches per shape; the CPU ignores it). `spsa` adds that SPSA estimator at `eps`.
pub fn run<E: Evaluator>(
    model: &Model,
    data: &Dataset,
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
    let (loss, reference) = backprop(model, data)?;
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
        loss,
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

    /// Backprop agrees with float64 central differences (an independent computation) on small
    /// random networks of every activation.
    #[test]
    fn backprop_matches_float64_central_differences() {
        const H: f64 = 1e-6;
        const TOLERANCE: f64 = 1e-7;
        let acts = [
            Activation::Sigmoid,
            Activation::Tanh,
            Activation::Relu,
            Activation::Identity,
        ];
        for (seed, &act) in acts.iter().enumerate() {
            let model =
                Model::random(&[3, 4, 2], &[act, Activation::Sigmoid], seed as u64).unwrap();
            let x = ndarray::Array2::from_shape_fn((5, 3), |(i, j)| {
                ((i * 7 + j * 3) % 11) as f32 / 5.0 - 1.0
            });
            let y = ndarray::Array2::from_shape_fn((5, 2), |(i, j)| ((i + j) % 3) as f32 / 2.0);
            let data = Dataset::new(x, y).unwrap();
            let (_, g) = backprop(&model, &data).unwrap();
            // Loss as a float64 function of float64 parameters, independent of the f32 params.
            let loss_at = |p: &[f64]| -> f64 {
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
                    for (o, &y) in a.iter().zip(data.y.row(s)) {
                        total += (o - f64::from(y)).powi(2);
                    }
                }
                total / (data.len() * model.outputs()) as f64
            };
            let p0: Vec<f64> = model.params.iter().map(|&v| f64::from(v)).collect();
            let mut worst = (0, 0.0f64, 0.0f64);
            for k in 0..p0.len() {
                let (mut up, mut down) = (p0.clone(), p0.clone());
                up[k] += H;
                down[k] -= H;
                let fd = (loss_at(&up) - loss_at(&down)) / (2.0 * H);
                let err = (fd - g[k]).abs();
                if err > worst.1 {
                    worst = (k, err, fd);
                }
            }
            let k = worst.0;
            assert!(
                worst.1 < TOLERANCE,
                "{act:?}: parameter {k}: backprop {} vs central differences {} (error {})",
                g[k],
                worst.2,
                worst.1
            );
        }
    }
}
