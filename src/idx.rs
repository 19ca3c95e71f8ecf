//! IDX files, the format of MNIST and Fashion-MNIST: raw or gzip-compressed, and Fashion-MNIST
//! itself.
//!
//! An IDX file is the magic `00 00 <type> <ndims>`, `ndims` big-endian u32 dimensions, then the
//! elements in C (row-major) order, big-endian. Types: `0x08` u8, `0x09` i8, `0x0B` i16, `0x0C` i32,
//! `0x0D` f32, `0x0E` f64. A file starting `1f 8b` is gunzipped first.
//!
//! Hostile files are refused before their data is decompressed or decoded: the header is read
//! first, its declared size is checked against [`MAX_ELEMENTS`] and the byte limit
//! ([`MAX_DATA_BYTES`] unless [`parse_idx_with_limit`] is given another), and then at most one byte
//! more than declared is read, so a small `.gz` never widens past what its header claims.

use crate::data::MAX_DATA_BYTES;
use crate::error::{Error, Result};
use crate::fileio::read_at_most;
use ndarray::Array2;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Most dimensions an IDX header may declare (the format allows 255; real files use 1 to 4).
pub const MAX_DIMS: usize = 16;

/// Most elements one IDX array may hold (2^28: 1 GiB once converted to float32).
pub const MAX_ELEMENTS: usize = 1 << 28;

/// Longest possible header: magic, type, ndims and [`MAX_DIMS`] dimensions.
const MAX_HEADER_BYTES: u64 = 4 + 4 * MAX_DIMS as u64;

/// The gzip magic (RFC 1952).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Bytes reserved up front for the data: a header's claim is not trusted with more than this.
const INITIAL_RESERVE: usize = 1 << 26;

/// One IDX array.
#[derive(Clone, Debug, PartialEq)]
pub struct Idx {
    /// Dimensions, outermost first (MNIST images: `[n, 28, 28]`; labels: `[n]`).
    pub dims: Vec<usize>,
    /// The elements in C order, in the file's own type; as many as the product of `dims`.
    pub values: IdxValues,
}

/// The elements of an IDX array, kept in the type the file declares (converted from big-endian).
#[derive(Clone, Debug, PartialEq)]
pub enum IdxValues {
    /// Type `0x08`.
    U8(Vec<u8>),
    /// Type `0x09`.
    I8(Vec<i8>),
    /// Type `0x0B`.
    I16(Vec<i16>),
    /// Type `0x0C`.
    I32(Vec<i32>),
    /// Type `0x0D`.
    F32(Vec<f32>),
    /// Type `0x0E`.
    F64(Vec<f64>),
}

impl IdxValues {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            IdxValues::U8(v) => v.len(),
            IdxValues::I8(v) => v.len(),
            IdxValues::I16(v) => v.len(),
            IdxValues::I32(v) => v.len(),
            IdxValues::F32(v) => v.len(),
            IdxValues::F64(v) => v.len(),
        }
    }

    /// True when there are no elements (some dimension is 0).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The type's name: `u8`, `i8`, `i16`, `i32`, `f32` or `f64`.
    pub fn type_name(&self) -> &'static str {
        match self {
            IdxValues::U8(_) => "u8",
            IdxValues::I8(_) => "i8",
            IdxValues::I16(_) => "i16",
            IdxValues::I32(_) => "i32",
            IdxValues::F32(_) => "f32",
            IdxValues::F64(_) => "f64",
        }
    }
}

/// One element type: its IDX code, name, bytes per element and decoder (from big-endian bytes,
/// a whole number of elements).
struct Type {
    code: u8,
    name: &'static str,
    size: usize,
    decode: fn(Vec<u8>) -> IdxValues,
}

/// Big-endian `N`-byte elements.
fn be<const N: usize, T>(data: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
    data.chunks_exact(N)
        .map(|c| f(c.try_into().expect("chunks of N bytes")))
        .collect()
}

/// The element types IDX defines.
const TYPES: [Type; 6] = [
    Type {
        code: 0x08,
        name: "u8",
        size: 1,
        decode: IdxValues::U8,
    },
    Type {
        code: 0x09,
        name: "i8",
        size: 1,
        decode: |d| IdxValues::I8(d.into_iter().map(|b| b as i8).collect()),
    },
    Type {
        code: 0x0B,
        name: "i16",
        size: 2,
        decode: |d| IdxValues::I16(be(&d, i16::from_be_bytes)),
    },
    Type {
        code: 0x0C,
        name: "i32",
        size: 4,
        decode: |d| IdxValues::I32(be(&d, i32::from_be_bytes)),
    },
    Type {
        code: 0x0D,
        name: "f32",
        size: 4,
        decode: |d| IdxValues::F32(be(&d, f32::from_be_bytes)),
    },
    Type {
        code: 0x0E,
        name: "f64",
        size: 8,
        decode: |d| IdxValues::F64(be(&d, f64::from_be_bytes)),
    },
];

