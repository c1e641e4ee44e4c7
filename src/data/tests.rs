use std::path::Path;

use super::*;

pub(super) fn config(yaml: &str) -> Config {
    let mut c = Config::parse(yaml, "t.yaml", &[]).unwrap();
    c.resolve();
    c.validate().unwrap();
    c
}

#[test]
fn generators_fix_values_by_seed_and_linear_is_exactly_linear() {
    let _rng = crate::testing::seed(0);
    let cfg = config("data: {kind: linear, samples: 50, features: 4, targets: 2, noise: 0.0}\n");
    tch::manual_seed(3);
    let a = generate(&cfg.data).unwrap();
    tch::manual_seed(3);
    let b = generate(&cfg.data).unwrap();
    assert_eq!(a.x.size(), vec![50, 4]);
    assert!(a.x.equal(&b.x));
    let Target::Values(y) = &a.y else { panic!("regression") };
    assert_eq!(y.size(), vec![50, 2]);
    let w = a.x.linalg_lstsq(y, None::<f64>, "gelsd").0;
    let residual = (a.x.matmul(&w) - y).abs().max().double_value(&[]);
    assert!(residual < 1e-4, "residual {residual}");
}

#[test]
fn friedman1_follows_its_formula_and_moons_has_two_balanced_classes() {
    let _rng = crate::testing::seed(0);
    tch::manual_seed(0);
    let t = generate(&config("data: {kind: friedman1, samples: 20, features: 6, noise: 0.0}\n").data).unwrap();
    let (x, Target::Values(y)) = (&t.x, &t.y) else { panic!() };
    let row = Vec::<f32>::try_from(x.get(3)).unwrap();
    let want = 10.0 * (std::f32::consts::PI * row[0] * row[1]).sin()
        + 20.0 * (row[2] - 0.5).powi(2)
        + 10.0 * row[3]
        + 5.0 * row[4];
    assert!((y.double_value(&[3, 0]) as f32 - want).abs() < 1e-4);
    let m = generate(&config("data: {kind: moons, samples: 101}\n").data).unwrap();
    let Target::Classes { index, labels } = &m.y else { panic!() };
    assert_eq!(labels, &["0", "1"]);
    assert_eq!(index.sum(Kind::Int64).int64_value(&[]), 51);
    assert_eq!(m.x.size(), vec![101, 2]);
}

#[test]
fn split_is_seeded_disjoint_and_standardises_on_training_rows_only() {
    let _rng = crate::testing::seed(0);
    let cfg = config("seed: 5\ndata: {kind: linear, samples: 100, features: 3, validation_split: 0.2, test_split: 0.1, standardize: true, standardize_target: true}\n");
    tch::manual_seed(1);
    let p = prepare(generate(&cfg.data).unwrap(), &cfg).unwrap();
    assert_eq!((p.train.len(), p.validation.as_ref().unwrap().len(), p.test.as_ref().unwrap().len()), (70, 20, 10));
    let mut all: Vec<usize> = p.split.validation.iter().chain(&p.split.test).copied().collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 30);
    let mean = p.train.x.mean_dim(0, false, Kind::Float).abs().max().double_value(&[]);
    let std = p.train.x.std_dim(0, false, false);
    assert!(mean < 1e-5 && (std - 1.0).abs().max().double_value(&[]) < 1e-4);
    assert!(p.train.y.mean(Kind::Float).abs().double_value(&[]) < 1e-5);
    tch::manual_seed(1);
    let again = prepare(generate(&cfg.data).unwrap(), &cfg).unwrap();
    assert_eq!(again.split.test, p.split.test);
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn csv_config(path: &Path, extra: &str) -> Config {
    config(&format!("data: {{kind: csv, path: {}, target: y{extra}}}\n", path.display()))
}

#[test]
fn csv_missing_values_follow_the_policy() {
    let _rng = crate::testing::seed(0);
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "m.csv", "a,b,y\n1,,3\n2,4,5\nNA,6,7\n");
    let err = load(&csv_config(&path, "")).err().unwrap().to_string();
    assert!(err.contains("m.csv: row 1 (line 2), column `b`: missing value"), "{err}");
    let dropped = load(&csv_config(&path, ", missing: drop_row")).unwrap();
    assert_eq!(dropped.train.len(), 1);
    let filled = load(&csv_config(&path, ", missing: mean, standardize: false")).unwrap();
    assert_eq!(filled.preprocessing.input_fill, Some(vec![1.5, 5.0]));
    assert_eq!(Vec::<f32>::try_from(filled.train.x.flatten(0, 1)).unwrap(), vec![1.0, 5.0, 2.0, 4.0, 1.5, 6.0]);
}

