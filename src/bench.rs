//! `perturb bench`: seconds per training step over named sizes × methods × devices × loop modes,
//! with NumPy rows from `benches/numpy_bench.py` and JAX rows from `benches/jax_bench.py` when
//! asked, and whole-process rows (a `perturb train` run timed from outside, start-up included) that
//! the command line measures and [`process_row`] turns into rows of the same table.

use crate::data::Dataset;
use crate::error::{Error, Result, Setting};
use crate::evaluator::Evaluator;
use crate::gpu::{AdapterOptions, GpuOptions, ReuseKernel};
use crate::model::{Activation, Loss, Model};
use crate::precision::{Precision, Real};
use crate::session::{Backend, Build, Device, Job};
use crate::settings::{Hyper, Method};
use crate::train::update;
use ndarray::Array2;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use std::time::{Duration, Instant};

/// A named benchmark size: seeded random parameters and data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size {
    /// `book`, `small`, `medium`, `mnist` or `mnist1k`.
    pub name: &'static str,
    /// Widths from input to output.
    pub widths: &'static [usize],
    /// Samples B.
    pub samples: usize,
}

/// The named sizes, smallest first (`mnist1k`, MNIST with 1,024 samples per step, is for real GPUs
/// and not in the default set).
pub const SIZES: [Size; 5] = [
    Size {
        name: "book",
        widths: &[2, 3, 1],
        samples: 1,
    },
    Size {
        name: "small",
        widths: &[16, 32, 4],
        samples: 64,
    },
    Size {
        name: "medium",
        widths: &[64, 128, 10],
        samples: 64,
    },
    Size {
        name: "mnist",
        widths: &[784, 128, 10],
        samples: 256,
    },
    Size {
        name: "mnist1k",
        widths: &[784, 128, 10],
        samples: 1024,
    },
];

impl Size {
    /// Looks a size up by name.
    pub fn named(name: &str) -> Result<Size> {
        SIZES
            .into_iter()
            .find(|s| s.name == name.trim())
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown size {name:?} (book, small, medium, mnist, mnist1k)"
                ))
            })
    }

    /// The model and data: the book's own for `book`; otherwise sigmoid hidden layers, identity
    /// output, seeded parameters and inputs/targets uniform in [-1, 1).
    pub fn build(&self) -> (Model, Dataset) {
        self.build_for(Loss::Mse)
    }

    /// The model and data for `loss`: [`Size::build`]'s for MSE; for cross-entropy the same model
    /// and inputs with seeded class labels (uniform over the outputs) as one-hot targets.
    pub fn build_for(&self, loss: Loss) -> (Model, Dataset) {
        if self.name == "book" {
            return (Model::book(), Dataset::book());
        }
        let acts: Vec<Activation> = (1..self.widths.len())
            .map(|l| {
                if l + 1 == self.widths.len() {
                    Activation::Identity
                } else {
                    Activation::Sigmoid
                }
            })
            .collect();
        let model = Model::random(self.widths, &acts, 1).expect("named sizes are valid");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let mut m =
            |c: usize| Array2::from_shape_fn((self.samples, c), |_| rng.random_range(-1.0f32..1.0));
        let x = m(model.inputs());
        let y = m(model.outputs());
        if loss == Loss::CrossEntropy {
            let classes = model.outputs();
            let labels: Vec<u32> = (0..self.samples)
                .map(|_| rng.random_range(0..classes as u32))
                .collect();
            let data = Dataset::from_labels(x, &labels, classes, "bench").expect("labels fit");
            return (model, data);
        }
        (model, Dataset::new(x, y).expect("finite"))
    }

    /// Multiply-adds of one naive step: (P + 1) full forward passes over B samples.
    pub fn naive_work(&self) -> f64 {
        let p: usize = self.widths.windows(2).map(|w| (w[0] + 1) * w[1]).sum();
        (p as f64 + 1.0) * self.samples as f64 * p as f64
    }
}

