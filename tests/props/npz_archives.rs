//! NumPy `.npz` models and data: arbitrary bytes, hostile members, damaged models, edited archives.

use perturb::npy;
use perturb::{Dataset, Error, Loss, Model};
use proptest::prelude::*;

use crate::npy_arrays::{float_npy, npy_bytes};
use crate::npy_data::data_npy;
use crate::support::*;

/// The contents of one `.npz` member: a valid float or string array, a hostile `.npy`, or bytes.
pub fn npz_member() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => float_npy(),
        1 => prop::collection::vec(
            prop::sample::select(vec!["sigmoid", "tanh", "relu", "identity", "softmax", ""]),
            0..4,
        )
        .prop_map(|names| npy::encode_strings(&names)),
        3 => npy_bytes(),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

fn npz_name() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec![
            "W1",
            "b1",
            "W2",
            "b2",
            "W3",
            "b3",
            "W0",
            "b0",
            "W01",
            "Wx",
            "activations",
            "x",
            "y",
            "X",
            "",
            "dir/x",
        ]),
        prop::bool::weighted(0.9),
    )
        .prop_map(|(n, suffix)| if suffix { format!("{n}.npy") } else { n.into() })
}

/// An `.npz` (zip) of `members`, stored or deflated, and its unpacked size. Repeated names are
/// written once.
pub fn npz(members: &[(String, Vec<u8>)], deflate: bool) -> (Vec<u8>, usize) {
    use std::io::Write;
    let method = if deflate {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    let options = zip::write::SimpleFileOptions::default().compression_method(method);
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let mut seen = std::collections::HashSet::new();
    let mut unpacked = 0;
    for (name, bytes) in members {
        if seen.insert(name.clone()) {
            zip.start_file(name.as_str(), options).unwrap();
            zip.write_all(bytes).unwrap();
            unpacked += bytes.len();
        }
    }
    (zip.finish().unwrap().into_inner(), unpacked)
}

/// Members of a consistent model `.npz` (layers whose widths chain, optional `activations`), with
/// one member dropped or replaced when `damage` says so.
fn model_npz_members() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    (
        prop::collection::vec(1usize..5, 2..5),
        any::<bool>(),
        prop_oneof![2 => Just(None), 1 => (any::<usize>(), prop::option::of(npz_member())).prop_map(Some)],
        any::<u64>(),
    )
        .prop_map(|(widths, activations, damage, seed)| {
            let mut members = Vec::new();
            let mut next = seed;
            let mut value = || {
                next = next.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((next >> 40) as f32 / (1u64 << 23) as f32) - 1.0
            };
            for (k, w) in widths.windows(2).enumerate() {
                let weights: Vec<f32> = (0..w[0] * w[1]).map(|_| value()).collect();
                let biases: Vec<f32> = (0..w[1]).map(|_| value()).collect();
                members.push((format!("W{}.npy", k + 1), npy::encode_f32(&[w[0], w[1]], &weights)));
                members.push((format!("b{}.npy", k + 1), npy::encode_f32(&[w[1]], &biases)));
            }
            if activations {
                let names = vec!["tanh"; widths.len() - 1];
                members.push(("activations.npy".into(), npy::encode_strings(&names)));
            }
            if let Some((at, replacement)) = damage {
                let at = at % members.len();
                match replacement {
                    Some(bytes) => members[at].1 = bytes,
                    None => {
                        members.remove(at);
                    }
                }
            }
            members
        })
}

pub fn load_npz_model(bytes: &[u8], unpacked: usize) -> Option<Model> {
    match bounded_by(bytes.len().max(unpacked), || {
        npy::model_from_npz(bytes, "m.npz")
    }) {
        Ok(m) => Some(m),
        Err(Error::Model { origin, .. }) => {
            assert_eq!(origin, "m.npz");
            None
        }
        Err(e) => panic!("npz model loader: untyped error {e:?}"),
    }
}

/// A model loaded from an `.npz` is consistent and writes back to itself (as JSON and as `.npz`).
fn check_npz_model(m: &Model) {
    check_model(m);
    let (bytes, _) = npz(&npy::model_arrays(m), false);
    assert_eq!(&npy::model_from_npz(&bytes, "again").unwrap(), m);
}

pub fn load_npz_data(bytes: &[u8], unpacked: usize) -> Option<Dataset> {
    let model = Model::book();
    // Cross-entropy reads the same arrays as labels or probabilities: typed errors only.
    match bounded_by(bytes.len().max(unpacked), || {
        npy::data_from_npz(bytes, &model, Loss::CrossEntropy, "d.npz")
    }) {
        Ok(d) => assert_eq!(d.y.ncols(), 1),
        Err(Error::Data { origin, .. }) => assert_eq!(origin, "d.npz"),
        Err(e) => panic!("npz data loader (cross-entropy): untyped error {e:?}"),
    }
    match bounded_by(bytes.len().max(unpacked), || {
        npy::data_from_npz(bytes, &model, Loss::Mse, "d.npz")
    }) {
        Ok(d) => Some(d),
        Err(Error::Data { origin, .. }) => {
            assert_eq!(origin, "d.npz");
            None
        }
        Err(e) => panic!("npz data loader: untyped error {e:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn npz_model_loader_survives_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut input = b"PK\x03\x04".to_vec();
        input.extend(bytes);
        if let Some(m) = load_npz_model(&input, 0) {
            check_npz_model(&m);
        }
    }

    #[test]
    fn npz_model_loader_survives_hostile_members(
        members in prop::collection::vec((npz_name(), npz_member()), 0..6),
        deflate in any::<bool>(),
    ) {
        let (bytes, unpacked) = npz(&members, deflate);
        if let Some(m) = load_npz_model(&bytes, unpacked) {
            check_npz_model(&m);
        }
    }

    #[test]
    fn npz_model_loader_survives_damaged_models(members in model_npz_members(), deflate in any::<bool>()) {
        let (bytes, unpacked) = npz(&members, deflate);
        if let Some(m) = load_npz_model(&bytes, unpacked) {
            check_npz_model(&m);
        }
    }

    #[test]
    fn npz_model_loader_survives_edits_of_a_valid_archive(
        members in model_npz_members(),
        deflate in any::<bool>(),
        e in edits(),
    ) {
        let (bytes, unpacked) = npz(&members, deflate);
        if let Some(m) = load_npz_model(&apply_bytes(&bytes, &e), unpacked) {
            check_npz_model(&m);
        }
    }

    #[test]
    fn npz_data_loader_survives_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut input = b"PK\x03\x04".to_vec();
        input.extend(bytes);
        if let Some(d) = load_npz_data(&input, 0) {
            check_dataset(&d, d.x.ncols(), d.y.ncols());
        }
    }

    #[test]
    fn npz_data_loader_survives_hostile_members(
        x in prop::option::weighted(0.9, data_npy()),
        y in prop::option::weighted(0.9, data_npy()),
        others in prop::collection::vec((npz_name(), npz_member()), 0..3),
        deflate in any::<bool>(),
    ) {
        let mut members: Vec<(String, Vec<u8>)> = Vec::new();
        members.extend(x.map(|b| ("x.npy".to_string(), b)));
        members.extend(y.map(|b| ("y.npy".to_string(), b)));
        members.extend(others);
        let (bytes, unpacked) = npz(&members, deflate);
        if let Some(d) = load_npz_data(&bytes, unpacked) {
            check_dataset(&d, d.x.ncols(), d.y.ncols());
        }
    }
}
