//! IDX reading: every element type in 1 to 3 dimensions, raw and gzipped, decodes to the values
//! written; each kind of bad or hostile file gets a typed error saying what is wrong, before any
//! large allocation or decompression; images and labels become a float32 matrix and u32 labels; and
//! the real Fashion-MNIST (Debian package `dataset-fashion-mnist`) loads with its known shape and
//! contents.

use flate2::write::GzEncoder;
use flate2::Compression;
use perturb::idx::{
    fashion_mnist_dir, load_fashion_mnist, load_images_labels, parse_dataset_name, parse_idx,
    parse_idx_with_limit, read_idx, FashionSplit, Idx, IdxValues, MAX_DIMS, MAX_ELEMENTS,
};
use perturb::Error;
use proptest::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The origin passed to the parser, expected back in every error.
const ORIGIN: &str = "test.idx";

/// Zeros after the header in the gzip bomb: 50 MB, which deflate packs into about 50 KB.
const BOMB_ZEROS: usize = 50_000_000;

/// The data limit the bomb is held to.
const BOMB_LIMIT: u64 = 1 << 20;

/// Where the Debian package `dataset-fashion-mnist` installs the data.
const FASHION_SYSTEM_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Random inputs tried by each property test.
const CASES: u32 = 512;

/// An IDX file: magic for `code`, big-endian `dims`, then `data` as given.
fn idx_bytes(code: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, code, dims.len() as u8];
    b.extend(dims.iter().flat_map(|d| d.to_be_bytes()));
    b.extend_from_slice(data);
    b
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// The message of the [`Error::Data`] that parsing `bytes` must fail with (naming [`ORIGIN`]).
fn data_error(result: perturb::Result<Idx>) -> String {
    match result {
        Err(Error::Data { origin, message }) => {
            assert_eq!(origin, ORIGIN);
            message
        }
        other => panic!("expected a data error, got {other:?}"),
    }
}