#[test]
fn csv_labels_become_sorted_classes() {
    let _rng = crate::testing::seed(0);
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "c.csv", "a,y\n1,cat\n2,dog\n3,cat\n4,ant\n");
    let cfg = config(&format!("task: classification\ndata: {{kind: csv, path: {}, target: y}}\n", path.display()));
    let p = load(&cfg).unwrap();
    assert_eq!(p.preprocessing.labels.as_deref(), Some(&["ant".to_string(), "cat".into(), "dog".into()][..]));
    assert_eq!(Vec::<i64>::try_from(&p.train.y).unwrap(), vec![1, 2, 1, 0]);
    let numeric = classes_from_labels(&["10".into(), "9".into(), "10".into()]);
    let Target::Classes { labels, .. } = numeric else { panic!() };
    assert_eq!(labels, ["9", "10"]);
}

#[test]
fn csv_errors_name_file_row_and_column() {
    let _rng = crate::testing::seed(0);
    let dir = tempfile::tempdir().unwrap();
    // Text in a feature makes it categorical; in a regression target it is an error.
    let bad = write(dir.path(), "bad.csv", "a,y\n1,2\n3,x\n");
    let regression =
        |path: &Path| config(&format!("task: regression\ndata: {{kind: csv, path: {}, target: y}}\n", path.display()));
    let err = load(&regression(&bad)).err().unwrap().to_string();
    assert!(err.contains("bad.csv: row 2 (line 3), column `y`: \"x\" is not a number; if it is a class label, set task: classification"), "{err}");
    let ragged = write(dir.path(), "ragged.csv", "a,y\n1,2\n3\n");
    assert!(load(&csv_config(&ragged, ""))
        .err()
        .unwrap()
        .to_string()
        .contains("row 2: has 1 fields, the header has 2"));
    let no_target = write(dir.path(), "nt.csv", "a,b\n1,2\n");
    assert!(load(&csv_config(&no_target, "")).err().unwrap().to_string().contains("data.target: no column `y`"));
}

#[test]
fn read_features_picks_columns_by_name_and_npy_must_be_2d() {
    let _rng = crate::testing::seed(0);
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "x.csv", "y,b,a\n9,2,1\n9,4,3\n");
    let names = ["a".to_string(), "b".to_string()];
    let (x, _, matched) = read_features(&path, &names, &[], &[], b',').unwrap();
    assert_eq!(Vec::<f32>::try_from(x.flatten(0, 1)).unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
    assert_eq!(matched, ColumnMatch::ByName);
    let npy = dir.path().join("x.npy");
    Tensor::from_slice(&[1.0f32, 2.0, 3.0]).write_npy(&npy).unwrap();
    assert!(read_features(&npy, &names, &[], &[], b',').unwrap_err().to_string().contains("expected a 2-D array"));
}

#[test]
fn read_features_takes_columns_in_order_only_when_no_name_matches() {
    let _rng = crate::testing::seed(0);
    let dir = tempfile::tempdir().unwrap();
    let names = ["a".to_string(), "b".to_string(), "c".to_string()];
    let values = |path: &Path| {
        let (x, _, matched) = read_features(path, &names, &[], &[], b';').unwrap();
        (Vec::<f32>::try_from(x.flatten(0, 1)).unwrap(), matched)
    };
    // No header: the first row is data, not lost.
    let bare = write(dir.path(), "bare.csv", "1;2;3\n4;;6\n");
    let (x, matched) = values(&bare);
    assert_eq!((x.len(), x[0], x[5], matched), (6, 1.0, 6.0, ColumnMatch::NoHeader));
    assert!(x[4].is_nan());
    let other = write(dir.path(), "other.csv", "p;q;r\n1;2;3\n");
    assert_eq!(values(&other), (vec![1.0, 2.0, 3.0], ColumnMatch::ByPosition));
    // Some names but not all: an error naming the absent ones, not a silent fallback.
    let partial = write(dir.path(), "partial.csv", "a;x_c;y\n1;2;3\n");
    let err = read_features(&partial, &names, &[], &[], b';').unwrap_err().to_string();
    assert!(err.contains("partial.csv: no column `b` or `c` (the model's features are a, b, c)"), "{err}");
    // A name the header repeats is ambiguous, not the first of them.
    let twice = write(dir.path(), "twice.csv", "a;b;c;a\n1;2;3;4\n");
    let err = read_features(&twice, &names, &[], &[], b';').unwrap_err().to_string();
    assert!(err.contains("twice.csv: the header has more than one column `a`"), "{err}");
    // A headerless row that is not all numbers further down names the column by feature.
    let text = write(dir.path(), "text.csv", "1;2;3\n4;x;6\n");
    let err = read_features(&text, &names, &[], &[], b';').unwrap_err().to_string();
    assert!(err.contains("text.csv: row 2 (line 2), column `b`: \"x\" is not a number"), "{err}");
}