/// One measured (or skipped) configuration.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Size name.
    pub size: String,
    /// Parameters P.
    pub params: usize,
    /// Samples B.
    pub samples: usize,
    /// `naive`, `reuse`, `numpy-loop`, `numpy-vectorized`.
    pub method: String,
    /// `mse` or `cross-entropy`.
    pub loss: String,
    /// `cpu` or `gpu`.
    pub device: String,
    /// Adapter or CPU description.
    pub adapter: String,
    /// `host` or `resident`; `process` for a whole `perturb train` run.
    pub mode: String,
    /// Median seconds per training step (all P + 1 losses and the update), if measured; for a
    /// `process` row, the median seconds of the whole process.
    pub seconds: Option<f64>,
    /// (P + 1) · B nudged-sample evaluations (items) per second; for a `process` row, over all its
    /// epochs and its whole run.
    pub evals_per_second: Option<f64>,
    /// How much longer the first step (resident: the first submission) took than a steady one:
    /// pipelines built at first use, shader compilation at the first dispatch, first touches.
    pub first_step_extra: Option<f64>,
    /// CPU-naive time of the same size divided by this row's.
    pub speedup_vs_cpu_naive: Option<f64>,
    /// Steps timed.
    pub runs: usize,
    /// Whether the median settled (the last medians within 2 %).
    pub stable: bool,
    /// Why a row was skipped, or other remarks.
    pub note: String,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Sizes.
    pub sizes: Vec<Size>,
    /// Methods.
    pub methods: Vec<Method>,
    /// Losses (cross-entropy rows skip sizes with one output, the book's: softmax over one logit
    /// is constant).
    pub losses: Vec<Loss>,
    /// Include CPU rows.
    pub cpu: bool,
    /// Include GPU rows.
    pub gpu: bool,
    /// Include resident-loop rows (GPU only).
    pub resident: bool,
    /// Time budget per row.
    pub max_seconds: f64,
    /// Skip naive rows whose step needs more multiply-adds than this.
    pub max_work: f64,
    /// Adapter choice.
    pub adapter: AdapterOptions,
    /// The reuse method's kernel on the GPU (`None`: chosen by adapter).
    pub reuse_kernel: Option<ReuseKernel>,
}

/// Times `step` until the median settles or the budget is spent. Returns (median, runs, stable,
/// seconds of the first, untimed step).
/// Steps shorter than [`MIN_SAMPLE`] are timed in batches (the sample is the batch's mean), so
/// that the clock's own cost and the bookkeeping between samples stay out of the number.
fn time_steps(
    budget: Duration,
    mut step: impl FnMut() -> Result<()>,
) -> Result<(f64, usize, bool, f64)> {
    let start = Instant::now();
    step()?; // warm-up (pipelines, caches, first-touch allocations)
    let warm = start.elapsed();
    if warm > budget {
        // One step already exceeds the budget: time one more and say it is a single run.
        let t = Instant::now();
        step()?;
        return Ok((t.elapsed().as_secs_f64(), 1, false, warm.as_secs_f64()));
    }
    // Batch size from a short calibration of warm steps.
    let t = Instant::now();
    let mut calibration = 0u32;
    while t.elapsed() < MIN_SAMPLE / 4 && calibration < 1 << 20 {
        step()?;
        calibration += 1;
    }
    let per_step = t.elapsed().as_secs_f64() / calibration as f64;
    let batch = ((MIN_SAMPLE.as_secs_f64() / per_step).ceil() as usize).clamp(1, 1 << 20);
    let mut times = Vec::new();
    let mut last_median = f64::NAN;
    let mut stable = false;
    while start.elapsed() < budget || times.len() < 3 {
        let t = Instant::now();
        for _ in 0..batch {
            step()?;
        }
        times.push(t.elapsed().as_secs_f64() / batch as f64);
        if times.len() >= 5 && times.len() % 5 == 0 {
            let m = median(&mut times.clone());
            stable = (m - last_median).abs() <= 0.02 * m;
            last_median = m;
            if stable && start.elapsed() > budget / 4 {
                break;
            }
        }
        if start.elapsed() > budget && times.len() >= 3 {
            break;
        }
        if times.len() >= 3 && start.elapsed() > budget * 3 {
            break;
        }
    }
    Ok((
        median(&mut times),
        times.len() * batch,
        stable,
        warm.as_secs_f64(),
    ))
}