/// Parses an IDX file held in `bytes`, gzip-compressed or raw, within [`MAX_DATA_BYTES`] of data.
/// Errors are [`Error::Data`] naming `origin`.
pub fn parse_idx(bytes: &[u8], origin: &str) -> Result<Idx> {
    parse_idx_with_limit(bytes, origin, MAX_DATA_BYTES)
}

/// [`parse_idx`] with another limit on the data bytes (after decompression): a header declaring
/// more is refused before its data is read, and no more than one byte past the declared data is
/// ever decompressed.
pub fn parse_idx_with_limit(bytes: &[u8], origin: &str, max_data_bytes: u64) -> Result<Idx> {
    let err = |message: String| Error::Data {
        origin: origin.to_string(),
        message,
    };
    if bytes.starts_with(&GZIP_MAGIC) {
        let gz = flate2::read::MultiGzDecoder::new(bytes);
        read_stream(gz, max_data_bytes, "gzip: ").map_err(err)
    } else {
        read_stream(bytes, max_data_bytes, "").map_err(err)
    }
}

/// Reads an IDX file (gzip or raw; layout in the module documentation).
pub fn read_idx(path: &Path) -> Result<Idx> {
    parse_idx(&read_idx_bytes(path)?, &path.display().to_string())
}

/// The bytes of an IDX file as stored (gzip or raw), refused past the size an IDX file of at most
/// [`MAX_DATA_BYTES`] of data can have; [`read_idx`] parses what this reads.
pub fn read_idx_bytes(path: &Path) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // A compressed file is smaller than its data; a raw one holds a header and its data.
    let max_file = MAX_DATA_BYTES + MAX_HEADER_BYTES;
    read_at_most(file, max_file)
        .map_err(|e| Error::io(path, e))?
        .ok_or_else(|| Error::Data {
            origin: path.display().to_string(),
            message: format!("larger than the {max_file}-byte limit for an IDX file"),
        })
}

/// Reads `buf.len()` bytes, or fewer at the end of the stream; returns how many were read.
fn read_full(mut r: impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Parses an uncompressed IDX stream; `context` prefixes stream errors (a corrupt gzip member).
/// Errors are messages without the origin.
fn read_stream(
    mut r: impl Read,
    max_data_bytes: u64,
    context: &str,
) -> std::result::Result<Idx, String> {
    let stream = |e: io::Error| format!("{context}{e}");
    let mut magic = [0u8; 4];
    let got = read_full(&mut r, &mut magic).map_err(stream)?;
    if got < 4 {
        return Err(format!(
            "truncated: {got} bytes, less than the 4-byte IDX magic"
        ));
    }
    if magic[..2] != [0, 0] {
        return Err(format!(
            "not an IDX file (it starts {:02x} {:02x}; IDX starts 00 00, gzip 1f 8b)",
            magic[0], magic[1]
        ));
    }
    let ty = TYPES.iter().find(|t| t.code == magic[2]).ok_or_else(|| {
        let known: Vec<String> = TYPES
            .iter()
            .map(|t| format!("0x{:02x} {}", t.code, t.name))
            .collect();
        format!(
            "unknown IDX data type 0x{:02x} (known: {})",
            magic[2],
            known.join(", ")
        )
    })?;
    let ndims = magic[3] as usize;
    if ndims == 0 {
        return Err("the header declares 0 dimensions; an IDX array has at least 1".into());
    }
    if ndims > MAX_DIMS {
        return Err(format!(
            "the header declares {ndims} dimensions; at most {MAX_DIMS} are read"
        ));
    }
    let mut raw_dims = vec![0u8; 4 * ndims];
    let got = read_full(&mut r, &mut raw_dims).map_err(stream)?;
    if got < raw_dims.len() {
        return Err(format!(
            "truncated header: {ndims} dimensions need {} bytes, {got} follow the magic",
            raw_dims.len()
        ));
    }
    let dims: Vec<usize> = raw_dims
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes(c.try_into().expect("4 bytes")) as usize)
        .collect();
    let declared = declared_bytes(&dims, ty, max_data_bytes)?;
    let type_name = ty.name;
    // One byte past the claim is enough to tell trailing data, and bounds what a gzip bomb yields.
    let mut data = Vec::with_capacity(declared.min(INITIAL_RESERVE));
    r.take(declared as u64 + 1)
        .read_to_end(&mut data)
        .map_err(stream)?;
    if data.len() < declared {
        return Err(format!(
            "truncated data: dims {dims:?} of {type_name} need {declared} bytes, only {} follow the header",
            data.len()
        ));
    }
    if data.len() > declared {
        return Err(format!(
            "trailing bytes: data continues past the {declared} bytes that dims {dims:?} of {type_name} declare"
        ));
    }
    Ok(Idx {
        values: (ty.decode)(data),
        dims,
    })
}

