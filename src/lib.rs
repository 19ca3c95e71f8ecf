//! perturb: train multilayer perceptrons by weight perturbation, the way chapter 1 of *Modern
//! Computer Vision with PyTorch* does, with every nudged loss evaluated in parallel on the GPU (wgpu,
//! WGSL) and a CPU reference that computes the same float32 numbers bit for bit.
//!
//! ```
//! use perturb::{cpu::CpuEvaluator, train, Dataset, Hyper, Model};
//! let model = Model::book();
//! let mut cpu = CpuEvaluator::<f64>::new(&model, &Dataset::book()).unwrap();
//! let run = train::train(&mut cpu, &model.params, &Hyper::book(), |_, _| {}).unwrap();
//! assert_eq!(format!("{:.8}", run.losses[0]), "0.33455009");
//! ```

pub mod batches;
pub mod bench;
pub mod check;
pub mod checkpoint;
pub mod cli;
pub mod cpu;
pub mod data;
#[cfg(feature = "mpi")]
pub mod distributed;
pub mod error;
pub mod estimate;
pub mod evaluator;
pub mod fileio;
pub mod files;
pub mod gpu;
pub mod idx;
pub mod math;
pub mod metrics;
pub mod model;
pub mod npy;
pub mod optim;
pub mod plot;
pub mod precision;
pub mod report;
pub mod rng;
pub mod session;
pub mod settings;
pub mod shard;
pub mod train;
pub mod xent;

pub use checkpoint::Checkpoint;
pub use data::Dataset;
pub use error::{Error, ErrorClass, Result};
pub use estimate::{Estimator, Probe, StepMode};
pub use evaluator::{
    Evaluator, History, ResidentBatches, ResidentEpoch, ResidentHistory, ResidentJob,
};
pub use model::{Activation, Layer, Loss, Model};
pub use precision::{Precision, Real};
pub use session::{Device, Loop, Trained, Training};
pub use settings::{DeviceInfo, Hyper, Method, Outcome};
