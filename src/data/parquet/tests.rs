//! Unit tests of the Parquet reader, on files written here with the arrow writer.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::types::{Int32Type, UInt16Type};
use arrow_array::{
    ArrayRef, BooleanArray, Decimal128Array, DictionaryArray, Float32Array, Float64Array, Int64Array, Int8Array,
    LargeStringArray, ListArray, StringArray, StringViewArray,
};

use super::*;
use crate::data::csv::read_csv;
use crate::data::{read_features, ColumnMatch, Format};
use crate::testing::write_parquet;

/// Every requested column with the given role.
fn roles<'a>(names: &'a [&str], role: Role) -> impl FnOnce(&[String]) -> Result<Vec<(String, Role)>> + 'a {
    move |_| Ok(names.iter().map(|n| (n.to_string(), role)).collect())
}

/// A numbers column with `None` for NaN (NaN != NaN would fail any comparison).
fn numbers(column: &Column) -> Vec<Option<f32>> {
    match column {
        Column::Numbers(v) => v.iter().map(|x| (!x.is_nan()).then_some(x)).collect(),
        Column::Text(t) => panic!("expected numbers, got text {t:?}"),
    }
}

fn text(column: &Column) -> Vec<Option<&str>> {
    match column {
        Column::Text(v) => v.iter().collect(),
        Column::Numbers(n) => panic!("expected text, got numbers {n:?}"),
    }
}

fn failure(read: Result<CsvData>) -> String {
    read.map(|_| ()).unwrap_err().to_string()
}

fn array(a: impl arrow_array::Array + 'static) -> ArrayRef {
    Arc::new(a)
}

fn tags(rows: usize) -> ArrayRef {
    let lists = (0..rows).map(|i| Some(vec![Some(i as i32)]));
    array(ListArray::from_iter_primitive::<Int32Type, _, _>(lists))
}

fn typed_table(dir: &Path) -> PathBuf {
    let path = dir.join("typed.parquet");
    let decimals = Decimal128Array::from(vec![Some(1264), Some(-5), None, Some(100)]).with_precision_and_scale(10, 2);
    let dictionary: DictionaryArray<Int32Type> = vec![Some("x"), Some("y"), None, Some("x")].into_iter().collect();
    let small_dictionary: DictionaryArray<UInt16Type> =
        vec![Some("7"), None, Some("8"), Some("7")].into_iter().collect();
    let columns = vec![
        ("i", array(Int64Array::from(vec![Some(1), None, Some(3), Some(16_777_217)]))),
        ("f", array(Float64Array::from(vec![0.5, 1.25, f64::NAN, -2.0]))),
        ("h", array(Float32Array::from(vec![Some(0.1), Some(0.2), Some(0.3), None]))),
        ("d", array(decimals.unwrap())),
        ("b", array(BooleanArray::from(vec![Some(true), Some(false), None, Some(true)]))),
        ("s", array(StringArray::from(vec![Some("a"), None, Some("NA"), Some(" b ")]))),
        ("n", array(StringArray::from(vec![Some("1"), Some(" 2.5"), None, Some("-3")]))),
        ("w", array(StringViewArray::from(vec![Some("yes"), Some("no"), Some("T"), None]))),
        ("k", array(dictionary)),
        ("kn", array(small_dictionary)),
        ("label", array(LargeStringArray::from(vec!["p", "q", "p", "q"]))),
        ("id", array(Int64Array::from(vec![16_777_217, 16_777_216, 3, 3]))),
        ("small", array(Int8Array::from(vec![-1, 0, 1, 2]))),
        ("tags", tags(4)),
    ];
    // Row groups of three rows: the last row comes from a second one.
    write_parquet(&path, columns, 3);
    path
}