#[test]
fn crlf_files_report_the_lines_that_editors_show() {
    let _rng = crate::testing::seed(0);
    let dir = tempfile::tempdir().unwrap();
    for (name, newline) in [("lf.csv", "\n"), ("crlf.csv", "\r\n")] {
        let text = ["a,y", "1,2", "", "3,x", ""].join(newline);
        let path = write(dir.path(), name, &text);
        let cfg = config(&format!("task: regression\ndata: {{kind: csv, path: {}, target: y}}\n", path.display()));
        let err = load(&cfg).err().unwrap().to_string();
        assert!(err.contains(&format!("{name}: row 2 (line 4), column `y`: \"x\" is not a number")), "{err}");
        let bare = write(dir.path(), name, &["1,2", "3,x", ""].join(newline));
        let err = read_features(&bare, &["a".into(), "b".into()], &[], &[], b',').unwrap_err().to_string();
        assert!(err.contains(&format!("{name}: row 2 (line 2), column `b`")), "{err}");
    }
}

#[test]
fn categorical_levels_count_only_training_rows() {
    let values = Text::from_values([Some("b"), Some("a"), None, Some("z"), Some("b"), Some("a"), Some("b")]);
    // Rows 2 (missing) and 3 (`z`) are outside the training part.
    let train = [0, 1, 4, 5, 6];
    let f = CategoricalFeature::fit("c", &values, &train, 1, None);
    assert_eq!(f.levels, ["a", "b", "(other)"]);
    assert_eq!((f.other, f.missing), (2, None));
    assert_eq!(f.codes(&values), [1.0, 0.0, 2.0, 2.0, 1.0, 0.0, 1.0]);
    let rare = CategoricalFeature::fit("c", &values, &[0, 1, 2, 3, 4, 6], 2, None);
    assert_eq!(rare.levels, ["b", "(other)", "(missing)"]);
    assert_eq!(rare.codes(&values), [0.0, 1.0, 2.0, 1.0, 0.0, 1.0, 0.0]);
    let numbers = Text::from_values([Some("10"), Some("9"), Some("-1.5")]);
    assert_eq!(CategoricalFeature::fit("n", &numbers, &[0, 1, 2], 1, None).levels, ["-1.5", "9", "10", "(other)"]);
}