/// Shortest time one timing sample covers (see [`time_steps`]).
const MIN_SAMPLE: Duration = Duration::from_micros(200);

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// One host-driven step: evaluate, then the book's update.
fn host_step<E: Evaluator>(
    ev: &mut E,
    params: &mut [f32],
    deltas: &mut [E::Loss],
    hyper: &Hyper,
) -> Result<()> {
    let (eps, lr) = (E::Loss::from_f64(hyper.eps), E::Loss::from_f64(hyper.lr));
    ev.evaluate(params, hyper.eps as f32, deltas)?;
    for (p, &d) in params.iter_mut().zip(deltas.iter()) {
        *p = update(*p, d, eps, lr);
    }
    Ok(())
}

/// Runs the matrix; rows come in size order, CPU before GPU.
pub fn run(opts: &BenchOptions, mut progress: impl FnMut(&Row)) -> Result<Vec<Row>> {
    let gpu = if opts.gpu {
        Some(Backend::open(&Device::Gpu(opts.adapter.clone()))?)
    } else {
        None
    };
    let cpu = Backend::Cpu(Precision::F32);
    let mut rows = Vec::new();
    for size in &opts.sizes {
        for &loss in &opts.losses {
            let (model, data) = size.build_for(loss);
            for &method in &opts.methods {
                let mut row = |backend: &Backend, mode: &'static str, host: Option<f64>| {
                    let r = backend.with(TimeRow {
                        opts,
                        size,
                        model: &model,
                        data: &data,
                        loss,
                        method,
                        mode,
                        host_seconds: host,
                    })?;
                    progress(&r);
                    let seconds = r.seconds;
                    rows.push(r);
                    Ok::<_, Error>(seconds)
                };
                if opts.cpu {
                    row(&cpu, "host", None)?;
                }
                if let Some(gpu) = &gpu {
                    let host = row(gpu, "host", None)?;
                    if opts.resident {
                        row(gpu, "resident", host)?;
                    }
                }
            }
        }
        let p: usize = size.widths.windows(2).map(|w| (w[0] + 1) * w[1]).sum();
        let evals = (p as f64 + 1.0) * size.samples as f64;
        for r in rows.iter_mut().filter(|r| r.size == size.name) {
            r.evals_per_second = r.seconds.map(|s| evals / s);
        }
    }
    fill_speedups(&mut rows);
    Ok(rows)
}

/// One row of the matrix: build the evaluator on the backend, time its steps.
struct TimeRow<'a> {
    opts: &'a BenchOptions,
    size: &'a Size,
    model: &'a Model,
    data: &'a Dataset,
    loss: Loss,
    method: Method,
    /// `"host"` or `"resident"`.
    mode: &'static str,
    /// The host row's step time, which sizes the resident row's submissions.
    host_seconds: Option<f64>,
}

