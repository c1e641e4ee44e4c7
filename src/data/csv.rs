//! CSV files, keeping only the columns asked for; errors name the file, the row, the line and
//! the column. A file without quotes is split at record boundaries and parsed on every core
//! ([`parallel`]); a file with quotes (whose fields may hold line breaks) is streamed through
//! the csv crate, which also reads the header and gives every error, so that both agree.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use tch::{Device, Kind, Tensor};

use super::numbers::Numbers;
use super::text::{Text, TextBuilder};
use super::Target;
use crate::config::Missing;

pub(super) mod header;
mod judge;
mod parallel;
mod table;
#[cfg(test)]
mod tests;

use crate::cell::{parse_cell, trim, Cell};
pub(super) use judge::{judge, Keep};
pub use judge::{CellError, Problem};
pub(super) use table::read_table;
pub use table::{read_labelled_csv, LabelledCsv};

/// How a requested column is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A training feature: numbers, unless a cell holds text, which makes the whole column
    /// categorical; a column of only true/false, yes/no or t/f is numbers 1/0.
    Auto,
    /// Numbers only (a model's numeric feature); missing cells NaN where the policy fills.
    Number,
    /// Text (a categorical feature); missing cells `None` where the policy keeps them.
    Text,
    /// A regression target: numbers, never filled.
    Target,
    /// A class label: text, never filled.
    Label,
    /// Free text (`data.text`): a missing cell is an empty text, whatever the policy.
    FreeText,
    /// A column copied into the output as the file holds it (`torchfit predict --keep`):
    /// every cell is its text, untrimmed, a missing marker (`NA`, empty) too; only a Parquet
    /// null is missing.
    Verbatim,
}

impl Role {
    /// Whether the column's present cells are all kept as text.
    pub fn is_text(self) -> bool {
        matches!(self, Role::Text | Role::Label | Role::FreeText | Role::Verbatim)
    }

    /// A CSV cell's text as this role reads it: trimmed, but a kept column's as it is.
    pub(crate) fn text(self, raw: &str) -> &str {
        if self == Role::Verbatim {
            raw
        } else {
            trim(raw)
        }
    }

    /// Parses a cell's text for this role ([`parse_cell`]); a kept column's every cell is
    /// text, whatever it says.
    pub(crate) fn parse(self, text: &str, as_text: bool) -> Cell {
        if self == Role::Verbatim {
            Cell::Text
        } else {
            parse_cell(text, as_text)
        }
    }
}

/// A column as read.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// Numbers (booleans as 1/0); NaN where a cell is missing.
    Numbers(Numbers),
    /// Text: distinct values and a code per row, [`super::text::MISSING`] where a cell is
    /// missing.
    Text(Text),
}

