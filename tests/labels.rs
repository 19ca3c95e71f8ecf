//! Class labels and target probabilities for cross-entropy, from every data format: CSV, NumPy
//! `.npz` / `.npy` pairs, IDX image and label files, and the named Fashion-MNIST sets (the real
//! files in /usr/share/datasets/fashion-mnist, which CI installs: a missing file fails the test).
//! Labels become exact one-hot rows; each bad input is refused with a message naming the file and
//! the row or line.

use perturb::checkpoint::DataRef;
use perturb::files::{load_data, load_data_referenced};
use perturb::npy::{self, encode_f32};
use perturb::{Activation, Dataset, Error, Layer, Loss, Model};
use std::path::{Path, PathBuf};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("perturb-labels-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `inputs → classes`, identity output (what cross-entropy takes).
fn model(inputs: usize, classes: usize) -> Model {
    let layer = Layer {
        inputs,
        outputs: classes,
        activation: Activation::Identity,
    };
    Model::new(vec![layer], vec![0.0; (inputs + 1) * classes]).unwrap()
}

/// A little-endian int64 `.npy` of `shape` (NumPy's default integer array).
fn int_npy(shape: &str, values: &[i64]) -> Vec<u8> {
    let header = format!("{{'descr': '<i8', 'fortran_order': False, 'shape': {shape}, }}\n");
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    out
}

/// A raw IDX file of u8 elements.
fn idx_u8(dims: &[u32], values: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    out.extend(dims.iter().flat_map(|d| d.to_be_bytes()));
    out.extend_from_slice(values);
    out
}

fn data_err(r: perturb::Result<Dataset>) -> String {
    match r {
        Err(e @ Error::Data { .. }) => e.to_string(),
        other => panic!("expected a data error, got {other:?}"),
    }
}

#[test]
fn csv_labels_and_probabilities_load_for_cross_entropy() {
    let d = dir("csv");
    let labels = d.join("labels.csv");
    std::fs::write(&labels, "a,b,class\n0.5,1,2\n1,0,0\n").unwrap();
    let data = load_data(&labels, &model(2, 3), Loss::CrossEntropy).unwrap();
    assert_eq!(data.labels(), Some(vec![2, 0]));
    assert_eq!(data.y.row(0).to_vec(), vec![0.0, 0.0, 1.0]);
    let probs = d.join("probs.csv");
    std::fs::write(&probs, "0.5,1,0.25,0.25,0.5\n").unwrap();
    let data = load_data(&probs, &model(2, 3), Loss::CrossEntropy).unwrap();
    assert_eq!(data.y.row(0).to_vec(), vec![0.25, 0.25, 0.5]);
    assert_eq!(data.labels(), None);
    // With MSE a label column is one column short.
    let e = data_err(load_data(&labels, &model(2, 3), Loss::Mse));
    assert_eq!(
        e,
        format!(
            "{}:1: header has 3 columns, expected 5 (2 inputs + 3 targets)",
            labels.display()
        )
    );
}

#[test]
fn npz_integer_labels_load_one_hot_and_bad_ones_name_the_row() {
    let d = dir("npz");
    let x = encode_f32(&[3, 2], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    let cases = [("flat.npz", "(3,)"), ("column.npz", "(3, 1)")];
    for (name, shape) in cases {
        let path = d.join(name);
        let members = vec![
            ("x".to_string(), x.clone()),
            ("y".to_string(), int_npy(shape, &[1, 0, 3])),
        ];
        npy::save_npz(&path, &members).unwrap();
        let data = load_data(&path, &model(2, 4), Loss::CrossEntropy).unwrap();
        assert_eq!(data.labels(), Some(vec![1, 0, 3]), "{name}");
        // MSE takes the same integers as target values.
        let data = load_data(&path, &model(2, 1), Loss::Mse).unwrap();
        assert_eq!(data.y.column(0).to_vec(), vec![1.0, 0.0, 3.0]);
    }
    let bad = [
        (
            "big.npz",
            int_npy("(3,)", &[1, 4, 0]),
            "y row 1: label 4 is out of range: the model has 4 classes, 0 … 3",
        ),
        (
            "neg.npz",
            int_npy("(3,)", &[1, 0, -1]),
            "y row 2: label -1 is out of range",
        ),
        (
            "half.npz",
            npy::encode_f64(&[3], &[1.0, 2.5, 0.0]),
            "y row 1: label 2.5 is not a whole number",
        ),
        (
            "wide.npz",
            encode_f32(&[3, 2], &[0.5; 6]),
            "y has 2 columns; cross-entropy takes 4 probabilities or a label per sample",
        ),
    ];
    for (name, y, needle) in bad {
        let path = d.join(name);
        let members = vec![("x".to_string(), x.clone()), ("y".to_string(), y)];
        npy::save_npz(&path, &members).unwrap();
        let e = data_err(load_data(&path, &model(2, 4), Loss::CrossEntropy));
        assert!(e.starts_with(&format!("{}: ", path.display())), "{e}");
        assert!(e.contains(needle), "{e} lacks {needle:?}");
    }
    let path = d.join("under.npz");
    let y = encode_f32(
        &[3, 4],
        &[
            0.2, 0.2, 0.2, 0.3, 0.25, 0.25, 0.25, 0.25, 1.0, 0.0, 0.0, 0.0,
        ],
    );
    npy::save_npz(&path, &[("x".to_string(), x), ("y".to_string(), y)]).unwrap();
    let e = data_err(load_data(&path, &model(2, 4), Loss::CrossEntropy));
    assert!(
        e.ends_with("y row 0: probabilities sum to 0.900000, not 1 (within 1e-4)"),
        "{e}"
    );
}

#[test]
fn an_npy_pair_with_a_label_column_is_referenced_by_both_files() {
    let d = dir("pair");
    let (xp, yp) = (d.join("x.npy"), d.join("y.npy"));
    let (xb, yb) = (
        encode_f32(&[2, 1], &[0.5, -0.5]),
        int_npy("(2, 1)", &[2, 1]),
    );
    std::fs::write(&xp, &xb).unwrap();
    std::fs::write(&yp, &yb).unwrap();
    let given = format!("{},{}", xp.display(), yp.display());
    let (data, r) =
        load_data_referenced(Path::new(&given), &model(1, 3), Loss::CrossEntropy).unwrap();
    assert_eq!(data.labels(), Some(vec![2, 1]));
    let want = DataRef::of_bytes(Path::new(&given), &[xb, yb].concat());
    assert_eq!(r, Some(want));
}

#[test]
fn an_idx_pair_loads_images_scaled_and_labels_one_hot_for_either_loss() {
    let d = dir("idx");
    let (ip, lp) = (d.join("images.idx"), d.join("labels.idx"));
    let images = idx_u8(&[3, 2, 2], &[0, 255, 51, 0, 255, 255, 255, 255, 0, 0, 0, 0]);
    let labels = idx_u8(&[3], &[1, 0, 2]);
    std::fs::write(&ip, &images).unwrap();
    std::fs::write(&lp, &labels).unwrap();
    let given = format!("{},{}", ip.display(), lp.display());
    for loss in [Loss::CrossEntropy, Loss::Mse] {
        let (data, r) = load_data_referenced(Path::new(&given), &model(4, 3), loss).unwrap();
        assert_eq!(data.x.row(0).to_vec(), vec![0.0, 1.0, 0.2, 0.0]);
        assert_eq!(data.labels(), Some(vec![1, 0, 2]));
        let want = DataRef::of_bytes(
            Path::new(&given),
            &[images.clone(), labels.clone()].concat(),
        );
        assert_eq!(r, Some(want));
    }
    // A label past the model's outputs names the labels file and the sample.
    let e = data_err(load_data(
        Path::new(&given),
        &model(4, 2),
        Loss::CrossEntropy,
    ));
    assert_eq!(
        e,
        format!(
            "{}: sample 2: label 2 is out of range: the model has 2 classes, 0 … 1",
            lp.display()
        )
    );
    // Labels in the images' place: the IDX reader's message, naming the file.
    let swapped = format!("{},{}", lp.display(), ip.display());
    let e = data_err(load_data(Path::new(&swapped), &model(4, 3), Loss::Mse));
    assert!(
        e.contains("is this a labels file?") && e.contains("labels.idx"),
        "{e}"
    );
}

#[test]
fn fashion_mnist_test_loads_by_name_with_a_reference_to_both_files() {
    let (data, r) = load_data_referenced(
        Path::new("fashion-mnist:test"),
        &model(784, 10),
        Loss::CrossEntropy,
    )
    .unwrap();
    assert_eq!(data.x.dim(), (10_000, 784));
    assert_eq!(data.y.dim(), (10_000, 10));
    let labels = data.labels().expect("one-hot");
    assert!(labels.iter().all(|&l| l < 10));
    assert!(data.x.iter().all(|&p| (0.0..=1.0).contains(&p)));
    // The files as stored, images then labels, under the name as given.
    let dir = perturb::idx::fashion_mnist_dir();
    let (images, label_file) =
        perturb::idx::fashion_mnist_files(perturb::idx::FashionSplit::Test, &dir).unwrap();
    let bytes = [
        std::fs::read(images).unwrap(),
        std::fs::read(label_file).unwrap(),
    ]
    .concat();
    let want = DataRef::of_bytes(Path::new("fashion-mnist:test"), &bytes);
    assert_eq!(r, Some(want));
    assert_eq!(r.unwrap().path, "fashion-mnist:test");
}
