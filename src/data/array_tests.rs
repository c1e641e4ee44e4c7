//! Array data: `.npy` x of any rank or of integers, passed to the model as stored.

use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use super::tests::{config, npy_bytes};
use super::*;

fn write(dir: &Path, name: &str, t: &Tensor) -> PathBuf {
    let path = dir.join(name);
    t.write_npy(&path).unwrap();
    path
}

fn npy_config(dir: &Path, extra: &str) -> Config {
    config(&format!(
        "data: {{kind: npy, x: {}, y: {}{extra}}}\n",
        dir.join("x.npy").display(),
        dir.join("y.npy").display()
    ))
}

/// Reads and prepares (splits) the npy data in `dir`, as `load` does after its model check.
fn read_and_prepare(cfg: &Config) -> anyhow::Result<Prepared> {
    prepare(npy::read_npy_table(&cfg.data, cfg.task())?, cfg)
}

#[test]
fn image_arrays_keep_their_shape_and_values_through_the_split() {
    let dir = tempfile::tempdir().unwrap();
    let x = Tensor::arange(20 * 2 * 3 * 3, (Kind::Float, Device::Cpu)).view([20, 2, 3, 3]) * 10.0 - 7.0;
    write(dir.path(), "x.npy", &x.to_kind(Kind::Double));
    write(dir.path(), "y.npy", &Tensor::arange(20, (Kind::Int64, Device::Cpu)).remainder(3));
    let cfg = npy_config(dir.path(), ", validation_split: 0.25, test_split: 0.25");
    // Unset, data.standardize stays unset for npy: the file decides.
    assert_eq!(cfg.data.standardize, None);
    let p = read_and_prepare(&cfg).unwrap();
    let input = p.preprocessing.input.clone().unwrap();
    assert_eq!((input.shape.as_slice(), input.dtype), ([2i64, 3, 3].as_slice(), ArrayDtype::Float32));
    assert!(p.preprocessing.feature_names.is_empty() && p.preprocessing.input_mean.is_empty());
    assert_eq!(p.train.x.size(), [10, 2, 3, 3]);
    assert_eq!(p.validation.as_ref().unwrap().x.size(), [5, 2, 3, 3]);
    // Each part holds the file's samples unchanged (no standardisation), rows as split.json says.
    for (part, rows) in
        [(p.validation.as_ref().unwrap(), &p.split.validation), (p.test.as_ref().unwrap(), &p.split.test)]
    {
        let idx = Tensor::from_slice(&rows.iter().map(|&r| r as i64).collect::<Vec<_>>());
        assert!(part.x.equal(&x.index_select(0, &idx)));
        assert_eq!(part.x.kind(), Kind::Float);
    }
    // preprocessing.json records the input; one written before array data still loads.
    let json = serde_json::to_string(&p.preprocessing).unwrap();
    assert!(json.contains(r#""input":{"shape":[2,3,3],"dtype":"float32"}"#), "{json}");
    let back: Preprocessing = serde_json::from_str(&json).unwrap();
    assert_eq!(back, p.preprocessing);
    let mut old = serde_json::to_value(&back).unwrap();
    old.as_object_mut().unwrap().remove("input");
    assert_eq!(serde_json::from_value::<Preprocessing>(old).unwrap().input, None);
}

#[test]
fn integer_files_load_as_int64_and_float_files_as_float32() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "y.npy", &Tensor::arange(6, (Kind::Float, Device::Cpu)));
    let ids = Tensor::arange(6 * 5, (Kind::Int64, Device::Cpu)).view([6, 5]) * 1_000_000_007;
    let cases = [
        (ids.shallow_clone(), Kind::Int64, vec![5i64], ArrayDtype::Int64),
        (ids.remainder(1000).to_kind(Kind::Int), Kind::Int64, vec![5], ArrayDtype::Int64),
        (ids.remainder(250).to_kind(Kind::Uint8).view([6, 5, 1]), Kind::Int64, vec![5, 1], ArrayDtype::Int64),
        (ids.remainder(100).to_kind(Kind::Int8).view([6, 1, 5]), Kind::Int64, vec![1, 5], ArrayDtype::Int64),
        (ids.remainder(77).to_kind(Kind::Half).view([6, 5, 1]), Kind::Float, vec![5, 1], ArrayDtype::Float32),
    ];
    for (x, kind, shape, dtype) in cases {
        write(dir.path(), "x.npy", &x);
        let p = read_and_prepare(&npy_config(dir.path(), "")).unwrap();
        assert_eq!(p.preprocessing.input, Some(ArrayInput { shape, dtype }), "{:?}", x.kind());
        assert_eq!(p.train.x.kind(), kind);
        // No split: every row, in file order, with the file's values.
        assert!(p.train.x.to_kind(Kind::Double).equal(&x.to_kind(Kind::Double)), "{:?}", x.kind());
    }
    // A 2-D float x is a table, as before: named features, standardised by default.
    write(dir.path(), "x.npy", &(Tensor::arange(12, (Kind::Double, Device::Cpu)).view([6, 2]) * 3.0));
    let p = read_and_prepare(&npy_config(dir.path(), "")).unwrap();
    assert_eq!(p.preprocessing.input, None);
    assert_eq!(p.preprocessing.feature_names, ["x0", "x1"]);
    assert!((p.train.x.mean(Kind::Double).double_value(&[])).abs() < 1e-6);
    assert!(!serde_json::to_string(&p.preprocessing).unwrap().contains("input\""));
}

