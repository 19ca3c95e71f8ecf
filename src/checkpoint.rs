//! Checkpoints: everything needed to continue a run exactly where it stopped.
//!
//! A checkpoint file is one line of JSON:
//!
//! ```text
//! {"format": "perturb-checkpoint", "version": 1, "epochs_done": 40,
//!  "settings": {"epochs": 100, "lr": 0.01, "eps": 0.0001, "seed": null, "precision": "f32",
//!               "method": "naive", "device": "cpu", "loop": "host", "data": null, "extra": {}},
//!  "losses": [0.33455008268356323, ...],
//!  "model": {"layers": [...the model file...]}}
//! ```
//!
//! Floats round-trip bit for bit: serde_json prints the shortest decimal that reads back as the
//! same value, and this crate enables its `float_roundtrip` feature so that reading is correctly
//! rounded too (without it, about a third of random f64 values come back one ULP off). A
//! non-finite loss (a run that was allowed to diverge) is written as the string `"NaN"`, `"inf"`
//! or `"-inf"`, since JSON has no such numbers. Parameters are always finite (the model file
//! refuses others).

use crate::error::{Error, Result};
use crate::fileio::{read_text_capped, write_atomic};
use crate::model::{Model, ModelFile};
use crate::settings::Hyper;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

mod losses;

/// The `"format"` field of every checkpoint.
pub const FORMAT: &str = "perturb-checkpoint";

/// The checkpoint version this build writes and reads.
pub const VERSION: u32 = 1;

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
    /// Every setting that shapes the trajectory.
    pub settings: RunSettings,
}

/// The settings of a run that a resumed run must share to continue the same trajectory.
///
/// `precision`, `method`, `device` and `loop` hold the names of those choices
/// ([`SETTING_VALUES`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSettings {
    /// Epochs the run is to reach in total (`--epochs`).
    pub epochs: usize,
    /// Learning rate.
    pub lr: f64,
    /// Nudge.
    pub eps: f64,
    /// Seed of the random initial network (`--seed`), when it was one.
    pub seed: Option<u64>,
    /// `--precision`: `"f32"` or `"f64"`.
    pub precision: String,
    /// `--method`: `"naive"` or `"reuse"`.
    pub method: String,
    /// `--device`: `"gpu"` or `"cpu"`.
    pub device: String,
    /// `--loop`: `"host"` or `"resident"`.
    #[serde(rename = "loop")]
    pub loop_mode: String,
    /// The data file, or `None` for the book's one sample.
    pub data: Option<DataRef>,
    /// Further options by flag name without the dashes (e.g. `"estimator"`), as given.
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
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
}

impl DataRef {
    /// The reference of `contents` read from `path`.
    pub fn of_bytes(path: &Path, contents: &[u8]) -> DataRef {
        let hash = contents.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        DataRef {
            path: path.display().to_string(),
            bytes: contents.len() as u64,
            fnv1a64: format!("{hash:016x}"),
        }
    }
}

/// The flags given again with `--resume`: `None` (or an absent `extra` key) where a flag was not
/// given, and the run takes the checkpoint's value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GivenFlags {
    /// `--epochs`: the new total, which may differ but not be below the epochs already run.
    pub epochs: Option<usize>,
    /// `--lr`.
    pub lr: Option<f64>,
    /// `--eps`.
    pub eps: Option<f64>,
    /// `--seed`.
    pub seed: Option<u64>,
    /// `--precision`, by its command-line name.
    pub precision: Option<String>,
    /// `--method`, by its command-line name.
    pub method: Option<String>,
    /// `--device`, by its command-line name.
    pub device: Option<String>,
    /// `--loop`, by its command-line name.
    pub loop_mode: Option<String>,
    /// The data the resumed run will train on: from `--data`, or from the checkpoint's path when
    /// `--data` is not given (so that a file changed since is caught).
    pub data: Option<DataRef>,
    /// Further flags by name without the dashes.
    pub extra: BTreeMap<String, String>,
}

