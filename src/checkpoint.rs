//! Checkpoints: everything needed to continue a run exactly where it stopped.
//!
//! A checkpoint file is one line of JSON:
//!
//! ```text
//! {"format": "perturb-checkpoint", "version": 1, "epochs_done": 40,
//!  "settings": {"epochs": 100, "lr": 0.01, "eps": 0.0001, "seed": null, "precision": "f32",
//!               "method": "naive", "device": "cpu", "loop": "host", "data": null, "extra": {}},
//!  "losses": [0.33455008268356323, ...],
//!  "model": {"layers": [...the model file...]}, "checksum": "9f3c…"}
//! ```
//!
//! The last field, `checksum`, is FNV-1a (64-bit, 16 hex digits) of the text before it as written
//! (the object closed after `model`): any edit of the file is refused on load, naming it.
//! Checkpoints written before checksums existed have none and load unchecked. The data trained
//! on is recorded by size and FNV-1a of every byte read ([`DataRef`]); a resume re-reads it and
//! compares.
//!
//! Floats round-trip bit for bit: serde_json prints the shortest decimal that reads back as the
//! same value, and this crate enables its `float_roundtrip` feature so that reading is correctly
//! rounded too (without it, about a third of random f64 values come back one ULP off). A
//! non-finite loss (a run that was allowed to diverge) is written as the string `"NaN"`, `"inf"`
//! or `"-inf"`, since JSON has no such numbers. Parameters are always finite (the model file
//! refuses others).

use crate::error::{Error, Result, Setting};
use crate::estimate::StepMode;
use crate::fileio::{fnv1a64, read_text_capped, write_atomic};
use crate::model::Loss;
use crate::model::{Model, ModelFile};
use crate::optim::{OptState, Optimizer};
use crate::precision::Precision;
use crate::rng::Direction;
use crate::settings::{
    Batching, DeviceKind, EstimatorChoice, EstimatorKind, Hyper, LoopKind, Method, Named,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

mod losses;

/// The `"format"` field of every checkpoint.
pub const FORMAT: &str = "perturb-checkpoint";

/// The newest checkpoint version this build writes and reads. A run that version 1 can describe
/// (mse, full batches, sgd) is still written as version 1; others as version 2, which adds the
/// loss, batching and optimiser settings, every step's loss and the optimiser's state.
pub const VERSION: u32 = 2;

/// Largest checkpoint file read: 4 GiB (a model file of up to 1 GiB plus up to 10⁸ losses).
pub const MAX_CHECKPOINT_BYTES: u64 = 4 << 30;

/// A run stopped after [`Checkpoint::epochs_done`] epochs.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// The parameters after the last completed epoch.
    pub model: Model,
    /// Epochs completed (the next epoch to run is `epochs_done + 1`).
    pub epochs_done: usize,
    /// Loss of each completed epoch; `losses.len() == epochs_done`.
    pub losses: Vec<f64>,
    /// Loss of every applied step (a stop mid-epoch leaves steps beyond the last whole epoch).
    pub step_losses: Vec<f64>,
    /// The optimiser's state after the last step.
    pub state: OptState,
    /// Every setting that shapes the trajectory.
    pub settings: RunSettings,
    /// What was measured after each completed epoch besides its loss (version 2).
    pub history: History,
}

/// Validation loss and accuracy and training accuracy after each completed epoch, so that a
/// resumed run reports every epoch's, not only its own. Each list is empty when not measured
/// (no validation data, no class labels), and may be shorter than the losses when the file was
/// written by a build that did not record them (version 2 files without `"history"`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// Validation loss after each epoch.
    pub val_loss: Vec<f64>,
    /// Validation accuracy after each epoch (class labels only).
    pub val_accuracy: Vec<f64>,
    /// Training accuracy after each epoch (class labels only).
    pub train_accuracy: Vec<f64>,
}

impl History {
    /// Nothing recorded.
    pub fn is_empty(&self) -> bool {
        self.val_loss.is_empty() && self.val_accuracy.is_empty() && self.train_accuracy.is_empty()
    }

