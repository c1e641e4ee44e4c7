//! Parquet files: decoded by the arrow reader one batch at a time, row groups in order, each
//! requested column appended to its own buffer, so the file's data is held once. The result
//! is what the CSV reader gives for the same table: the same roles, the same missing-value
//! policy and the same messages, rows numbered from 1 among the data rows (a Parquet file has
//! no lines to name).

use std::borrow::Cow;
use std::fs::File;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Decimal128Type, Decimal256Type, Decimal32Type, Decimal64Type, Float16Type, Float32Type, Float64Type, Int16Type,
    Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, ArrowPrimitiveType};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;

use crate::cell::Cell;

use super::csv::{header, judge, CellError, Column, CsvData, Keep, Role};
use super::text::{TextBuilder, MISSING};
use crate::config::Missing;

/// Rows the reader decodes at a time: enough to spread the per-batch work thin, few enough
/// that a batch is a small part of the buffers being filled.
const BATCH_ROWS: usize = 8192;

/// Reads the columns that `choose` picks from the schema's top-level names (with how to read
/// each), as [`super::read_csv`] does for a CSV header: numeric columns (integers, floats,
/// decimals) and booleans (1/0) are numbers, string columns (plain, large, view or
/// dictionary-encoded) are text, and a string column under `Role::Auto` is numbers when its
/// every value reads as one, as it would in a CSV file. Nulls, NaN and the CSV missing
/// markers in strings (`NA`, empty) are missing values, handled by `missing`.
pub(super) fn read_parquet(
    path: &Path,
    missing: Missing,
    choose: impl FnOnce(&[String]) -> Result<Vec<(String, Role)>>,
) -> Result<CsvData> {
    let file = path.display();
    let (reader, header, wanted, mut buffers) = open_projected(path, choose)?;
    let (mut row, mut rows, mut unlabelled) = (0usize, 0usize, 0usize);
    let mut cells: Vec<Cell> = Vec::with_capacity(wanted.len());
    for batch in reader {
        let batch = batch.map_err(|e| anyhow!("{file}: cannot decode the rows from row {} on ({e})", row + 1))?;
        let columns: Vec<Cells> = wanted
            .iter()
            .map(|(name, role)| {
                let array =
                    batch.column_by_name(name).with_context(|| format!("{file}: no column `{name}` in a row group"))?;
                Ok(Cells::of(array.as_ref(), *role))
            })
            .collect::<Result<_>>()?;
        for (buffer, column) in buffers.iter_mut().zip(&columns) {
            buffer.start_batch(column);
        }
        for i in 0..batch.num_rows() {
            row += 1;
            let place = |k: usize| format!("{file}: row {row}, column `{}`", header::clip(&wanted[k].0));
            let keep = judge_row(&columns, &wanted, i, missing, &mut cells, place)?;
            if keep != Keep::Row {
                unlabelled += usize::from(keep == Keep::Unlabelled);
                continue;
            }
            for ((buffer, column), cell) in buffers.iter_mut().zip(&columns).zip(&cells) {
                buffer.push(cell, column, i);
            }
            rows += 1;
        }
    }
    if rows == 0 {
        bail!("{file}: no data rows");
    }
    let columns = buffers.into_iter().map(Buffer::finish).collect();
    let names = wanted.into_iter().map(|(name, _)| name).collect();
    Ok(CsvData { header, names, columns, rows, unlabelled })
}

/// Opens a Parquet file for the columns that `choose` picks from its schema: a reader that
/// decodes only those, the file's header, the columns with their roles, and a buffer for each.
#[allow(clippy::type_complexity)]
fn open_projected(
    path: &Path,
    choose: impl FnOnce(&[String]) -> Result<Vec<(String, Role)>>,
) -> Result<(ParquetRecordBatchReader, Vec<String>, Vec<(String, Role)>, Vec<Buffer>)> {
    let file = path.display();
    let handle = File::open(path).with_context(|| format!("cannot read {file}"))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(handle)
        .map_err(|e| anyhow!("{file}: not a readable Parquet file ({e})"))?;
    let schema = builder.schema().clone();
    let header: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    if header.is_empty() {
        bail!("{file}: the file has no columns");
    }
    let wanted = choose(&header)?;
    let at = header::positions(&file.to_string(), "schema", &header, wanted.iter().map(|(n, _)| n), None)?;
    for (&i, (name, _)) in at.iter().zip(&wanted) {
        if let Some(what) = unreadable(schema.field(i).data_type()) {
            bail!("{file}: column `{name}` is {what}; torchfit reads numeric, boolean and text columns");
        }
    }
    // Only the requested columns are decoded.
    let mask = ProjectionMask::roots(builder.parquet_schema(), at.iter().copied());
    let reader = builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| anyhow!("{file}: not a readable Parquet file ({e})"))?;
    let buffers: Vec<Buffer> =
        wanted.iter().zip(&at).map(|((_, role), &i)| Buffer::new(*role, schema.field(i).data_type())).collect();
    Ok((reader, header, wanted, buffers))
}