impl Job for TimeRow<'_> {
    type Output = Result<Row>;

    fn run<B: Build>(self, build: &B) -> Result<Row> {
        let (opts, size) = (self.opts, self.size);
        let device = build.device();
        let mut r = Row {
            size: size.name.into(),
            params: self.model.num_params(),
            samples: self.data.len(),
            method: self.method.name().into(),
            loss: self.loss.name().into(),
            device: device.kind,
            adapter: device.adapter,
            mode: self.mode.into(),
            seconds: None,
            evals_per_second: None,
            first_step_extra: None,
            speedup_vs_cpu_naive: None,
            runs: 0,
            stable: false,
            note: String::new(),
        };
        if self.loss == Loss::CrossEntropy && self.model.outputs() < 2 {
            r.note = "skipped: cross-entropy over one output is 0 for every parameter".into();
            return Ok(r);
        }
        if self.method == Method::Naive && size.naive_work() > opts.max_work {
            r.note = format!(
                "skipped: a naive step is {:.1e} multiply-adds (the naive work cap is {:.0e})",
                size.naive_work(),
                opts.max_work
            );
            return Ok(r);
        }
        let gopts = GpuOptions {
            method: self.method,
            loss: self.loss,
            reuse_kernel: opts.reuse_kernel,
            ..Default::default()
        };
        let mut ev = match build.build(self.model, self.data, &gopts) {
            Ok(ev) => ev,
            Err(e) => {
                r.note = format!("skipped: {e}");
                return Ok(r);
            }
        };
        if let Some(k) = ev.kernel_note() {
            r.note = k;
        }
        let (s, runs, stable, extra) = self.time(&mut ev, &mut r.note)?;
        (r.seconds, r.runs, r.stable) = (Some(s), runs, stable);
        r.first_step_extra = Some(extra);
        Ok(r)
    }
}

impl TimeRow<'_> {
    /// Seconds per step, steps timed, whether the median settled, how much longer the first step
    /// (resident: submission) took than a steady one; a resident row notes its epochs per
    /// submission.
    fn time<E: Evaluator>(&self, ev: &mut E, note: &mut String) -> Result<(f64, usize, bool, f64)> {
        let budget = Duration::from_secs_f64(self.opts.max_seconds);
        // A small lr keeps repeated steps from drifting anywhere unusual.
        let hyper = Hyper {
            epochs: 1,
            lr: 1e-3,
            eps: 1e-4,
            ..Hyper::book()
        };
        let mut params = self.model.params.clone();
        if self.mode == "host" {
            let mut deltas = vec![E::Loss::ZERO; params.len()];
            let (s, runs, stable, first) =
                time_steps(budget, || host_step(ev, &mut params, &mut deltas, &hyper))?;
            return Ok((s, runs, stable, first - s));
        }
        // Epochs per submission: up to 100 to amortise the submit, fewer when a host step is
        // slow so that one timed batch stays within a fifth of the budget.
        let host = self.host_seconds.unwrap_or(1e-3);
        let epochs = ((self.opts.max_seconds / 5.0 / host) as usize).clamp(1, 100);
        let h = Hyper { epochs, ..hyper };
        let (s, runs, stable, first) = time_steps(budget, || {
            let run = ev.resident_loop(&params, &h, epochs, None, &mut |_, _| {})?;
            params = run.params;
            Ok(())
        })?;
        let per = format!("{epochs} epochs per submission");
        *note = if note.is_empty() {
            per
        } else {
            format!("{note}, {per}")
        };
        Ok((s / epochs as f64, runs * epochs, stable, first - s))
    }
}

/// `benches/NAME` from a checkout (the usual case), else where this binary was built.
fn script(name: &str) -> String {
    let local = std::path::Path::new("benches").join(name);
    if local.exists() {
        local.display().to_string()
    } else {
        format!("{}/benches/{name}", env!("CARGO_MANIFEST_DIR"))
    }
}

/// Runs `python3 script args` and parses its JSON stdout; `fail` words a failure.
fn run_script(
    script: &str,
    args: &[&str],
    fail: impl Fn(String) -> Error,
) -> Result<serde_json::Value> {
    let out = std::process::Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .map_err(|e| fail(format!("needs python3: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(fail(format!(
            "{script} failed: {}",
            err.lines().last().unwrap_or("no output")
        )));
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| fail(format!("unreadable output of {script}: {e}")))
}