    fn lists(&self) -> [(&'static str, &Vec<f64>); 3] {
        [
            ("val_loss", &self.val_loss),
            ("val_accuracy", &self.val_accuracy),
            ("train_accuracy", &self.train_accuracy),
        ]
    }
}

/// [`History`] as the file spells it: each list written only when it has entries.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireHistory {
    #[serde(default, skip_serializing_if = "losses::Losses::is_empty")]
    val_loss: losses::Losses,
    #[serde(default, skip_serializing_if = "losses::Losses::is_empty")]
    val_accuracy: losses::Losses,
    #[serde(default, skip_serializing_if = "losses::Losses::is_empty")]
    train_accuracy: losses::Losses,
}

/// The settings of a run that a resumed run must share to continue the same trajectory.
/// Written under version 1's names: `"precision": "f32"`, `"loop": "host"`, and the estimator
/// options in `"extra"` as strings (`{"estimator": "forward", "samples": "1", …}`).
#[derive(Clone, Debug, PartialEq)]
pub struct RunSettings {
    /// Epochs the run is to reach in total.
    pub epochs: usize,
    /// Learning rate.
    pub lr: f64,
    /// Nudge.
    pub eps: f64,
    /// Seed of the random initial network, when it was one.
    pub seed: Option<u64>,
    /// Float type of the losses.
    pub precision: Precision,
    /// Naive or reuse.
    pub method: Method,
    /// CPU or GPU.
    pub device: DeviceKind,
    /// Host or resident loop.
    pub loop_mode: LoopKind,
    /// The data file, or `None` for the book's one sample.
    pub data: Option<DataRef>,
    /// The estimator options.
    pub estimator: EstimatorChoice,
    /// The loss.
    pub loss: Loss,
    /// Samples per step and shuffling.
    pub batching: Batching,
    /// The update rule.
    pub optimizer: Optimizer,
    /// Only the first this many samples of the data were used.
    pub take: Option<usize>,
    /// This fraction of the data was held out for validation (drawn from the seed).
    pub val_split: Option<f64>,
}

impl RunSettings {
    /// Whether version 1 can hold these settings (mse, full batches, sgd, all the data).
    fn fits_version_1(&self) -> bool {
        self.loss == Loss::Mse
            && self.batching == Batching::full()
            && self.optimizer == Optimizer::Sgd
            && self.take.is_none()
            && self.val_split.is_none()
    }
}

/// [`RunSettings`] as the file spells them (version 1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireSettings {
    epochs: usize,
    lr: f64,
    eps: f64,
    seed: Option<u64>,
    precision: String,
    method: String,
    device: String,
    #[serde(rename = "loop")]
    loop_mode: String,
    data: Option<DataRef>,
    #[serde(default)]
    extra: BTreeMap<String, String>,
    // Version 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    loss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    batch_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    shuffle: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    optimizer: Option<Optimizer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    take: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    val_split: Option<f64>,
}

impl From<&RunSettings> for WireSettings {
    fn from(s: &RunSettings) -> WireSettings {
        let e = &s.estimator;
        let v1 = s.fits_version_1();
        let extra = [
            ("estimator", e.estimator.name().to_string()),
            ("step", e.step.name().to_string()),
            ("samples", e.samples.to_string()),
            ("direction", e.direction.name().to_string()),
        ];
        WireSettings {
            epochs: s.epochs,
            lr: s.lr,
            eps: s.eps,
            seed: s.seed,
            precision: s.precision.name().into(),
            method: s.method.name().into(),
            device: s.device.name().into(),
            loop_mode: s.loop_mode.name().into(),
            data: s.data.clone(),
            extra: extra.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            loss: (!v1).then(|| s.loss.name().to_string()),
            batch_size: (!v1).then_some(s.batching.size),
            shuffle: (!v1).then_some(s.batching.shuffle),
            optimizer: (!v1).then_some(s.optimizer),
            take: s.take,
            val_split: s.val_split,
        }
    }
}