#[test]
fn a_nan_or_inf_in_a_float_array_is_an_error_naming_its_sample_and_index() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "y.npy", &Tensor::zeros([4], (Kind::Float, Device::Cpu)));
    let x = Tensor::zeros([4, 2, 3], (Kind::Float, Device::Cpu));
    let _ = x.get(2).get(1).get(0).fill_(f64::NAN);
    let _ = x.get(3).get(0).get(2).fill_(f64::INFINITY);
    write(dir.path(), "x.npy", &x);
    // data.missing fills tables, not arrays.
    let err = read_and_prepare(&npy_config(dir.path(), ", missing: mean")).err().unwrap().to_string();
    assert!(err.contains("data.x: "), "{err}");
    assert!(err.contains("x.npy: sample 3, index [2, 1, 0] (flat index 15): NaN is not a finite number"), "{err}");
    let _ = x.get(2).get(1).get(0).fill_(1.0);
    write(dir.path(), "x.npy", &x);
    let err = read_and_prepare(&npy_config(dir.path(), "")).err().unwrap().to_string();
    assert!(err.contains("x.npy: sample 4, index [3, 0, 2] (flat index 20): inf is not"), "{err}");
    // float64 beyond float32's range overflows to inf: refused too.
    let _ = x.get(3).get(0).get(2).fill_(0.0);
    let big = x.to_kind(Kind::Double);
    let _ = big.get(0).get(0).get(1).fill_(1e300);
    write(dir.path(), "x.npy", &big);
    let err = read_and_prepare(&npy_config(dir.path(), "")).err().unwrap().to_string();
    assert!(err.contains("sample 1, index [0, 0, 1] (flat index 1): inf is not a finite number"), "{err}");
    // A NaN target follows data.missing as before: drop_row drops that sample.
    write(dir.path(), "x.npy", &x);
    write(dir.path(), "y.npy", &Tensor::from_slice(&[1.0f32, f32::NAN, 3.0, 4.0]));
    let p = read_and_prepare(&npy_config(dir.path(), ", missing: drop_row")).unwrap();
    assert_eq!(p.train.x.size(), [3, 2, 3]);
    assert_eq!(Vec::<f32>::try_from(p.train.y.flatten(0, -1)).unwrap(), [1.0, 3.0, 4.0]);
}

#[test]
fn arrays_refuse_standardize_the_mlp_and_shapes_without_samples() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "y.npy", &Tensor::zeros([4], (Kind::Float, Device::Cpu)));
    write(dir.path(), "x.npy", &Tensor::zeros([4, 1, 2, 2], (Kind::Float, Device::Cpu)));
    let err = read_and_prepare(&npy_config(dir.path(), ", standardize: true")).err().unwrap().to_string();
    assert!(err.starts_with("data.standardize: data.x: "), "{err}");
    assert!(err.contains("x.npy is an array [4, 1, 2, 2] (float32), which goes to the model as stored"), "{err}");
    // standardize: false is what arrays get anyway.
    read_and_prepare(&npy_config(dir.path(), ", standardize: false")).unwrap();
    let err = load(&npy_config(dir.path(), "")).err().unwrap().to_string();
    assert!(err.starts_with("model.kind: mlp takes a table [samples, features]; data.x ("), "{err}");
    assert!(err.contains("x.npy) is an array [4, 1, 2, 2] (float32): use model.kind: torchscript"), "{err}");
    assert!(err.contains("forward takes [batch, 1, 2, 2]"), "{err}");
    assert!(!err.contains('\n'), "{err}");
    for (shape, want) in [
        (vec![4i64], "must be [samples, features] or an array [samples, ...] of at least 2 axes, got shape [4]"),
        (vec![4, 3, 0], "shape [4, 3, 0] has an empty axis 2"),
    ] {
        write(dir.path(), "x.npy", &Tensor::zeros(shape.as_slice(), (Kind::Float, Device::Cpu)));
        let err = read_and_prepare(&npy_config(dir.path(), "")).err().unwrap().to_string();
        assert!(err.contains(want), "{err}");
    }
}

