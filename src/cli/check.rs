//! `perturb check`.

use super::{AdapterArgs, DeviceArg, DirectionArg, LossArg, NetArgs, PrecisionArg};
use crate::check::{self, CheckReport, COORDINATE_ESTIMATORS, SWEEP_EPS};
use crate::error::{Error, Fix, Result, Setting};
use crate::estimate::Estimator;
use crate::plot::{self, Series};
use crate::report;
use crate::rng::Direction;
use crate::session::{Backend, Device};
use clap::Args;
use std::path::PathBuf;

/// `perturb check` options.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Network and data (the parameters checked are the model's).
    #[command(flatten)]
    pub net: NetArgs,
    /// The loss backprop and the estimators differentiate (cross-entropy: an identity output layer,
    /// data rows ending in a class label or one probability per output).
    #[arg(long, value_enum, default_value_t = LossArg::Mse)]
    pub loss: LossArg,
    /// Seed of the random network (--layers) and of the SPSA directions.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The nudge of the main table (the sweep covers 1e-1 … 1e-7).
    #[arg(long, default_value_t = 0.0001, allow_hyphen_values = true)]
    pub eps: f64,
    /// Where the perturbed losses are computed.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// Float type of the perturbed losses (f64 needs --device cpu).
    #[arg(long, value_enum, default_value_t = PrecisionArg::F64)]
    pub precision: PrecisionArg,
    /// SPSA directions for the SPSA row (at least 1, as `train` takes).
    #[arg(long, default_value_t = 64)]
    pub samples: u32,
    /// Distribution of the SPSA directions.
    #[arg(long, value_enum, default_value_t = DirectionArg::Rademacher)]
    pub direction: DirectionArg,
    /// Write the report (every row, the backprop gradient) as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw the eps sweep (relative error against eps, log-log, one line per estimator), .png or .svg.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Adapter choice.
    #[command(flatten)]
    pub adapter: AdapterArgs,
}

/// Runs `perturb check`.
pub fn check(args: &CheckArgs) -> Result<()> {
    if args.precision == PrecisionArg::F64 && args.device == DeviceArg::Gpu {
        return Err(Error::unsupported(
            "the GPU computes in float32",
            Some(Fix::Use(Setting::Precision, "f32")),
        ));
    }
    if let Some(path) = &args.plot {
        plot::Format::from_path(path)?;
    }
    let outs = super::outputs::check_plain(
        &[
            ("--data", args.net.data.as_deref()),
            ("--model", args.net.model.as_deref()),
        ],
        &[
            ("--json", args.json.as_deref()),
            ("--plot", args.plot.as_deref()),
        ],
    )?;
    let model = args.net.model(args.seed)?;
    let loss = args.loss.into();
    crate::model::Loss::check(loss, &model)?;
    let data = args.net.data(&model, loss)?;
    // Refused as `train` refuses it rather than silently dropping the SPSA row.
    let spsa = Some({
        let direction = match args.direction {
            DirectionArg::Rademacher => Direction::Rademacher,
            DirectionArg::Gaussian => Direction::Gaussian,
        };
        let e = Estimator::Spsa {
            samples: args.samples,
            direction,
        };
        (e, args.seed)
    });
    if let Some((e, _)) = spsa {
        e.validate()?;
    }
    let device = match args.device {
        DeviceArg::Gpu => Device::Gpu(args.adapter.options()),
        DeviceArg::Cpu => Device::Cpu(args.precision.into()),
    };
    // One device for every estimator's evaluator (they run one after another).
    let report = check::run_on(
        &Backend::open(&device)?,
        &model,
        &data,
        loss,
        args.eps,
        spsa,
    )?;
    say!(
        "perturb check: {} network, {} parameters, {} sample{}; {} loss {:.8} (backprop in float64)",
        report::describe_model(&model),
        model.num_params(),
        data.len(),
        if data.len() == 1 { "" } else { "s" },
        loss.name(),
        report.loss
    );
    say!(
        "perturbed losses: {} — {} ({}), {}\n",
        report.device.kind,
        report.device.adapter,
        report.device.backend,
        if args.precision == PrecisionArg::F64 {
            "float64"
        } else {
            "float32"
        }
    );
    say!("{}", table(&report));
    if let Some(path) = outs.target("--plot") {
        let series = COORDINATE_ESTIMATORS
            .iter()
            .map(|(e, s)| Series {
                name: format!("{}/{}", e.name(), s.name()),
                points: report
                    .sweep
                    .iter()
                    .filter(|r| r.estimator == e.name() && r.step == s.name())
                    .map(|r| (r.eps, r.overall.relative_error))
                    .collect(),
            })
            .collect();
        plot::curves(
            "Gradient error against eps (backprop in float64 as reference)",
            "eps",
            "relative error",
            true,
            series,
        )
        .render(path)?;
        say!("drew {}", path.display());
    }
    if let Some(path) = outs.target("--json") {
        let text = serde_json::to_string_pretty(&report).expect("report serialises");
        crate::fileio::write_atomic(path, (text + "\n").as_bytes())?;
        say!("wrote {}", path.display());
    }
    Ok(())
}

/// The console tables: estimators at the chosen eps (overall and per layer), then the eps sweep.
pub fn table(r: &CheckReport) -> String {
    let mut out = String::new();
    let layers = r.estimators.first().map_or(0, |row| row.layers.len());
    out += &format!(
        "{:<11} {:<8} {:>8}  {:>10}  {:>10}  {:>12}",
        "estimator", "step", "eps", "rel. error", "max error", "cosine"
    );
    for l in 1..=layers {
        out += &format!("  {:>10}", format!("layer {l}"));
    }
    out += "\n";
    for row in &r.estimators {
        out += &format!(
            "{:<11} {:<8} {:>8.0e}  {:>10.3e}  {:>10.3e}  {:>12.9}",
            row.estimator,
            row.step,
            row.eps,
            row.overall.relative_error,
            row.overall.max_error,
            row.overall.cosine
        );
        for a in &row.layers {
            out += &format!("  {:>10.3e}", a.relative_error);
        }
        if row.vanished > 0 {
            out += &format!("  ({} nudges vanished)", row.vanished);
        }
        out += "\n";
    }
    out += "\nrelative error against backprop over eps (* marks each column's best):\n";
    out += &format!("{:>8}", "eps");
    for (e, s) in COORDINATE_ESTIMATORS {
        out += &format!("  {:>18}", format!("{}/{}", e.name(), s.name()));
    }
    out += "\n";
    for &eps in &SWEEP_EPS {
        out += &format!("{eps:>8.0e}");
        for (e, s) in COORDINATE_ESTIMATORS {
            let cell = r
                .sweep
                .iter()
                .find(|row| row.estimator == e.name() && row.step == s.name() && row.eps == eps);
            let best = r
                .best
                .iter()
                .any(|b| b.estimator == e.name() && b.step == s.name() && b.eps == eps);
            match cell {
                Some(row) => {
                    out += &format!(
                        "  {:>17.3e}{}",
                        row.overall.relative_error,
                        if best { "*" } else { " " }
                    )
                }
                None => out += &format!("  {:>18}", "-"),
            }
        }
        out += "\n";
    }
    out
}
