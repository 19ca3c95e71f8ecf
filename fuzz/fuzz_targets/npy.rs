//! The `.npy` parser and the one-file `.npy` data loader: the first byte picks the model's widths
//! (1-4 inputs, 1-3 outputs), the rest is the file. Any bytes are an array whose shape matches its
//! values or an error message, and data of those widths with finite values or an `Error::Data`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use perturb::npy::{self, Values};
use perturb::{Activation, Error, Layer, Model};

fuzz_target!(|data: &[u8]| {
    let Some((&widths, file)) = data.split_first() else {
        return;
    };
    if let Ok(a) = npy::parse(file) {
        let count: usize = a.shape.iter().product();
        match &a.values {
            Values::Numbers(v) => {
                assert_eq!(v.len(), count);
                let again = npy::parse(&npy::encode_f64(&a.shape, v)).unwrap();
                assert_eq!(again.shape, a.shape);
            }
            Values::Strings(v) => assert_eq!(v.len(), count),
        }
    }
    let inputs = 1 + usize::from(widths & 3);
    let outputs = 1 + usize::from((widths >> 2) % 3);
    let layer = Layer {
        inputs,
        outputs,
        activation: Activation::Identity,
    };
    let model = Model::new(vec![layer], vec![0.0; (inputs + 1) * outputs]).unwrap();
    match npy::data_from_npy(file, &model, "fuzz.npy") {
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
