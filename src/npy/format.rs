//! The `.npy` format (versions 1–3) and `.npz` archives of them, read and written here rather than
//! with ndarray-npy, which allocates the element count a header claims before reading any data.
//! Here a file is read first (bounded by [`MAX_DATA_BYTES`]) and the header's shape is checked
//! against the bytes actually present before any array is built.

use crate::data::MAX_DATA_BYTES;
use std::io::{Read, Seek, Write};
use std::path::Path;

const MAGIC: &[u8] = b"\x93NUMPY";

/// Most dimensions an array may have: NumPy's own limit (`NPY_MAXDIMS` in NumPy 2). It also keeps
/// the Fortran-order reordering linear in the element count.
const MAX_DIMS: usize = 64;

/// Most numbers one array may hold (2^28: a 1 GiB float32 file; 2 GiB once widened to f64).
pub const MAX_ELEMENTS: usize = 1 << 28;

/// Most strings one array may hold (string arrays only name activations, one per layer).
pub const MAX_STRINGS: usize = 4096;

/// Values of one array, in C (row-major) order.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    /// Any float, integer or bool dtype, widened to f64 (exact for f32 and for integers up to 2^53).
    Numbers(Vec<f64>),
    /// `<U…` (UTF-32) or `|S…` (bytes) strings, trailing NULs removed.
    Strings(Vec<String>),
}

/// One array read from a `.npy` file or an `.npz` member.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    /// The dtype as NumPy wrote it, e.g. `<f4`.
    pub dtype: String,
    /// Shape, C order (Fortran-order files are transposed on reading).
    pub shape: Vec<usize>,
    /// The elements.
    pub values: Values,
}

/// How one element is stored.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Float,
    Int,
    Uint,
    Bool,
    Utf32,
    Bytes,
}

/// Parses `.npy` bytes. Errors are messages without the file name (the caller adds it).
pub fn parse(bytes: &[u8]) -> Result<Array, String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("not a .npy array (no \\x93NUMPY magic)".into());
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (len, start): (usize, usize) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize,
            12,
        ),
        _ => return Err(format!(".npy version {major}.{minor} is not supported")),
    };
    let header = bytes
        .get(start..start.saturating_add(len))
        .ok_or("the header is longer than the file")?;
    let header: String = if major == 3 {
        std::str::from_utf8(header)
            .map_err(|_| "the header is not UTF-8")?
            .into()
    } else {
        header.iter().map(|&b| b as char).collect() // latin-1
    };
    let data = &bytes[start + len..];
    let dict = PyLit::parse(&header)?;
    let descr = match dict.get("descr")? {
        PyLit::Str(s) => s,
        _ => return Err("structured (record) arrays are not supported".into()),
    };
    let fortran = match dict.get("fortran_order")? {
        PyLit::Bool(b) => b,
        _ => return Err("'fortran_order' is not True or False".into()),
    };
    let shape = match dict.get("shape")? {
        PyLit::Tuple(items) => items
            .into_iter()
            .map(|i| match i {
                PyLit::Int(n) => usize::try_from(n).map_err(|_| format!("negative dimension {n}")),
                _ => Err("'shape' holds a non-integer".into()),
            })
            .collect::<Result<Vec<usize>, String>>()?,
        _ => return Err("'shape' is not a tuple".into()),
    };
    if shape.len() > MAX_DIMS {
        return Err(format!(
            "the shape has {} dimensions; at most {MAX_DIMS} are read",
            shape.len()
        ));
    }
    let (kind, size, big) = dtype(&descr)?;
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} overflows"))?;
    // The claim is checked against the bytes present before anything is allocated for it.
    let needed = count
        .checked_mul(size)
        .filter(|&n| n as u64 <= MAX_DATA_BYTES);
    if needed != Some(data.len()) {
        return Err(format!(
            "the header claims shape {shape:?} of {descr} ({}), but {} data bytes follow it",
            needed.map_or("more than the size limit".into(), |n| format!("{n} bytes")),
            data.len()
        ));
    }
    // Decoding widens (a 1-byte integer becomes an f64, a byte string a String): bound what a
    // small compressed .npz member may expand to.
    let cap = if matches!(kind, Kind::Utf32 | Kind::Bytes) {
        MAX_STRINGS
    } else {
        MAX_ELEMENTS
    };
    if count > cap {
        return Err(format!(
            "the array has {count} elements of {descr}; at most {cap} are read"
        ));
    }
    let mut values = decode(data, kind, size, big);
    if fortran && shape.len() > 1 {
        values = to_c_order(values, &shape);
    }
    Ok(Array {
        dtype: descr,
        shape,
        values,
    })
}

