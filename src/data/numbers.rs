//! A column of numbers as read, held in the parts it was read in: the parallel CSV reader
//! fills one part per range of the file, and the tensor is written from the parts, so the
//! values are never copied into one vector on the way.

/// The values of a column, in order, across its parts.
#[derive(Debug, Clone, Default)]
pub struct Numbers {
    parts: Vec<Vec<f32>>,
    len: usize,
}

impl Numbers {
    /// A column whose values are `parts`, one after the other.
    pub fn from_parts(parts: Vec<Vec<f32>>) -> Numbers {
        let len = parts.iter().map(Vec::len).sum();
        Numbers { parts, len }
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

    /// The values from `first` on, a part (or its end) at a time.
    pub fn slices_from(&self, first: usize) -> impl Iterator<Item = &[f32]> + '_ {
        let mut skip = first;
        self.parts.iter().filter_map(move |part| {
            let from = skip.min(part.len());
            skip -= from;
            (from < part.len()).then(|| &part[from..])
        })
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
}
