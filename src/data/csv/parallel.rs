//! The parallel reader: the data rows of a CSV file without quotes, split into byte ranges
//! that begin and end at record boundaries and parsed on every core with the sequential
//! reader's cell rules ([`Role::parse`], [`judge`], [`Reading`]).
//!
//! Without quotes a record ends at the first CR or LF, so a range can be cut anywhere a line
//! ends. This reader only takes files it reads exactly as the csv crate does, and gives up
//! on anything else: a quote anywhere (a quoted field may hold a line break), bytes that are
//! not UTF-8, a row of the wrong length, a cell the missing policy rejects. The caller then
//! reads the file with the csv crate, which reports the first error in file order with its
//! row and line, so errors never depend on how the file was split.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::{judge, Column, Keep, Numbers, Reading, Role, TextBuilder};
use crate::cell::Cell;
use crate::config::Missing;

/// Bytes read at a time: small enough to stay in cache while parsed, large enough that
/// system calls cost nothing.
const BLOCK: usize = 1 << 20;
/// Below this a file is one range, read on the calling thread.
const MIN_CHUNK: u64 = 1 << 20;

/// What to read from each record.
pub struct Layout<'a> {
    pub delimiter: u8,
    /// Fields in every record (the header's).
    pub fields: usize,
    /// The fields kept, in the order asked for, and how each is read.
    pub at: &'a [usize],
    pub roles: &'a [Role],
    pub missing: Missing,
}

/// Threads to parse with: one per core.
pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The columns, the number of rows kept and the number dropped for a missing target
/// (`missing: mean`), reading the data from byte `start` in ranges of about `chunk` bytes
/// (`None`: a few per thread); `None` when the csv crate has to read the file (see the
/// module's doc).
pub fn read(path: &Path, start: u64, layout: &Layout, chunk: Option<u64>) -> Option<(Vec<Column>, usize, usize)> {
    if matches!(layout.delimiter, b'\n' | b'\r' | b'"') {
        return None;
    }
    let len = std::fs::metadata(path).ok()?.len();
    let threads = threads();
    let chunk = chunk.unwrap_or_else(|| (len.saturating_sub(start) / (4 * threads as u64)).max(MIN_CHUNK));
    let ranges = split(path, start, len, chunk)?;
    let stop = AtomicBool::new(false);
    let fresh = vec![Start::default(); layout.at.len()];
    let mut chunks = run(ranges.len(), threads, |i| parse_chunk(path, ranges[i], layout, &fresh, &stop))?;
    // A chunk was read as if no rows came before it. Where the rows before it change how an
    // `auto` column reads (it turned to text earlier), read it again knowing them.
    let mut state = fresh.clone();
    let mut again = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let before = state.clone();
        let mut redo = false;
        for (j, role) in layout.roles.iter().enumerate() {
            if *role == Role::Auto {
                redo |= !chunk.stats[j].advance(&mut state[j]);
            }
        }
        if redo {
            again.push((i, before));
        }
    }
    if !again.is_empty() {
        let redone = run(again.len(), threads, |k| parse_chunk(path, ranges[again[k].0], layout, &again[k].1, &stop))?;
        for ((i, _), chunk) in again.iter().zip(redone) {
            chunks[*i] = chunk;
        }
    }
    let rows: usize = chunks.iter().map(|c| c.rows).sum();
    let unlabelled: usize = chunks.iter().map(|c| c.unlabelled).sum();
    if rows == 0 {
        return None;
    }
    let columns = (0..layout.at.len()).map(|j| concatenate(&mut chunks, j, rows)).collect();
    Some((columns, rows, unlabelled))
}

/// Column `j` of every chunk, in file order, freeing each chunk's part once copied.
fn concatenate(chunks: &mut [Chunk], j: usize, rows: usize) -> Column {
    let text = chunks.iter().any(|c| c.readings[j].is_text());
    let parts = chunks.iter_mut().map(|c| std::mem::replace(&mut c.readings[j], Reading::Text(TextBuilder::default())));
    if text {
        let mut all: Option<TextBuilder> = None;
        for mut part in parts {
            // Rows before the column turned to text become the text that the sequential
            // reader makes of them then.
            part.to_text();
            let Reading::Text(part) = part else { continue };
            match &mut all {
                // The first part goes on as the column, each next one's values mapped to it.
                None => {
                    let mut first = part;
                    first.reserve(rows.saturating_sub(first.len()));
                    all = Some(first);
                }
                Some(all) => all.append(part),
            }
        }
        Column::Text(all.unwrap_or_default().finish())
    } else {
        // Kept in their parts, which the tensor is written from.
        let parts = parts.filter_map(|part| match part {
            Reading::Numbers { values, .. } => Some(values),
            Reading::Text(_) => None,
        });
        Column::Numbers(Numbers::from_parts(parts.collect()))
    }
}