/// Judges row `i` of a batch into `cells` and says whether the row is kept; the first bad
/// cell is an error at `place(column)`.
fn judge_row(
    columns: &[Cells],
    wanted: &[(String, Role)],
    i: usize,
    missing: Missing,
    cells: &mut Vec<Cell>,
    place: impl Fn(usize) -> String,
) -> Result<Keep> {
    let mut keep = Keep::Row;
    cells.clear();
    for (k, (column, (_, role))) in columns.iter().zip(wanted).enumerate() {
        let cell = column.cell(i, *role);
        // As the CSV reader decides, so that both formats fail and fill alike.
        match judge(&cell, *role, missing) {
            Ok(Keep::Row) => {}
            Ok(other) => keep = other,
            Err(problem) => {
                let text = column.text(i).unwrap_or_default().into_owned();
                let place = place(k);
                return Err(CellError { place, problem, text, role: *role, trained_regression: false }.into());
            }
        }
        cells.push(cell);
    }
    Ok(keep)
}

/// What a column of this type is, in a message, when torchfit cannot read it.
fn unreadable(data_type: &DataType) -> Option<String> {
    use DataType::*;
    let what = match data_type {
        t if t.is_numeric() => return None,
        Boolean | Null | Utf8 | LargeUtf8 | Utf8View => return None,
        Dictionary(_, values) => return unreadable(values),
        List(_) | LargeList(_) | ListView(_) | LargeListView(_) | FixedSizeList(..) => "a list".to_string(),
        Struct(_) => "a struct".to_string(),
        Map(..) => "a map".to_string(),
        Union(..) => "a union".to_string(),
        Binary | LargeBinary | BinaryView | FixedSizeBinary(_) => "binary data".to_string(),
        Date32 | Date64 | Time32(_) | Time64(_) | Timestamp(..) => "a date or time".to_string(),
        other => format!("of type {other}"),
    };
    Some(what)
}

/// Whether a column of this type is read as strings.
fn is_text(data_type: &DataType) -> bool {
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, values) => is_text(values),
        _ => false,
    }
}

/// A string cell of a column read as `role`, by the CSV reader's rules ([`Role::parse`]): a
/// missing marker, a number, a boolean word, or text; a text role keeps every present cell
/// as text.
fn text_cell(cell: &str, role: Role) -> Cell {
    role.parse(cell.trim(), role.is_text())
}

/// One batch's column, in the form its role reads: numbers (NaN where missing), booleans,
/// or text (borrowed from the batch where it is strings already).
enum Cells<'a> {
    Numbers(Vec<f32>),
    Booleans(Vec<Option<bool>>),
    Text(Vec<Option<Cow<'a, str>>>),
    /// A dictionary-encoded text column: its values, each one's cell (parsed once), and
    /// each row's key into them (`None` where null).
    Dictionary {
        values: Vec<Option<Cow<'a, str>>>,
        cells: Vec<Cell>,
        keys: Vec<Option<usize>>,
    },
}

