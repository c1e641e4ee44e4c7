//! NumPy files: `x` and `y` `.npy` arrays, or one `.npz` holding both.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use tch::{Kind, Tensor};

use super::csv::classes_from_labels;
use super::{array, paths, Table, Target};
use crate::config::{DataConfig, Missing, Task};

pub(super) fn read_npy_table(d: &DataConfig, task: Task) -> Result<Table> {
    let (x, y, x_source, source) = load_arrays(d)?;
    let y = check_shapes(&x, y, &x_source, &source)?;
    let y_values = y.f_to_kind(Kind::Double)?;
    let (x, input) = match array::is_array(&x) {
        true => {
            let input = array::input_of(&x_source, &x)?;
            if d.standardize == Some(true) {
                bail!(
                    "data.standardize: {x_source} is an array {}, which goes to the model as stored; \
                     remove data.standardize (or set it to false) and normalise inside the module",
                    input.describe(x.size()[0])
                );
            }
            (input.convert(&x_source, &x)?, Some(input))
        }
        false => {
            let x = x.f_to_kind(Kind::Float)?;
            // Rows numbered as in the file: before any are dropped.
            check_finite(&x_source, &x, |col| format!("{} (x{col})", col + 1))?;
            (x, None)
        }
    };
    check_finite(&source, &y_values.f_to_kind(Kind::Float)?, |col| (col + 1).to_string())?;
    // An array holds no NaN now; a table's NaN follows data.missing like an empty CSV cell.
    let x_missing = match input {
        Some(_) => Tensor::zeros([x.size()[0]], (Kind::Bool, x.device())),
        None => x.isnan().any_dim(1, false),
    };
    let (x, y_values) = apply_missing(d.missing, &source, x, &x_missing, y_values)?;
    let targets = y_values.size()[1];
    let y = npy_target(task, &source, &y_values)?;
    let f = if input.is_some() { 0 } else { x.size()[1] };
    Ok(Table {
        categorical: Vec::new(),
        text: Vec::new(),
        x,
        y,
        feature_names: (0..f).map(|i| format!("x{i}")).collect(),
        target_names: (0..targets).map(|i| if targets == 1 { "y".to_string() } else { format!("y{i}") }).collect(),
        input,
    })
}

/// The x and y arrays with the names errors give them: from one `.npz` or from two `.npy` files.
fn load_arrays(d: &DataConfig) -> Result<(Tensor, Tensor, String, String)> {
    match (&d.path, &d.x, &d.y) {
        (Some(npz), _, _) => {
            paths::check_file("data.path", npz)?;
            let arrays =
                read_npz(npz).map_err(|e| anyhow!("data.path: {}: cannot read as .npz: {e}", npz.display()))?;
            let get = |name: &str| {
                let at = arrays.iter().position(|(n, _)| n == name || n == &format!("{name}.npy"));
                at.map(|i| arrays[i].1.shallow_clone()).ok_or_else(|| {
                    anyhow!(
                        "data.path: {} has no array `{name}` (it has: {})",
                        npz.display(),
                        arrays.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
                    )
                })
            };
            Ok((get("x")?, get("y")?, format!("{}: x", npz.display()), format!("{}: y", npz.display())))
        }
        (None, Some(xp), Some(yp)) => {
            // Both files are checked before either is read.
            paths::check_file("data.x", xp)?;
            paths::check_file("data.y", yp)?;
            let x = read_npy("data.x", xp)?;
            Ok((x, read_npy("data.y", yp)?, format!("data.x: {}", xp.display()), format!("data.y: {}", yp.display())))
        }
        _ => bail!("data: kind npy takes either x and y (.npy files) or path (one .npz with arrays x and y)"),
    }
}

/// Checks x has a sample axis and returns y as [samples, targets] (a 1-D y is one target).
fn check_shapes(x: &Tensor, y: Tensor, x_source: &str, source: &str) -> Result<Tensor> {
    if x.dim() < 2 {
        bail!(
            "{x_source}: must be [samples, features] or an array [samples, ...] of at least 2 axes, got shape {:?}",
            x.size()
        );
    }
    let rows = x.size()[0];
    let y = if y.dim() == 1 { y.unsqueeze(1) } else { y };
    if y.dim() != 2 || y.size()[0] != rows {
        bail!("{source}: must have shape [{rows}] or [{rows}, targets] to match x, got {:?}", y.size());
    }
    Ok(y)
}