/// `settings.{field}` read as one of `T`'s names.
fn named<T: Named>(field: &str, value: &str) -> std::result::Result<T, String> {
    T::from_name(value)
        .ok_or_else(|| format!("settings.{field} is {value:?} (expected {})", T::choices()))
}

impl WireSettings {
    /// The typed settings; a message naming the field where a value is unknown. Estimator
    /// options missing from `extra` take their defaults.
    fn typed(&self) -> std::result::Result<RunSettings, String> {
        let mut estimator = EstimatorChoice::default();
        for (key, value) in &self.extra {
            let field = format!("extra.{key}");
            match key.as_str() {
                "estimator" => estimator.estimator = named(&field, value)?,
                "step" => estimator.step = named(&field, value)?,
                "direction" => estimator.direction = named(&field, value)?,
                "samples" => {
                    estimator.samples = value.parse().map_err(|_| {
                        format!("settings.extra.samples is {value:?}, not a count")
                    })?
                }
                _ => {
                    return Err(format!(
                        "settings.extra has the key {key:?}, not an option (estimator, step, samples, direction)"
                    ))
                }
            }
        }
        Ok(RunSettings {
            epochs: self.epochs,
            lr: self.lr,
            eps: self.eps,
            seed: self.seed,
            precision: named("precision", &self.precision)?,
            method: named("method", &self.method)?,
            device: named("device", &self.device)?,
            loop_mode: named("loop", &self.loop_mode)?,
            data: self.data.clone(),
            estimator,
            loss: match &self.loss {
                Some(l) => named("loss", l)?,
                None => Loss::Mse,
            },
            batching: Batching {
                size: self.batch_size.unwrap_or(0),
                shuffle: self.shuffle.unwrap_or(false),
            },
            optimizer: self.optimizer.unwrap_or_default(),
            take: self.take,
            val_split: self.val_split,
        })
    }
}

/// Identifies a data file by content, so that a resumed run can tell it trains on the same data
/// even when the file has moved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataRef {
    /// The path as it was given.
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// FNV-1a (64-bit) of the contents, 16 lowercase hex digits.
    pub fnv1a64: String,
    /// Read from a pipe or device, which a resume cannot read again: `--data` must be given.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
}

impl DataRef {
    /// The reference of `contents` read from `path`.
    pub fn of_bytes(path: &Path, contents: &[u8]) -> DataRef {
        DataRef {
            path: path.display().to_string(),
            bytes: contents.len() as u64,
            fnv1a64: format!("{:016x}", fnv1a64(contents)),
            stream: false,
        }
    }
}

/// The end of a checkpoint written with a checksum: `,"checksum":"` 16 hex digits `"}`.
const CHECKSUM_KEY: &str = ",\"checksum\":\"";

/// Appends the checksum field to `body` (a JSON object's text): FNV-1a of `body` exactly as
/// written, so that any edit of a byte before it is caught.
fn with_checksum(body: &str) -> String {
    let open = body.strip_suffix('}').expect("a JSON object");
    format!(
        "{open}{CHECKSUM_KEY}{:016x}\"}}\n",
        fnv1a64(body.as_bytes())
    )
}

/// Checks the checksum of a checkpoint's text when it has one (checkpoints written before
/// checksums were added load unchecked). The field must be the last, as it is written.
fn verify_checksum(text: &str, recorded: Option<&str>) -> std::result::Result<(), String> {
    let Some(recorded) = recorded else {
        return Ok(());
    };
    let trimmed = text.trim_end();
    let suffix = format!("{CHECKSUM_KEY}{recorded}\"}}");
    let Some(open) = trimmed.strip_suffix(suffix.as_str()) else {
        return Err(
            "the checksum is not the last field as perturb writes it: the file was edited".into(),
        );
    };
    let actual = format!("{:016x}", fnv1a64(format!("{open}}}").as_bytes()));
    if actual != recorded {
        return Err(format!(
            "checksum mismatch (recorded {recorded}, contents hash to {actual}): the file was edited or damaged; refusing to resume from it"
        ));
    }
    Ok(())
}