/// The values each named setting may hold: the library's words for them (`perturb train` spells
/// its flags' values the same way; a test in `src/cli` holds the two equal).
pub const SETTING_VALUES: [(&str, &[&str]); 4] = [
    ("precision", &["f32", "f64"]),
    ("method", &["naive", "reuse"]),
    ("device", &["gpu", "cpu"]),
    ("loop", &["host", "resident"]),
];

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
        for (field, value) in [
            ("precision", &s.precision),
            ("method", &s.method),
            ("device", &s.device),
            ("loop", &s.loop_mode),
        ] {
            known(field, value)?;
        }
        if let Some(d) = &s.data {
            if d.fnv1a64.len() != 16 || !d.fnv1a64.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "settings.data.fnv1a64 is {:?}, not 16 hex digits",
                    d.fnv1a64
                ));
            }
        }
        if let Some(k) = s.extra.keys().find(|k| !flag_name(k)) {
            return Err(format!(
                "settings.extra has the key {k:?}, not a flag name (lowercase letters, digits, '-')"
            ));
        }
        if self.epochs_done > s.epochs {
            return Err(format!(
                "epochs_done is {}, more than the {} epochs of the run",
                self.epochs_done, s.epochs
            ));
        }
        if self.losses.len() != self.epochs_done {
            return Err(format!(
                "{} losses for {} completed epochs",
                self.losses.len(),
                self.epochs_done
            ));
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
        let wire = Wire {
            format: FORMAT.into(),
            version: VERSION,
            epochs_done: self.epochs_done,
            settings: self.settings.clone(),
            losses: losses::Losses(self.losses.clone()),
            model: self.model.to_file(),
        };
        serde_json::to_string(&wire).expect("checkpoint serialises") + "\n"
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
                "not a perturb checkpoint (\"format\" is {:?}, expected {FORMAT:?})",
                header.format
            )));
        }
        if header.version != Some(VERSION) {
            return Err(err(format!(
                "checkpoint version {}; this perturb reads version {VERSION}",
                header
                    .version
                    .map_or("missing".to_string(), |v| v.to_string())
            )));
        }
        let wire: Wire =
            serde_json::from_str(text).map_err(|e| err(format!("invalid checkpoint: {e}")))?;
        let model = wire.model.into_model(origin).map_err(|e| match e {
            Error::Model { message, .. } => err(format!("model: {message}")),
            other => other,
        })?;
        let checkpoint = Checkpoint {
            model,
            epochs_done: wire.epochs_done,
            losses: wire.losses.0,
            settings: wire.settings,
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

    /// Checks the flags given again on resume against the checkpoint; the first that disagrees
    /// becomes a one-line [`Error::Config`] such as `--lr 0.1 disagrees with the checkpoint's 0.01`.
    /// Flags are checked in the order of [`GivenFlags`]' fields, `extra` by name.
    pub fn check_resume(&self, given: &GivenFlags) -> Result<()> {
        let s = &self.settings;
        if let Some(n) = given.epochs {
            if n < self.epochs_done {
                return Err(Error::Config(format!(
                    "--epochs {n} is fewer than the {} epochs the checkpoint has already run",
                    self.epochs_done
                )));
            }
        }
        same("lr", given.lr, s.lr)?;
        same("eps", given.eps, s.eps)?;
        if given.seed.is_some() && given.seed != s.seed {
            return Err(disagree(
                "seed",
                given.seed.unwrap_or_default(),
                s.seed.map_or("none (no --seed)".into(), |v| v.to_string()),
            ));
        }
        same(
            "precision",
            given.precision.as_deref(),
            s.precision.as_str(),
        )?;
        same("method", given.method.as_deref(), s.method.as_str())?;
        same("device", given.device.as_deref(), s.device.as_str())?;
        same("loop", given.loop_mode.as_deref(), s.loop_mode.as_str())?;
        if let Some(d) = &given.data {
            match &s.data {
                None => {
                    return Err(Error::Config(format!(
                        "--data {} disagrees with the checkpoint, which trained on the book's data",
                        d.path
                    )))
                }
                Some(c) if c.fnv1a64 != d.fnv1a64 || c.bytes != d.bytes => {
                    return Err(Error::Config(format!(
                        "--data {} ({} bytes, fnv1a64 {}) is not the data the checkpoint trained on ({}: {} bytes, fnv1a64 {})",
                        d.path, d.bytes, d.fnv1a64, c.path, c.bytes, c.fnv1a64
                    )))
                }
                Some(_) => {}
            }
        }
        for (flag, value) in &given.extra {
            match s.extra.get(flag) {
                Some(c) if c == value => {}
                Some(c) => return Err(disagree(flag, value, c)),
                None => {
                    return Err(Error::Config(format!(
                        "--{flag} {value} disagrees with the checkpoint, which has no --{flag}"
                    )))
                }
            }
        }
        Ok(())
    }
}

/// The file's fields in order.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    format: String,
    version: u32,
    epochs_done: usize,
    settings: RunSettings,
    losses: losses::Losses,
    model: ModelFile,
}

/// What is read first: only the format and version, ignoring the rest.
#[derive(Deserialize)]
struct Header {
    format: Option<String>,
    version: Option<u32>,
}

fn known(field: &str, value: &str) -> std::result::Result<(), String> {
    let names = SETTING_VALUES
        .iter()
        .find(|(f, _)| *f == field)
        .map_or(&[][..], |(_, names)| *names);
    if names.contains(&value) {
        return Ok(());
    }
    Err(format!(
        "settings.{field} is {value:?} (expected {})",
        names.join(" or ")
    ))
}

fn flag_name(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn disagree(
    flag: &str,
    given: impl std::fmt::Display,
    checkpoint: impl std::fmt::Display,
) -> Error {
    Error::Config(format!(
        "--{flag} {given} disagrees with the checkpoint's {checkpoint}"
    ))
}

fn same<T: PartialEq + std::fmt::Display>(
    flag: &str,
    given: Option<T>,
    checkpoint: T,
) -> Result<()> {
    match given {
        Some(g) if g != checkpoint => Err(disagree(flag, g, checkpoint)),
        _ => Ok(()),
    }
}
