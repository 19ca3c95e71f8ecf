//! The command line: `perturb train` and `perturb devices`.

use crate::cpu::CpuEvaluator;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::gpu::{list_adapters, AdapterOptions, GpuContext, GpuEvaluator};
use crate::model::{Activation, Model};
use crate::precision::Precision;
use crate::report::{self, Report, Settings};
use crate::train::{self, Evaluator, History, Hyper};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::Write as _;
use std::path::PathBuf;

/// `println!` that ends the process quietly when stdout is closed (`perturb train | head`) instead
/// of panicking.
macro_rules! say {
    ($($t:tt)*) => {
        if writeln!(std::io::stdout(), $($t)*).is_err() {
            std::process::exit(141);
        }
    };
}

/// Train neural networks by weight perturbation on the GPU (the book's chapter-1 algorithm).
#[derive(Debug, Parser)]
#[command(name = "perturb", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a network; with no options, the book's 2-3-1 example on the GPU.
    Train(TrainArgs),
    /// List the adapters wgpu sees and mark the one `train` would use.
    Devices(AdapterArgs),
}

/// Which adapter to use.
#[derive(Debug, Args, Clone, Default)]
pub struct AdapterArgs {
    /// Adapter whose name contains this (case-insensitive) [default: $WGPU_ADAPTER_NAME].
    #[arg(long)]
    pub adapter: Option<String>,
    /// Use a software adapter (lavapipe / llvmpipe).
    #[arg(long)]
    pub force_fallback: bool,
}

impl AdapterArgs {
    fn options(&self) -> AdapterOptions {
        let mut o = AdapterOptions::from_env();
        if self.adapter.is_some() {
            o.name = self.adapter.clone();
        }
        o.force_fallback = self.force_fallback;
        o
    }
}

/// Where the losses are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceKind {
    /// wgpu compute shaders.
    Gpu,
    /// The CPU reference.
    Cpu,
}

/// Float type of the forward pass and loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    /// float32, as on the GPU.
    F32,
    /// float64 with float32 parameters, as the book's NumPy notebook (CPU only).
    F64,
}

/// `perturb train` options.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Model file (JSON) to start from [default: the book's network].
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
    /// Data file (CSV: inputs then targets per row) [default: the book's x = [1, 1], y = [0]].
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
    /// Float type of the forward pass and loss (f64 needs --device cpu).
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    pub precision: PrecisionArg,
    /// Write a JSON report (losses, model, predictions, device, seconds).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write the trained model (JSON model file).
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Adapter choice.
    #[command(flatten)]
    pub adapter: AdapterArgs,
}

fn parse_list<T>(s: &str, what: &str, f: impl Fn(&str) -> Option<T>) -> Result<Vec<T>> {
    s.split(',')
        .map(|part| {
            f(part.trim())
                .ok_or_else(|| Error::Config(format!("{what}: cannot read {part:?} in {s:?}")))
        })
        .collect()
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
        Some(path) => Dataset::load_csv(path, model),
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
            let mut gpu = GpuEvaluator::new(ctx, &model, &data)?;
            run(&mut gpu, &model, &hyper, "float32")?
        }
        (DeviceKind::Cpu, Precision::F32) => run(
            &mut CpuEvaluator::<f32>::new(&model, &data)?,
            &model,
            &hyper,
            "float32",
        )?,
        (DeviceKind::Cpu, Precision::F64) => run(
            &mut CpuEvaluator::<f64>::new(&model, &data)?,
            &model,
            &hyper,
            "float64",
        )?,
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
    if let Some(path) = &args.report {
        Report {
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
        }
        .save(path)?;
        say!("wrote the report to {}", path.display());
    }
    Ok(())
}

fn run<E: Evaluator>(
    ev: &mut E,
    model: &Model,
    hyper: &Hyper,
    precision: &str,
) -> Result<(History, crate::train::DeviceInfo)> {
    let device = ev.device();
    say!(
        "device: {} — {} ({}), {precision}\n",
        device.kind,
        device.adapter,
        device.backend
    );
    let history = train::train(ev, &model.params, hyper, |epoch, loss| {
        if report::shows_epoch(epoch, hyper.epochs) {
            say!("epoch {epoch:>6}  loss {loss:.8}");
        }
    })?;
    Ok((history, device))
}

/// Runs `perturb devices`.
pub fn devices(args: &AdapterArgs) -> Result<()> {
    let opts = args.options();
    let list = list_adapters(&opts);
    if list.is_empty() {
        say!("no adapters found (install a Vulkan driver, e.g. apt-get install mesa-vulkan-drivers libvulkan1)");
        return Ok(());
    }
    let w = list.iter().map(|a| a.name.len()).max().unwrap_or(4).max(4);
    say!(
        "  {:<w$}  {:<8}  {:<13}  {:<7}  driver",
        "name",
        "backend",
        "type",
        "compute"
    );
    for a in &list {
        say!(
            "{} {:<w$}  {:<8}  {:<13}  {:<7}  {}",
            if a.chosen { "*" } else { " " },
            a.name,
            a.backend,
            a.device_type,
            if a.compute { "yes" } else { "no" },
            a.driver
        );
    }
    match list.iter().find(|a| a.chosen) {
        Some(a) => say!(
            "\n* = what `perturb train` uses: {} ({})",
            a.name,
            a.backend
        ),
        None => {
            // Say why, with the same message train would give.
            if let Err(e) = GpuContext::new(&opts) {
                say!("\nnone selected: {e}");
            }
        }
    }
    Ok(())
}
