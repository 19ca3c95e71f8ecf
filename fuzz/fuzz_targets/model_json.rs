//! The model-file loader: any text is a model or an `Error::Model`, and a model writes back to
//! itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use perturb::{Error, Model};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match Model::from_json(&text, "fuzz.json") {
        Ok(m) => {
            let again = Model::from_json(&serde_json::to_string(&m.to_file()).unwrap(), "again");
            assert_eq!(again.unwrap(), m);
        }
        Err(Error::Model { .. }) => {}
        Err(e) => panic!("untyped error {e:?}"),
    }
});