/// Rows with a NaN (`x_missing`: per row, in x; or in y) follow data.missing like an empty
/// CSV cell.
fn apply_missing(
    missing: Missing,
    source: &str,
    mut x: Tensor,
    x_missing: &Tensor,
    mut y_values: Tensor,
) -> Result<(Tensor, Tensor)> {
    let y_missing = y_values.isnan().any_dim(1, false);
    if x_missing.any().int64_value(&[]) == 0 && y_missing.any().int64_value(&[]) == 0 {
        return Ok((x, y_values));
    }
    match missing {
        Missing::Error => {
            let row = Vec::<bool>::try_from(&x_missing.logical_or(&y_missing))?.iter().position(|&m| m).unwrap_or(0);
            bail!("{source}: row {} has a missing (NaN) value; set data.missing to drop_row or mean", row + 1)
        }
        Missing::Mean if y_missing.any().int64_value(&[]) != 0 => {
            // Rows without a target are dropped; their features would be filled.
            let keep = y_missing.logical_not().nonzero().squeeze_dim(1);
            let dropped = y_values.size()[0] - keep.size()[0];
            x = x.index_select(0, &keep);
            y_values = y_values.index_select(0, &keep);
            eprintln!(
                "torchfit: warning: {source}: dropped {dropped} row(s) without a target value (data.missing: mean fills features only)"
            );
        }
        Missing::Mean => {}
        Missing::DropRow => {
            let keep = x_missing.logical_or(&y_missing).logical_not().nonzero().squeeze_dim(1);
            x = x.index_select(0, &keep);
            y_values = y_values.index_select(0, &keep);
        }
    }
    Ok((x, y_values))
}

/// Regression keeps y as values; classification takes one column of integer labels.
fn npy_target(task: Task, source: &str, y_values: &Tensor) -> Result<Target> {
    Ok(match task {
        Task::Regression => Target::Values(y_values.to_kind(Kind::Float)),
        Task::Classification => {
            let targets = y_values.size()[1];
            if targets != 1 {
                bail!("{source}: classification takes one label per row, y has {targets} columns");
            }
            let values = Vec::<f64>::try_from(y_values.flatten(0, 1))?;
            if let Some(v) = values.iter().find(|v| v.fract() != 0.0) {
                bail!("{source}: class labels must be integers, found {v}");
            }
            classes_from_labels(&values.iter().map(|v| (*v as i64).to_string()).collect::<Vec<_>>())
        }
    })
}

/// Reads a `.npy` file (`key` names it in errors, a config key or `input`): a numeric array
/// whose data must be exactly the size its header gives, so that a truncated file is an
/// error rather than a tensor read past the end of the data.
pub(super) fn read_npy(key: &str, path: &Path) -> Result<Tensor> {
    let bytes = std::fs::read(path).map_err(|e| anyhow!("{key}: {}: cannot read: {e}", path.display()))?;
    parse_npy(&bytes).map_err(|e| anyhow!("{key}: {}: cannot read as .npy: {e}", path.display()))
}

/// Reads a `.npy` file of samples of `input` (prediction), converted to its dtype and
/// checked: `key` names the file in errors.
pub fn read_array(key: &str, path: &Path, input: &array::ArrayInput) -> Result<Tensor> {
    let x = read_npy(key, path)?;
    input.convert(&format!("{key}: {}", path.display()), &x)
}

