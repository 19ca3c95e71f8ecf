//! Data from `.npy` files: one array split by the model's widths, and `x.npy,y.npy` pairs on disk.

use perturb::npy;
use perturb::{Dataset, Error, Loss, Model};
use proptest::prelude::*;

use crate::npz_archives::npz_member;
use crate::support::*;

/// A one-layer model of the given widths (what the `.npy` data loader needs to split columns).
pub fn model_of(inputs: usize, outputs: usize) -> Model {
    let layer = perturb::Layer {
        inputs,
        outputs,
        activation: perturb::Activation::Identity,
    };
    Model::new(vec![layer], vec![0.0; (inputs + 1) * outputs]).unwrap()
}

fn load_npy_data(bytes: &[u8], inputs: usize, outputs: usize) -> Option<Dataset> {
    let model = model_of(inputs, outputs);
    // Cross-entropy reads the same bytes as labels or probabilities: no panic, typed errors only.
    let loaded = [Loss::CrossEntropy, Loss::Mse].map(|loss| {
        match bounded(bytes, |b| npy::data_from_npy(b, &model, loss, "d.npy")) {
            Ok(d) => Some(d),
            Err(Error::Data { origin, .. }) => {
                assert_eq!(origin, "d.npy");
                None
            }
            Err(e) => panic!("npy data loader ({loss:?}): untyped error {e:?}"),
        }
    });
    if let Some(d) = &loaded[0] {
        check_dataset(d, inputs, outputs);
    }
    let [_, mse] = loaded;
    mse
}

/// A data `.npy`: a float matrix of about the model's width, or any of [`npz_member`]'s.
pub fn data_npy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => (1usize..5, 1usize..7, any::<bool>(), any::<u32>()).prop_map(|(rows, cols, wide, seed)| {
            let v: Vec<f32> = (0..rows * cols).map(|i| (i as u32 ^ seed) as f32 / 7.0).collect();
            if wide {
                let v: Vec<f64> = v.iter().map(|&x| x as f64).collect();
                npy::encode_f64(&[rows, cols], &v)
            } else {
                npy::encode_f32(&[rows, cols], &v)
            }
        }),
        3 => npz_member(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn npy_data_loader_survives_hostile_arrays(bytes in data_npy(), inputs in 1usize..4, outputs in 1usize..3) {
        if let Some(d) = load_npy_data(&bytes, inputs, outputs) {
            check_dataset(&d, inputs, outputs);
        }
    }

    #[test]
    fn npy_data_loader_survives_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        inputs in 1usize..4,
        outputs in 1usize..3,
    ) {
        let mut input = b"\x93NUMPY\x01\x00".to_vec();
        input.extend(bytes);
        if let Some(d) = load_npy_data(&input, inputs, outputs) {
            check_dataset(&d, inputs, outputs);
        }
    }
}

proptest! {
    // Files on disk: fewer cases.
    #![proptest_config(ProptestConfig { cases: CASES / 4, ..ProptestConfig::default() })]

    #[test]
    fn npy_pair_data_loader_survives_hostile_files(x in data_npy(), y in data_npy()) {
        let dir = std::env::temp_dir().join(format!("perturb-props-{}-pair", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (xp, yp) = (dir.join("x.npy"), dir.join("y.npy"));
        std::fs::write(&xp, &x).unwrap();
        std::fs::write(&yp, &y).unwrap();
        let pair = std::path::PathBuf::from(format!("{},{}", xp.display(), yp.display()));
        let model = model_of(1, 1);
        let got = bounded_by(x.len() + y.len(), || perturb::files::load_data(&pair, &model, Loss::Mse));
        std::fs::remove_dir_all(&dir).unwrap();
        match got {
            Ok(d) => check_dataset(&d, d.x.ncols(), d.y.ncols()),
            Err(Error::Data { .. }) => {}
            Err(e) => panic!("npy pair loader: untyped error {e:?}"),
        }
    }
}
