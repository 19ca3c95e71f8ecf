//! Hostile input for every loader (model JSON, CSV data, checkpoints, NumPy `.npy`/`.npz` models
//! and data): arbitrary bytes, random edits of valid files and structurally plausible but wrong
//! documents. No input may panic, take long, or allocate more than a fixed multiple of its own size
//! (for an `.npz`, of its unpacked size); whatever loads must satisfy the loader's invariants and
//! survive a round trip.

mod support;

mod checkpoint;
mod csv_data;
mod metrics;
mod model_json;

// NumPy files: `.npy` arrays, `.npz` models and data, `x.npy,y.npy` pairs.
mod npy_arrays;
mod npy_data;
mod npz_archives;