/// The arrays of a `.npz` file (a zip of `.npy` files), by name without `.npy`, each checked
/// as [`read_npy`] checks a file.
fn read_npz(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let file = std::fs::File::open(path).map_err(|e| anyhow!("cannot read: {e}"))?;
    let mut zip =
        zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| anyhow!("not a zip archive ({e})"))?;
    let mut arrays = Vec::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| anyhow!("entry {i}: {e}"))?;
        let name = entry.name().to_string();
        let bytes = read_bounded(&mut entry).map_err(|e| anyhow!("{name}: {e}"))?;
        let array = parse_npy(&bytes).map_err(|e| anyhow!("{name}: {e}"))?;
        arrays.push((name.strip_suffix(".npy").unwrap_or(&name).to_string(), array));
    }
    Ok(arrays)
}

/// The longest `.npy` header read, in bytes.
const MAX_HEADER: usize = 1 << 20;

/// What a `.npy` header says: the element type, the shape and layout, and where the data
/// starts and how many bytes it takes.
struct Header {
    kind: Kind,
    name: &'static str,
    shape: Vec<i64>,
    fortran: bool,
    data_start: usize,
    data_bytes: u64,
}

/// The array in the bytes of a `.npy` file (format versions 1 to 3).
fn parse_npy(bytes: &[u8]) -> Result<Tensor> {
    let h = parse_header(bytes)?;
    let (file_size, data_start, expected, shape) = (bytes.len(), h.data_start, h.data_bytes, &h.shape);
    let data = &bytes[data_start..];
    if data.len() as u64 != expected {
        let why = if (data.len() as u64) < expected { "truncated" } else { "extra bytes after the array" };
        bail!(
            "{why}: expected {} bytes ({data_start} of header, then {expected} of data for shape {shape:?} of {}), the file has {file_size}",
            data_start as u64 + expected,
            h.name,
        );
    }
    if !h.fortran {
        return Ok(Tensor::f_from_data_size(data, shape, h.kind)?);
    }
    // Column-major: the reversed shape in row-major order, transposed back.
    let reversed: Vec<i64> = shape.iter().rev().copied().collect();
    let dims: Vec<i64> = (0..shape.len() as i64).rev().collect();
    Ok(Tensor::f_from_data_size(data, &reversed, h.kind)?.f_permute(&dims)?.f_contiguous()?)
}

/// Where the header of a `.npy` file starts and how long it is, from its first 12 bytes.
fn header_extent(bytes: &[u8]) -> Result<(usize, usize)> {
    let file_size = bytes.len();
    if file_size < 10 || &bytes[..6] != b"\x93NUMPY" {
        bail!("not a .npy file (no \\x93NUMPY magic)");
    }
    let (length_bytes, start) = match bytes[6] {
        1 => (2, 10),
        2 | 3 => (4, 12),
        v => bail!("unknown .npy format version {v}"),
    };
    let header_len = match bytes.get(8..8 + length_bytes) {
        Some(&[a, b]) => usize::from(u16::from_le_bytes([a, b])),
        Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]) as usize,
        _ => bail!("truncated: the file ends in its header ({file_size} bytes)"),
    };
    // NumPy writes headers of tens of bytes (and np.load reads up to 10,000).
    if header_len > MAX_HEADER {
        bail!("the header says it is {header_len} bytes long; torchfit reads headers up to {MAX_HEADER}");
    }
    Ok((start, header_len))
}

/// The header of the `.npy` file whose first bytes (at least the whole header) are `bytes`.
fn parse_header(bytes: &[u8]) -> Result<Header> {
    let (start, header_len) = header_extent(bytes)?;
    let data_start = start + header_len;
    let Some(header) = bytes.get(start..data_start) else {
        bail!("truncated: the header says it is {header_len} bytes long, the file has {} bytes in all", bytes.len());
    };
    let header = String::from_utf8_lossy(header);
    let descr = dict_value(&header, "descr").ok_or_else(|| anyhow!("the header has no 'descr'"))?;
    let (kind, size, name) = dtype(descr.trim_matches(|c| c == '\'' || c == '"'))?;
    let fortran = match dict_value(&header, "fortran_order").map(str::trim) {
        None | Some("False") => false,
        Some("True") => true,
        Some(other) => bail!("the header's fortran_order is {other}"),
    };
    let shape_text = dict_value(&header, "shape").ok_or_else(|| anyhow!("the header has no 'shape'"))?;
    let shape: Vec<i64> = shape_text
        .trim_matches(|c: char| c == '(' || c == ')' || c.is_whitespace())
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse::<i64>().ok().filter(|&d| d >= 0))
        .collect::<Option<_>>()
        .ok_or_else(|| anyhow!("the header's shape {shape_text} is not a list of sizes"))?;
    if shape.len() > array::MAX_RANK {
        bail!("the header's shape {shape:?} has {} axes; torchfit reads at most {}", shape.len(), array::MAX_RANK);
    }
    let data_bytes = shape
        .iter()
        .try_fold(size as u64, |n, &d| n.checked_mul(d as u64))
        .ok_or_else(|| anyhow!("the header's shape {shape:?} is too large"))?;
    Ok(Header { kind, name, shape, fortran, data_start, data_bytes })
}