impl<'a> Cells<'a> {
    /// `array`'s cells; a text role takes numbers and booleans as their text (integers
    /// exactly, so that large ids stay distinct levels).
    fn of(array: &'a dyn Array, role: Role) -> Cells<'a> {
        if let Some(dictionary) = array.as_any_dictionary_opt() {
            // Each batch may carry its own dictionary: its values are read once, then looked up.
            let values = Cells::of(dictionary.values().as_ref(), role);
            let keys = dictionary.normalized_keys();
            if let Cells::Text(values) = values {
                // Rows keep their keys, which a text column maps to its codes once per key.
                let cells = values.iter().map(|v| v.as_deref().map_or(Cell::Missing, |v| text_cell(v, role))).collect();
                let keys = keys.iter().enumerate().map(|(i, &k)| (!dictionary.is_null(i)).then_some(k)).collect();
                return Cells::Dictionary { values, cells, keys };
            }
            return values.gather(&keys, |i| dictionary.is_null(i));
        }
        let as_text = role.is_text();
        let borrowed = |v: Option<&'a str>| v.map(Cow::Borrowed);
        match array.data_type() {
            DataType::Utf8 => Cells::Text(array.as_string::<i32>().iter().map(borrowed).collect()),
            DataType::LargeUtf8 => Cells::Text(array.as_string::<i64>().iter().map(borrowed).collect()),
            DataType::Utf8View => Cells::Text(array.as_string_view().iter().map(borrowed).collect()),
            DataType::Null => Cells::Numbers(vec![f32::NAN; array.len()]),
            DataType::Boolean if as_text => {
                let text = |b: Option<bool>| b.map(|b| Cow::Borrowed(if b { "true" } else { "false" }));
                Cells::Text(array.as_boolean().iter().map(text).collect())
            }
            DataType::Boolean => Cells::Booleans(array.as_boolean().iter().collect()),
            _ if as_text => Cells::Text(number_texts(array)),
            _ => Cells::Numbers(numbers(array)),
        }
    }

    /// The cells at `keys` (a dictionary's), missing where `null` says the key is.
    fn gather(&self, keys: &[usize], null: impl Fn(usize) -> bool) -> Cells<'a> {
        let at = |i: usize, k: usize| if null(i) { None } else { Some(k) };
        match self {
            Cells::Numbers(v) => Cells::Numbers(
                keys.iter()
                    .enumerate()
                    .map(|(i, &k)| at(i, k).and_then(|k| v.get(k).copied()).unwrap_or(f32::NAN))
                    .collect(),
            ),
            Cells::Booleans(v) => Cells::Booleans(
                keys.iter().enumerate().map(|(i, &k)| at(i, k).and_then(|k| v.get(k).copied().flatten())).collect(),
            ),
            Cells::Text(v) | Cells::Dictionary { values: v, .. } => Cells::Text(
                keys.iter().enumerate().map(|(i, &k)| at(i, k).and_then(|k| v.get(k).cloned().flatten())).collect(),
            ),
        }
    }

    /// Cell `i` of a column read as `role`.
    fn cell(&self, i: usize, role: Role) -> Cell {
        match self {
            Cells::Numbers(v) => v.get(i).copied().filter(|v| !v.is_nan()).map_or(Cell::Missing, Cell::Number),
            Cells::Booleans(v) => v.get(i).copied().flatten().map_or(Cell::Missing, Cell::Boolean),
            Cells::Text(v) => v.get(i).and_then(Option::as_deref).map_or(Cell::Missing, |v| text_cell(v, role)),
            Cells::Dictionary { cells, keys, .. } => {
                keys.get(i).copied().flatten().and_then(|k| cells.get(k)).copied().unwrap_or(Cell::Missing)
            }
        }
    }

    /// Cell `i` as text, trimmed as the CSV reader trims cells; `None` where it is null.
    fn text(&self, i: usize) -> Option<Cow<'_, str>> {
        self.text_as(i, Role::Text)
    }

    /// Cell `i` as text, as `role` reads it (trimmed, but a kept column's as it is); `None`
    /// where it is null.
    fn text_as(&self, i: usize, role: Role) -> Option<Cow<'_, str>> {
        match self {
            Cells::Numbers(v) => v.get(i).filter(|v| !v.is_nan()).map(|v| Cow::Owned(v.to_string())),
            Cells::Booleans(v) => v.get(i).copied().flatten().map(|b| Cow::Borrowed(if b { "true" } else { "false" })),
            Cells::Text(v) => v.get(i).and_then(Option::as_deref).map(|s| Cow::Borrowed(as_read(s, role))),
            Cells::Dictionary { values, keys, .. } => {
                let key = keys.get(i).copied().flatten()?;
                values.get(key).and_then(Option::as_deref).map(|s| Cow::Borrowed(as_read(s, role)))
            }
        }
    }
}

/// A string as `role` reads it: trimmed, as the CSV reader trims cells, but a kept column's
/// as it is.
fn as_read(text: &str, role: Role) -> &str {
    if role == Role::Verbatim {
        text
    } else {
        text.trim()
    }
}