/// The `rows` of a script's JSON as rows of this crate (CPU, host-driven), labelled `adapter`.
fn script_rows(v: &serde_json::Value, adapter: &str) -> Vec<Row> {
    v["rows"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|r| Row {
            size: r["size"].as_str().unwrap_or("?").into(),
            params: r["params"].as_u64().unwrap_or(0) as usize,
            samples: r["samples"].as_u64().unwrap_or(0) as usize,
            method: r["method"].as_str().unwrap_or("?").into(),
            loss: r["loss"].as_str().unwrap_or("mse").into(),
            device: "cpu".into(),
            adapter: adapter.to_string(),
            mode: "host".into(),
            seconds: r["median_seconds"].as_f64(),
            evals_per_second: r["evals_per_second"].as_f64(),
            first_step_extra: None,
            speedup_vs_cpu_naive: None,
            runs: r["runs"].as_u64().unwrap_or(0) as usize,
            stable: r["median_seconds"].is_f64(),
            note: r["skipped"]
                .as_str()
                .map_or(String::new(), |s| format!("skipped: {s}")),
        })
        .collect()
}

/// The losses as the scripts' `--losses` list.
fn loss_names(losses: &[Loss]) -> String {
    losses
        .iter()
        .map(|l| l.name())
        .collect::<Vec<_>>()
        .join(",")
}

/// Rows from `benches/numpy_bench.py` (python3 with NumPy), in this crate's row format.
pub fn numpy_rows(sizes: &[Size], losses: &[Loss], max_seconds: f64) -> Result<(String, Vec<Row>)> {
    let names: Vec<&str> = sizes.iter().map(|s| s.name).collect();
    let v = run_script(
        &script("numpy_bench.py"),
        &[
            "--sizes",
            &names.join(","),
            "--losses",
            &loss_names(losses),
            "--max-seconds",
            &max_seconds.to_string(),
        ],
        |p| Error::invalid(Setting::Numpy, p),
    )?;
    let version = v["numpy_version"].as_str().unwrap_or("?").to_string();
    let rows = script_rows(&v, &format!("NumPy {version}"));
    Ok((version, rows))
}

/// What `benches/jax_bench.py --rows` gave: JAX's version and rows, or why it was skipped.
#[derive(Clone, Debug)]
pub enum JaxRows {
    /// `jax.grad` steps (and the `vmap` forward difference at medium), labelled with JAX's version.
    Rows(String, Vec<Row>),
    /// jax is not importable: the script's reason.
    Skipped(String),
}

/// Rows from `benches/jax_bench.py --rows` for the sizes it knows (medium, mnist); a missing jax
/// is [`JaxRows::Skipped`], not an error.
pub fn jax_rows(sizes: &[Size], losses: &[Loss], max_seconds: f64) -> Result<JaxRows> {
    let names: Vec<&str> = sizes.iter().map(|s| s.name).collect();
    let v = run_script(
        &script("jax_bench.py"),
        &[
            "--rows",
            "--sizes",
            &names.join(","),
            "--losses",
            &loss_names(losses),
            "--max-seconds",
            &max_seconds.to_string(),
        ],
        |p| Error::Config(format!("the JAX rows: {p}")),
    )?;
    if let Some(why) = v["skipped"].as_str() {
        return Ok(JaxRows::Skipped(why.to_string()));
    }
    let version = format!(
        "JAX {} ({})",
        v["jax_version"].as_str().unwrap_or("?"),
        v["platform"].as_str().unwrap_or("?")
    );
    let rows = script_rows(&v, &version);
    Ok(JaxRows::Rows(version, rows))
}

/// A whole-process row: `size` trained for `epochs` by `method` on `device` (`cpu` or `gpu`,
/// `adapter` naming it), from the wall seconds of each run; the median is the row's seconds and
/// items per second count every epoch's (P + 1) · B. `None` seconds when `times` is empty.
pub fn process_row(
    size: &Size,
    method: Method,
    (device, adapter): (&str, &str),
    epochs: usize,
    times: &mut [f64],
    note: String,
) -> Row {
    let p: usize = size.widths.windows(2).map(|w| (w[0] + 1) * w[1]).sum();
    let seconds = (!times.is_empty()).then(|| median(times));
    Row {
        size: size.name.into(),
        params: p,
        samples: size.samples,
        method: method.name().into(),
        loss: Loss::Mse.name().into(),
        device: device.into(),
        adapter: adapter.into(),
        mode: "process".into(),
        seconds,
        evals_per_second: seconds
            .map(|s| epochs as f64 * (p as f64 + 1.0) * size.samples as f64 / s),
        first_step_extra: None,
        speedup_vs_cpu_naive: None,
        runs: times.len(),
        stable: true,
        note,
    }
}