#[test]
fn array_headers_are_bounded_and_checked_against_the_bytes_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.npy");
    let read = |dict: &str, data: &[u8]| {
        std::fs::write(&path, npy_bytes(dict, data)).unwrap();
        npy::read_npy("data.x", &path)
    };
    let data: Vec<u8> = (0..48i64).flat_map(|v| v.to_le_bytes()).collect();
    let x = read("{'descr': '<i8', 'fortran_order': False, 'shape': (2, 3, 2, 4), }", &data).unwrap();
    assert_eq!((x.size(), x.int64_value(&[1, 2, 1, 3])), (vec![2, 3, 2, 4], 47));
    // Column-major, any rank: element [i, j, k] is at i + 2 j + 6 k.
    let x = read("{'descr': '<i8', 'fortran_order': True, 'shape': (2, 3, 8), }", &data).unwrap();
    assert_eq!(x.int64_value(&[1, 2, 5]), 1 + 2 * 2 + 6 * 5);
    let err = read("{'descr': '<i8', 'fortran_order': False, 'shape': (2, 3, 2, 5), }", &data).unwrap_err();
    let err = err.to_string();
    assert!(err.contains("truncated: expected 608 bytes (128 of header, then 480 of data for shape [2, 3, 2, 5] of int64), the file has 512"), "{err}");
    let nine = "{'descr': '<i8', 'fortran_order': False, 'shape': (1, 1, 1, 1, 1, 1, 1, 1, 48), }";
    let err = read(nine, &data).unwrap_err().to_string();
    assert!(err.contains("has 9 axes; torchfit reads at most 8"), "{err}");
    let huge = "{'descr': '<f4', 'fortran_order': False, 'shape': (65536, 65536, 65536, 65536, 2), }";
    let err = read(huge, &data).unwrap_err().to_string();
    assert!(err.contains("too large"), "{err}");
}

#[test]
fn an_array_input_converts_samples_of_its_shape_and_names_a_mismatch() {
    let input = ArrayInput { shape: vec![1, 2, 2], dtype: ArrayDtype::Float32 };
    let ok = Tensor::ones([3, 1, 2, 2], (Kind::Double, Device::Cpu));
    assert_eq!(input.convert("x.npy", &ok).unwrap().kind(), Kind::Float);
    let err = input.convert("x.npy", &Tensor::ones([3, 2, 2], (Kind::Float, Device::Cpu))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "x.npy: the model takes arrays [N, 1, 2, 2] (float32), this one is [3, 2, 2] (float32)"
    );
    let err = input.convert("x.npy", &Tensor::ones([3, 1, 2, 2], (Kind::Int64, Device::Cpu))).unwrap_err();
    assert!(err.to_string().ends_with("this one is [3, 1, 2, 2] (int64)"), "{err}");
    let tokens = ArrayInput { shape: vec![4], dtype: ArrayDtype::Int64 };
    let x = tokens.convert("ids.npy", &Tensor::ones([2, 4], (Kind::Int, Device::Cpu))).unwrap();
    assert_eq!((x.kind(), x.size()), (Kind::Int64, vec![2, 4]));
    // From a file, as prediction reads one.
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "in.npy", &Tensor::ones([2, 5], (Kind::Int64, Device::Cpu)));
    let err = read_array("input", &path, &tokens).unwrap_err().to_string();
    assert!(
        err.starts_with("input: ")
            && err.ends_with("in.npy: the model takes arrays [N, 4] (int64), this one is [2, 5] (int64)"),
        "{err}"
    );
}

#[test]
fn an_npz_entry_is_read_only_as_far_as_its_header_says() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("xy.npz");
    let deflated = zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let x: Vec<u8> = (0..8).flat_map(|v| (v as f32).to_le_bytes()).collect();
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    zip.start_file("x.npy", deflated).unwrap();
    zip.write_all(&npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2, 2), }", &x)).unwrap();
    // 64 MiB of zeros after a 2-float array: a few KiB compressed, never inflated whole.
    zip.start_file("y.npy", deflated).unwrap();
    zip.write_all(&npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", &x[..8])).unwrap();
    for _ in 0..64 {
        zip.write_all(&vec![0u8; 1 << 20]).unwrap();
    }
    zip.finish().unwrap();
    let cfg = config(&format!("data: {{kind: npy, path: {}}}\n", path.display()));
    let err = npy::read_npy_table(&cfg.data, cfg.task()).err().unwrap().to_string();
    assert!(err.contains("y.npy: extra bytes after the array: expected 136 bytes"), "{err}");
    assert!(err.ends_with("the file has 137"), "{err}");
    // A version-2 header (4 length bytes) of over 1 MiB.
    let dict = format!("{{'descr': '<f4', 'shape': (2,), 'pad': '{}'}}\n", " ".repeat(1 << 20));
    let mut header = b"\x93NUMPY\x02\x00".to_vec();
    header.extend((dict.len() as u32).to_le_bytes());
    header.extend(dict.as_bytes());
    std::fs::write(dir.path().join("h.npy"), header).unwrap();
    let err = npy::read_npy("data.x", &dir.path().join("h.npy")).unwrap_err().to_string();
    assert!(err.contains("torchfit reads headers up to 1048576"), "{err}");
}