/// Splits `[start, len)` into ranges of about `chunk` bytes, each ending just after a CR or
/// LF (or at the end of the file).
fn split(path: &Path, start: u64, len: u64, chunk: u64) -> Option<Vec<(u64, u64)>> {
    let mut file = File::open(path).ok()?;
    let mut ranges = Vec::new();
    let mut from = start;
    let mut window = vec![0u8; 1 << 16];
    while len - from > chunk.max(1) {
        // The first line end at or after the target ends this range.
        let mut at = from + chunk - 1;
        let end = loop {
            file.seek(SeekFrom::Start(at)).ok()?;
            let n = file.read(&mut window).ok()?;
            if n == 0 {
                break len;
            }
            if let Some(i) = memchr::memchr2(b'\n', b'\r', &window[..n]) {
                break at + i as u64 + 1;
            }
            at += n as u64;
        };
        ranges.push((from, end));
        from = end;
    }
    if from < len {
        ranges.push((from, len));
    }
    Some(ranges)
}

/// Runs `job` for 0..count on up to `threads` threads, taking the next index as each ends;
/// the results in index order, or `None` when any job gives up.
fn run<T: Send>(count: usize, threads: usize, job: impl Fn(usize) -> Option<T> + Sync) -> Option<Vec<T>> {
    if count <= 1 || threads <= 1 {
        return (0..count).map(&job).collect();
    }
    let next = AtomicUsize::new(0);
    let done: Vec<Vec<(usize, Option<T>)>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.min(count))
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count {
                            break done;
                        }
                        let result = job(i);
                        let failed = result.is_none();
                        done.push((i, result));
                        if failed {
                            break done;
                        }
                    }
                })
            })
            .collect();
        // A worker that panicked counts as giving up: the sequential reader runs instead.
        workers.into_iter().map(|w| w.join().unwrap_or_else(|_| vec![(0, None)])).collect()
    });
    let mut results: Vec<Option<T>> = (0..count).map(|_| None).collect();
    for (i, result) in done.into_iter().flatten() {
        results[i] = Some(result?);
    }
    results.into_iter().collect()
}

/// How an `auto` column stands where a chunk begins, as the rows before it left it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Start {
    numbers: bool,
    booleans: bool,
    text: bool,
}

/// Where, among a chunk's kept rows, an `auto` column first had a number and a boolean, and
/// where it turned to text when read as if it began the file.
#[derive(Debug, Clone, Copy, Default)]
struct Stats {
    first_number: Option<usize>,
    first_boolean: Option<usize>,
    to_text: Option<usize>,
}

impl Stats {
    /// Moves `state` past this chunk, and says whether the chunk as read (as if it began the
    /// file) is what reading it after the rows before would give.
    fn advance(&self, state: &mut Start) -> bool {
        let first_value = min(self.first_number, self.first_boolean);
        let right = if state.text {
            // Text from the start: right when nothing before its own switch was a number
            // or boolean (those were kept as numbers, not as the text they are).
            first_value.is_none_or(|v| self.to_text.is_some_and(|t| v >= t))
        } else {
            // It turns to text where it did alone, or at a number after booleans (or a
            // boolean after numbers) that came before it: right when that is the same row.
            let after_booleans = self.first_number.filter(|_| state.booleans);
            let after_numbers = self.first_boolean.filter(|_| state.numbers);
            let truly = min(self.to_text, min(after_booleans, after_numbers));
            state.text = truly.is_some();
            truly == self.to_text
        };
        state.numbers |= self.first_number.is_some();
        state.booleans |= self.first_boolean.is_some();
        right
    }
}

/// The smaller of two, where `None` is never.
fn min(a: Option<usize>, b: Option<usize>) -> Option<usize> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// One range's columns.
struct Chunk {
    readings: Vec<Reading>,
    /// Per column, for `auto` ones.
    stats: Vec<Stats>,
    rows: usize,
    /// Rows dropped for a missing target under `missing: mean`.
    unlabelled: usize,
}