/// Kind, item size and big-endianness of a simple dtype string.
fn dtype(descr: &str) -> Result<(Kind, usize, bool), String> {
    let unsupported =
        || format!("dtype {descr:?} is not supported (floats, integers, bool, strings)");
    if descr
        .trim_start_matches(['<', '>', '|', '='])
        .starts_with('O')
    {
        return Err("object arrays (pickles) are not read".into());
    }
    let mut chars = descr.chars();
    let order = chars.next().ok_or_else(unsupported)?;
    let big = match order {
        '<' | '|' | '=' => cfg!(target_endian = "big") && order == '=',
        '>' => true,
        _ => return Err(unsupported()),
    };
    let kind_char = chars.next().ok_or_else(unsupported)?;
    let n: usize = chars.as_str().parse().map_err(|_| unsupported())?;
    let kind = match (kind_char, n) {
        ('f', 4 | 8) => Kind::Float,
        ('i', 1 | 2 | 4 | 8) => Kind::Int,
        ('u', 1 | 2 | 4 | 8) => Kind::Uint,
        ('b', 1) => Kind::Bool,
        ('U', 1..=4096) => return Ok((Kind::Utf32, 4 * n, big)),
        ('S', 1..=16384) => return Ok((Kind::Bytes, n, big)),
        _ => return Err(unsupported()),
    };
    Ok((kind, n, big))
}

fn decode(data: &[u8], kind: Kind, size: usize, big: bool) -> Values {
    let word = |c: &[u8]| -> u64 {
        let mut b = [0u8; 8];
        if big {
            b[8 - size..].copy_from_slice(c);
            u64::from_be_bytes(b)
        } else {
            b[..size].copy_from_slice(c);
            u64::from_le_bytes(b)
        }
    };
    let chunks = data.chunks_exact(size);
    match kind {
        Kind::Float if size == 4 => Values::Numbers(
            chunks
                .map(|c| f32::from_bits(word(c) as u32) as f64)
                .collect(),
        ),
        Kind::Float => Values::Numbers(chunks.map(|c| f64::from_bits(word(c))).collect()),
        Kind::Int => {
            let shift = 64 - 8 * size as u32;
            Values::Numbers(
                chunks
                    .map(|c| (((word(c) << shift) as i64) >> shift) as f64)
                    .collect(),
            )
        }
        Kind::Uint | Kind::Bool => Values::Numbers(chunks.map(|c| word(c) as f64).collect()),
        Kind::Utf32 => Values::Strings(
            chunks
                .map(|c| {
                    c.chunks_exact(4)
                        .map(|u| {
                            let u: [u8; 4] = u.try_into().expect("4 bytes");
                            let code = if big {
                                u32::from_be_bytes(u)
                            } else {
                                u32::from_le_bytes(u)
                            };
                            char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER)
                        })
                        .collect::<String>()
                        .trim_end_matches('\0')
                        .to_string()
                })
                .collect(),
        ),
        Kind::Bytes => Values::Strings(
            chunks
                .map(|c| {
                    String::from_utf8_lossy(c)
                        .trim_end_matches('\0')
                        .to_string()
                })
                .collect(),
        ),
    }
}

