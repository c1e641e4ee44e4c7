//! A table's header (a CSV file's first row, a Parquet file's schema): finding the requested
//! columns in it in time linear in its width, and naming columns in messages without echoing
//! a whole 40 000-column header or a 10 MB name back at the user.

use std::borrow::Cow;
use std::collections::HashMap;

use anyhow::{bail, Result};

/// Characters of a name (or a cell) that a message quotes; longer ones are cut.
const NAME_CHARS: usize = 60;
/// Names a message lists; the rest are counted.
const LIST_NAMES: usize = 12;

/// `text` as a message quotes it: whole when short, else its first characters and how long
/// it was.
pub fn clip(text: &str) -> Cow<'_, str> {
    match text.char_indices().nth(NAME_CHARS) {
        None => Cow::Borrowed(text),
        Some((end, _)) => Cow::Owned(format!("{}… ({} bytes)", &text[..end], text.len())),
    }
}

/// `a, b, c`: the first names of a list for a message, each clipped, and how many more.
pub fn list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.into_iter().collect();
    let shown: Vec<Cow<str>> = names.iter().take(LIST_NAMES).map(|n| clip(n)).collect();
    let mut out = shown.join(", ");
    if names.len() > LIST_NAMES {
        out.push_str(&format!(", … ({} more)", names.len() - LIST_NAMES));
    }
    out
}

/// The index in `header` of each of `wanted`, from one map of the header's names: a lookup
/// per column rather than a scan of the header per column. A name the header lacks, or has
/// twice, is an error naming `file` (`what` says whether the names are a "header" or a
/// "schema"); duplicate names that are not asked for do not matter.
pub fn positions<'a>(
    file: &str,
    what: &str,
    header: &[String],
    wanted: impl IntoIterator<Item = &'a String>,
    delimiter: Option<u8>,
) -> Result<Vec<usize>> {
    let index = index(header);
    wanted
        .into_iter()
        .map(|name| match index.get(name.as_str()) {
            Some(&Some(i)) => Ok(i),
            Some(None) => bail!("{file}: the {what} has more than one column `{}`", clip(name)),
            None => bail!(
                "{file}: no column `{}` (columns: {}){}",
                clip(name),
                list(header.iter().map(String::as_str)),
                delimiter.map(|d| delimiter_hint(header, d)).unwrap_or_default()
            ),
        })
        .collect()
}

/// Each name of `header` and its column, or `None` for a name it has more than once.
pub fn index(header: &[String]) -> HashMap<&str, Option<usize>> {
    let mut index: HashMap<&str, Option<usize>> = HashMap::with_capacity(header.len());
    for (i, name) in header.iter().enumerate() {
        index.entry(name.as_str()).and_modify(|at| *at = None).or_insert(Some(i));
    }
    index
}

/// A hint for a CSV header that came out as a single column holding another common
/// delimiter: the file is most likely split at that one, and `data.delimiter` says so.
/// Empty when nothing suggests it.
pub fn delimiter_hint(header: &[String], delimiter: u8) -> String {
    let [only] = header else { return String::new() };
    let candidates = [(b';', ";"), (b'\t', "\\t"), (b'|', "|"), (b',', ",")];
    match candidates.iter().find(|(c, _)| *c != delimiter && only.as_bytes().contains(c)) {
        Some((_, shown)) => format!(
            "; the header is one column, split at {:?}: if the file's fields are separated by \"{shown}\", set data.delimiter: \"{shown}\"",
            char::from(delimiter)
        ),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_and_lists_are_cut() {
        let long = "x".repeat(10_000_000);
        let clipped = clip(&long);
        assert!(clipped.len() < 100 && clipped.ends_with("(10000000 bytes)"), "{clipped}");
        assert_eq!(clip("short"), "short");
        let names: Vec<String> = (0..40_000).map(|i| format!("c{i}")).collect();
        let listed = list(names.iter().map(String::as_str));
        assert!(listed.starts_with("c0, c1, ") && listed.ends_with("(39988 more)"), "{listed}");
    }

    #[test]
    fn positions_find_columns_and_name_duplicates_and_absentees() {
        let header: Vec<String> = ["a", "b", "a", "c"].iter().map(|s| s.to_string()).collect();
        let want = |names: &[&str]| {
            let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
            positions("f.csv", "header", &header, &names, Some(b',')).map_err(|e| e.to_string())
        };
        assert_eq!(want(&["c", "b"]), Ok(vec![3, 1]));
        assert_eq!(want(&["a"]), Err("f.csv: the header has more than one column `a`".into()));
        assert_eq!(want(&["z"]), Err("f.csv: no column `z` (columns: a, b, a, c)".into()));
    }

    #[test]
    fn a_one_column_header_holding_semicolons_suggests_the_delimiter() {
        let hint = delimiter_hint(&["a;b;y".to_string()], b',');
        assert!(hint.contains("set data.delimiter: \";\""), "{hint}");
        assert_eq!(delimiter_hint(&["a".into(), "b;c".into()], b','), "");
        assert_eq!(delimiter_hint(&["abc".into()], b','), "");
    }
}