/// The settings given again on resume: `None` where one was not given, and the run takes the
/// checkpoint's value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GivenFlags {
    /// The new total of epochs, which may differ but not be below the epochs already run.
    pub epochs: Option<usize>,
    /// Learning rate.
    pub lr: Option<f64>,
    /// Nudge.
    pub eps: Option<f64>,
    /// Seed.
    pub seed: Option<u64>,
    /// Float type.
    pub precision: Option<Precision>,
    /// Naive or reuse.
    pub method: Option<Method>,
    /// CPU or GPU.
    pub device: Option<DeviceKind>,
    /// Host or resident loop.
    pub loop_mode: Option<LoopKind>,
    /// The data the resumed run will train on: from `--data`, or from the checkpoint's path when
    /// `--data` is not given (so that a file changed since is caught).
    pub data: Option<DataRef>,
    /// Estimator family.
    pub estimator: Option<EstimatorKind>,
    /// Step mode.
    pub step: Option<StepMode>,
    /// SPSA directions per step.
    pub samples: Option<u32>,
    /// SPSA direction distribution.
    pub direction: Option<Direction>,
    /// The loss.
    pub loss: Option<Loss>,
    /// Samples per step (0: every sample).
    pub batch_size: Option<usize>,
    /// Shuffling.
    pub shuffle: Option<bool>,
    /// The update rule and its constants.
    pub optimizer: Option<Optimizer>,
    /// The first samples used.
    pub take: Option<Option<usize>>,
    /// The held-out fraction.
    pub val_split: Option<Option<f64>>,
}