/// The data bytes `dims` of `ty` declare, refused when over the limits.
fn declared_bytes(
    dims: &[usize],
    ty: &Type,
    max_data_bytes: u64,
) -> std::result::Result<usize, String> {
    // An empty dimension empties the array, whatever the others claim.
    let count = if dims.contains(&0) {
        Some(0)
    } else {
        dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
    };
    let count = count.ok_or_else(|| {
        format!(
            "dims {dims:?} overflow: their product does not fit in {} bits",
            usize::BITS
        )
    })?;
    if count > MAX_ELEMENTS {
        return Err(format!(
            "dims {dims:?} declare {count} elements; at most {MAX_ELEMENTS} are read"
        ));
    }
    let bytes = count * ty.size; // <= 2^28 * 8: no overflow
    if bytes as u64 > max_data_bytes {
        return Err(format!(
            "dims {dims:?} of {} declare {bytes} data bytes, over the {max_data_bytes}-byte limit",
            ty.name
        ));
    }
    Ok(bytes)
}

/// Reads an images file and a labels file as a data set: images `[n, d1, d2, …]` become `n` rows
/// of `d1·d2·…` float32 values (u8 pixels `p` as exactly `(p as f32) / 255.0`, other types
/// converted to float32 as they are, and refused if that makes them non-finite); labels must be a
/// 1-D array of `n` non-negative integers (u8, i8, i16 or i32). Errors name the file at fault.
pub fn load_images_labels(images: &Path, labels: &Path) -> Result<(Array2<f32>, Vec<u32>)> {
    let image_bytes = read_idx_bytes(images)?;
    let label_bytes = read_idx_bytes(labels)?;
    images_labels_from_bytes((&image_bytes, images), (&label_bytes, labels))
}

/// [`load_images_labels`] from the files' bytes as stored (what [`read_idx_bytes`] reads), so a
/// caller can also hash them; the paths name the files in errors.
pub fn images_labels_from_bytes(
    (image_bytes, images): (&[u8], &Path),
    (label_bytes, labels): (&[u8], &Path),
) -> Result<(Array2<f32>, Vec<u32>)> {
    let x = parse_idx(image_bytes, &images.display().to_string())?;
    let x = image_rows(x).map_err(|m| data_err(images, m))?;
    let y = parse_idx(label_bytes, &labels.display().to_string())?;
    let y = label_values(y).map_err(|m| data_err(labels, m))?;
    if y.len() != x.nrows() {
        return Err(data_err(
            labels,
            format!(
                "{} labels for {} images in {}",
                y.len(),
                x.nrows(),
                images.display()
            ),
        ));
    }
    Ok((x, y))
}

fn data_err(path: &Path, message: String) -> Error {
    Error::Data {
        origin: path.display().to_string(),
        message,
    }
}

/// Images as rows of float32 (conversion in [`load_images_labels`]).
fn image_rows(idx: Idx) -> std::result::Result<Array2<f32>, String> {
    let Some((&n, rest)) = idx.dims.split_first().filter(|(_, r)| !r.is_empty()) else {
        return Err(format!(
            "images have dims {:?}; they must be [n, d1, …] with at least 2 dimensions (is this a labels file?)",
            idx.dims
        ));
    };
    let width: usize = rest.iter().product(); // bounded: the header check multiplied all dims
    if n == 0 || width == 0 {
        return Err(format!("images have dims {:?}: no values", idx.dims));
    }
    let values: Vec<f32> = match idx.values {
        IdxValues::U8(v) => v.into_iter().map(|p| (p as f32) / 255.0).collect(),
        IdxValues::I8(v) => v.into_iter().map(f32::from).collect(),
        IdxValues::I16(v) => v.into_iter().map(f32::from).collect(),
        IdxValues::I32(v) => v.into_iter().map(|p| p as f32).collect(),
        IdxValues::F32(v) => v,
        IdxValues::F64(v) => v.into_iter().map(|p| p as f32).collect(),
    };
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(format!(
            "image {} value {} is {} as float32; data must be finite",
            i / width,
            i % width,
            values[i]
        ));
    }
    Ok(Array2::from_shape_vec((n, width), values).expect("n * width elements, checked on reading"))
}