/// Fills `speedup_vs_cpu_naive` of step rows: against perturb's own CPU naive step row of the same
/// size and loss (NumPy and JAX rows too). Whole-process rows have none.
pub fn fill_speedups(rows: &mut [Row]) {
    let naive: Vec<(String, String, f64)> = rows
        .iter()
        .filter(|r| r.method == "naive" && r.device == "cpu" && r.mode == "host")
        .filter(|r| !r.adapter.starts_with("NumPy") && !r.adapter.starts_with("JAX"))
        .filter_map(|r| r.seconds.map(|s| (r.size.clone(), r.loss.clone(), s)))
        .collect();
    for r in rows.iter_mut().filter(|r| r.mode != "process") {
        let base = naive
            .iter()
            .find(|(size, loss, _)| *size == r.size && *loss == r.loss);
        if let (Some(s), Some((_, _, n))) = (r.seconds, base) {
            r.speedup_vs_cpu_naive = Some(n / s);
        }
    }
}

/// Seconds in s, ms or µs, two decimals.
fn fmt_seconds(s: f64) -> String {
    match s {
        s if s >= 1.0 => format!("{s:.2} s"),
        s if s >= 1e-3 => format!("{:.2} ms", s * 1e3),
        s => format!("{:.2} µs", s * 1e6),
    }
}