#[test]
fn typed_columns_read_as_numbers_or_text_with_nulls_missing() {
    let dir = tempfile::tempdir().unwrap();
    let path = typed_table(dir.path());
    let wanted = |_: &[String]| {
        let auto = ["i", "f", "h", "d", "b", "s", "n", "w", "k", "kn"].map(|n| (n.to_string(), Role::Auto));
        let mut wanted = auto.to_vec();
        wanted.extend([("label".into(), Role::Label), ("id".into(), Role::Text), ("small".into(), Role::Number)]);
        Ok(wanted)
    };
    let data = read_parquet(&path, Missing::Mean, wanted).unwrap();
    // The file keeps the arrow types, so the reader's dictionary and view paths are the ones
    // tested here.
    let schema = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap().schema().clone();
    let type_of = |name: &str| schema.field_with_name(name).unwrap().data_type().clone();
    assert!(matches!(type_of("k"), DataType::Dictionary(..)) && type_of("w") == DataType::Utf8View);
    assert_eq!(data.rows, 4);
    assert_eq!(data.header.last().map(String::as_str), Some("tags"), "the header is the whole schema");
    assert_eq!(data.names[..3], ["i", "f", "h"]);
    let c = &data.columns;
    assert_eq!(numbers(&c[0]), [Some(1.0), None, Some(3.0), Some(16_777_216.0)]);
    assert_eq!(numbers(&c[1]), [Some(0.5), Some(1.25), None, Some(-2.0)], "NaN is missing, as `nan` in a CSV");
    assert_eq!(numbers(&c[2]), [Some(0.1), Some(0.2), Some(0.3), None]);
    assert_eq!(numbers(&c[3]), [Some(12.64), Some(-0.05), None, Some(1.0)]);
    assert_eq!(numbers(&c[4]), [Some(1.0), Some(0.0), None, Some(1.0)]);
    assert_eq!(text(&c[5]), [Some("a"), None, None, Some("b")], "NA is missing and cells are trimmed, as in a CSV");
    assert_eq!(numbers(&c[6]), [Some(1.0), Some(2.5), None, Some(-3.0)], "strings of numbers are numbers");
    assert_eq!(numbers(&c[7]), [Some(1.0), Some(0.0), Some(1.0), None], "boolean words are 1/0");
    assert_eq!(text(&c[8]), [Some("x"), Some("y"), None, Some("x")]);
    assert_eq!(numbers(&c[9]), [Some(7.0), None, Some(8.0), Some(7.0)], "a dictionary of number strings");
    assert_eq!(text(&c[10]), [Some("p"), Some("q"), Some("p"), Some("q")]);
    // As text, integers keep every digit: f32 would make the first two ids one level.
    assert_eq!(text(&c[11]), [Some("16777217"), Some("16777216"), Some("3"), Some("3")]);
    assert_eq!(numbers(&c[12]), [Some(-1.0), Some(0.0), Some(1.0), Some(2.0)]);
}

#[test]
fn kept_columns_are_every_value_as_text_untrimmed_with_nulls_missing() {
    let dir = tempfile::tempdir().unwrap();
    let path = typed_table(dir.path());
    let names = ["i", "f", "h", "d", "b", "s", "w", "k", "kn"];
    let data = read_parquet(&path, Missing::Error, roles(&names, Role::Verbatim)).unwrap();
    assert_eq!(data.rows, 4);
    let got: Vec<Vec<Option<&str>>> = data.columns.iter().map(text).collect();
    let want: [[Option<&str>; 4]; 9] = [
        [Some("1"), None, Some("3"), Some("16777217")],
        [Some("0.5"), Some("1.25"), Some("NaN"), Some("-2")],
        [Some("0.1"), Some("0.2"), Some("0.3"), None],
        [Some("12.64"), Some("-0.05"), None, Some("1.00")],
        [Some("true"), Some("false"), None, Some("true")],
        [Some("a"), None, Some("NA"), Some(" b ")],
        [Some("yes"), Some("no"), Some("T"), None],
        [Some("x"), Some("y"), None, Some("x")],
        [Some("7"), None, Some("8"), Some("7")],
    ];
    assert_eq!(got, want);
}