/// Reorders column-major elements of `shape` into row-major order.
fn to_c_order(values: Values, shape: &[usize]) -> Values {
    let n = shape.len();

    let reorder = |count: usize| {
        // Fortran strides: 1, d0, d0·d1, …
        let mut strides = vec![1usize; n];
        for k in 1..n {
            strides[k] = strides[k - 1] * shape[k - 1];
        }
        let mut index = vec![0usize; n];
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            out.push(
                index
                    .iter()
                    .zip(&strides)
                    .map(|(i, s)| i * s)
                    .sum::<usize>(),
            );
            for k in (0..n).rev() {
                index[k] += 1;
                if index[k] < shape[k] {
                    break;
                }
                index[k] = 0;
            }
        }
        out
    };
    match values {
        Values::Numbers(v) => Values::Numbers(reorder(v.len()).into_iter().map(|i| v[i]).collect()),
        Values::Strings(v) => {
            Values::Strings(reorder(v.len()).into_iter().map(|i| v[i].clone()).collect())
        }
    }
}

/// A `.npy` file (version 1.0, little-endian, C order) holding `data` as `descr` with `shape`.
fn encode(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims = match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {dims}, }}");
    // NumPy pads so that the data starts at a multiple of 64 bytes; the header ends in '\n'.
    let unpadded = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// A float32 `.npy`.
pub fn encode_f32(shape: &[usize], values: &[f32]) -> Vec<u8> {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    encode("<f4", shape, &data)
}

/// A float64 `.npy`.
pub fn encode_f64(shape: &[usize], values: &[f64]) -> Vec<u8> {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    encode("<f8", shape, &data)
}

/// A 1-D unicode (`<U…`) `.npy`, as `np.array(["sigmoid", "identity"])` gives.
pub fn encode_strings(values: &[&str]) -> Vec<u8> {
    let width = values
        .iter()
        .map(|s| s.chars().count())
        .max()
        .unwrap_or(0)
        .max(1);
    let data: Vec<u8> = values
        .iter()
        .flat_map(|s| {
            let codes = s.chars().map(u32::from).chain(std::iter::repeat(0));
            codes.take(width).flat_map(u32::to_le_bytes)
        })
        .collect();
    encode(&format!("<U{width}"), &[values.len()], &data)
}

/// Reads a whole file, refusing files over [`MAX_DATA_BYTES`].
pub fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_DATA_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_DATA_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than the {MAX_DATA_BYTES}-byte limit"
        )));
    }
    Ok(bytes)
}

/// Every member of an `.npz` archive (stored or deflated, as `np.savez` and
/// `np.savez_compressed` write them), named without the `.npy` suffix, in archive order.
pub fn read_npz<R: Read + Seek>(reader: R) -> Result<Vec<(String, Array)>, String> {
    let mut zip =
        zip::ZipArchive::new(reader).map_err(|e| format!("not a readable .npz (zip): {e}"))?;
    let mut out = Vec::new();
    let mut total = 0u64;
    for i in 0..zip.len() {
        let file = zip.by_index(i).map_err(|e| format!("member {i}: {e}"))?;
        let name = file.name().to_string();
        // Bounded by what is left of the limit, whatever the member's header claims; the buffer
        // grows with the bytes actually inflated.
        let mut bytes = Vec::new();
        file.take(MAX_DATA_BYTES - total + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("{name}: {e}"))?;
        total += bytes.len() as u64;
        if total > MAX_DATA_BYTES {
            return Err(format!("more than {MAX_DATA_BYTES} bytes once unpacked"));
        }
        let array = parse(&bytes).map_err(|e| format!("{name}: {e}"))?;
        out.push((
            name.strip_suffix(".npy").unwrap_or(&name).to_string(),
            array,
        ));
    }
    Ok(out)
}

/// Writes `.npy` members into an uncompressed `.npz`, as `np.savez` does.
pub fn write_npz<W: Write + Seek>(writer: W, members: &[(String, Vec<u8>)]) -> std::io::Result<()> {
    let mut zip = zip::ZipWriter::new(writer);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(members.iter().map(|m| m.1.len()).sum::<usize>() > u32::MAX as usize / 2);
    for (name, bytes) in members {
        zip.start_file(format!("{name}.npy"), options)
            .map_err(std::io::Error::other)?;
        zip.write_all(bytes)?;
    }
    zip.finish().map_err(std::io::Error::other)?;
    Ok(())
}