/// The rows as an aligned table: seconds per step (`/step`) or, for whole-process rows, per run
/// (`/run`); items per second on every measured row.
pub fn table(rows: &[Row]) -> String {
    let mut lines = vec![[
        "size".to_string(),
        "P".into(),
        "B".into(),
        "method".into(),
        "loss".into(),
        "device".into(),
        "mode".into(),
        "time".into(),
        "items/s".into(),
        "first step +".into(),
        "vs cpu naive".into(),
        "note".into(),
    ]];
    for r in rows {
        let per = if r.mode == "process" { "/run" } else { "/step" };
        lines.push([
            r.size.clone(),
            r.params.to_string(),
            r.samples.to_string(),
            r.method.clone(),
            r.loss.clone(),
            format!("{} ({})", r.device, r.adapter),
            r.mode.clone(),
            r.seconds
                .map_or("-".into(), |s| format!("{}{per}", fmt_seconds(s))),
            r.evals_per_second
                .map_or("-".into(), |e| format!("{e:.3e}")),
            r.first_step_extra
                .map_or("-".into(), |s| fmt_seconds(s.max(0.0))),
            r.speedup_vs_cpu_naive
                .map_or("-".into(), |x| format!("{x:.1}x")),
            {
                let mut n = r.note.clone();
                if r.seconds.is_some() && !r.stable {
                    n = format!("{} (median not settled, {} runs)", n, r.runs)
                        .trim()
                        .to_string();
                }
                n
            },
        ]);
    }
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    lines
        .iter()
        .map(|l| {
            l.iter()
                .enumerate()
                .map(|(c, v)| format!("{v:<w$}", w = widths[c]))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step_row() -> Row {
        Row {
            size: "medium".into(),
            params: 9610,
            samples: 64,
            method: "reuse".into(),
            loss: "mse".into(),
            device: "gpu".into(),
            adapter: "llvmpipe".into(),
            mode: "host".into(),
            seconds: Some(0.013),
            evals_per_second: Some(9611.0 * 64.0 / 0.013),
            first_step_extra: Some(0.4),
            speedup_vs_cpu_naive: None,
            runs: 50,
            stable: true,
            note: String::new(),
        }
    }

    #[test]
    fn a_process_row_takes_the_median_run_and_counts_every_epochs_items() {
        let book = Size::named("book").unwrap();
        let mut times = [0.3, 0.1, 0.2];
        let r = process_row(
            &book,
            Method::Naive,
            ("gpu", "lavapipe"),
            100,
            &mut times,
            "n".into(),
        );
        assert_eq!(r.seconds, Some(0.2));
        assert_eq!((r.params, r.samples, r.runs), (13, 1, 3));
        let items = 100.0 * 14.0 / 0.2;
        let got = r.evals_per_second.unwrap();
        assert!((got - items).abs() <= 1e-9 * items, "{got} vs {items}");
        assert_eq!(r.mode, "process");
        let none = process_row(&book, Method::Naive, ("gpu", "x"), 100, &mut [], "n".into());
        assert_eq!((none.seconds, none.evals_per_second), (None, None));
    }

    #[test]
    fn the_table_shows_items_per_second_and_per_step_or_per_run_times() {
        let book = Size::named("book").unwrap();
        let process = process_row(
            &book,
            Method::Naive,
            ("gpu", "lavapipe"),
            100,
            &mut [0.2],
            "w".into(),
        );
        let text = table(&[step_row(), process]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].contains("items/s") && lines[0].contains("first step +"),
            "{text}"
        );
        assert!(
            lines[1].contains("13.00 ms/step") && lines[1].contains("400.00 ms"),
            "{text}"
        );
        assert!(
            lines[1].contains(&format!("{:.3e}", 9611.0 * 64.0 / 0.013)),
            "{text}"
        );
        assert!(
            lines[2].contains("200.00 ms/run") && lines[2].contains("7.000e3"),
            "{text}"
        );
    }

    #[test]
    fn cross_entropy_sizes_keep_the_mse_model_and_inputs_and_hold_one_hot_labels() {
        let size = Size::named("medium").unwrap();
        let (m_mse, d_mse) = size.build();
        let (m_ce, d_ce) = size.build_for(Loss::CrossEntropy);
        assert_eq!(m_mse.params, m_ce.params);
        assert_eq!(d_mse.x, d_ce.x);
        let labels = d_ce.labels().expect("one-hot rows");
        assert_eq!(labels.len(), size.samples);
        let classes: std::collections::BTreeSet<u32> = labels.iter().copied().collect();
        assert!(
            classes.len() > 5 && classes.iter().all(|&c| c < 10),
            "{classes:?}"
        );
    }

    #[test]
    fn speedups_match_the_naive_row_of_the_same_loss() {
        let mut naive_mse = step_row();
        (naive_mse.method, naive_mse.device) = ("naive".into(), "cpu".into());
        naive_mse.seconds = Some(1.0);
        let mut naive_ce = naive_mse.clone();
        (naive_ce.loss, naive_ce.seconds) = ("cross-entropy".into(), Some(3.0));
        let mut reuse_ce = step_row();
        reuse_ce.loss = "cross-entropy".into();
        let mut rows = vec![naive_mse, naive_ce, reuse_ce, step_row()];
        fill_speedups(&mut rows);
        assert_eq!(rows[2].speedup_vs_cpu_naive, Some(3.0 / 0.013));
        assert_eq!(rows[3].speedup_vs_cpu_naive, Some(1.0 / 0.013));
    }

    #[test]
    fn speedups_skip_process_rows_and_use_the_cpu_naive_step_row() {
        let mut cpu = step_row();
        (cpu.method, cpu.device, cpu.seconds) = ("naive".into(), "cpu".into(), Some(1.0));
        let book = Size::named("medium").unwrap();
        let mut process = process_row(
            &book,
            Method::Naive,
            ("cpu", "CPU"),
            10,
            &mut [0.5],
            "w".into(),
        );
        process.size = "medium".into();
        let mut rows = vec![process, cpu, step_row()];
        fill_speedups(&mut rows);
        assert_eq!(rows[0].speedup_vs_cpu_naive, None, "a process row has none");
        assert_eq!(rows[1].speedup_vs_cpu_naive, Some(1.0));
        assert_eq!(rows[2].speedup_vs_cpu_naive, Some(1.0 / 0.013));
    }
}