/// Asserts that `bytes` and its gzipped form both fail with a message containing `want`.
fn assert_refused(bytes: &[u8], want: &str) {
    for (form, input) in [("raw", bytes.to_vec()), ("gzip", gzip(bytes))] {
        let message = data_error(parse_idx(&input, ORIGIN));
        assert!(message.contains(want), "{form}: {message:?} lacks {want:?}");
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("perturb-idx-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn every_type_decodes_raw_and_gzipped_in_one_to_three_dimensions() {
    let i16s = [i16::MIN, -256, -1, 0, 1, 0x1234, 256, i16::MAX];
    let i32s = [i32::MIN, -2, i32::MAX];
    let f32s = [-1.5f32, 3.25e-8];
    let f64s = [f64::MIN_POSITIVE, -0.0, 1e300, -7.125];
    let cases: Vec<(u8, Vec<u32>, Vec<u8>, IdxValues)> = vec![
        (
            0x08,
            vec![5],
            vec![0, 1, 127, 128, 255],
            IdxValues::U8(vec![0, 1, 127, 128, 255]),
        ),
        (
            0x09,
            vec![2, 3],
            vec![0x80, 0xff, 0, 1, 0x7f, 5],
            IdxValues::I8(vec![-128, -1, 0, 1, 127, 5]),
        ),
        (
            0x0B,
            vec![2, 2, 2],
            i16s.iter().flat_map(|v| v.to_be_bytes()).collect(),
            IdxValues::I16(i16s.to_vec()),
        ),
        (
            0x0C,
            vec![3],
            i32s.iter().flat_map(|v| v.to_be_bytes()).collect(),
            IdxValues::I32(i32s.to_vec()),
        ),
        (
            0x0D,
            vec![1, 2],
            f32s.iter().flat_map(|v| v.to_be_bytes()).collect(),
            IdxValues::F32(f32s.to_vec()),
        ),
        (
            0x0E,
            vec![2, 1, 2],
            f64s.iter().flat_map(|v| v.to_be_bytes()).collect(),
            IdxValues::F64(f64s.to_vec()),
        ),
    ];
    for (code, dims, data, values) in cases {
        let want = Idx {
            dims: dims.iter().map(|&d| d as usize).collect(),
            values,
        };
        let raw = idx_bytes(code, &dims, &data);
        assert_eq!(
            parse_idx(&raw, ORIGIN).unwrap(),
            want,
            "raw type 0x{code:02x}"
        );
        let gz = gzip(&raw);
        assert_eq!(gz[..2], [0x1f, 0x8b]);
        assert_eq!(
            parse_idx(&gz, ORIGIN).unwrap(),
            want,
            "gzip type 0x{code:02x}"
        );
    }
}

#[test]
fn elements_are_big_endian() {
    let i16 = parse_idx(&[0, 0, 0x0B, 1, 0, 0, 0, 1, 0x12, 0x34], ORIGIN).unwrap();
    assert_eq!(i16.values, IdxValues::I16(vec![0x1234]));
    let f32 = parse_idx(&[0, 0, 0x0D, 1, 0, 0, 0, 1, 0x3f, 0x80, 0, 0], ORIGIN).unwrap();
    assert_eq!(f32.values, IdxValues::F32(vec![1.0]));
    let dims = parse_idx(&idx_bytes(0x08, &[0x0102], &[7; 0x0102]), ORIGIN).unwrap();
    assert_eq!(dims.dims, [258]);
}

#[test]
fn a_zero_dimension_is_an_empty_array_even_beside_huge_ones() {
    let idx = parse_idx(&idx_bytes(0x0E, &[u32::MAX, 0, u32::MAX], &[]), ORIGIN).unwrap();
    assert!(idx.values.is_empty());
    assert_eq!(idx.values.type_name(), "f64");
}

#[test]
fn concatenated_gzip_members_are_one_stream() {
    let raw = idx_bytes(0x08, &[4], &[1, 2, 3, 4]);
    let mut two = gzip(&raw[..6]);
    two.extend(gzip(&raw[6..]));
    assert_eq!(
        parse_idx(&two, ORIGIN).unwrap().values,
        IdxValues::U8(vec![1, 2, 3, 4])
    );
}

#[test]
fn a_wrong_magic_is_refused_naming_the_bytes() {
    assert_refused(
        &[0x01, 0x02, 0x08, 0x01, 0, 0, 0, 0],
        "not an IDX file (it starts 01 02",
    );
    // A NumPy file, the likeliest wrong file.
    assert_refused(b"\x93NUMPY\x01\x00", "not an IDX file (it starts 93 4e");
}

#[test]
fn an_unknown_type_is_refused_naming_it() {
    assert_refused(&idx_bytes(0x0A, &[1], &[0]), "unknown IDX data type 0x0a");
    assert_refused(&idx_bytes(0x00, &[1], &[0]), "unknown IDX data type 0x00");
}

#[test]
fn zero_dimensions_are_refused() {
    assert_refused(&[0, 0, 0x08, 0], "declares 0 dimensions");
}

#[test]
fn more_dimensions_than_the_cap_are_refused() {
    let dims = vec![1u32; MAX_DIMS + 1];
    assert_refused(
        &idx_bytes(0x08, &dims, &[0]),
        &format!("declares {} dimensions; at most {MAX_DIMS}", MAX_DIMS + 1),
    );
    let dims = vec![1u32; MAX_DIMS];
    assert!(parse_idx(&idx_bytes(0x08, &dims, &[9]), ORIGIN).is_ok());
}

#[test]
fn a_truncated_magic_or_header_is_refused() {
    assert_refused(&[], "truncated: 0 bytes");
    assert_refused(&[0, 0, 8], "truncated: 3 bytes");
    assert_refused(
        &[0, 0, 0x08, 2, 0, 0, 0, 1, 0, 0],
        "truncated header: 2 dimensions need 8 bytes, 6 follow",
    );
}

#[test]
fn truncated_data_is_refused_with_both_lengths() {
    let bytes = idx_bytes(0x0C, &[2, 3], &[0; 23]);
    assert_refused(
        &bytes,
        "truncated data: dims [2, 3] of i32 need 24 bytes, only 23 follow",
    );
}

#[test]
fn trailing_bytes_are_refused() {
    let bytes = idx_bytes(0x0B, &[2], &[0; 5]);
    assert_refused(
        &bytes,
        "trailing bytes: data continues past the 4 bytes that dims [2] of i16 declare",
    );
}

#[test]
fn a_dims_product_that_overflows_is_refused() {
    assert_refused(&idx_bytes(0x08, &[u32::MAX; 3], &[]), "overflow");
}

#[test]
fn a_declared_size_over_the_caps_is_refused_before_reading_data() {
    // Neither file holds any data: the header alone is refused.
    let over = MAX_ELEMENTS as u32 + 1;
    assert_refused(
        &idx_bytes(0x08, &[over], &[]),
        &format!("declare {over} elements; at most {MAX_ELEMENTS} are read"),
    );
    // 2^27 + 1 f64 are within the element cap but over the 1 GiB byte limit.
    let f64s = (1u32 << 27) + 1;
    assert_refused(
        &idx_bytes(0x0E, &[f64s], &[]),
        "declare 1073741832 data bytes, over the 1073741824-byte limit",
    );
}

#[test]
fn a_gzip_bomb_is_refused_by_its_declared_size_under_a_low_limit() {
    let bomb = gzip(&idx_bytes(0x08, &[BOMB_ZEROS as u32], &vec![0; BOMB_ZEROS]));
    assert!(bomb.len() < BOMB_ZEROS / 100, "{} bytes", bomb.len());
    let message = data_error(parse_idx_with_limit(&bomb, ORIGIN, BOMB_LIMIT));
    assert!(
        message.contains(&format!(
            "declare {BOMB_ZEROS} data bytes, over the {BOMB_LIMIT}-byte limit"
        )),
        "{message}"
    );
    // The same file within the default limit is a valid array.
    assert_eq!(parse_idx(&bomb, ORIGIN).unwrap().values.len(), BOMB_ZEROS);
}

#[test]
fn a_gzip_bomb_behind_a_small_header_is_cut_off_as_trailing_bytes() {
    const DECLARED: u32 = 1000;
    let mut raw = idx_bytes(0x08, &[DECLARED], &[]);
    raw.resize(raw.len() + BOMB_ZEROS, 0);
    let message = data_error(parse_idx_with_limit(&gzip(&raw), ORIGIN, BOMB_LIMIT));
    assert!(
        message.contains(&format!("past the {DECLARED} bytes")),
        "{message}"
    );
}

#[test]
fn a_corrupt_or_cut_gzip_stream_is_refused_as_gzip() {
    let gz = gzip(&idx_bytes(0x08, &[64], &[3; 64]));
    let mut bad_crc = gz.clone();
    let crc_at = gz.len() - 8; // the trailer: CRC-32, then the length
    bad_crc[crc_at] ^= 0xff;
    for (what, input) in [("bad CRC", bad_crc), ("cut", gz[..gz.len() - 4].to_vec())] {
        let message = data_error(parse_idx(&input, ORIGIN));
        assert!(message.starts_with("gzip: "), "{what}: {message}");
    }
}

#[test]
fn read_idx_reads_a_file_and_names_a_missing_one() {
    let dir = temp_dir("read");
    let path = write(&dir, "a.idx.gz", &gzip(&idx_bytes(0x09, &[2], &[0xfe, 2])));
    assert_eq!(read_idx(&path).unwrap().values, IdxValues::I8(vec![-2, 2]));
    let missing = dir.join("missing.idx");
    match read_idx(&missing) {
        Err(Error::Io { path, source }) => {
            assert_eq!(path, missing);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected an I/O error, got {other:?}"),
    }
    let bad = write(&dir, "bad.idx", b"PK\x03\x04");
    let e = read_idx(&bad).unwrap_err().to_string();
    assert!(
        e.starts_with(&bad.display().to_string()) && e.contains("not an IDX file"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Writes an images file and a labels file into a fresh directory.
fn pair(name: &str, images: &[u8], labels: &[u8]) -> (PathBuf, PathBuf) {
    let dir = temp_dir(name);
    (write(&dir, "images", images), write(&dir, "labels", labels))
}

#[test]
fn u8_pixels_become_exactly_p_over_255_in_rows() {
    let pixels: Vec<u8> = (0..=255).collect();
    let (im, lb) = pair(
        "u8",
        &gzip(&idx_bytes(0x08, &[4, 8, 8], &pixels)),
        &idx_bytes(0x08, &[4], &[3, 1, 4, 1]),
    );
    let (x, y) = load_images_labels(&im, &lb).unwrap();
    assert_eq!(x.dim(), (4, 64));
    for (i, (&got, &p)) in x.iter().zip(&pixels).enumerate() {
        let want = (p as f32) / 255.0;
        assert_eq!(got.to_bits(), want.to_bits(), "pixel {i} ({p})");
    }
    assert_eq!(y, [3, 1, 4, 1]);
}

#[test]
fn other_image_types_convert_to_f32_and_integer_labels_of_any_width_load() {
    let values = [-3i16, 0, 300, 7];
    let (im, lb) = pair(
        "i16",
        &idx_bytes(
            0x0B,
            &[2, 2],
            &values
                .iter()
                .flat_map(|v| v.to_be_bytes())
                .collect::<Vec<_>>(),
        ),
        &idx_bytes(0x0C, &[2], &[0, 0, 0, 9, 0, 1, 0, 0]),
    );
    let (x, y) = load_images_labels(&im, &lb).unwrap();
    assert_eq!(x.into_raw_vec_and_offset().0, [-3.0, 0.0, 300.0, 7.0]);
    assert_eq!(y, [9, 65536]);
}

/// Asserts that loading the pair fails with a data error about `at_fault` containing `want`.
fn assert_pair_refused(im: &Path, lb: &Path, at_fault: &Path, want: &str) {
    match load_images_labels(im, lb) {
        Err(Error::Data { origin, message }) => {
            assert_eq!(origin, at_fault.display().to_string());
            assert!(message.contains(want), "{message:?} lacks {want:?}");
        }
        other => panic!("expected a data error, got {other:?}"),
    }
}

#[test]
fn mismatched_counts_and_wrong_shapes_or_types_are_refused() {
    let images = idx_bytes(0x08, &[3, 2], &[0; 6]);
    let (im, lb) = pair("count", &images, &idx_bytes(0x08, &[2], &[0; 2]));
    assert_pair_refused(&im, &lb, &lb, "2 labels for 3 images");

    // Images and labels swapped: 1-D images are refused.
    let (im, lb) = pair("swap", &idx_bytes(0x08, &[3], &[0; 3]), &images);
    assert_pair_refused(
        &im,
        &lb,
        &im,
        "at least 2 dimensions (is this a labels file?)",
    );

    let (im, lb) = pair("2d", &images, &idx_bytes(0x08, &[3, 1], &[0; 3]));
    assert_pair_refused(&im, &lb, &lb, "must be 1-D [n]");

    let floats: Vec<u8> = [1f32; 3].iter().flat_map(|v| v.to_be_bytes()).collect();
    let (im, lb) = pair("float", &images, &idx_bytes(0x0D, &[3], &floats));
    assert_pair_refused(
        &im,
        &lb,
        &lb,
        "labels are f32; they must be an integer type",
    );

    let (im, lb) = pair("neg", &images, &idx_bytes(0x09, &[3], &[0, 0xff, 0]));
    assert_pair_refused(&im, &lb, &lb, "label 1 is -1");

    let (im, lb) = pair(
        "empty",
        &idx_bytes(0x08, &[0, 4], &[]),
        &idx_bytes(0x08, &[0], &[]),
    );
    assert_pair_refused(&im, &lb, &im, "no values");

    // 1e39 is finite as f64 but not as f32.
    let wide: Vec<u8> = [0.5f64, 1e39]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect();
    let (im, lb) = pair(
        "inf",
        &idx_bytes(0x0E, &[1, 2], &wide),
        &idx_bytes(0x08, &[1], &[0]),
    );
    assert_pair_refused(&im, &lb, &im, "image 0 value 1 is inf as float32");
}

#[test]
fn dataset_names_select_a_split() {
    assert_eq!(
        parse_dataset_name("fashion-mnist"),
        Some(FashionSplit::Train)
    );
    assert_eq!(
        parse_dataset_name("fashion-mnist:train"),
        Some(FashionSplit::Train)
    );
    assert_eq!(
        parse_dataset_name("fashion-mnist:test"),
        Some(FashionSplit::Test)
    );
    for other in [
        "mnist",
        "fashion-mnist:",
        "fashion-mnist:val",
        "Fashion-MNIST",
        "data.csv",
    ] {
        assert_eq!(parse_dataset_name(other), None, "{other}");
    }
}

#[test]
fn the_data_dir_follows_perturb_data_dir() {
    // The only test that touches the variable; the real-data test names its directory itself.
    std::env::set_var("PERTURB_DATA_DIR", "/srv/data");
    assert_eq!(fashion_mnist_dir(), Path::new("/srv/data/fashion-mnist"));
    std::env::remove_var("PERTURB_DATA_DIR");
    assert_eq!(fashion_mnist_dir(), Path::new(FASHION_SYSTEM_DIR));
}

#[test]
fn a_missing_fashion_file_names_it_and_the_package() {
    let dir = temp_dir("missing");
    let e = load_fashion_mnist(FashionSplit::Test, &dir).unwrap_err();
    assert!(
        matches!(&e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    );
    let message = e.to_string();
    for want in [
        "t10k-images-idx3-ubyte.gz",
        "apt-get install dataset-fashion-mnist",
        "PERTURB_DATA_DIR",
    ] {
        assert!(message.contains(want), "{message:?} lacks {want:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn un_gzipped_fashion_files_load_and_wrong_ones_are_refused() {
    let dir = temp_dir("raw");
    let images = idx_bytes(0x08, &[2, 28, 28], &[255; 2 * 784]);
    write(&dir, "t10k-images-idx3-ubyte", &images);
    write(
        &dir,
        "t10k-labels-idx1-ubyte",
        &idx_bytes(0x08, &[2], &[0, 9]),
    );
    let (x, y) = load_fashion_mnist(FashionSplit::Test, &dir).unwrap();
    assert_eq!((x.dim(), y), ((2, 784), vec![0, 9]));
    assert!(x.iter().all(|&v| v == 1.0));

    write(
        &dir,
        "t10k-labels-idx1-ubyte",
        &idx_bytes(0x08, &[2], &[0, 10]),
    );
    let e = load_fashion_mnist(FashionSplit::Test, &dir)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("label 1 is 10; Fashion-MNIST's are 0..10"),
        "{e}"
    );

    write(
        &dir,
        "t10k-images-idx3-ubyte",
        &idx_bytes(0x08, &[2, 2, 2], &[0; 8]),
    );
    write(
        &dir,
        "t10k-labels-idx1-ubyte",
        &idx_bytes(0x08, &[2], &[0, 1]),
    );
    let e = load_fashion_mnist(FashionSplit::Test, &dir)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("4 values each; Fashion-MNIST's have 28×28"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Facts read off the real files (with Python's gzip module): samples, the first label, and the
/// sum of the first image's bytes.
struct Facts {
    samples: usize,
    first_label: u32,
    first_image_byte_sum: u32,
}

const TRAIN: Facts = Facts {
    samples: 60_000,
    first_label: 9,
    first_image_byte_sum: 76_247,
};

const TEST: Facts = Facts {
    samples: 10_000,
    first_label: 9,
    first_image_byte_sum: 33_456,
};

/// Fashion-MNIST's classes, each with a tenth of the samples.
const CLASSES: usize = 10;

#[test]
fn real_fashion_mnist_has_its_known_shape_balance_and_contents() {
    let dir = Path::new(FASHION_SYSTEM_DIR);
    for (split, facts) in [(FashionSplit::Train, TRAIN), (FashionSplit::Test, TEST)] {
        let (x, y) = load_fashion_mnist(split, dir).unwrap_or_else(|e| {
            panic!("{split:?}: {e} (the dataset-fashion-mnist package must be installed)")
        });
        assert_eq!(x.dim(), (facts.samples, 784), "{split:?}");
        assert_eq!(y.len(), facts.samples, "{split:?}");
        let mut per_class = [0usize; CLASSES];
        for &l in &y {
            per_class[l as usize] += 1; // panics on a label >= 10
        }
        assert_eq!(per_class, [facts.samples / CLASSES; CLASSES], "{split:?}");
        assert!(x.iter().all(|v| (0.0..=1.0).contains(v)), "{split:?}");
        assert_eq!(y[0], facts.first_label, "{split:?}");
        // Pixels are p/255 exactly, so p comes back by rounding.
        let sum: u32 = x.row(0).iter().map(|&v| (v * 255.0).round() as u32).sum();
        assert_eq!(sum, facts.first_image_byte_sum, "{split:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = parse_idx(&bytes, ORIGIN);
        let _ = parse_idx(&gzip(&bytes), ORIGIN);
    }

    /// Past the magic, so that the dims, size and data checks meet random input.
    #[test]
    fn random_headers_and_data_never_panic(
        code in prop::sample::select(vec![0x08u8, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x0A]),
        dims in proptest::collection::vec(0u32..6, 0..5),
        data in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let bytes = idx_bytes(code, &dims, &data);
        let raw = parse_idx(&bytes, ORIGIN);
        let gz = parse_idx(&gzip(&bytes), ORIGIN);
        // Gzip changes nothing about what is accepted.
        prop_assert_eq!(raw.is_ok(), gz.is_ok());
        if let Ok(idx) = raw {
            prop_assert_eq!(idx.values.len(), dims.iter().map(|&d| d as usize).product::<usize>());
        }
    }
}