#[test]
fn codes_written_with_the_standardised_features_match_the_long_way() {
    let _rng = crate::testing::seed(3);
    let rows = 10_000;
    let x = Tensor::randn([rows, 3], (Kind::Float, Device::Cpu)) * 5.0 + 2.0;
    let _ = x.get(7).get(1).fill_(f64::NAN);
    let words = ["a", "b", "c", "d"];
    let text = Text::from_values((0..rows as usize).map(|r| (r % 7 != 0).then_some(words[r % 4])));
    let other = Text::from_values((0..rows as usize).map(|r| Some(words[(r / 3) % 4])));
    let mut pre = Preprocessing {
        feature_names: vec!["x0".into(), "x1".into(), "x2".into()],
        target_names: vec!["y".into()],
        input_mean: vec![1.0, -2.0, 0.5],
        input_std: vec![3.0, 0.7, 1.0],
        input_fill: Some(vec![0.1, 0.2, 0.3]),
        target_mean: vec![0.0],
        target_std: vec![1.0],
        labels: None,
        categorical: vec![
            CategoricalFeature::fit("t", &text, &(0..5000).collect::<Vec<_>>(), 1, None),
            CategoricalFeature::fit("o", &other, &(0..3).collect::<Vec<_>>(), 1, None),
        ],
        input: None,
        numeric_bins: None,
        text: None,
    };
    let columns = [&text, &other];
    let bits =
        |t: &Tensor| Vec::<f32>::try_from(t.flatten(0, 1)).unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    for identity in [false, true] {
        if identity {
            (pre.input_mean, pre.input_std) = (vec![0.0; 3], vec![1.0; 3]);
        }
        let fast = pre.apply_with_codes(x.copy(), &columns).unwrap();
        let slow = pre.apply_then_codes(x.copy(), &columns).unwrap();
        assert_eq!(fast.size(), [rows, 5]);
        assert!(bits(&fast) == bits(&slow), "identity {identity}");
        // The left of a matrix with a column to spare per text column: filled in place.
        let spare = csv::column_matrix_spare(
            (0..3).map(|j| Vec::<f32>::try_from(x.select(1, j)).unwrap()).collect::<Vec<_>>(),
            rows as usize,
            2,
        )
        .unwrap();
        assert_eq!((spare.size(), spare.stride()), (vec![rows, 3], vec![5, 1]));
        let at = spare.data_ptr();
        let in_place = pre.apply_with_codes(spare, &columns).unwrap();
        assert_eq!(in_place.data_ptr(), at);
        assert!(bits(&in_place) == bits(&slow), "identity {identity}, in place");
    }
    // Statistics of the left of a wider matrix are those of the same values alone.
    let spare = csv::column_matrix_spare(
        (0..3).map(|j| Vec::<f32>::try_from(x.select(1, j).nan_to_num(0.0, None, None)).unwrap()).collect::<Vec<_>>(),
        rows as usize,
        2,
    )
    .unwrap();
    let alone = preprocessing::column_mean_std(&spare.contiguous()).unwrap();
    assert_eq!(preprocessing::column_mean_std(&spare).unwrap(), alone);
    // Nothing to fill a missing value with: the error `apply` gives.
    pre.input_fill = None;
    let err = pre.apply_with_codes(x.copy(), &columns).unwrap_err().to_string();
    assert!(err.contains("row 8 column `x1` is missing"), "{err}");
    let raw = (0..3).map(|j| Vec::<f32>::try_from(x.select(1, j)).unwrap()).collect::<Vec<_>>();
    let err = pre.apply_with_codes(csv::column_matrix_spare(raw, rows as usize, 2).unwrap(), &columns).unwrap_err();
    assert!(err.to_string().contains("row 8 column `x1` is missing"), "{err}");
}

/// The bytes of a version-1.0 .npy file with this header dict and data.
pub(super) fn npy_bytes(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut header = dict.to_string();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(data);
    bytes
}

#[test]
fn npy_data_must_be_exactly_the_size_the_header_gives() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let write = |name: &str, dict: &str, data: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, npy_bytes(dict, data)).unwrap();
        path
    };
    let c_order = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    let x = npy::read_npy("input", &write("ok.npy", c_order, &data)).unwrap();
    assert_eq!(Vec::<f32>::try_from(x.flatten(0, -1)).unwrap(), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    let short = write("short.npy", c_order, &data[..20]);
    let err = npy::read_npy("input", &short).unwrap_err().to_string();
    assert!(err.contains("short.npy: cannot read as .npy: truncated: expected 152 bytes"), "{err}");
    assert!(err.contains("128 of header, then 24 of data for shape [2, 3] of float32), the file has 148"), "{err}");
    let long = write("long.npy", c_order, &[data.as_slice(), &[0; 4]].concat());
    let err = npy::read_npy("input", &long).unwrap_err().to_string();
    assert!(err.contains("extra bytes after the array: expected 152 bytes"), "{err}");
    // Column-major data comes out in the same rows and columns.
    let fortran = write("f.npy", "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", &data);
    let x = npy::read_npy("input", &fortran).unwrap();
    assert_eq!(Vec::<f32>::try_from(x.flatten(0, -1)).unwrap(), [0.0, 2.0, 4.0, 1.0, 3.0, 5.0]);
    let big = write("big.npy", "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", &data);
    let err = npy::read_npy("input", &big).unwrap_err().to_string();
    assert!(err.contains("big-endian"), "{err}");
    let huge =
        write("huge.npy", "{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904, 8), }", &data);
    let err = npy::read_npy("input", &huge).unwrap_err().to_string();
    assert!(err.contains("too large"), "{err}");
}

