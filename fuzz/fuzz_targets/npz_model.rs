//! The model `.npz` loader: any bytes are a model or an `Error::Model`, and a model writes back to
//! itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use perturb::{npy, Error, Model};

fuzz_target!(|data: &[u8]| {
    match npy::model_from_npz(data, "fuzz.npz") {
        Ok(m) => {
            assert!(m.params.iter().all(|p| p.is_finite()));
            let again = Model::from_json(&serde_json::to_string(&m.to_file()).unwrap(), "again");
            assert_eq!(again.unwrap(), m);
        }
        Err(Error::Model { .. }) => {}
        Err(e) => panic!("untyped error {e:?}"),
    }
});
