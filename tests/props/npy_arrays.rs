//! NumPy `.npy` arrays: arbitrary bytes, hostile headers, edits; valid float files read exactly.

use perturb::npy::{self, Values};
use proptest::prelude::*;

use crate::npy_data::model_of;
use crate::npz_archives::{load_npz_data, load_npz_model, npz};
use crate::support::*;

fn load_npy(bytes: &[u8]) -> Option<npy::Array> {
    match bounded(bytes, npy::parse) {
        Ok(a) => Some(a),
        Err(message) => {
            assert!(!message.is_empty());
            None
        }
    }
}

/// A parsed array holds as many values as its shape says, and writes back to itself.
fn check_array(a: &npy::Array) {
    let count: usize = a.shape.iter().product();
    match &a.values {
        Values::Numbers(v) => {
            assert_eq!(v.len(), count, "{a:?}");
            let again = npy::parse(&npy::encode_f64(&a.shape, v)).unwrap();
            assert_eq!(again.shape, a.shape);
            let Values::Numbers(w) = again.values else {
                panic!("numbers came back as strings")
            };
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&w), bits(v));
        }
        Values::Strings(v) => assert_eq!(v.len(), count, "{a:?}"),
    }
}

/// A `.npy` file from its parts: version, header text (ended by '\n' when `newline`), data.
pub fn npy_file(major: u8, header: &str, newline: bool, data: &[u8]) -> Vec<u8> {
    let mut h = header.as_bytes().to_vec();
    if newline {
        h.push(b'\n');
    }
    let mut out = b"\x93NUMPY".to_vec();
    out.extend([major, 0]);
    if major == 1 {
        out.extend((h.len() as u16).to_le_bytes());
    } else {
        out.extend((h.len() as u32).to_le_bytes());
    }
    out.extend(h);
    out.extend(data);
    out
}

/// A `descr` value as header text and its item size: supported dtypes, unsupported and malformed
/// ones, structured (list) descriptions and random strings.
fn npy_descr() -> impl Strategy<Value = (String, usize)> {
    let known: Vec<(&str, usize)> = vec![
        ("'<f4'", 4),
        ("'<f8'", 8),
        ("'>f4'", 4),
        ("'>f8'", 8),
        ("'=f8'", 8),
        ("'|b1'", 1),
        ("'|i1'", 1),
        ("'<i2'", 2),
        ("'>i4'", 4),
        ("'<i8'", 8),
        ("'|u1'", 1),
        ("'<u2'", 2),
        ("'>u8'", 8),
        ("'<U1'", 4),
        ("'<U7'", 28),
        ("'>U2'", 8),
        ("'|S1'", 1),
        ("'|S5'", 5),
        ("\"<f4\"", 4),
    ];
    let hostile: Vec<(&str, usize)> = vec![
        ("'|O'", 8),
        ("'O'", 8),
        ("'<f2'", 2),
        ("'<c16'", 16),
        ("''", 1),
        ("'<'", 1),
        ("'<f'", 4),
        ("'<U0'", 1),
        ("'<U4097'", 4),
        ("'|S16385'", 1),
        ("'<U99999999999999999999'", 4),
        ("'<U4611686018427387904'", 4),
        ("'|S-1'", 1),
        ("'<V8'", 8),
        ("'<M8[ns]'", 8),
        ("'f4'", 4),
        ("'<i16'", 16),
        ("'<ff'", 4),
        ("'<f4\u{e9}'", 4),
        ("[('a', '<f4'), ('b', '<i2')]", 6),
        ("3", 1),
        ("None", 1),
    ];
    prop_oneof![
        4 => prop::sample::select(known).prop_map(|(d, n)| (d.to_string(), n)),
        2 => prop::sample::select(hostile).prop_map(|(d, n)| (d.to_string(), n)),
        1 => ("[<>|=]?[a-zA-Z]{0,2}[0-9]{0,22}", 1usize..9).prop_map(|(d, n)| (format!("'{d}'"), n)),
    ]
}

/// A dimension as header text and its value when it is one: small sizes, claims of 10^10 rows
/// and more, negative, non-integer and out-of-range dimensions.
fn npy_dim() -> impl Strategy<Value = (String, Option<u128>)> {
    let hostile: Vec<(&str, Option<u128>)> = vec![
        ("10000000000", Some(10_000_000_000)),
        ("2147483648", Some(1 << 31)),
        ("4294967297", Some((1 << 32) + 1)),
        ("9223372036854775807", Some(i64::MAX as u128)),
        ("18446744073709551615", None),
        ("99999999999999999999999", None),
        ("-1", None),
        ("-9223372036854775808", None),
        ("3L", Some(3)),
        ("'2'", None),
        ("2.0", None),
        ("(1,)", None),
        ("True", None),
        ("", None),
    ];
    prop_oneof![
        6 => (0u128..6).prop_map(|n| (n.to_string(), Some(n))),
        1 => prop::sample::select(hostile).prop_map(|(d, n)| (d.to_string(), n)),
    ]
}