/// A requested column being filled.
enum Buffer {
    Numbers(Vec<f32>),
    /// Text. `auto`: `Role::Auto` on a string column, kept as text until every row is in,
    /// then numbers when every value was a number (or every one a boolean word), as the CSV
    /// reader would type it. `keys`: a dictionary batch's code per key, [`MISSING`] until
    /// a row has it. `role`: how a value's text is read ([`as_read`]).
    Text {
        text: TextBuilder,
        auto: bool,
        keys: Vec<u32>,
        role: Role,
    },
}

impl Buffer {
    fn new(role: Role, data_type: &DataType) -> Buffer {
        let text = |auto| Buffer::Text { text: TextBuilder::default(), auto, keys: Vec::new(), role };
        match role {
            Role::Text | Role::Label | Role::FreeText | Role::Verbatim => text(false),
            Role::Auto if is_text(data_type) => text(true),
            _ => Buffer::Numbers(Vec::new()),
        }
    }

    /// Readies for a batch whose column is `cells`.
    fn start_batch(&mut self, cells: &Cells) {
        if let Buffer::Text { keys, .. } = self {
            keys.clear();
            if let Cells::Dictionary { values, .. } = cells {
                keys.resize(values.len(), MISSING);
            }
        }
    }

    /// Adds row `i` of `cells`, whose parsed cell is `cell`.
    fn push(&mut self, cell: &Cell, cells: &Cells, i: usize) {
        match self {
            Buffer::Numbers(values) => values.push(match cell {
                Cell::Number(v) => *v,
                Cell::Boolean(b) => f32::from(u8::from(*b)),
                Cell::Missing | Cell::Text => f32::NAN,
            }),
            Buffer::Text { text, .. } if *cell == Cell::Missing => text.push(None),
            Buffer::Text { text, keys, role, .. } => {
                // A dictionary's value is looked up once per batch, then its code reused.
                let key = match cells {
                    Cells::Dictionary { keys: rows, .. } => rows.get(i).copied().flatten().filter(|&k| k < keys.len()),
                    _ => None,
                };
                match key {
                    Some(k) if keys[k] != MISSING => text.push_code(keys[k]),
                    Some(k) => {
                        let code = cells.text_as(i, *role).map_or(MISSING, |v| text.intern(&v));
                        keys[k] = code;
                        text.push_code(code);
                    }
                    None => text.push(cells.text_as(i, *role).as_deref()),
                }
            }
        }
    }

    fn finish(self) -> Column {
        match self {
            Buffer::Numbers(values) => Column::Numbers(values.into()),
            Buffer::Text { text, auto: false, .. } => Column::Text(text.finish()),
            Buffer::Text { text, auto: true, .. } => {
                // Every distinct value is some row's: typing them types the column.
                let text = text.finish();
                let (mut numbers, mut booleans) = (false, false);
                for value in text.distinct() {
                    match text_cell(value, Role::Auto) {
                        Cell::Text => return Column::Text(text),
                        Cell::Number(_) => numbers = true,
                        Cell::Boolean(_) => booleans = true,
                        Cell::Missing => {}
                    }
                }
                if numbers && booleans {
                    return Column::Text(text);
                }
                let number = |value: &str| match text_cell(value, Role::Auto) {
                    Cell::Number(v) => v,
                    Cell::Boolean(b) => f32::from(u8::from(b)),
                    Cell::Missing | Cell::Text => f32::NAN,
                };
                Column::Numbers(text.map_rows(f32::NAN, number).into())
            }
        }
    }
}

fn primitive<T: ArrowPrimitiveType>(array: &dyn Array, f: impl Fn(T::Native) -> f32) -> Vec<f32> {
    array.as_primitive::<T>().iter().map(|v| v.map_or(f32::NAN, &f)).collect()
}

