//! The parallel reader against the csv crate's: the same columns, or the same error, on
//! files cut into many small ranges.

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::cell::parse_f32;

/// Reads `path` with every column in `roles` (by header position), split as `split` says.
fn read(path: &Path, roles: &[Role], missing: Missing, split: Split) -> std::result::Result<CsvData, String> {
    let roles = roles.to_vec();
    read_csv_split(path, b',', missing, |header| Ok((header.iter().cloned().zip(roles).collect(), None)), split)
        .map_err(|e| e.to_string())
}

/// Columns compared bit for bit (NaN equals NaN).
fn same(a: &CsvData, b: &CsvData) -> bool {
    let bits = |c: &Column| match c {
        Column::Numbers(v) => Ok(v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()),
        Column::Text(v) => Err(v.clone()),
    };
    a.rows == b.rows
        && a.unlabelled == b.unlabelled
        && a.names == b.names
        && a.columns.iter().map(bits).eq(b.columns.iter().map(bits))
}

#[test]
fn plain_decimals_parse_as_the_standard_library_does() {
    let edge = [
        "1",
        "+1",
        "-1",
        ".5",
        "5.",
        ".",
        "-",
        "+",
        "-.5",
        "+.5",
        "e5",
        "1e5",
        "1.e5",
        "1e",
        "inf",
        "-inf",
        "Infinity",
        "nan",
        "0x10",
        "1_0",
        "",
        "00012",
        "-0",
        "-0.0",
        "16777216",
        "16777217",
        "167772160",
        "1.6777217",
        "0.0000000001",
        "0.00000000001",
        "3.4028236e38",
        "123456789012345678901234567890",
        "1..2",
        "1.2.3",
        "١",
        "1,5",
    ];
    for cell in edge {
        assert_eq!(parse_f32(cell).map(f32::to_bits), cell.parse::<f32>().ok().map(f32::to_bits), "{cell:?}");
    }
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for _ in 0..200_000 {
        let digits = rng.gen_range(0..13);
        let point = rng.gen_range(0..=digits + 1);
        let mut cell = String::from(["", "-", "+"][rng.gen_range(0..3)]);
        for d in 0..=digits {
            if d == point {
                cell.push('.');
            }
            if d < digits {
                cell.push(char::from(b'0' + rng.gen_range(0..10u8)));
            }
        }
        assert_eq!(parse_f32(&cell).map(f32::to_bits), cell.parse::<f32>().ok().map(f32::to_bits), "{cell:?}");
    }
}

/// A random cell of a column of `kind`, numbers turning to text or booleans from row
/// `switch` on; some cells missing, some padded.
fn cell(rng: &mut ChaCha8Rng, kind: usize, row: usize, switch: usize) -> String {
    if rng.gen_bool(0.08) {
        return ["", "NA", " n/a", "NaN "][rng.gen_range(0..4)].to_string();
    }
    let late = row >= switch;
    let text = match (kind, late) {
        (0, _) | (1, false) | (2, false) => match rng.gen_range(0..4) {
            0 => format!("{}", rng.gen_range(-20..20)),
            1 => format!("0{}", rng.gen_range(0..9)),
            2 => format!("{:.3}", rng.gen_range(-5.0..5.0f32)),
            _ => format!("{:e}", rng.gen_range(-1e6..1e6f64)),
        },
        (1, true) | (4, _) => ["red", "green", "blue", "Ünï"][rng.gen_range(0..4)].to_string(),
        (2, true) | (3, _) => ["true", "F", "yes", "no"][rng.gen_range(0..4)].to_string(),
        _ => format!("{}", rng.gen_range(0..3)),
    };
    if rng.gen_bool(0.1) {
        format!(" {text}\t")
    } else {
        text
    }
}

#[test]
fn the_parallel_reader_matches_the_csv_crate_on_random_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.csv");
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (mut parallel_reads, mut errors) = (0, 0);
    for round in 0..400 {
        let columns = rng.gen_range(1..6);
        // 0 numbers, 1 numbers then text, 2 numbers then booleans, 3 booleans, 4 text.
        let kinds: Vec<usize> = (0..columns).map(|_| rng.gen_range(0..5)).collect();
        let rows = rng.gen_range(1..80);
        let switch = rng.gen_range(0..rows + 5);
        let newline = ["\n", "\r\n", "\r"][rng.gen_range(0..3)];
        let mut text: String = (0..columns).map(|c| format!("c{c}")).collect::<Vec<_>>().join(",") + newline;
        for row in 0..rows {
            if rng.gen_bool(0.03) {
                text += newline;
            }
            let cells: Vec<String> = kinds.iter().map(|&k| cell(&mut rng, k, row, switch)).collect();
            text += &cells.join(",");
            if row + 1 < rows || rng.gen_bool(0.5) {
                text += newline;
            }
        }
        if rng.gen_bool(0.02) {
            text += "1\n";
        }
        std::fs::write(&path, &text).unwrap();
        let roles: Vec<Role> = kinds
            .iter()
            .map(|&k| match (k, rng.gen_range(0..6)) {
                (_, 0) => Role::Text,
                (0, 1) => Role::Number,
                (0, 2) => Role::Target,
                (4, 1) => Role::Label,
                _ => Role::Auto,
            })
            .collect();
        let missing = [Missing::Mean, Missing::DropRow, Missing::Error][round % 3];
        let want = read(&path, &roles, missing, Split::Never);
        errors += usize::from(want.is_err());
        let start = text.find(newline).unwrap() as u64 + 1;
        let layout = parallel::Layout {
            delimiter: b',',
            fields: columns,
            at: &(0..columns).collect::<Vec<_>>(),
            roles: &roles,
            missing,
        };
        for bytes in [1, 7, 40, 1 << 20] {
            let got = read(&path, &roles, missing, Split::Bytes(bytes));
            match (&want, &got) {
                (Ok(a), Ok(b)) => assert!(
                    same(a, b),
                    "{text:?} {roles:?} {missing:?} split {bytes}: {:?} vs {:?}",
                    a.columns,
                    b.columns
                ),
                (a, b) => assert_eq!(a.as_ref().err(), b.as_ref().err(), "{text:?} {roles:?} {missing:?}"),
            }
            parallel_reads += usize::from(parallel::read(&path, start, &layout, Some(bytes)).is_some());
        }
    }
    // Both sides of the comparison were exercised.
    assert!(parallel_reads > 400 && errors > 50, "{parallel_reads} parallel reads, {errors} errors");
}

