//! The CSV loader: the first byte picks the model's widths (1-4 inputs, 1-3 outputs), the rest is
//! the file. Any text is a data set of those widths with finite values, or an `Error::Data`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use perturb::{Dataset, Error};

fuzz_target!(|data: &[u8]| {
    let Some((&widths, rest)) = data.split_first() else {
        return;
    };
    let inputs = 1 + usize::from(widths & 3);
    let outputs = 1 + usize::from((widths >> 2) % 3);
    let text = String::from_utf8_lossy(rest);
    match Dataset::from_csv(&text, inputs, outputs, "fuzz.csv") {
        Ok(d) => {
            assert!(!d.is_empty());
            assert_eq!(d.x.dim(), (d.len(), inputs));
            assert_eq!(d.y.dim(), (d.len(), outputs));
            assert!(d.x.iter().chain(d.y.iter()).all(|v| v.is_finite()));
        }
        Err(Error::Data { .. }) => {}
        Err(e) => panic!("untyped error {e:?}"),
    }
});