/// Reads the records in `range` of the file, each column starting from `starts`.
fn parse_chunk(path: &Path, range: (u64, u64), layout: &Layout, starts: &[Start], stop: &AtomicBool) -> Option<Chunk> {
    let (from, to) = range;
    let mut file = File::open(path).ok()?;
    file.seek(SeekFrom::Start(from)).ok()?;
    let readings = layout
        .roles
        .iter()
        .zip(starts)
        .map(|(&role, start)| match role {
            Role::Auto if start.text => Reading::Text(TextBuilder::default()),
            Role::Auto => {
                Reading::Numbers { values: Vec::new(), numbers: start.numbers, booleans: start.booleans, auto: true }
            }
            role => Reading::new(role),
        })
        .collect();
    let mut chunk = Chunk { readings, stats: vec![Stats::default(); layout.at.len()], rows: 0, unlabelled: 0 };
    let mut left = usize::try_from(to - from).ok()?;
    let mut buf: Vec<u8> = Vec::with_capacity(BLOCK.min(left) + 4096);
    let mut fields: Vec<(usize, usize)> = Vec::with_capacity(layout.fields);
    let mut parsed = 0usize;
    let mut reserved = false;
    while left > 0 {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        let old = buf.len();
        let want = BLOCK.min(left);
        buf.resize(old + want, 0);
        file.read_exact(&mut buf[old..]).ok()?;
        left -= want;
        if memchr::memchr(b'"', &buf[old..]).is_some() {
            stop.store(true, Ordering::Relaxed);
            return None;
        }
        // Whole records only; the rest waits for the next block.
        let end = match left {
            0 => buf.len(),
            _ => match memchr::memrchr2(b'\n', b'\r', &buf[old..]) {
                Some(i) => old + i + 1,
                None => continue,
            },
        };
        let Some(text) = std::str::from_utf8(&buf[..end]).ok() else {
            stop.store(true, Ordering::Relaxed);
            return None;
        };
        if parse_records(text, layout, &mut chunk, &mut fields).is_none() {
            stop.store(true, Ordering::Relaxed);
            return None;
        }
        parsed += end;
        if !reserved && chunk.rows > 0 {
            // Room for the rows still to come, at the rate of the first block, so that
            // the columns do not grow by doubling (and hold up to twice their size).
            reserved = true;
            let expected = (to - from) as f64 / parsed as f64 * chunk.rows as f64 * 1.02;
            let more = (expected as usize).saturating_sub(chunk.rows) + 16;
            chunk.readings.iter_mut().for_each(|r| r.reserve(more));
        }
        buf.drain(..end);
    }
    Some(chunk)
}

/// Parses the whole records in `text` into `chunk`; `None` on anything the csv crate must
/// report (or read, for a row of the wrong length).
fn parse_records(text: &str, layout: &Layout, chunk: &mut Chunk, fields: &mut Vec<(usize, usize)>) -> Option<()> {
    let bytes = text.as_bytes();
    let mut cells: Vec<(Cell, &str)> = Vec::with_capacity(layout.at.len());
    let mut pos = 0;
    while pos < bytes.len() {
        let len = memchr::memchr2(b'\n', b'\r', &bytes[pos..]).unwrap_or(bytes.len() - pos);
        if len == 0 {
            // An empty line, or the LF of a CR LF: the csv crate skips those.
            pos += 1;
            continue;
        }
        let line = text.get(pos..pos + len)?;
        pos += len + 1;
        fields.clear();
        let mut field = 0;
        each_byte(line.as_bytes(), layout.delimiter, |i| {
            fields.push((field, i));
            field = i + 1;
        });
        fields.push((field, line.len()));
        if fields.len() != layout.fields {
            return None;
        }
        cells.clear();
        let mut keep = Keep::Row;
        for ((&col, &role), reading) in layout.at.iter().zip(layout.roles).zip(&chunk.readings) {
            let (a, b) = fields[col];
            let cell_text = role.text(line.get(a..b)?);
            let cell = role.parse(cell_text, reading.is_text() || role.is_text());
            match judge(&cell, role, layout.missing).ok()? {
                Keep::Row => {}
                k => keep = k,
            }
            cells.push((cell, cell_text));
        }
        if keep != Keep::Row {
            chunk.unlabelled += usize::from(keep == Keep::Unlabelled);
            continue;
        }
        let row = chunk.rows;
        for (((reading, stats), (cell, cell_text)), &role) in
            chunk.readings.iter_mut().zip(&mut chunk.stats).zip(&cells).zip(layout.roles)
        {
            if role != Role::Auto {
                reading.push(cell, cell_text);
                continue;
            }
            match cell {
                Cell::Number(_) => _ = stats.first_number.get_or_insert(row),
                Cell::Boolean(_) => _ = stats.first_boolean.get_or_insert(row),
                _ => {}
            }
            let was_text = reading.is_text();
            reading.push(cell, cell_text);
            if !was_text && reading.is_text() {
                stats.to_text = Some(row);
            }
        }
        chunk.rows += 1;
    }
    Some(())
}

/// Calls `found` with the index of each `byte` in `text`, in order, eight bytes at a time:
/// fields are short, and a search call per field (memchr's) costs more than the field.
pub(super) fn each_byte(text: &[u8], byte: u8, mut found: impl FnMut(usize)) {
    const LOW: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let pattern = u64::from_ne_bytes([byte; 8]);
    let mut words = text.chunks_exact(8);
    let mut base = 0;
    for word in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        let x = u64::from_le_bytes(bytes) ^ pattern;
        // The top bit of each byte of `x` that is zero, exactly: (b & 0x7f) + 0x7f carries
        // into the top bit unless b & 0x7f is zero, and never into the next byte.
        let mut zero = !(((x & LOW).wrapping_add(LOW)) | x) & !LOW;
        while zero != 0 {
            found(base + (zero.trailing_zeros() / 8) as usize);
            zero &= zero - 1;
        }
        base += 8;
    }
    for (i, &b) in words.remainder().iter().enumerate() {
        if b == byte {
            found(base + i);
        }
    }
}