#[test]
fn quotes_bad_bytes_and_ragged_rows_leave_the_file_to_the_csv_crate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.csv");
    let roles = [Role::Auto, Role::Target];
    let layout = parallel::Layout { delimiter: b',', fields: 2, at: &[0, 1], roles: &roles, missing: Missing::Error };
    for (text, readable) in [
        (&b"a,y\n1,2\n3,4\n"[..], true),
        (b"a,y\n\"1\",2\n3,4\n", false),
        (b"a,y\n1,2\n3,\xff\n", false),
        (b"a,y\n1,2\n3\n", false),
        (b"a,y\n1,2\n3,\n", false),
    ] {
        std::fs::write(&path, text).unwrap();
        assert_eq!(parallel::read(&path, 4, &layout, Some(3)).is_some(), readable, "{text:?}");
        let want = read(&path, &roles, Missing::Error, Split::Never);
        assert_eq!(read(&path, &roles, Missing::Error, Split::Auto).map(|d| d.rows), want.map(|d| d.rows));
    }
    // A quoted field may hold a line break; the csv crate reads it as one cell.
    std::fs::write(&path, "a,y\n\"x\ny\",2\n").unwrap();
    let data = read(&path, &[Role::Auto, Role::Target], Missing::Error, Split::Bytes(2)).unwrap();
    assert_eq!(data.columns[0], Column::Text(Text::from_values([Some("x\ny")])));
}

#[test]
fn column_matrix_lays_columns_out_as_rows() {
    let rows = 10_000;
    let columns: Vec<Vec<f32>> = (0..3).map(|c| (0..rows).map(|r| (r * 3 + c) as f32).collect()).collect();
    let x = column_matrix(columns, rows).unwrap();
    assert_eq!(x.size(), [rows as i64, 3]);
    let flat = Vec::<f32>::try_from(x.flatten(0, 1)).unwrap();
    assert!(flat.iter().enumerate().all(|(i, &v)| v == i as f32));
    assert_eq!(column_matrix(Vec::<Vec<f32>>::new(), 4).unwrap().size(), [4, 0]);
    assert_eq!(column_matrix(vec![Vec::new()], 0).unwrap().size(), [0, 1]);
    assert!(column_matrix(vec![vec![1.0]], 2).is_err());
}

#[test]
fn column_matrix_reads_columns_across_their_parts() {
    let rows = 10_000;
    let column = |c: usize| (0..rows).map(|r| (r * 2 + c) as f32).collect::<Vec<f32>>();
    let (a, b) = (column(0), column(1));
    let parts = |v: &[f32], cuts: &[usize]| {
        let mut bounds = vec![0];
        bounds.extend_from_slice(cuts);
        bounds.push(v.len());
        Numbers::from_parts(bounds.windows(2).map(|w| v[w[0]..w[1]].to_vec()).collect())
    };
    // Parts that end inside a block of rows, on its edge, and empty ones.
    let x = column_matrix(vec![parts(&a, &[1, 4095, 4096, 4096, 9000]), parts(&b, &[8192])], rows).unwrap();
    let flat = Vec::<f32>::try_from(x.flatten(0, 1)).unwrap();
    assert!(flat.iter().enumerate().all(|(i, &v)| v == i as f32));
}

#[test]
fn each_byte_finds_every_delimiter_in_order() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for _ in 0..2000 {
        let len = rng.gen_range(0..70);
        let text: Vec<u8> =
            (0..len).map(|_| [b',', b';', 0, 0x7f, 0x80, 0xac, 0xff, b'a'][rng.gen_range(0..8)]).collect();
        for byte in [b',', b';', 0, 0x80, 0xff] {
            let mut got = Vec::new();
            parallel::each_byte(&text, byte, |i| got.push(i));
            let want: Vec<usize> = (0..text.len()).filter(|&i| text[i] == byte).collect();
            assert_eq!(got, want, "{text:?} {byte}");
        }
    }
}

#[test]
fn a_kept_column_is_its_cells_untrimmed_whatever_they_say() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.csv");
    let cells = ["id-1", " padded ", "NA", "", "n/a", "1e400", "007", "x"];
    let text: String = cells.iter().enumerate().map(|(i, c)| format!("{i},{c}\n")).collect();
    std::fs::write(&path, format!("x,keep\n{text}")).unwrap();
    for missing in [Missing::Error, Missing::DropRow, Missing::Mean] {
        let roles = [Role::Number, Role::Verbatim];
        let want = read(&path, &roles, missing, Split::Never).unwrap();
        for split in [Split::Auto, Split::Bytes(3)] {
            assert!(same(&read(&path, &roles, missing, split).unwrap(), &want), "{split:?}");
        }
        let Column::Text(kept) = &want.columns[1] else { panic!("a kept column is text") };
        assert_eq!(kept.iter().map(|c| c.unwrap_or("<none>")).collect::<Vec<_>>(), cells, "{missing:?}");
    }
}