/// The bytes of one `.npy` file from a stream (an `.npz` entry), reading no more than its
/// header says the array takes, and one byte more to tell extra bytes: a compressed entry
/// may expand to any size. A header that cannot be read is left for [`parse_npy`] to name.
fn read_bounded(r: &mut impl std::io::Read) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    r.take(12).read_to_end(&mut bytes)?;
    let Ok((start, header_len)) = header_extent(&bytes) else { return Ok(bytes) };
    let rest = (start + header_len).saturating_sub(bytes.len());
    r.take(rest as u64).read_to_end(&mut bytes)?;
    let Ok(header) = parse_header(&bytes) else { return Ok(bytes) };
    let wanted = (header.data_start as u64 + header.data_bytes + 1).saturating_sub(bytes.len() as u64);
    r.take(wanted).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The text of `key`'s value in a .npy header, a Python dict literal such as
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (80, 3), }`.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}'")).or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = header[at + key.len() + 2..].trim_start().strip_prefix(':')?.trim_start();
    // A tuple runs to its closing parenthesis, anything else to the next comma or brace.
    let end = if rest.starts_with('(') { rest.find(')')? + 1 } else { rest.find([',', '}'])? };
    Some(&rest[..end])
}

/// The tensor kind, element size and name of a little-endian (or one-byte) numeric dtype.
fn dtype(descr: &str) -> Result<(Kind, usize, &'static str)> {
    let (order, code) = match descr.as_bytes().first() {
        Some(b'<' | b'>' | b'|' | b'=') => descr.split_at(1),
        _ => ("", descr),
    };
    let found = match code {
        "f2" | "e" => (Kind::Half, 2, "float16"),
        "f4" | "f" => (Kind::Float, 4, "float32"),
        "f8" | "d" => (Kind::Double, 8, "float64"),
        "i1" | "b" => (Kind::Int8, 1, "int8"),
        "i2" | "h" => (Kind::Int16, 2, "int16"),
        "i4" | "i" => (Kind::Int, 4, "int32"),
        "i8" | "q" => (Kind::Int64, 8, "int64"),
        "u1" | "B" => (Kind::Uint8, 1, "uint8"),
        "b1" | "?" => (Kind::Bool, 1, "bool"),
        _ => bail!("dtype {descr} is not a numeric type torchfit reads (floats, ints, uint8, bool)"),
    };
    if order == ">" && found.1 > 1 {
        bail!("dtype {descr} is big-endian; save the array as little-endian (arr.astype('<{code}'))");
    }
    Ok(found)
}

/// Fails at the first infinite value of `x` (`[rows, columns]`, float), naming its row and
/// column: inf and overflowed values (a float64 beyond float32's range) make NaN losses and
/// predictions. NaN is not looked for: it is a missing value.
pub(super) fn check_finite(source: &str, x: &Tensor, names: impl Fn(usize) -> String) -> Result<()> {
    let inf = x.f_isinf()?;
    if inf.f_any()?.int64_value(&[]) != 0 {
        let (row, col) = super::first_true(&inf);
        let value = x.f_double_value(&[row as i64, col as i64])?;
        bail!(
            "{source}: row {}, column {}: {value} is not a finite number (infinite, or beyond float32's ±3.4e38); fix or remove the value",
            row + 1,
            names(col)
        );
    }
    Ok(())
}