#[test]
fn an_npz_array_is_checked_like_an_npy_file_and_infinite_values_are_refused() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("xy.npz");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let stored = zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let x: Vec<u8> = [1.0f32, f32::INFINITY, 2.0, 3.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    zip.start_file("x.npy", stored).unwrap();
    zip.write_all(&npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", &x)).unwrap();
    zip.start_file("y.npy", stored).unwrap();
    zip.write_all(&npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", &x[..8])).unwrap();
    zip.finish().unwrap();
    let npz = |extra: &str| config(&format!("data: {{kind: npy, path: {}{extra}}}\n", path.display()));
    let err = load(&npz("")).err().unwrap().to_string();
    assert!(err.contains("xy.npz: cannot read as .npz: y.npy: truncated: expected 144 bytes"), "{err}");
    // Mend y: x's infinity is then the error, named by row and column.
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    zip.start_file("x.npy", stored).unwrap();
    zip.write_all(&npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", &x)).unwrap();
    zip.start_file("y.npy", stored).unwrap();
    zip.write_all(&npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", &x[..8])).unwrap();
    zip.finish().unwrap();
    let err = load(&npz("")).err().unwrap().to_string();
    assert!(err.contains("xy.npz: x: row 1, column 2 (x1): inf is not a finite number"), "{err}");
}

#[test]
fn embedding_width_rule_and_one_hot_threshold() {
    use super::categorical::{default_encoding, embedding_width, ONE_HOT_MAX_LEVELS};
    // min(50, (levels + 1) / 2), at least 1.
    let widths: Vec<usize> = [1, 2, 3, 9, 51, 99, 100, 101, 3728, 5000].iter().map(|&l| embedding_width(l)).collect();
    assert_eq!(widths, [1, 1, 2, 5, 26, 50, 50, 50, 50, 50]);
    assert_eq!(ONE_HOT_MAX_LEVELS, 50);
    // One-hot up to 50 levels, embedded above, at the rule's width.
    assert_eq!(default_encoding(1), None);
    assert_eq!(default_encoding(50), None);
    assert_eq!(default_encoding(51), Some(26));
    assert_eq!(default_encoding(3002), Some(50));
}

#[test]
fn unset_encoding_embeds_columns_over_the_threshold_and_explicit_settings_win() {
    use crate::config::{CategoricalEncoding, ColumnEncoding, Encoding};
    // `n` distinct values in 2n training rows, each seen twice.
    let column = |n: usize| {
        let values: Vec<String> = (0..2 * n).map(|r| format!("v{}", r % n)).collect();
        Text::from_values(values.iter().map(|v| Some(v.as_str())))
    };
    let fit = |n: usize, encoding: Option<&CategoricalEncoding>| {
        CategoricalFeature::fit("c", &column(n), &(0..2 * n).collect::<Vec<_>>(), 1, encoding)
    };
    // 49 values + (other) = 50 levels: one-hot; 50 + (other) = 51: embedded, width 26.
    assert_eq!((fit(49, None).levels.len(), fit(49, None).embedding), (50, None));
    assert_eq!((fit(50, None).levels.len(), fit(50, None).embedding), (51, Some(26)));
    let many = fit(3000, None);
    assert_eq!((many.levels.len(), many.embedding), (3001, Some(50)));
    // A min_frequency that folds rare values counts the levels left: 3000 values seen twice
    // and min_frequency 3 leave (other) alone, one-hot.
    let folded = CategoricalFeature::fit("c", &column(3000), &(0..6000).collect::<Vec<_>>(), 3, None);
    assert_eq!((folded.levels.len(), folded.embedding), (1, None));

    // Explicit settings are kept as they are, whatever the number of levels.
    let one_hot = CategoricalEncoding::All(Encoding::OneHot);
    assert_eq!(fit(3000, Some(&one_hot)).embedding, None);
    let embedded = CategoricalEncoding::All(Encoding::Embedding);
    assert_eq!(fit(5, Some(&embedded)).embedding, Some(3));
    let per_column = |e: ColumnEncoding| CategoricalEncoding::PerColumn([("c".to_string(), e)].into());
    assert_eq!(fit(3000, Some(&per_column(ColumnEncoding::Kind(Encoding::OneHot)))).embedding, None);
    assert_eq!(fit(5, Some(&per_column(ColumnEncoding::Width(4)))).embedding, Some(4));
    assert_eq!(fit(5, Some(&per_column(ColumnEncoding::Kind(Encoding::Embedding)))).embedding, Some(3));
    // A column that a per-column map leaves out takes the default.
    let other = CategoricalEncoding::PerColumn([("x".to_string(), ColumnEncoding::Width(4))].into());
    assert_eq!(fit(3000, Some(&other)).embedding, Some(50));
    assert_eq!(fit(5, Some(&other)).embedding, None);
}
