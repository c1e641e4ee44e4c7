//! A column of numbers as read, held in the parts it was read in: the parallel CSV reader
//! fills one part per range of the file, and the tensor is written from the parts, so the
//! values are never copied into one vector on the way.

/// The values of a column, in order, across its parts.
#[derive(Debug, Clone, Default)]
pub struct Numbers {
    parts: Vec<Vec<f32>>,
    len: usize,
    /// Values at the front given back by [`Numbers::release_before`].
    released: usize,
}

impl Numbers {
    /// A column whose values are `parts`, one after the other.
    pub fn from_parts(parts: Vec<Vec<f32>>) -> Numbers {
        let len = parts.iter().map(Vec::len).sum();
        Numbers { parts, len, released: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = f32> + '_ {
        self.parts.iter().flatten().copied()
    }

    /// The values from `first` on (not before what was released), a part (or its end) at a
    /// time.
    pub fn slices_from(&self, first: usize) -> impl Iterator<Item = &[f32]> + '_ {
        debug_assert!(first >= self.released, "values before {} were released", self.released);
        let mut skip = first.saturating_sub(self.released);
        self.parts.iter().filter_map(move |part| {
            let from = skip.min(part.len());
            skip -= from;
            (from < part.len()).then(|| &part[from..])
        })
    }
}

impl Numbers {
    /// Frees the parts that hold only values before `row`, for a reader done with them: a
    /// table written from its columns a range of rows at a time then never holds both
    /// whole. Only `slices_from(row)` on is read after; `len` stays the column's length.
    /// Returns the number of values freed.
    pub fn release_before(&mut self, row: usize) -> usize {
        let mut end = self.released;
        let done = self.parts.iter().take_while(|part| {
            end += part.len();
            end <= row
        });
        let (count, values) = done.fold((0, 0), |(count, values), part| (count + 1, values + part.len()));
        self.parts.drain(..count);
        self.released += values;
        values
    }
}

impl From<Vec<f32>> for Numbers {
    fn from(values: Vec<f32>) -> Numbers {
        Numbers::from_parts(vec![values])
    }
}

/// Values compared as `Vec<f32>`s are (NaN unequal), wherever the parts split them.
impl PartialEq for Numbers {
    fn eq(&self, other: &Numbers) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_read_as_one_column() {
        let n = Numbers::from_parts(vec![vec![1.0, 2.0], Vec::new(), vec![3.0], vec![4.0, 5.0]]);
        assert_eq!((n.len(), n.iter().collect::<Vec<_>>()), (5, vec![1.0, 2.0, 3.0, 4.0, 5.0]));
        let from = |first| n.slices_from(first).collect::<Vec<_>>();
        assert_eq!(from(0), [&[1.0, 2.0][..], &[3.0], &[4.0, 5.0]]);
        assert_eq!(from(1), [&[2.0][..], &[3.0], &[4.0, 5.0]]);
        assert_eq!(from(2), [&[3.0][..], &[4.0, 5.0]]);
        assert_eq!(from(4), [&[5.0][..]]);
        assert!(from(5).is_empty() && from(9).is_empty());
        assert_eq!(n, Numbers::from(vec![1.0, 2.0, 3.0, 4.0, 5.0]));
    }

    #[test]
    fn released_parts_are_gone_and_the_rest_reads_as_before() {
        let mut n = Numbers::from_parts(vec![vec![1.0, 2.0], vec![3.0], vec![4.0, 5.0]]);
        assert_eq!(n.release_before(1), 0); // inside the first part: nothing whole is behind row 1
        assert_eq!(n.release_before(3), 3);
        assert_eq!((n.parts.len(), n.released, n.len()), (1, 3, 5));
        assert_eq!(n.slices_from(3).collect::<Vec<_>>(), [&[4.0, 5.0][..]]);
        assert_eq!(n.slices_from(4).collect::<Vec<_>>(), [&[5.0][..]]);
        n.release_before(5);
        assert!(n.parts.is_empty() && n.slices_from(5).next().is_none());
    }
}