/// A numeric column's values as f32, NaN where null. Decimals go through their decimal text,
/// so that they round to f32 exactly as the same number written in a CSV file does.
fn numbers(array: &dyn Array) -> Vec<f32> {
    let decimal = |digits: String, scale: i8| decimal_text(&digits, scale).parse().unwrap_or(f32::NAN);
    match array.data_type() {
        DataType::Int8 => primitive::<Int8Type>(array, f32::from),
        DataType::Int16 => primitive::<Int16Type>(array, f32::from),
        DataType::Int32 => primitive::<Int32Type>(array, |v| v as f32),
        DataType::Int64 => primitive::<Int64Type>(array, |v| v as f32),
        DataType::UInt8 => primitive::<UInt8Type>(array, f32::from),
        DataType::UInt16 => primitive::<UInt16Type>(array, f32::from),
        DataType::UInt32 => primitive::<UInt32Type>(array, |v| v as f32),
        DataType::UInt64 => primitive::<UInt64Type>(array, |v| v as f32),
        DataType::Float16 => primitive::<Float16Type>(array, |v| v.to_f32()),
        DataType::Float32 => primitive::<Float32Type>(array, |v| v),
        DataType::Float64 => primitive::<Float64Type>(array, |v| v as f32),
        &DataType::Decimal32(_, s) => primitive::<Decimal32Type>(array, |v| decimal(v.to_string(), s)),
        &DataType::Decimal64(_, s) => primitive::<Decimal64Type>(array, |v| decimal(v.to_string(), s)),
        &DataType::Decimal128(_, s) => primitive::<Decimal128Type>(array, |v| decimal(v.to_string(), s)),
        &DataType::Decimal256(_, s) => primitive::<Decimal256Type>(array, |v| decimal(v.to_string(), s)),
        // Not reached: `unreadable` has turned every other type away.
        _ => vec![f32::NAN; array.len()],
    }
}

fn primitive_text<T: ArrowPrimitiveType>(
    array: &dyn Array,
    f: impl Fn(T::Native) -> String,
) -> Vec<Option<Cow<'_, str>>> {
    array.as_primitive::<T>().iter().map(|v| v.map(|v| Cow::Owned(f(v)))).collect()
}

/// A numeric column's values as text, for a text role (a categorical feature or a label).
fn number_texts(array: &dyn Array) -> Vec<Option<Cow<'_, str>>> {
    match array.data_type() {
        DataType::Int8 => primitive_text::<Int8Type>(array, |v| v.to_string()),
        DataType::Int16 => primitive_text::<Int16Type>(array, |v| v.to_string()),
        DataType::Int32 => primitive_text::<Int32Type>(array, |v| v.to_string()),
        DataType::Int64 => primitive_text::<Int64Type>(array, |v| v.to_string()),
        DataType::UInt8 => primitive_text::<UInt8Type>(array, |v| v.to_string()),
        DataType::UInt16 => primitive_text::<UInt16Type>(array, |v| v.to_string()),
        DataType::UInt32 => primitive_text::<UInt32Type>(array, |v| v.to_string()),
        DataType::UInt64 => primitive_text::<UInt64Type>(array, |v| v.to_string()),
        DataType::Float16 => primitive_text::<Float16Type>(array, |v| v.to_string()),
        DataType::Float32 => primitive_text::<Float32Type>(array, |v| v.to_string()),
        DataType::Float64 => primitive_text::<Float64Type>(array, |v| v.to_string()),
        &DataType::Decimal32(_, s) => primitive_text::<Decimal32Type>(array, |v| decimal_text(&v.to_string(), s)),
        &DataType::Decimal64(_, s) => primitive_text::<Decimal64Type>(array, |v| decimal_text(&v.to_string(), s)),
        &DataType::Decimal128(_, s) => primitive_text::<Decimal128Type>(array, |v| decimal_text(&v.to_string(), s)),
        &DataType::Decimal256(_, s) => primitive_text::<Decimal256Type>(array, |v| decimal_text(&v.to_string(), s)),
        // Not reached: `unreadable` has turned every other type away.
        _ => vec![None; array.len()],
    }
}

/// A decimal's unscaled integer `digits` (an optional `-`, then digits) with `scale` digits
/// after the point: `decimal_text("-1264", 2)` is `-12.64`; a negative scale appends zeros.
fn decimal_text(digits: &str, scale: i8) -> String {
    let (sign, digits) = digits.strip_prefix('-').map_or(("", digits), |d| ("-", d));
    if scale <= 0 {
        return format!("{sign}{digits}{}", "0".repeat(usize::from(scale.unsigned_abs())));
    }
    let scale = usize::from(scale.unsigned_abs());
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (whole, fraction) = padded.split_at(padded.len() - scale);
    format!("{sign}{whole}.{fraction}")
}

#[cfg(test)]
mod tests;