#[test]
fn missing_values_follow_the_policy_across_row_groups_and_batches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.parquet");
    // Several row groups and several reader batches; row 12346 lacks x, row 19000 lacks y.
    let rows = 20_000;
    let x: Vec<Option<i64>> = (0..rows).map(|i| (i != 12_345).then_some(i)).collect();
    let y: Vec<Option<f64>> = (0..rows).map(|i| (i != 18_999).then_some(i as f64 / 2.0)).collect();
    let label: Vec<Option<&str>> =
        (0..rows).map(|i| (i != 18_999).then_some(if i % 2 == 0 { "even" } else { "odd" })).collect();
    let columns = vec![
        ("x", array(Int64Array::from(x))),
        ("y", array(Float64Array::from(y))),
        ("label", array(StringArray::from(label))),
    ];
    write_parquet(&path, columns, 3000);
    let target = |_: &[String]| Ok(vec![("x".to_string(), Role::Auto), ("y".to_string(), Role::Target)]);
    let file = path.display();

    let err = failure(read_parquet(&path, Missing::Error, target));
    assert_eq!(err, format!("{file}: row 12346, column `x`: missing value; set data.missing to drop_row or mean"));
    // Under `mean` a row without a target is dropped and counted; its features are filled.
    let filled = read_parquet(&path, Missing::Mean, target).unwrap();
    assert_eq!((filled.rows, filled.unlabelled), (rows as usize - 1, 1));
    assert_eq!(numbers(&filled.columns[0])[12_345], None, "row 12346's x is left for the mean");
    let label = |_: &[String]| Ok(vec![("label".to_string(), Role::Label)]);
    let err = failure(read_parquet(&path, Missing::Error, label));
    assert!(err.starts_with(&format!("{file}: row 19000, column `label`: missing label")), "{err}");
    let labelled = read_parquet(&path, Missing::Mean, label).unwrap();
    assert_eq!((labelled.rows, labelled.unlabelled), (rows as usize - 1, 1));

    let kept = read_parquet(&path, Missing::DropRow, target).unwrap();
    assert_eq!(kept.rows, rows as usize - 2);
    let want: Vec<Option<f32>> = (0..rows).filter(|&i| i != 12_345 && i != 18_999).map(|i| Some(i as f32)).collect();
    assert_eq!(numbers(&kept.columns[0]), want, "rows in file order, the two gaps dropped");
    let filled = read_parquet(&path, Missing::Mean, |_| Ok(vec![("x".to_string(), Role::Auto)])).unwrap();
    assert_eq!((filled.rows, numbers(&filled.columns[0])[12_345]), (rows as usize, None));
}

#[test]
fn text_in_a_number_column_unreadable_columns_and_damaged_files_are_errors_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = d.join("t.parquet");
    let columns = vec![
        ("v", array(StringArray::from(vec!["1", "two", "3"]))),
        ("when", array(arrow_array::Date32Array::from(vec![1, 2, 3]))),
        ("tags", tags(3)),
    ];
    write_parquet(&path, columns, 10);
    let file = path.display();
    let err = |names: &[&str], role: Role| failure(read_parquet(&path, Missing::Error, roles(names, role)));
    assert_eq!(
        err(&["v"], Role::Target),
        format!("{file}: row 2, column `v`: \"two\" is not a number; if it is a class label, set task: classification")
    );
    assert_eq!(
        err(&["v", "tags"], Role::Auto),
        format!("{file}: column `tags` is a list; torchfit reads numeric, boolean and text columns")
    );
    assert!(err(&["when"], Role::Auto).contains("column `when` is a date or time"));
    assert_eq!(err(&["nope"], Role::Auto), format!("{file}: no column `nope` (columns: v, when, tags)"));
    // The list column is never decoded when it is not asked for.
    let v = read_parquet(&path, Missing::Error, roles(&["v"], Role::Text)).unwrap();
    assert_eq!(text(&v.columns[0]), [Some("1"), Some("two"), Some("3")]);

    let garbage = d.join("garbage.parquet");
    std::fs::write(&garbage, b"PAR1 this is not parquet PAR1").unwrap();
    let err = failure(read_parquet(&garbage, Missing::Error, roles(&["v"], Role::Auto)));
    assert!(err.starts_with(&format!("{}: not a readable Parquet file (", garbage.display())), "{err}");
    assert!(!err.contains('\n'), "{err}");
    // Cut short: the footer is gone.
    let bytes = std::fs::read(&path).unwrap();
    let cut = d.join("cut.parquet");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = failure(read_parquet(&cut, Missing::Error, roles(&["v"], Role::Auto)));
    assert!(err.starts_with(&format!("{}: not a readable Parquet file", cut.display())), "{err}");
    // A damaged page: the footer reads, the data does not.
    let mut bytes = bytes;
    bytes[4..12].fill(0xff);
    let damaged = d.join("damaged.parquet");
    std::fs::write(&damaged, &bytes).unwrap();
    let err = failure(read_parquet(&damaged, Missing::Error, roles(&["v"], Role::Auto)));
    assert!(err.starts_with(&format!("{}: cannot decode the rows from row 1 on (", damaged.display())), "{err}");
    let nowhere = d.join("nowhere.parquet");
    let err = failure(read_parquet(&nowhere, Missing::Error, roles(&["v"], Role::Auto)));
    assert!(err.starts_with(&format!("cannot read {}", nowhere.display())), "{err}");

    let empty = d.join("empty.parquet");
    write_parquet(&empty, vec![("v", array(Float64Array::from(Vec::<f64>::new())))], 10);
    let err = failure(read_parquet(&empty, Missing::Error, roles(&["v"], Role::Auto)));
    assert_eq!(err, format!("{}: no data rows", empty.display()));
}

