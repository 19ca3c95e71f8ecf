//! The data `.npz` loader: any bytes are a data set (`x` and `y` with as many rows, finite values)
//! or an `Error::Data`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use perturb::{npy, Error};

fuzz_target!(|data: &[u8]| {
    match npy::data_from_npz(data, "fuzz.npz") {
        Ok(d) => {
            assert!(!d.is_empty());
            assert_eq!(d.x.nrows(), d.y.nrows());
            assert!(d.x.iter().chain(d.y.iter()).all(|v| v.is_finite()));
        }
        Err(Error::Data { .. }) => {}
        Err(e) => panic!("untyped error {e:?}"),
    }
});
