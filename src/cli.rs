//! The command line: `perturb train` and `perturb devices`.

use crate::bench::{self, BenchOptions, Size};
use crate::cpu::CpuEvaluator;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::gpu::{list_adapters, AdapterOptions, GpuContext, GpuEvaluator, GpuOptions};
use crate::model::{Activation, Model};
use crate::precision::Precision;
use crate::report::{self, Report, Settings};
use crate::train::{self, Evaluator, History, Hyper, Method};
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
    /// Time training steps over named sizes, methods, devices and loop modes.
    Bench(BenchArgs),
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

/// How nudged losses are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MethodArg {
    /// A full forward pass per nudged parameter (the book).
    Naive,
    /// One stored forward pass; each nudge recomputes only what it changes.
    Reuse,
}

impl From<MethodArg> for Method {
    fn from(m: MethodArg) -> Method {
        match m {
            MethodArg::Naive => Method::Naive,
            MethodArg::Reuse => Method::Reuse,
        }
    }
}

/// Who applies the update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LoopArg {
    /// The host reads the losses back each epoch and applies the update.
    Host,
    /// The GPU applies the update; losses come back once per batch of epochs.
    Resident,
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
    /// Data file (CSV: inputs then targets per row) [default: the book's one sample, inputs 1, 1 and target 0].
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
                    |epoch, loss| {
                        if report::shows_epoch(epoch, epochs) {
                            say!("epoch {epoch:>6}  loss {loss:.8}");
                        }
                    },
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

/// `perturb bench` options.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Sizes: book (2-3-1, B=1), small (16-32-4, B=64), medium (64-128-10, B=64), mnist (784-128-10, B=256).
    #[arg(long, default_value = "book,small,medium,mnist")]
    pub sizes: String,
    /// Methods: naive, reuse.
    #[arg(long, default_value = "naive,reuse")]
    pub methods: String,
    /// Devices: cpu, gpu.
    #[arg(long, default_value = "cpu,gpu")]
    pub devices: String,
    /// Loop modes for GPU rows: host, resident.
    #[arg(long, default_value = "host,resident")]
    pub modes: String,
    /// Also time the book's algorithm in NumPy (plain loop and vectorised), via python3.
    #[arg(long)]
    pub numpy: bool,
    /// Write the rows as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Time budget per row in seconds (a single step longer than this is still run once).
    #[arg(long, default_value_t = 3.0)]
    pub max_seconds: f64,
    /// Skip naive rows whose step needs more multiply-adds than this.
    #[arg(long, default_value_t = 1e10)]
    pub max_work: f64,
    /// Adapter choice.
    #[command(flatten)]
    pub adapter: AdapterArgs,
}

fn pick<T>(list: &str, what: &str, all: &[&str], f: impl Fn(&str) -> T) -> Result<Vec<T>> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            if all.contains(&s) {
                Ok(f(s))
            } else {
                Err(Error::Config(format!(
                    "--{what}: unknown {s:?} (expected {})",
                    all.join(", ")
                )))
            }
        })
        .collect()
}

/// Runs `perturb bench`.
pub fn bench(args: &BenchArgs) -> Result<()> {
    let sizes = args
        .sizes
        .split(',')
        .map(Size::named)
        .collect::<Result<Vec<_>>>()?;
    let methods = pick(&args.methods, "methods", &["naive", "reuse"], |s| {
        if s == "naive" {
            Method::Naive
        } else {
            Method::Reuse
        }
    })?;
    let devices = pick(&args.devices, "devices", &["cpu", "gpu"], str::to_string)?;
    let modes = pick(&args.modes, "modes", &["host", "resident"], str::to_string)?;
    if !(args.max_seconds > 0.0 && args.max_seconds.is_finite()) {
        return Err(Error::Config(format!(
            "--max-seconds must be > 0, got {}",
            args.max_seconds
        )));
    }
    let opts = BenchOptions {
        sizes: sizes.clone(),
        methods,
        cpu: devices.iter().any(|d| d == "cpu"),
        gpu: devices.iter().any(|d| d == "gpu"),
        resident: modes.iter().any(|m| m == "resident"),
        max_seconds: args.max_seconds,
        max_work: args.max_work,
        adapter: args.adapter.options(),
    };
    if !modes.iter().any(|m| m == "host") {
        return Err(Error::Config(
            "--modes must include host (CPU rows and the baseline are host-driven)".into(),
        ));
    }
    say!("timing one training step (all P + 1 losses and the update), median of repeated runs");
    let mut rows = bench::run(&opts, |r| {
        let t = r
            .seconds
            .map_or(r.note.clone(), |s| format!("{:.3e} s/step", s));
        say!(
            "  {:<7} {:<6} {:<4} {:<9} {t}",
            r.size,
            r.method,
            r.device,
            r.mode
        );
    })?;
    if args.numpy {
        let (version, mut extra) = bench::numpy_rows(&sizes, args.max_seconds.max(5.0) * 4.0)?;
        say!("  NumPy {version}: {} rows", extra.len());
        rows.append(&mut extra);
        bench::fill_speedups(&mut rows);
    }
    say!("\n{}", bench::table(&rows));
    if rows
        .iter()
        .any(|r| r.device == "gpu" && r.adapter.to_lowercase().contains("llvmpipe"))
    {
        say!("\nllvmpipe is Mesa's software GPU: its rows are CPU time spent emulating a GPU.");
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&rows).expect("rows serialise");
        std::fs::write(path, text + "\n").map_err(|e| Error::io(path, e))?;
        say!("wrote {}", path.display());
    }
    Ok(())
}