impl Column {
    pub fn len(&self) -> usize {
        match self {
            Column::Numbers(v) => v.len(),
            Column::Text(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The requested columns of a CSV file, in the order asked for.
pub struct CsvData {
    /// The header, or the names given for a file without one.
    pub header: Vec<String>,
    /// The requested columns' names and contents, in the order asked for.
    pub names: Vec<String>,
    pub columns: Vec<Column>,
    pub rows: usize,
    /// Rows dropped for a missing target or label under `missing: mean`.
    pub unlabelled: usize,
}

/// A column being read: numbers so far (and whether they were all booleans), or text.
enum Reading {
    /// `auto`: the column may still turn out to be text (a training feature).
    Numbers {
        values: Vec<f32>,
        numbers: bool,
        booleans: bool,
        auto: bool,
    },
    Text(TextBuilder),
}

impl Reading {
    fn new(role: Role) -> Reading {
        match role {
            Role::Text | Role::Label | Role::FreeText | Role::Verbatim => Reading::Text(TextBuilder::default()),
            role => Reading::Numbers { values: Vec::new(), numbers: false, booleans: false, auto: role == Role::Auto },
        }
    }

    fn reserve(&mut self, additional: usize) {
        match self {
            Reading::Numbers { values, .. } => values.reserve(additional),
            Reading::Text(values) => values.reserve(additional),
        }
    }

    fn is_text(&self) -> bool {
        matches!(self, Reading::Text(_))
    }

    /// The column as text from here on: numbers read so far become their decimal text
    /// (so `01` and `1` are one level), booleans `true`/`false`.
    fn to_text(&mut self) {
        if let Reading::Numbers { values, booleans, .. } = self {
            let mut text = TextBuilder::default();
            text.reserve(values.capacity());
            for v in values.iter() {
                match (v.is_nan(), *booleans) {
                    (true, _) => text.push(None),
                    (false, true) => text.push(Some(if *v != 0.0 { "true" } else { "false" })),
                    (false, false) => text.push(Some(&v.to_string())),
                }
            }
            *self = Reading::Text(text);
        }
    }

    /// Adds a cell; `text` is its text in the file, as its role reads it ([`Role::text`]).
    #[inline]
    fn push(&mut self, cell: &Cell, text: &str) {
        // Most cells: a number in a column of numbers, which no switch to text concerns.
        if let (Reading::Numbers { values, numbers, booleans: false, .. }, Cell::Number(v)) = (&mut *self, cell) {
            *numbers = true;
            values.push(*v);
            return;
        }
        if let Reading::Numbers { numbers, booleans, auto: true, .. } = self {
            let switch = match cell {
                Cell::Text => true,
                Cell::Number(_) => *booleans,
                Cell::Boolean(_) => *numbers,
                Cell::Missing => false,
            };
            if switch {
                self.to_text();
            }
        }
        match self {
            Reading::Numbers { values, numbers, booleans, .. } => match cell {
                Cell::Number(v) => {
                    *numbers = true;
                    values.push(*v);
                }
                Cell::Boolean(b) => {
                    *booleans = true;
                    values.push(f32::from(u8::from(*b)));
                }
                Cell::Missing | Cell::Text => values.push(f32::NAN),
            },
            Reading::Text(values) => values.push(match cell {
                Cell::Missing => None,
                _ => Some(text),
            }),
        }
    }

    fn finish(self) -> Column {
        match self {
            Reading::Numbers { values, .. } => Column::Numbers(values.into()),
            Reading::Text(values) => Column::Text(values.finish()),
        }
    }
}

/// Streams a CSV file with a header row, keeping only the requested columns; `choose` picks
/// them (with how to read each) once the header is known. Errors name the file, the row, the
/// line and the column.
pub fn read_csv(
    path: &Path,
    delimiter: u8,
    missing: Missing,
    choose: impl FnOnce(&[String]) -> Result<Vec<(String, Role)>>,
) -> Result<CsvData> {
    read_csv_rows(path, delimiter, missing, |first| Ok((choose(first)?, None)))
}

/// [`read_csv`], where `choose` sees the first row and may decide that it is data rather than
/// a header: it then returns names for the columns (for lookups and messages).
pub(super) fn read_csv_rows(
    path: &Path,
    delimiter: u8,
    missing: Missing,
    choose: impl FnOnce(&[String]) -> Result<(Vec<(String, Role)>, Option<Vec<String>>)>,
) -> Result<CsvData> {
    read_csv_split(path, delimiter, missing, choose, Split::Auto)
}

/// How [`read_csv_split`] splits a file for the parallel reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    /// A few ranges per core.
    Auto,
    /// Ranges of about this many bytes (tests: many ranges in a small file).
    #[cfg_attr(not(test), allow(dead_code))]
    Bytes(u64),
    /// Not at all: the csv crate reads the file (tests: what the parallel reader must match).
    #[cfg_attr(not(test), allow(dead_code))]
    Never,
}

fn read_csv_split(
    path: &Path,
    delimiter: u8,
    missing: Missing,
    choose: impl FnOnce(&[String]) -> Result<(Vec<(String, Role)>, Option<Vec<String>>)>,
    split: Split,
) -> Result<CsvData> {
    let file = path.display();
    let (mut reader, first) = open_csv(path, delimiter)?;
    let (wanted, names) = choose(&first)?;
    let first_is_data = names.is_some();
    let header = names.unwrap_or(first);
    let at = header::positions(&file.to_string(), "header", &header, wanted.iter().map(|(n, _)| n), Some(delimiter))?;
    let roles: Vec<Role> = wanted.iter().map(|(_, role)| *role).collect();
    let names = wanted.into_iter().map(|(name, _)| name).collect();
    // The data begin where the csv crate stopped reading the header (or at the top when the
    // first row is data); a CR LF's LF left there reads as an empty line, which is skipped.
    let data_start = if first_is_data { 0 } else { reader.position().byte() };
    let layout = parallel::Layout { delimiter, fields: header.len(), at: &at, roles: &roles, missing };
    let parallel = match split {
        Split::Auto => parallel::read(path, data_start, &layout, None),
        Split::Bytes(bytes) => parallel::read(path, data_start, &layout, Some(bytes)),
        Split::Never => None,
    };
    if let Some((columns, rows, unlabelled)) = parallel {
        return Ok(CsvData { header, names, columns, rows, unlabelled });
    }
    // Quotes, an error, or nothing to read: the csv crate reads the file, and says what is
    // wrong with it.
    let (columns, rows, unlabelled) = read_streamed(&mut reader, path, &header, &layout, first_is_data)?;
    Ok(CsvData { header, names, columns, rows, unlabelled })
}

/// Opens a CSV file and reads its first row, trimmed: the header, or data when names are given.
fn open_csv(path: &Path, delimiter: u8) -> Result<(csv::Reader<std::fs::File>, Vec<String>)> {
    let file = path.display();
    // No header as far as the csv crate knows: records() then yields the first row too,
    // and we skip it when it is the header.
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .delimiter(delimiter)
        .from_path(path)
        .with_context(|| format!("cannot read {file}"))?;
    let first: Vec<String> = reader
        .headers()
        .with_context(|| format!("{file}: cannot read the header row"))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    if first.iter().all(String::is_empty) {
        bail!("{file}: the file is empty; expected a header row, then one row per sample");
    }
    Ok((reader, first))
}

/// Reads the data rows through the csv crate: the columns, the rows kept, and the rows
/// dropped without a label.
fn read_streamed(
    reader: &mut csv::Reader<std::fs::File>,
    path: &Path,
    header: &[String],
    layout: &parallel::Layout,
    first_is_data: bool,
) -> Result<(Vec<Column>, usize, usize)> {
    let file = path.display();
    let mut columns: Vec<Reading> = layout.roles.iter().map(|role| Reading::new(*role)).collect();
    let (mut rows, mut unlabelled) = (0usize, 0usize);
    let mut record = csv::StringRecord::new();
    let mut cells: Vec<Cell> = Vec::with_capacity(layout.at.len());
    let mut row = 0usize;
    if !first_is_data {
        reader.read_record(&mut record).map_err(|e| anyhow!("{file}: {}", csv_error(&e)))?;
    }
    loop {
        let more =
            reader.read_record(&mut record).map_err(|e| anyhow!("{file}: row {}: {}", row + 1, csv_error(&e)))?;
        if !more {
            break;
        }
        row += 1;
        let start = record.position().map_or(0, |p| p.byte());
        // Only errors need the line, so it is counted only for them.
        let place = |col: usize| {
            format!("{file}: row {row} (line {}), column `{}`", line_at(path, start), header::clip(&header[col]))
        };
        let keep = judge_record(&record, &columns, layout, &mut cells, place)?;
        if keep != Keep::Row {
            unlabelled += usize::from(keep == Keep::Unlabelled);
            continue;
        }
        for (((reading, cell), &col), role) in columns.iter_mut().zip(&cells).zip(layout.at).zip(layout.roles) {
            reading.push(cell, role.text(record.get(col).unwrap_or("")));
        }
        rows += 1;
    }
    if rows == 0 {
        bail!("{file}: no data rows after the header");
    }
    Ok((columns.into_iter().map(Reading::finish).collect(), rows, unlabelled))
}

/// Parses a record's kept fields into `cells` and says whether the row is kept; the first bad
/// cell is an error at `place(column)`.
fn judge_record(
    record: &csv::StringRecord,
    columns: &[Reading],
    layout: &parallel::Layout,
    cells: &mut Vec<Cell>,
    place: impl Fn(usize) -> String,
) -> Result<Keep> {
    let mut keep = Keep::Row;
    cells.clear();
    for ((&col, &role), reading) in layout.at.iter().zip(layout.roles).zip(columns) {
        let text = role.text(record.get(col).unwrap_or(""));
        let cell = role.parse(text, reading.is_text() || role.is_text());
        match judge(&cell, role, layout.missing) {
            Ok(Keep::Row) => {}
            Ok(other) => keep = other,
            Err(problem) => {
                let text = text.to_string();
                return Err(CellError { place: place(col), problem, text, role, trained_regression: false }.into());
            }
        }
        cells.push(cell);
    }
    Ok(keep)
}

/// The line on which the CSV record that the reader began at byte `start` begins. The
/// reader's own `Position::line` is where it stood at `start`, which is before the LF of a
/// CRLF line end (csv counts that LF only as it reads the next record) and before any blank
/// lines it skips; so count the file's newlines, and those skipped, here.
fn line_at(path: &Path, start: u64) -> u64 {
    let Ok(mut file) = std::fs::File::open(path) else { return 0 };
    let (mut line, mut offset) = (1, 0u64);
    let mut chunk = [0u8; 1 << 16];
    while let Ok(n @ 1..) = std::io::Read::read(&mut file, &mut chunk) {
        for &byte in &chunk[..n] {
            if offset >= start && byte != b'\n' && byte != b'\r' {
                return line;
            }
            line += u64::from(byte == b'\n');
            offset += 1;
        }
    }
    line
}

fn csv_error(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("has {len} fields, the header has {expected_len}")
        }
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8 text".to_string(),
        _ => e.to_string(),
    }
}

/// `[rows, columns]` float32 from columns of `rows` values each, written straight into the
/// tensor's memory from the parts the columns were read in: one copy of the data, and no
/// second buffer of its size.
pub(super) fn column_matrix<C: Into<Numbers>>(columns: Vec<C>, rows: usize) -> Result<Tensor> {
    column_matrix_spare(columns, rows, 0)
}

/// [`column_matrix`] as the left of a `[rows, columns + spare]` matrix, whose other columns
/// are left for the categorical features' codes (`Preprocessing::apply_with_codes` writes
/// them there rather than into a copy).
pub(super) fn column_matrix_spare<C: Into<Numbers>>(columns: Vec<C>, rows: usize, spare: usize) -> Result<Tensor> {
    let mut columns: Vec<Numbers> = columns.into_iter().map(Into::into).collect();
    if let Some(column) = columns.iter().find(|c| c.len() != rows) {
        bail!("a column has {} values where {rows} were expected", column.len());
    }
    let width = columns.len();
    let stride = width + spare;
    let full = Tensor::f_empty([rows as i64, stride as i64], (Kind::Float, Device::Cpu))?;
    let out = if spare == 0 { full.shallow_clone() } else { full.f_narrow(1, 0, width as i64)? };
    if rows == 0 || width == 0 {
        return Ok(out);
    }
    // SAFETY: `full` was just allocated by libtorch as a contiguous float32 CPU tensor of
    // rows * stride elements, and nothing else refers to it while the slice lives (`out`,
    // a view of it, is only returned after).
    let data = unsafe { std::slice::from_raw_parts_mut(full.data_ptr().cast::<f32>(), rows * stride) };
    // A sixteenth of the rows at a time, after which the columns' parts wholly behind them
    // are freed: the matrix's memory becomes resident as the columns' goes back, so that
    // loading peaks near one copy of the table rather than two (a part is a range of the
    // file, a few per core).
    let segment = rows.div_ceil(16);
    for (s, rows_data) in data.chunks_mut(segment * stride).enumerate() {
        let start = s * segment;
        fill_rows(rows_data, stride, |first, block| {
            let first = start + first;
            for (j, column) in columns.iter().enumerate() {
                let mut block_rows = block.chunks_exact_mut(stride);
                // The values first in the zip: where a part ends, no row is taken and lost.
                for part in column.slices_from(first) {
                    let mut filled = 0;
                    for (&value, row) in part.iter().zip(&mut block_rows) {
                        row[j] = value;
                        filled += 1;
                    }
                    if filled < part.len() {
                        break;
                    }
                }
            }
        });
        let end = start + rows_data.len() / stride;
        let released: usize = columns.iter_mut().map(|column| column.release_before(end)).sum();
        if released > 0 {
            // The parts were allocated by the reader's threads, in glibc's per-thread
            // arenas, which keep freed memory: this gives it back to the system now.
            // SAFETY: malloc_trim only returns free memory; no pointer is involved.
            unsafe { libc::malloc_trim(0) };
        }
    }
    Ok(out)
}

/// Fills `data`, rows of `width` floats, by `fill(first row, rows)` on blocks of rows, the
/// blocks spread over every core: a block stays in cache while `fill` goes over it.
pub(super) fn fill_rows(data: &mut [f32], width: usize, fill: impl Fn(usize, &mut [f32]) + Sync) {
    const BLOCK: usize = 4096;
    if width == 0 || data.is_empty() {
        return;
    }
    let fill_part = |first_block: usize, part: &mut [f32]| {
        for (b, block) in part.chunks_mut(BLOCK * width).enumerate() {
            fill((first_block + b) * BLOCK, block);
        }
    };
    let blocks = (data.len() / width).div_ceil(BLOCK);
    let threads = parallel::threads().min(blocks);
    if threads <= 1 {
        fill_part(0, data);
        return;
    }
    let per_thread = blocks.div_ceil(threads);
    std::thread::scope(|scope| {
        for (t, part) in data.chunks_mut(per_thread * BLOCK * width).enumerate() {
            let fill_part = &fill_part;
            scope.spawn(move || fill_part(t * per_thread, part));
        }
    });
}

/// Maps label strings to class indices; labels sort numerically when they are all integers.
pub fn classes_from_labels(values: &[String]) -> Target {
    classes_from_text(&Text::from_values(values.iter().map(|v| Some(v.as_str()))))
}

/// [`classes_from_labels`] for a label column as read (a missing cell is the empty label).
pub fn classes_from_text(values: &Text) -> Target {
    let mut labels: Vec<String> = values.distinct().to_vec();
    if values.codes().contains(&super::text::MISSING) {
        labels.push(String::new());
    }
    labels.sort_unstable();
    labels.dedup();
    if labels.iter().all(|l| l.parse::<i64>().is_ok()) {
        labels.sort_by_key(|l| l.parse::<i64>().unwrap_or(0));
    }
    // A lookup per distinct value; rows only map codes.
    let class: HashMap<&str, i64> = labels.iter().enumerate().map(|(i, l)| (l.as_str(), i as i64)).collect();
    let index = values.map_rows(class.get("").copied().unwrap_or(0), |v| class.get(v).copied().unwrap_or(0));
    Target::Classes { index: Tensor::from_slice(&index), labels }
}