/// The subset of Python literals a `.npy` header uses: a dict of str keys to str, bool, int and
/// tuples (or lists) of them.
#[derive(Clone, Debug, PartialEq)]
enum PyLit {
    Str(String),
    Bool(bool),
    Int(i64),
    Tuple(Vec<PyLit>),
    Dict(Vec<(String, PyLit)>),
}

impl PyLit {
    fn parse(text: &str) -> Result<PyLit, String> {
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
        };
        let v = p.value(0)?;
        p.skip_ws();
        if p.i != p.s.len() {
            return Err(format!(
                "unexpected text after the header dict at byte {}",
                p.i
            ));
        }
        match v {
            PyLit::Dict(_) => Ok(v),
            _ => Err("the header is not a dict".into()),
        }
    }

    fn get(&self, key: &str) -> Result<PyLit, String> {
        match self {
            PyLit::Dict(items) => items
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| format!("the header has no {key:?}")),
            _ => Err("the header is not a dict".into()),
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("malformed header: {what} at byte {}", self.i))
    }

    fn value(&mut self, depth: usize) -> Result<PyLit, String> {
        if depth > 8 {
            return self.err("nesting too deep");
        }
        self.skip_ws();
        match self.s.get(self.i) {
            Some(b'{') => self.seq(b'}', depth, true),
            Some(b'(') | Some(b'[') => {
                let close = if self.s[self.i] == b'(' { b')' } else { b']' };
                self.seq(close, depth, false)
            }
            Some(&q @ (b'\'' | b'"')) => {
                let start = self.i + 1;
                let len = self.s[start..].iter().position(|&c| c == q);
                let Some(len) = len else {
                    return self.err("unterminated string");
                };
                self.i = start + len + 1;
                Ok(PyLit::Str(
                    String::from_utf8_lossy(&self.s[start..start + len]).into_owned(),
                ))
            }
            Some(_) => {
                let start = self.i;
                while self.i < self.s.len()
                    && (self.s[self.i].is_ascii_alphanumeric() || b"-+_".contains(&self.s[self.i]))
                {
                    self.i += 1;
                }
                let word = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
                match word {
                    "True" => Ok(PyLit::Bool(true)),
                    "False" => Ok(PyLit::Bool(false)),
                    // Python 2 headers write long dimensions as `3L`.
                    w => match w.trim_end_matches('L').parse() {
                        Ok(n) => Ok(PyLit::Int(n)),
                        Err(_) => self.err("unexpected token"),
                    },
                }
            }
            None => self.err("unexpected end"),
        }
    }

    /// Items up to `close`, comma-separated, trailing comma allowed; `key: value` pairs in a dict.
    fn seq(&mut self, close: u8, depth: usize, dict: bool) -> Result<PyLit, String> {
        self.i += 1;
        let mut items = Vec::new();
        let mut pairs = Vec::new();
        loop {
            self.skip_ws();
            if self.s.get(self.i) == Some(&close) {
                self.i += 1;
                return Ok(if dict {
                    PyLit::Dict(pairs)
                } else {
                    PyLit::Tuple(items)
                });
            }
            if dict {
                let PyLit::Str(key) = self.value(depth + 1)? else {
                    return self.err("a dict key that is not a string");
                };
                self.skip_ws();
                if self.s.get(self.i) != Some(&b':') {
                    return self.err("expected ':'");
                }
                self.i += 1;
                pairs.push((key, self.value(depth + 1)?));
            } else {
                items.push(self.value(depth + 1)?);
            }
            self.skip_ws();
            match self.s.get(self.i) {
                Some(b',') => self.i += 1,
                Some(&c) if c == close => {}
                _ => return self.err("expected ',' or a closing bracket"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float32_round_trips_through_our_encoding() {
        let v = [1.5f32, -0.0053, f32::MIN_POSITIVE, 3.0e38, 0.1, -7.0];
        let a = parse(&encode_f32(&[2, 3], &v)).unwrap();
        assert_eq!(a.shape, [2, 3]);
        assert_eq!(a.dtype, "<f4");
        let back: Vec<f32> = match a.values {
            Values::Numbers(n) => n.iter().map(|&x| x as f32).collect(),
            other => panic!("{other:?}"),
        };
        assert_eq!(back, v);
    }

    #[test]
    fn headers_align_data_to_64_bytes_like_numpy() {
        for shape in [&[3][..], &[2, 3], &[100_000, 784]] {
            let bytes = encode_f64(shape, &[]);
            assert_eq!(bytes.len() % 64, 0, "{shape:?}");
            assert_eq!(bytes[bytes.len() - 1], b'\n');
        }
    }

    #[test]
    fn strings_round_trip() {
        let a = parse(&encode_strings(&["sigmoid", "identity", "é"])).unwrap();
        assert_eq!(a.dtype, "<U8");
        assert_eq!(
            a.values,
            Values::Strings(vec!["sigmoid".into(), "identity".into(), "é".into()])
        );
    }

    #[test]
    fn fortran_order_is_transposed_to_c_order() {
        // A 2x3 matrix [[1,2,3],[4,5,6]] stored column by column.
        let c = to_c_order(Values::Numbers(vec![1., 4., 2., 5., 3., 6.]), &[2, 3]);
        assert_eq!(c, Values::Numbers(vec![1., 2., 3., 4., 5., 6.]));
    }

    fn npy(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend([1, 0]);
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(data);
        out
    }

    #[test]
    fn more_than_64_dimensions_are_refused() {
        // Without the limit, a Fortran-order file with a million dimensions of 1 costs a million
        // steps per element to reorder: a hang for a file of a few MiB.
        let ok = format!(
            "{{'descr': '|u1', 'fortran_order': True, 'shape': ({}2,), }}",
            "1, ".repeat(63)
        );
        assert_eq!(parse(&npy(&ok, &[7, 8])).unwrap().shape.len(), 64);
        let many = format!(
            "{{'descr': '|u1', 'fortran_order': True, 'shape': ({}2,), }}",
            "1, ".repeat(64)
        );
        let e = parse(&npy(&many, &[7, 8])).unwrap_err();
        assert!(e.contains("65 dimensions"), "{e}");
    }

    #[test]
    fn python_literal_parser_reads_numpy_headers() {
        let h = "{'descr': '<f8', 'fortran_order': True, 'shape': (3L, 4), }";
        let d = PyLit::parse(h).unwrap();
        assert_eq!(d.get("fortran_order").unwrap(), PyLit::Bool(true));
        assert_eq!(
            d.get("shape").unwrap(),
            PyLit::Tuple(vec![PyLit::Int(3), PyLit::Int(4)])
        );
        for bad in [
            "{'a': }",
            "{'a' 1}",
            "[1, 2]",
            "{'a': (1, 2}",
            "{'a': 'x}",
            "{1: 2}",
        ] {
            assert!(PyLit::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn arrays_that_would_widen_past_the_caps_are_refused() {
        let npy = |descr: &str, shape: &str, data: Vec<u8>| {
            let header =
                format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
            let mut out = b"\x93NUMPY\x01\x00".to_vec();
            out.extend((header.len() as u16).to_le_bytes());
            out.extend(header.as_bytes());
            out.extend(data);
            out
        };
        let strings = npy(
            "|S1",
            &format!("({},)", MAX_STRINGS + 1),
            vec![b'a'; MAX_STRINGS + 1],
        );
        let e = parse(&strings).unwrap_err();
        assert!(e.contains(&format!("at most {MAX_STRINGS}")), "{e}");
        assert!(parse(&npy(
            "|S1",
            &format!("({MAX_STRINGS},)"),
            vec![b'a'; MAX_STRINGS]
        ))
        .is_ok());
        let bytes = npy(
            "|u1",
            &format!("({},)", MAX_ELEMENTS + 1),
            vec![0; MAX_ELEMENTS + 1],
        );
        let e = parse(&bytes).unwrap_err();
        assert!(e.contains(&format!("at most {MAX_ELEMENTS}")), "{e}");
    }
}
