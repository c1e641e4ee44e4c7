//! One cell of a table: a missing marker, a number, a boolean or text, parsed without
//! allocating (this runs for every cell of a file). The one rule for cells everywhere: the
//! CSV and Parquet readers, the config's look at a target column, prediction's header check
//! and the server's rows all parse through it, so they cannot disagree about what a cell is.

/// One cell, parsed; text stays in the record. The Parquet reader's string cells follow the
/// same rules.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Cell {
    Missing,
    Number(f32),
    Boolean(bool),
    Text,
}

/// Parses a trimmed cell. A column read as text keeps every present cell as text, so only the
/// missing markers are looked for there (the readers pass `as_text` for an `auto` column
/// that has turned to text too: what else a cell is no longer matters).
pub(crate) fn parse_cell(cell: &str, as_text: bool) -> Cell {
    if is_missing_marker(cell) {
        return Cell::Missing;
    }
    if as_text {
        return Cell::Text;
    }
    if let Some(v) = parse_f32(cell) {
        return Cell::Number(v);
    }
    let is = |word: &str| cell.eq_ignore_ascii_case(word);
    if is("true") || is("yes") || is("t") {
        Cell::Boolean(true)
    } else if is("false") || is("no") || is("f") {
        Cell::Boolean(false)
    } else {
        Cell::Text
    }
}

/// Whether a cell, trimmed, is one of the missing markers: empty, `NA`, `N/A`, `nan` (any
/// case).
pub fn is_missing(cell: &str) -> bool {
    is_missing_marker(trim(cell))
}

/// [`is_missing`] for a cell already trimmed: this runs for every cell of a file.
fn is_missing_marker(cell: &str) -> bool {
    cell.is_empty()
        || cell.eq_ignore_ascii_case("na")
        || cell.eq_ignore_ascii_case("n/a")
        || cell.eq_ignore_ascii_case("nan")
}

/// Powers of ten that an f32 holds exactly (5^10 < 2^24).
const EXACT_POWERS: [f32; 11] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10];

/// `cell.parse::<f32>()`, with a shortcut for the plain decimals that fill most CSV files:
/// with at most 2^24 as its digits and at most ten after the point, a decimal is the quotient
/// of two floats that are exact, and IEEE division rounds that quotient correctly, which is
/// what `parse` returns too. Everything else (exponents, long mantissas, inf) goes to `parse`.
pub(crate) fn parse_f32(cell: &str) -> Option<f32> {
    let bytes = cell.as_bytes();
    // The sign without a branch: half the numbers of a column may be negative, at random.
    let negative = bytes.first() == Some(&b'-');
    let digits = &bytes[usize::from(negative || bytes.first() == Some(&b'+'))..];
    // At most 19 digits, which a u64 holds.
    let (mut mantissa, mut i) = (0u64, 0);
    while i < digits.len().min(19) && digits[i].is_ascii_digit() {
        mantissa = mantissa * 10 + u64::from(digits[i] - b'0');
        i += 1;
    }
    let whole = i;
    if digits.get(i) == Some(&b'.') {
        i += 1;
        while i < digits.len().min(20) && digits[i].is_ascii_digit() {
            mantissa = mantissa * 10 + u64::from(digits[i] - b'0');
            i += 1;
        }
    }
    let decimals = i - whole - usize::from(i > whole);
    if i != digits.len() || whole + decimals == 0 || mantissa > 1 << 24 || decimals >= EXACT_POWERS.len() {
        // Past a sign, `parse` takes only digits, a point, inf or infinity and nan: text
        // such as category names is turned away without it.
        return match digits.first() {
            Some(b'0'..=b'9' | b'.' | b'i' | b'I' | b'n' | b'N') => cell.parse().ok(),
            _ => None,
        };
    }
    let value = mantissa as f32 / EXACT_POWERS[decimals];
    Some(f32::from_bits(value.to_bits() | (u32::from(negative) << 31)))
}

/// `cell.trim()`, at once when the cell begins and ends with visible ASCII, as most do.
pub(crate) fn trim(cell: &str) -> &str {
    match cell.as_bytes() {
        [first, .., last] if first.is_ascii_graphic() && last.is_ascii_graphic() => cell,
        [only] if only.is_ascii_graphic() => cell,
        _ => cell.trim(),
    }
}