/// A `shape` value as header text and its element count when it is a tuple of known dimensions.
fn npy_shape() -> impl Strategy<Value = (String, Option<u128>)> {
    prop_oneof![
        6 => (prop::collection::vec(npy_dim(), 0..6), any::<bool>()).prop_map(|(dims, list)| {
            let count = dims
                .iter()
                .try_fold(1u128, |a, (_, d)| d.map(|d| a.saturating_mul(d)));
            let text: Vec<&str> = dims.iter().map(|(t, _)| t.as_str()).collect();
            let text = match (list, &text[..]) {
                (true, _) => format!("[{}]", text.join(", ")),
                (false, [one]) => format!("({one},)"),
                (false, _) => format!("({})", text.join(", ")),
            };
            (text, count)
        }),
        // Many dimensions of 1 (NumPy allows 64) around a few elements.
        1 => (1usize..300, 1u128..4).prop_map(|(ones, n)| {
            (format!("({}{n},)", "1, ".repeat(ones)), Some(n))
        }),
        1 => prop::sample::select(vec!["3", "'(2, 3)'", "None", "{}", "((2, 3), 4)", "(2, 3"])
            .prop_map(|s| (s.to_string(), None)),
    ]
}

/// A `.npy` file with a structured but hostile header: any dtype, order and shape, keys missing,
/// repeated or extra, in any order, any version, and data of the claimed length or not.
pub fn npy_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        npy_descr(),
        prop::sample::select(vec!["False", "True", "1", "0", "'True'", "None"]),
        npy_shape(),
        prop::collection::vec(0u8..8, 3..7), // which entries, in order: 0-2 the keys, others extra
        prop::sample::select(vec![1u8, 1, 1, 2, 3, 0, 4]),
        any::<bool>(),
        prop_oneof![3 => Just(None), 1 => (0usize..300).prop_map(Some)],
        prop::collection::vec(any::<u8>(), 1..64),
    )
        .prop_map(
            |((descr, size), fortran, (shape, count), keys, major, newline, wrong_len, pattern)| {
                let entries: Vec<String> = keys
                    .iter()
                    .map(|k| match k {
                        0 => format!("'descr': {descr}"),
                        1 => format!("'fortran_order': {fortran}"),
                        2 => format!("'shape': {shape}"),
                        3 => "'extra': {'a': (1, [2, 3])}".to_string(),
                        _ => "'descr': '<f8'".to_string(),
                    })
                    .collect();
                let header = format!("{{{}, }}", entries.join(", "));
                let claimed = count
                    .and_then(|c| c.checked_mul(size as u128))
                    .filter(|&n| n <= 4096)
                    .map(|n| n as usize);
                let len = wrong_len.or(claimed).unwrap_or(pattern.len());
                let data: Vec<u8> = pattern.iter().copied().cycle().take(len).collect();
                npy_file(major, &header, newline, &data)
            },
        )
}

/// A valid float `.npy` of a small shape, as float32 or float64, with any values (NaN included).
pub fn float_npy() -> impl Strategy<Value = Vec<u8>> {
    (prop::collection::vec(0usize..4, 0..3), any::<bool>()).prop_flat_map(|(shape, wide)| {
        let count = shape.iter().product::<usize>();
        prop::collection::vec(any::<u64>(), count).prop_map(move |bits| {
            if wide {
                let v: Vec<f64> = bits.iter().map(|&b| f64::from_bits(b)).collect();
                npy::encode_f64(&shape, &v)
            } else {
                let v: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b as u32)).collect();
                npy::encode_f32(&shape, &v)
            }
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn npy_parser_survives_arbitrary_bytes(
        magic in any::<bool>(),
        version in any::<[u8; 4]>(),
        bytes in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut input = if magic { b"\x93NUMPY".to_vec() } else { Vec::new() };
        if magic {
            input.extend([version[0] % 4, version[1], version[2], version[3] % 2]);
        }
        input.extend(bytes);
        if let Some(a) = load_npy(&input) {
            check_array(&a);
        }
    }

    #[test]
    fn npy_parser_survives_hostile_headers(bytes in npy_bytes()) {
        if let Some(a) = load_npy(&bytes) {
            check_array(&a);
        }
    }

    #[test]
    fn npy_parser_survives_edits_of_a_valid_file(e in edits(), fortran in any::<bool>()) {
        let mut valid = npy::encode_f32(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        if fortran {
            let at = valid.windows(5).position(|w| w == b"False").unwrap();
            valid.splice(at..at + 5, *b"True ");
        }
        if let Some(a) = load_npy(&apply_bytes(&valid, &e)) {
            check_array(&a);
        }
    }

    #[test]
    fn npy_parser_reads_every_valid_float_file_exactly(bytes in float_npy()) {
        let a = load_npy(&bytes).expect("a valid float .npy parses");
        check_array(&a);
    }
}

#[test]
fn npy_header_claiming_ten_billion_rows_allocates_nothing() {
    for descr in ["<f8", "|b1", "<U8"] {
        let header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (10000000000, 3), }}");
        let file = npy_file(1, &header, true, &[0; 64]);
        let message = bounded(&file[..], npy::parse).unwrap_err();
        assert!(message.contains("10000000000"), "{message}");
        let model = model_of(2, 1);
        assert!(bounded(&file[..], |f| npy::data_from_npy(
            f,
            &model,
            perturb::Loss::Mse,
            "d.npy"
        ))
        .is_err());
        let (zip, unpacked) = npz(
            &[("x.npy".into(), file.clone()), ("W1.npy".into(), file)],
            true,
        );
        assert!(load_npz_data(&zip, unpacked).is_none());
        assert!(load_npz_model(&zip, unpacked).is_none());
    }
}