#[test]
fn a_table_of_strings_reads_as_the_same_csv_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Numbers, numbers with gaps and markers, booleans, text with a missing marker, a mix of
    // numbers and booleans (text), and text that starts with a number-like cell.
    let rows = [
        ["1", "0.5", "yes", "a", "1", "x"],
        ["2", "", "no", "NA", "true", "1"],
        ["3", "n/a", "T", " b ", "2", "y"],
        ["-4", "1e3", "", "c", "", "NaN"],
    ];
    let names = ["a", "b", "c", "d", "e", "f"];
    let mut text = names.join(",") + "\n";
    for row in rows {
        text += &(row.join(",") + "\n");
    }
    let csv = d.join("t.csv");
    std::fs::write(&csv, text).unwrap();
    let columns = (0..names.len())
        .map(|c| (names[c], array(StringArray::from(rows.iter().map(|r| r[c]).collect::<Vec<_>>()))))
        .collect();
    let parquet = d.join("t.parquet");
    write_parquet(&parquet, columns, 2);
    for role in [Role::Auto, Role::Text] {
        let from_csv = read_csv(&csv, b',', Missing::Mean, roles(&names, role)).unwrap();
        let from_parquet = read_parquet(&parquet, Missing::Mean, roles(&names, role)).unwrap();
        for (c, (a, b)) in from_csv.columns.iter().zip(&from_parquet.columns).enumerate() {
            match (a, b) {
                (Column::Numbers(_), Column::Numbers(_)) => assert_eq!(numbers(a), numbers(b), "column {c}"),
                _ => assert_eq!(a, b, "column {c} ({role:?})"),
            }
        }
        assert_eq!((from_csv.header, from_csv.rows), (from_parquet.header, from_parquet.rows));
    }
    let auto = read_parquet(&parquet, Missing::Mean, roles(&names, Role::Auto)).unwrap();
    let kinds: Vec<bool> = auto.columns.iter().map(|c| matches!(c, Column::Numbers(_))).collect();
    assert_eq!(kinds, [true, true, true, false, false, false], "the test covers both outcomes");
}

#[test]
fn predict_inputs_match_by_name_or_position_and_the_extension_picks_the_format() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = d.join("new.parquet");
    let colour: DictionaryArray<Int32Type> = vec![Some("red"), None, Some("blue")].into_iter().collect();
    let columns = vec![
        ("y", array(Float64Array::from(vec![9.0, 9.0, 9.0]))),
        ("b", array(Float64Array::from(vec![Some(2.0), None, Some(6.0)]))),
        ("a", array(Int64Array::from(vec![1, 3, 5]))),
        ("colour", array(colour)),
    ];
    write_parquet(&path, columns, 2);
    let (x, text, matched) = read_features(&path, &["a".into(), "b".into()], &["colour".into()], &[], b';').unwrap();
    assert_eq!(matched, ColumnMatch::ByName);
    let x = Vec::<f32>::try_from(x.flatten(0, -1)).unwrap();
    assert!(x[3].is_nan() && x[..3] == [1.0, 2.0, 3.0] && x[4..] == [5.0, 6.0]);
    assert_eq!(text[0].values.iter().collect::<Vec<_>>(), [Some("red"), None, Some("blue")]);
    let err = read_features(&path, &["a".into(), "zz".into()], &[], &[], b',').unwrap_err().to_string();
    assert!(err.contains("no column `zz`"), "{err}");

    // Names that read as numbers are still names: a Parquet file always has its header.
    let numbered = d.join("numbered.PQ");
    write_parquet(
        &numbered,
        vec![("1", array(Float64Array::from(vec![4.0]))), ("2", array(Float64Array::from(vec![5.0])))],
        2,
    );
    let (x, _, matched) = read_features(&numbered, &["a".into(), "b".into()], &[], &[], b',').unwrap();
    assert_eq!((matched, Vec::<f32>::try_from(x.flatten(0, -1)).unwrap()), (ColumnMatch::ByPosition, vec![4.0, 5.0]));

    assert_eq!(Format::of(Path::new("x.parquet"), b';'), Format::Parquet);
    assert_eq!(Format::of(Path::new("dir.parquet/x.csv"), b';'), Format::Csv(b';'));
    assert_eq!(Format::of(Path::new("x"), b','), Format::Csv(b','));
}
