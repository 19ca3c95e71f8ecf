//! The checkpoint loader: any text is a valid checkpoint or an `Error::Checkpoint`, and a
//! checkpoint writes back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use perturb::{Checkpoint, Error};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match Checkpoint::from_json(&text, "fuzz.ckpt") {
        Ok(c) => {
            c.validate().unwrap();
            let again = Checkpoint::from_json(&c.to_json(), "again").unwrap();
            assert_eq!(again.model, c.model);
            assert_eq!(again.settings, c.settings);
            assert_eq!(again.losses.len(), c.losses.len());
        }
        Err(Error::Checkpoint { .. }) => {}
        Err(e) => panic!("untyped error {e:?}"),
    }
});
