//! `perturb train`.

use super::output::{self, OutputArgs};
use super::{parse_list, AdapterArgs, DeviceKind, LoopArg, MethodArg, PrecisionArg};
use crate::cpu::CpuEvaluator;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuEvaluator, GpuOptions};
use crate::model::{Activation, Model};
use crate::precision::Precision;
use crate::report::{self, Report, Settings};
use crate::train::{self, Evaluator, History, Hyper, Method};
use clap::Args;
use std::path::PathBuf;

/// `perturb train` options.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Model file (JSON, or NumPy .npz with W1, b1, …) to start from [default: the book's network].
    #[arg(long, conflicts_with_all = ["layers", "activations", "seed"])]
    pub model: Option<PathBuf>,
    /// Random network: widths from input to output, e.g. 2,3,1.
    #[arg(long)]
    pub layers: Option<String>,
    /// One activation per layer (sigmoid, tanh, relu, identity) [default: sigmoid…, identity].
    #[arg(long, requires = "layers")]
    pub activations: Option<String>,
    /// Seed of the random network.
    #[arg(long, requires = "layers")]
    pub seed: Option<u64>,
    /// Data file: CSV (inputs then targets per row), NumPy .npz (x, y), .npy (rows like the CSV) or
    /// x.npy,y.npy [default: the book's one sample, inputs 1, 1 and target 0].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Epochs (full-batch steps).
    #[arg(long, default_value_t = 100)]
    pub epochs: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 0.01, allow_hyphen_values = true)]
    pub lr: f64,
    /// Nudge added to each parameter.
    #[arg(long, default_value_t = 0.0001, allow_hyphen_values = true)]
    pub eps: f64,
    /// Where the nudged losses are computed.
    #[arg(long, value_enum, default_value_t = DeviceKind::Gpu)]
    pub device: DeviceKind,
    /// How the nudged losses are computed.
    #[arg(long, value_enum, default_value_t = MethodArg::Naive)]
    pub method: MethodArg,
    /// Who applies the update (resident needs --device gpu).
    #[arg(long = "loop", value_enum, default_value_t = LoopArg::Host)]
    pub loop_mode: LoopArg,
    /// Epochs per GPU submission in the resident loop (losses are reported after each).
    #[arg(long, default_value_t = 100)]
    pub epochs_per_submit: usize,
    /// Float type of the forward pass and loss (f64 needs --device cpu).
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    pub precision: PrecisionArg,
    /// Write a report (losses, model, predictions, device, seconds): JSON, or .npz (arrays).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write the trained model: JSON model file, or .npz (W1, b1, …, activations).
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Adapter choice.
    #[command(flatten)]
    pub adapter: AdapterArgs,
    /// Console output and plot.
    #[command(flatten)]
    pub output: OutputArgs,
}

fn load_model(args: &TrainArgs) -> Result<Model> {
    if let Some(path) = &args.model {
        return Model::load(path);
    }
    let Some(layers) = &args.layers else {
        return Ok(Model::book());
    };
    let widths = parse_list(layers, "--layers", |p| {
        p.parse::<usize>().ok().filter(|&w| w > 0)
    })?;
    let activations = match &args.activations {
        Some(a) => a
            .split(',')
            .map(Activation::parse)
            .collect::<Result<Vec<_>>>()?,
        None => (1..widths.len())
            .map(|l| {
                if l + 1 == widths.len() {
                    Activation::Identity
                } else {
                    Activation::Sigmoid
                }
            })
            .collect(),
    };
    Model::random(&widths, &activations, args.seed.unwrap_or(0))
}

fn load_data(args: &TrainArgs, model: &Model) -> Result<Dataset> {
    match &args.data {
        Some(path) => Dataset::load(path, model),
        None => {
            let book = Dataset::book();
            book.check_fits(model, "the book's data (x = [1, 1], y = [0])")
                .map_err(|e| Error::Config(format!("{e}; give --data for this model")))?;
            Ok(book)
        }
    }
}

