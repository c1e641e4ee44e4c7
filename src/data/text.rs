//! Text columns as read: each distinct value once, and a `u32` code per row. A table's text
//! columns hold few distinct values in many rows (categories, class labels), so a value is
//! hashed once per row while reading and stored once per column; everything after (levels,
//! level codes, class indices) works on the distinct values and maps codes.

use std::hash::BuildHasher;

use foldhash::fast::FixedState;
use hashbrown::HashTable;

/// A row's code where its cell is missing.
pub const MISSING: u32 = u32::MAX;

/// A column of text: its distinct values (in the order first met), and for each row the
/// index of its value among them, or [`MISSING`]. Every distinct value is some row's.
#[derive(Debug, Clone, Default)]
pub struct Text {
    distinct: Vec<String>,
    codes: Vec<u32>,
}

impl Text {
    /// A column from each row's value, `None` where missing.
    pub fn from_values<'a>(values: impl IntoIterator<Item = Option<&'a str>>) -> Text {
        let mut builder = TextBuilder::default();
        for value in values {
            builder.push(value);
        }
        builder.finish()
    }

    pub fn len(&self) -> usize {
        self.codes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }

    /// The distinct values, indexed by code.
    pub fn distinct(&self) -> &[String] {
        &self.distinct
    }

    /// Each row's code: an index into [`Text::distinct`], or [`MISSING`].
    pub fn codes(&self) -> &[u32] {
        &self.codes
    }

    /// Row `row`'s value; `None` where it is missing (or past the end).
    pub fn get(&self, row: usize) -> Option<&str> {
        self.codes.get(row).and_then(|&c| self.distinct.get(c as usize)).map(String::as_str)
    }

    /// Each row's value, `None` where missing.
    pub fn iter(&self) -> impl Iterator<Item = Option<&str>> + '_ {
        self.codes.iter().map(|&c| self.distinct.get(c as usize).map(String::as_str))
    }

    /// Per distinct value, how many of the rows `rows` hold it, and whether any is missing.
    pub fn counts(&self, rows: &[usize]) -> (Vec<usize>, bool) {
        let mut counts = vec![0usize; self.distinct.len()];
        let mut missing = false;
        for &row in rows {
            match self.codes.get(row) {
                Some(&MISSING) => missing = true,
                Some(&c) => counts[c as usize] += 1,
                None => {}
            }
        }
        (counts, missing)
    }

    /// `f` of each distinct value, then of each row by its code (`missing` where missing):
    /// a lookup per distinct value, not per row.
    pub fn map_rows<T: Copy>(&self, missing: T, f: impl FnMut(&str) -> T) -> Vec<T> {
        let per_value: Vec<T> = self.distinct.iter().map(String::as_str).map(f).collect();
        self.codes.iter().map(|&c| per_value.get(c as usize).copied().unwrap_or(missing)).collect()
    }

    /// The column with missing cells holding `fill` instead.
    pub fn fill_missing(self, fill: &str) -> Text {
        if !self.codes.contains(&MISSING) {
            return self;
        }
        let mut builder = TextBuilder::from_text(self);
        let code = builder.intern(fill);
        builder.text.codes.iter_mut().filter(|c| **c == MISSING).for_each(|c| *c = code);
        builder.finish()
    }
}

/// Rows compared by value: the codes depend on the order values were met in.
impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

/// A [`Text`] being read: the distinct values so far, found by hash.
#[derive(Default)]
pub struct TextBuilder {
    text: Text,
    /// The distinct values' keys, hashed by [`Key::hash`].
    index: HashTable<Key>,
    /// Fixed keys: the values come from the user's own file.
    hasher: FixedState,
}

/// A distinct value in the index: its length and first eight bytes, which settle whether a
/// value of up to eight bytes (most category names) is this one without reading the value
/// itself, and its code.
#[derive(Clone, Copy)]
struct Key {
    head: u64,
    len: u32,
    code: u32,
}

impl Key {
    /// `value`'s length and first eight bytes (zero after its end).
    fn head(value: &str) -> (u64, u32) {
        let bytes = value.as_bytes();
        let mut head = [0u8; 8];
        let n = bytes.len().min(8);
        head[..n].copy_from_slice(&bytes[..n]);
        // A length past u32 (a cell of gigabytes) counts as u32::MAX: still over eight, so
        // such values are compared whole.
        (u64::from_le_bytes(head), u32::try_from(bytes.len()).unwrap_or(u32::MAX))
    }

    /// A hash of `value`: its head and length mixed by a multiply when that is all of it,
    /// foldhash's otherwise.
    fn hash(hasher: &FixedState, value: &str, head: u64, len: u32) -> u64 {
        if len > 8 {
            return hasher.hash_one(value);
        }
        let mixed = u128::from(head ^ (u64::from(len) << 56)) * 0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835;
        (mixed as u64) ^ ((mixed >> 64) as u64)
    }

    fn is(&self, value: &str, head: u64, len: u32, distinct: &[String]) -> bool {
        self.head == head && self.len == len && (len <= 8 || distinct[self.code as usize] == value)
    }
}

impl TextBuilder {
    /// A builder that goes on from `text`.
    fn from_text(text: Text) -> TextBuilder {
        let mut builder = TextBuilder { text, index: HashTable::new(), hasher: FixedState::default() };
        let distinct = std::mem::take(&mut builder.text.distinct);
        for value in distinct {
            builder.intern_owned(value);
        }
        builder
    }