/// Labels as u32, refusing a shape other than 1-D, float types and negative values.
fn label_values(idx: Idx) -> std::result::Result<Vec<u32>, String> {
    if idx.dims.len() != 1 {
        return Err(format!(
            "labels have dims {:?}; they must be 1-D [n]",
            idx.dims
        ));
    }
    let wide: Vec<i64> = match idx.values {
        IdxValues::U8(v) => return Ok(v.into_iter().map(u32::from).collect()),
        IdxValues::I8(v) => v.into_iter().map(i64::from).collect(),
        IdxValues::I16(v) => v.into_iter().map(i64::from).collect(),
        IdxValues::I32(v) => v.into_iter().map(i64::from).collect(),
        other @ (IdxValues::F32(_) | IdxValues::F64(_)) => {
            return Err(format!(
                "labels are {}; they must be an integer type (u8, i8, i16, i32)",
                other.type_name()
            ))
        }
    };
    wide.iter()
        .enumerate()
        .map(|(i, &l)| {
            u32::try_from(l).map_err(|_| format!("label {i} is {l}; labels must be >= 0"))
        })
        .collect()
}

/// A Fashion-MNIST split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FashionSplit {
    /// The 60,000 training images (`train-*`).
    Train,
    /// The 10,000 test images (`t10k-*`).
    Test,
}

/// Fashion-MNIST's classes: labels are `0..FASHION_CLASSES`.
pub const FASHION_CLASSES: u32 = 10;

/// Fashion-MNIST's image side in pixels.
const FASHION_SIDE: usize = 28;

/// Where Fashion-MNIST is looked for: `$PERTURB_DATA_DIR/fashion-mnist` when `PERTURB_DATA_DIR` is
/// set and not empty, else `/usr/share/datasets/fashion-mnist` (where the Debian package
/// `dataset-fashion-mnist` installs it).
pub fn fashion_mnist_dir() -> PathBuf {
    match std::env::var_os("PERTURB_DATA_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("fashion-mnist"),
        _ => PathBuf::from("/usr/share/datasets/fashion-mnist"),
    }
}

/// Parses a data set name: `fashion-mnist` and `fashion-mnist:train` are the training split,
/// `fashion-mnist:test` the test split; anything else is `None`.
pub fn parse_dataset_name(s: &str) -> Option<FashionSplit> {
    match s {
        "fashion-mnist" | "fashion-mnist:train" => Some(FashionSplit::Train),
        "fashion-mnist:test" => Some(FashionSplit::Test),
        _ => None,
    }
}

/// Reads one Fashion-MNIST split from `dir` (usually [`fashion_mnist_dir`]): images as rows of 784
/// float32 values in [0, 1], labels in `0..10`. Each file is `<name>.gz` or, failing that, `<name>`
/// un-gzipped; a missing file is an [`Error::Io`] (not found) that names it and says how to install
/// it. Files of another shape or with labels out of range are refused.
pub fn load_fashion_mnist(split: FashionSplit, dir: &Path) -> Result<(Array2<f32>, Vec<u32>)> {
    let (images, labels) = fashion_mnist_files(split, dir)?;
    let image_bytes = read_idx_bytes(&images)?;
    let label_bytes = read_idx_bytes(&labels)?;
    fashion_mnist_from_bytes((&image_bytes, &images), (&label_bytes, &labels))
}

/// The images and labels files of a Fashion-MNIST split in `dir`, as [`load_fashion_mnist`] finds
/// them (a missing one is the error it describes).
pub fn fashion_mnist_files(split: FashionSplit, dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let prefix = match split {
        FashionSplit::Train => "train",
        FashionSplit::Test => "t10k",
    };
    let images = find_file(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let labels = find_file(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    Ok((images, labels))
}

/// [`load_fashion_mnist`] from the files' bytes as stored, with the same checks; the paths name
/// the files in errors.
pub fn fashion_mnist_from_bytes(
    images: (&[u8], &Path),
    labels: (&[u8], &Path),
) -> Result<(Array2<f32>, Vec<u32>)> {
    let (x, y) = images_labels_from_bytes(images, labels)?;
    let (images, labels) = (images.1, labels.1);
    if x.ncols() != FASHION_SIDE * FASHION_SIDE {
        return Err(data_err(
            images,
            format!(
                "images have {} values each; Fashion-MNIST's have {FASHION_SIDE}×{FASHION_SIDE}",
                x.ncols()
            ),
        ));
    }
    if let Some(i) = y.iter().position(|&l| l >= FASHION_CLASSES) {
        return Err(data_err(
            labels,
            format!(
                "label {i} is {}; Fashion-MNIST's are 0..{FASHION_CLASSES}",
                y[i]
            ),
        ));
    }
    Ok((x, y))
}

/// `dir/<name>.gz`, else `dir/<name>`, else a not-found error saying how to install the data.
fn find_file(dir: &Path, name: &str) -> Result<PathBuf> {
    let gz = dir.join(format!("{name}.gz"));
    let raw = dir.join(name);
    if let Some(found) = [&gz, &raw].into_iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    Err(Error::io(
        gz,
        io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "not found (nor {name} un-gzipped); install it with `apt-get install dataset-fashion-mnist` or set PERTURB_DATA_DIR to a directory holding fashion-mnist/"
            ),
        ),
    ))
}