impl Checkpoint {
    /// Checks the checkpoint is one that [`Checkpoint::load`] accepts: settings in range, known
    /// option names, `epochs_done` ≤ the target, one loss per completed epoch, finite parameters
    /// of the model's count.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let s = &self.settings;
        // The same ranges as a fresh run's flags.
        let mut hyper = Hyper::book();
        hyper.epochs = s.epochs;
        hyper.lr = s.lr;
        hyper.eps = s.eps;
        hyper.validate().map_err(|e| format!("settings: {e}"))?;
        if let Some(d) = &s.data {
            if d.fnv1a64.len() != 16 || !d.fnv1a64.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "settings.data.fnv1a64 is {:?}, not 16 hex digits",
                    d.fnv1a64
                ));
            }
        }
        if self.epochs_done > s.epochs {
            return Err(format!(
                "epochs_done is {}, more than the {} epochs of the run",
                self.epochs_done, s.epochs
            ));
        }
        s.optimizer
            .validate()
            .map_err(|e| format!("settings.optimizer: {e}"))?;
        self.state
            .check(&s.optimizer, self.model.params.len())
            .map_err(|m| format!("optimizer_state: {m}"))?;
        if self.losses.len() != self.epochs_done {
            return Err(format!(
                "{} losses for {} completed epochs",
                self.losses.len(),
                self.epochs_done
            ));
        }
        if self.step_losses.len() < self.epochs_done {
            return Err(format!(
                "{} step losses for {} completed epochs",
                self.step_losses.len(),
                self.epochs_done
            ));
        }
        for (name, list) in self.history.lists() {
            if list.len() > self.epochs_done {
                return Err(format!(
                    "history.{name} has {} entries for {} completed epochs",
                    list.len(),
                    self.epochs_done
                ));
            }
        }
        // `Model::params` is public: check it still fits the layers and is finite.
        self.model
            .with_params(self.model.params.clone())
            .map_err(|e| match e {
                Error::Model { message, .. } => format!("model: {message}"),
                other => format!("model: {other}"),
            })?;
        Ok(())
    }

    /// The checkpoint as its file's JSON text (one line and a newline).
    pub fn to_json(&self) -> String {
        // Version 1 has no history: a run that measured something is written as version 2.
        let v1 = self.settings.fits_version_1() && self.history.is_empty();
        let h = &self.history;
        let wire = Wire {
            format: FORMAT.into(),
            version: if v1 { 1 } else { VERSION },
            epochs_done: self.epochs_done,
            settings: WireSettings::from(&self.settings),
            losses: losses::Losses(self.losses.clone()),
            step_losses: (!v1).then(|| losses::Losses(self.step_losses.clone())),
            optimizer_state: (!v1).then(|| self.state.clone()),
            history: (!h.is_empty()).then(|| WireHistory {
                val_loss: losses::Losses(h.val_loss.clone()),
                val_accuracy: losses::Losses(h.val_accuracy.clone()),
                train_accuracy: losses::Losses(h.train_accuracy.clone()),
            }),
            model: self.model.to_file(),
            checksum: None,
        };
        with_checksum(&serde_json::to_string(&wire).expect("checkpoint serialises"))
    }

    /// Parses and validates a checkpoint's JSON text; `origin` names it in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<Checkpoint> {
        let err = |message: String| Error::Checkpoint {
            origin: origin.to_string(),
            message,
        };
        // Format and version first, so an old or foreign file says so rather than naming a field.
        let header: Header = serde_json::from_str(text)
            .map_err(|e| err(format!("not a perturb checkpoint ({e})")))?;
        if header.format.as_deref() != Some(FORMAT) {
            return Err(err(format!(
                "not a perturb checkpoint (\"format\" is {}, expected {FORMAT:?})",
                header
                    .format
                    .map_or("missing".to_string(), |f| format!("{f:?}"))
            )));
        }
        if !matches!(header.version, Some(1..=VERSION)) {
            return Err(err(format!(
                "checkpoint version {}; this perturb reads versions 1 to {VERSION}",
                header
                    .version
                    .map_or("missing".to_string(), |v| v.to_string())
            )));
        }
        let wire: Wire =
            serde_json::from_str(text).map_err(|e| err(format!("invalid checkpoint: {e}")))?;
        verify_checksum(text, wire.checksum.as_deref()).map_err(err)?;
        let model = wire.model.into_model(origin).map_err(|e| match e {
            Error::Model { message, .. } => err(format!("model: {message}")),
            other => other,
        })?;
        let settings = wire.settings.typed().map_err(err)?;
        let checkpoint = Checkpoint {
            model,
            epochs_done: wire.epochs_done,
            // Version 1 ran one step per epoch.
            step_losses: wire
                .step_losses
                .map_or_else(|| wire.losses.0.clone(), |l| l.0),
            losses: wire.losses.0,
            state: wire.optimizer_state.unwrap_or_default(),
            settings,
            history: wire.history.map_or_else(History::default, |h| History {
                val_loss: h.val_loss.0,
                val_accuracy: h.val_accuracy.0,
                train_accuracy: h.train_accuracy.0,
            }),
        };
        checkpoint.validate().map_err(err)?;
        Ok(checkpoint)
    }

    /// Reads and validates a checkpoint file (at most [`MAX_CHECKPOINT_BYTES`]).
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let origin = path.display().to_string();
        let text = read_text_capped(path, MAX_CHECKPOINT_BYTES, |message| Error::Checkpoint {
            origin: origin.clone(),
            message,
        })?;
        Checkpoint::from_json(&text, &origin)
    }

    /// Writes the checkpoint atomically ([`crate::fileio::write_atomic`]): a crash or error at any
    /// point leaves the previous file at `path` whole. An invalid checkpoint is refused unwritten.
    pub fn save_atomic(&self, path: &Path) -> Result<()> {
        self.validate().map_err(|message| Error::Checkpoint {
            origin: path.display().to_string(),
            message: format!("refusing to write an invalid checkpoint: {message}"),
        })?;
        write_atomic(path, self.to_json().as_bytes())
    }

    /// Checks the settings given again on resume against the checkpoint; the first that
    /// disagrees becomes an [`Error::Invalid`] naming it, such as `lr 0.1 disagrees with the
    /// checkpoint's 0.01`. Settings are checked in the order of [`GivenFlags`]' fields.
    pub fn check_resume(&self, given: &GivenFlags) -> Result<()> {
        let s = &self.settings;
        if let Some(n) = given.epochs {
            if n < self.epochs_done {
                return Err(Error::invalid(
                    Setting::Epochs,
                    format!(
                        "{n} is fewer than the {} epochs the checkpoint has already run",
                        self.epochs_done
                    ),
                ));
            }
        }
        same(Setting::Lr, given.lr, s.lr)?;
        same(Setting::Eps, given.eps, s.eps)?;
        if given.seed.is_some() && given.seed != s.seed {
            return Err(disagree(
                Setting::Seed,
                given.seed.unwrap_or_default(),
                s.seed.map_or("none (no seed)".into(), |v| v.to_string()),
            ));
        }
        same_named(Setting::Precision, given.precision, s.precision)?;
        same_named(Setting::Method, given.method, s.method)?;
        same_named(Setting::Device, given.device, s.device)?;
        same_named(Setting::Loop, given.loop_mode, s.loop_mode)?;
        if let Some(d) = &given.data {
            match &s.data {
                None => {
                    return Err(Error::invalid(
                        Setting::Data,
                        format!(
                            "{} disagrees with the checkpoint, which trained on the book's data",
                            d.path
                        ),
                    ))
                }
                Some(c) if c.fnv1a64 != d.fnv1a64 || c.bytes != d.bytes => {
                    return Err(Error::invalid(
                        Setting::Data,
                        format!(
                            "{} ({} bytes, fnv1a64 {}) is not the data the checkpoint trained on ({}: {} bytes, fnv1a64 {})",
                            d.path, d.bytes, d.fnv1a64, c.path, c.bytes, c.fnv1a64
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        let e = &s.estimator;
        same_named(Setting::Estimator, given.estimator, e.estimator)?;
        same_named(Setting::Step, given.step, e.step)?;
        same(Setting::Samples, given.samples, e.samples)?;
        same_named(Setting::Direction, given.direction, e.direction)?;
        same_named(Setting::Loss, given.loss, s.loss)?;
        same(Setting::BatchSize, given.batch_size, s.batching.size)?;
        same(
            Setting::BatchSize,
            given.shuffle.map(shuffled),
            shuffled(s.batching.shuffle),
        )?;
        same(
            Setting::Optimizer,
            given.optimizer.map(|o| format!("{o:?}")),
            format!("{:?}", s.optimizer),
        )?;
        let some = |v: Option<String>| v.unwrap_or_else(|| "none".into());
        same(
            Setting::Take,
            given.take.map(|t| some(t.map(|n| n.to_string()))),
            some(s.take.map(|n| n.to_string())),
        )?;
        same(
            Setting::ValSplit,
            given.val_split.map(|t| some(t.map(|f| f.to_string()))),
            some(s.val_split.map(|f| f.to_string())),
        )
    }
}

/// The file's fields in order.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    format: String,
    version: u32,
    epochs_done: usize,
    settings: WireSettings,
    losses: losses::Losses,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    step_losses: Option<losses::Losses>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    optimizer_state: Option<OptState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    history: Option<WireHistory>,
    model: ModelFile,
    /// FNV-1a of the text before it (see `with_checksum`); absent in older checkpoints. Kept
    /// last: fields added above it are covered.
    #[serde(default, skip_serializing)]
    checksum: Option<String>,
}

/// What is read first: only the format and version, ignoring the rest.
#[derive(Deserialize)]
struct Header {
    format: Option<String>,
    version: Option<u32>,
}

fn shuffled(on: bool) -> &'static str {
    if on {
        "shuffled"
    } else {
        "in file order"
    }
}

fn disagree(
    setting: Setting,
    given: impl std::fmt::Display,
    checkpoint: impl std::fmt::Display,
) -> Error {
    Error::invalid(
        setting,
        format!("{given} disagrees with the checkpoint's {checkpoint}"),
    )
}

fn same<T: PartialEq + std::fmt::Display>(
    setting: Setting,
    given: Option<T>,
    checkpoint: T,
) -> Result<()> {
    match given {
        Some(g) if g != checkpoint => Err(disagree(setting, g, checkpoint)),
        _ => Ok(()),
    }
}

fn same_named<T: Named>(setting: Setting, given: Option<T>, checkpoint: T) -> Result<()> {
    same(setting, given.map(T::name), checkpoint.name())
}