/// Runs `perturb train`.
pub fn train(args: &TrainArgs) -> Result<()> {
    let hyper = Hyper {
        epochs: args.epochs,
        lr: args.lr,
        eps: args.eps,
    };
    hyper.validate()?;
    output::begin(&args.output)?;
    let precision = match args.precision {
        PrecisionArg::F32 => Precision::F32,
        PrecisionArg::F64 => Precision::F64,
    };
    if precision == Precision::F64 && args.device == DeviceKind::Gpu {
        return Err(Error::Config(
            "--precision f64 runs on the CPU only (the GPU computes in float32); add --device cpu"
                .into(),
        ));
    }
    if args.loop_mode == LoopArg::Resident && args.device != DeviceKind::Gpu {
        return Err(Error::Config(
            "--loop resident runs the update on the GPU; it needs --device gpu".into(),
        ));
    }
    let method = Method::from(args.method);
    let model = load_model(args)?;
    let data = load_data(args, &model)?;
    let origin = args
        .data
        .as_ref()
        .map_or("data".to_string(), |p| p.display().to_string());
    data.check_fits(&model, &origin)?;

    say!(
        "perturb: {} network, {} parameters, {} sample{}, {} epochs, lr {}, eps {}",
        report::describe_model(&model),
        model.num_params(),
        data.len(),
        if data.len() == 1 { "" } else { "s" },
        hyper.epochs,
        hyper.lr,
        hyper.eps
    );
    let (history, device) = match (args.device, precision) {
        (DeviceKind::Gpu, _) => {
            let ctx = GpuContext::new(&args.adapter.options())?;
            let opts = GpuOptions {
                method,
                ..Default::default()
            };
            let mut gpu = GpuEvaluator::with_options(ctx, &model, &data, opts)?;
            if args.loop_mode == LoopArg::Resident {
                let device = gpu.device();
                say!(
                    "device: {} — {} ({}), float32, {} method, resident loop\n",
                    device.kind,
                    device.adapter,
                    device.backend,
                    method.name()
                );
                let epochs = hyper.epochs;
                let history = gpu.train_resident(
                    &model.params,
                    &hyper,
                    args.epochs_per_submit,
                    |epoch, loss| output::epoch(epoch, epochs, loss),
                )?;
                (history, device)
            } else {
                run(&mut gpu, &model, &hyper, "float32", method)?
            }
        }
        (DeviceKind::Cpu, Precision::F32) => {
            let mut cpu = CpuEvaluator::<f32>::with_method(&model, &data, method)?;
            run(&mut cpu, &model, &hyper, "float32", method)?
        }
        (DeviceKind::Cpu, Precision::F64) => {
            let mut cpu = CpuEvaluator::<f64>::with_method(&model, &data, method)?;
            run(&mut cpu, &model, &hyper, "float64", method)?
        }
    };
    let trained = model.with_params(history.params.clone())?;
    let predictions = match precision {
        Precision::F32 => CpuEvaluator::<f32>::new(&trained, &data)?.predict(&trained.params),
        Precision::F64 => CpuEvaluator::<f64>::new(&trained, &data)?.predict(&trained.params),
    };
    say!(
        "trained in {:.3} s ({:.1} µs per epoch)\n",
        history.seconds,
        1e6 * history.seconds / hyper.epochs as f64
    );
    say!("{}", report::format_params(&trained, 8).trim_end());
    say!("\npredictions for the training inputs:");
    say!(
        "{}",
        report::format_predictions(&data.x, &data.y, &predictions, 10).trim_end()
    );
    if let Some(path) = &args.save {
        trained.save(path)?;
        say!("saved the trained model to {}", path.display());
    }
    let report = Report {
        losses: history.losses.clone(),
        model: trained.to_file(),
        predictions,
        device,
        seconds: history.seconds,
        settings: Settings {
            epochs: hyper.epochs,
            lr: hyper.lr,
            eps: hyper.eps,
            precision: if precision == Precision::F32 {
                "f32"
            } else {
                "f64"
            }
            .into(),
            samples: data.len(),
        },
    };
    if let Some(path) = &args.report {
        report.save(path)?;
        say!("wrote the report to {}", path.display());
    }
    output::finish(&args.output, &report)
}

fn run<E: Evaluator>(
    ev: &mut E,
    model: &Model,
    hyper: &Hyper,
    precision: &str,
    method: Method,
) -> Result<(History, crate::train::DeviceInfo)> {
    let device = ev.device();
    say!(
        "device: {} — {} ({}), {precision}, {} method\n",
        device.kind,
        device.adapter,
        device.backend,
        method.name()
    );
    let history = train::train(ev, &model.params, hyper, |epoch, loss| {
        output::epoch(epoch, hyper.epochs, loss)
    })?;
    Ok((history, device))
}