    pub fn len(&self) -> usize {
        self.text.len()
    }

    pub fn reserve(&mut self, additional: usize) {
        self.text.codes.reserve(additional);
    }

    /// Adds a row: `value`, or a missing cell.
    #[inline]
    pub fn push(&mut self, value: Option<&str>) {
        let code = match value {
            Some(value) => self.intern(value),
            None => MISSING,
        };
        self.text.codes.push(code);
    }

    /// Adds a row by a code that [`TextBuilder::intern`] gave (or [`MISSING`]).
    #[inline]
    pub fn push_code(&mut self, code: u32) {
        self.text.codes.push(code);
    }

    /// The code of `value`, added to the distinct values when new.
    #[inline]
    pub fn intern(&mut self, value: &str) -> u32 {
        let (head, len) = Key::head(value);
        let hash = Key::hash(&self.hasher, value, head, len);
        let distinct = &self.text.distinct;
        match self.index.find(hash, |k| k.is(value, head, len, distinct)) {
            Some(key) => key.code,
            None => self.add(hash, head, len, value.to_string()),
        }
    }

    /// [`TextBuilder::intern`] for a value the caller owns already.
    fn intern_owned(&mut self, value: String) -> u32 {
        let (head, len) = Key::head(&value);
        let hash = Key::hash(&self.hasher, &value, head, len);
        let distinct = &self.text.distinct;
        match self.index.find(hash, |k| k.is(&value, head, len, distinct)) {
            Some(key) => key.code,
            None => self.add(hash, head, len, value),
        }
    }

    /// Adds a value known to be new.
    fn add(&mut self, hash: u64, head: u64, len: u32, value: String) -> u32 {
        // Codes stop below MISSING: a column of four billion distinct values is not a table
        // torchfit trains on, and would not fit in memory as Strings anyway.
        let code = u32::try_from(self.text.distinct.len()).unwrap_or(MISSING - 1).min(MISSING - 1);
        self.text.distinct.push(value);
        let (hasher, distinct) = (&self.hasher, &self.text.distinct);
        let rehash = |k: &Key| Key::hash(hasher, &distinct[k.code as usize], k.head, k.len);
        self.index.insert_unique(hash, Key { head, len, code }, rehash);
        code
    }

    /// Appends the rows of `other` after these, its codes mapped to this column's.
    pub fn append(&mut self, other: TextBuilder) {
        let Text { distinct, codes } = other.text;
        let map: Vec<u32> = distinct.into_iter().map(|value| self.intern_owned(value)).collect();
        if map.iter().enumerate().all(|(i, &c)| c as usize == i) {
            self.text.codes.extend_from_slice(&codes);
        } else {
            self.text.codes.extend(codes.iter().map(|&c| map.get(c as usize).copied().unwrap_or(MISSING)));
        }
    }

    pub fn finish(self) -> Text {
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_stored_once_and_rows_keep_their_order() {
        let text = Text::from_values([Some("b"), None, Some("a"), Some("b")]);
        assert_eq!(text.distinct(), ["b", "a"]);
        assert_eq!(text.codes(), [0, MISSING, 1, 0]);
        assert_eq!(text.iter().collect::<Vec<_>>(), [Some("b"), None, Some("a"), Some("b")]);
        assert_eq!(text.counts(&[0, 1, 3]), (vec![2, 0], true));
        assert_eq!(text.map_rows(-1, |v| v.len() as i32 * 10), [10, -1, 10, 10]);
        let mut joined = TextBuilder::default();
        joined.push(Some("a"));
        let mut more = TextBuilder::default();
        more.push(Some("c"));
        more.push(None);
        more.push(Some("a"));
        joined.append(more);
        let joined = joined.finish();
        assert_eq!(joined.iter().collect::<Vec<_>>(), [Some("a"), Some("c"), None, Some("a")]);
        assert_eq!(joined.distinct(), ["a", "c"]);
        assert_eq!(joined, Text::from_values([Some("a"), Some("c"), None, Some("a")]));
        let filled = joined.fill_missing("");
        assert_eq!(filled.iter().collect::<Vec<_>>(), [Some("a"), Some("c"), Some(""), Some("a")]);
        assert_eq!(filled.distinct(), ["a", "c", ""]);
    }

    #[test]
    fn values_sharing_their_first_eight_bytes_stay_apart() {
        let values =
            ["abcdefgh", "abcdefghi", "abcdefghj", "", "\0", "abcdefgh", "abcdefghij", "abcdefghi", "Ünïcödé!"];
        let text = Text::from_values(values.iter().map(|v| Some(*v)));
        assert_eq!(text.distinct(), ["abcdefgh", "abcdefghi", "abcdefghj", "", "\0", "abcdefghij", "Ünïcödé!"]);
        assert_eq!(text.iter().collect::<Vec<_>>(), values.map(Some));
        // Many values: the index grows and rehashes.
        let many: Vec<String> = (0..5000).map(|i| format!("value {}", i % 3000)).collect();
        let text = Text::from_values(many.iter().map(|v| Some(v.as_str())));
        assert_eq!(text.distinct().len(), 3000);
        assert!(text.iter().zip(&many).all(|(a, b)| a == Some(b.as_str())));
    }
}
