//! The corpus of bad input: configs and data files under tests/bad/ (plus binary ones made
//! here), bad flags and overrides, one end-to-end test each. Every one must exit with status 2,
//! print nothing on standard output and one line `torchfit: <message>` on standard error
//! naming the file and the key, row or column; none may panic or leave a run directory behind.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tch::{Device, Kind, Tensor};

mod common;
use common::*;

/// A real model.pt (the Keras example after one epoch), trained once per test binary with
/// the real binary, for the cases that must get past loading the model: the fixtures'
/// model.pt is garbage, so a case using it fails there first.
fn trained_model() -> PathBuf {
    static RUN: OnceLock<tempfile::TempDir> = OnceLock::new();
    trained(&RUN, &["train", "--set", "training.epochs=1", "--device", "cpu", "--out", "model-run", "--quiet"])
}

/// A model with categorical features (configs/titanic.yaml after one epoch).
fn categorical_model() -> PathBuf {
    static RUN: OnceLock<tempfile::TempDir> = OnceLock::new();
    let config = repo_file("configs/titanic.yaml").display().to_string();
    let data = format!("data.path={}", repo_file("data/titanic.csv").display());
    let config: &'static str = Box::leak(config.into_boxed_str());
    let data: &'static str = Box::leak(data.into_boxed_str());
    trained(
        &RUN,
        &[
            "train",
            config,
            "--set",
            data,
            "--set",
            "training.epochs=1",
            "--device",
            "cpu",
            "--out",
            "model-run",
            "--quiet",
        ],
    )
}

fn trained(run: &'static OnceLock<tempfile::TempDir>, args: &[&str]) -> PathBuf {
    let dir = run.get_or_init(|| {
        // A static is never dropped, so this directory outlives the test process: it goes
        // under cargo's target/tmp rather than /tmp, and each run removes the ones earlier
        // runs left (an hour old, so that a run going on beside this one keeps its own).
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        for entry in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
            let age = entry.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
            if entry.file_name().to_string_lossy().starts_with("bad_inputs-")
                && age.is_some_and(|age| age.as_secs() > 3600)
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = tempfile::Builder::new().prefix("bad_inputs-").tempdir_in(tmp).unwrap();
        assert_ok(&torchfit(dir.path(), args));
        dir
    });
    dir.path().join("model-run/model.pt")
}

/// A temporary directory holding tests/bad/ and the binary fixtures; `trained.pt` (a real
/// model, see `trained_model`) too when `args` name it.
fn fixtures(args: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(repo_file("tests/bad")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let d = dir.path();
    std::fs::write(d.join("garbage.yaml"), [0xff, 0xfe, 0x00, 0x9f, 0x92, 0x96, 0x01, 0x02]).unwrap();
    std::fs::write(d.join("binary.csv"), [b'a', b',', b'y', b'\n', 0xff, 0xfe, b',', 0x80, b'\n']).unwrap();
    std::fs::write(d.join("garbage.npy"), [0x93, b'N', b'U', b'M', b'P', b'Y', 1, 0, 0xff, 0xff, 7, 7, 7]).unwrap();
    std::fs::write(d.join("model.pt"), b"this is not a TorchScript archive").unwrap();
    npy_with_header(&d.join("strings.npy"), "{'descr': '<U3', 'fortran_order': False, 'shape': (2,), }", &[0u8; 24]);
    Tensor::zeros([4, 2, 2], (Kind::Float, Device::Cpu)).write_npy(d.join("rank3.npy")).unwrap();
    Tensor::zeros([4], (Kind::Float, Device::Cpu)).write_npy(d.join("y.npy")).unwrap();
    Tensor::zeros([4, 3], (Kind::Float, Device::Cpu)).write_npy(d.join("x.npy")).unwrap();
    parquet_fixtures(d);
    damaged_fixtures(d);
    if args.iter().any(|a| a.contains("bigname")) {
        // A 10 MB column name, which no message may echo whole.
        std::fs::write(d.join("bigname.csv"), format!("a,{},y\n1,2,3\n4,5,6\n", "n".repeat(10_000_000))).unwrap();
    }
    if args.contains(&"trained.pt") {
        std::fs::copy(trained_model(), d.join("trained.pt")).unwrap();
    }
    if args.contains(&"titanic.pt") {
        std::fs::copy(categorical_model(), d.join("titanic.pt")).unwrap();
    }
    dir
}

/// tags.parquet (a list column among numeric ones), gap.parquet (a missing target in row 2),
/// corrupt.parquet (Parquet's magic bytes around garbage).
fn parquet_fixtures(d: &Path) {
    use arrow_array::types::Int32Type;
    use arrow_array::{ArrayRef, Float64Array, ListArray, RecordBatch};
    use std::sync::Arc;
    let write = |name: &str, columns: Vec<(&str, ArrayRef)>| {
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let file = std::fs::File::create(d.join(name)).unwrap();
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    };
    let tags = ListArray::from_iter_primitive::<Int32Type, _, _>([Some(vec![Some(1)]), Some(vec![]), None]);
    let x: ArrayRef = Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0]));
    write("tags.parquet", vec![("x", x.clone()), ("tags", Arc::new(tags)), ("y", x.clone())]);
    write("gap.parquet", vec![("x", x), ("y", Arc::new(Float64Array::from(vec![Some(1.0), None, Some(3.0)])))]);
    std::fs::write(d.join("corrupt.parquet"), b"PAR1\x15\x04garbage, not a footer\x00\x00\x00PAR1").unwrap();
}

/// Data files damaged as users damage them: a .npy cut short (`np.save` of 80x3 float32, then
/// `head -c 800`) or with bytes after its array, infinite values in .npy and Parquet files, a
/// run whose weights.safetensors is cut short, a config in a folder naming a file beside it.
fn damaged_fixtures(d: &Path) {
    use arrow_array::{ArrayRef, Float64Array, RecordBatch};
    use std::sync::Arc;
    // As NumPy writes it: the header padded to 64 bytes (tch pads to 16).
    let data: Vec<u8> = (0..240).flat_map(|i| (i as f32).to_le_bytes()).collect();
    npy_with_header(&d.join("whole.npy"), "{'descr': '<f4', 'fortran_order': False, 'shape': (80, 3), }", &data);
    let whole = std::fs::read(d.join("whole.npy")).unwrap();
    assert_eq!(whole.len(), 1088, "np.save's layout: a 128-byte header, then 960 bytes");
    std::fs::write(d.join("trunc.npy"), &whole[..800]).unwrap();
    std::fs::write(d.join("long.npy"), [whole.as_slice(), &[0u8; 12]].concat()).unwrap();
    Tensor::zeros([80], (Kind::Float, Device::Cpu)).write_npy(d.join("y80.npy")).unwrap();
    let inf = Tensor::ones([4, 10], (Kind::Float, Device::Cpu));
    let _ = inf.get(2).get(1).fill_(f64::INFINITY);
    inf.write_npy(d.join("inf10.npy")).unwrap();
    inf.narrow(1, 0, 3).contiguous().write_npy(d.join("inf3.npy")).unwrap();
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("x", Arc::new(Float64Array::from(vec![1.0, f64::INFINITY, 3.0]))),
        ("y", Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0]))),
    ];
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let file = std::fs::File::create(d.join("inf.parquet")).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let parquet = std::fs::read(d.join("inf.parquet")).unwrap();
    std::fs::write(d.join("cut.parquet"), &parquet[..parquet.len() / 2]).unwrap();
    let header: Vec<String> = (0..10).map(|i| format!("x{i}")).collect();
    let row = |first: &str| format!("{first},{}", vec!["1"; 9].join(","));
    let inf_csv = [header.join(","), row("0.5"), row("inf"), row("1e400")].join("\n");
    std::fs::write(d.join("inf.csv"), inf_csv).unwrap();
    std::fs::write(d.join("semi.csv"), "a;b;y\n1;2;3\n4;5;6\n").unwrap();
    std::fs::create_dir(d.join("sub")).unwrap();
    std::fs::write(d.join("sub/beside.csv"), "a,y\n1,2\n3,4\n").unwrap();
    std::fs::write(d.join("sub/beside.yaml"), "data: {kind: csv, path: beside.csv, target: y}\n").unwrap();
}

/// A version-1.0 .npy file with the given header dict and data bytes.
fn npy_with_header(path: &Path, dict: &str, data: &[u8]) {
    let mut header = dict.to_string();
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(data);
    std::fs::write(path, bytes).unwrap();
}

fn check(args: &[&str], words: &[&str]) {
    let dir = fixtures(args);
    let mut args = args.to_vec();
    if args[0] == "train" && !args.contains(&"--resume") {
        args.extend(["--out", "run"]);
    }
    let out = torchfit(dir.path(), &args);
    assert_fails_with(&out, words);
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    assert_eq!(stdout(&out), "", "{args:?} wrote to standard output");
    assert!(!dir.path().join("run").exists() && !dir.path().join("runs").exists(), "{args:?} left a run directory");
}

macro_rules! bad {
    ($($name:ident: [$($arg:expr),+] => [$($word:expr),+];)+) => {
        $(
            #[test]
            fn $name() {
                check(&[$($arg),+], &[$($word),+]);
            }
        )+
    };
}

bad! {
    yaml_syntax_error: ["train", "syntax.yaml"] => ["syntax.yaml: YAML syntax error", "line 3"];
    unknown_top_level_key: ["train", "unknown_top.yaml"] => ["unknown_top.yaml: unknown key `nmae`", "did you mean `name`?"];
    misspelled_nested_key: ["train", "misspelled_nested.yaml"] => ["unknown key `training.epoch` at line 2 column 3", "did you mean `training.epochs`?"];
    misspelled_optimizer_key: ["train", "misspelled_optimizer.yaml"] => ["unknown key `training.optimizer.learning_rate`"];
    wrong_type_epochs: ["train", "wrong_type_epochs.yaml"] => ["training.epochs: invalid type: string \"ten\", expected a whole number > 0 at line 2 column 11"];
    wrong_type_hidden: ["train", "wrong_type_hidden.yaml"] => ["model.hidden: invalid type: integer `10`, expected a sequence"];
    zero_epochs: ["train", "epochs_zero.yaml"] => ["training.epochs must be > 0, got 0"];
    zero_batch_size: ["train", "batch_zero.yaml"] => ["training.batch_size must be > 0, got 0"];
    zero_learning_rate: ["train", "lr_zero.yaml"] => ["training.optimizer.lr must be > 0, got 0"];
    negative_learning_rate: ["train", "lr_negative.yaml"] => ["training.optimizer.lr must be > 0, got -0.01"];
    zero_width_layer: ["train", "width_zero.yaml"] => ["model.hidden[1] must be > 0, got 0"];
    unknown_activation: ["train", "activation_unknown.yaml"] => ["model.activation: unknown value `rleu`", "did you mean `relu`?"];
    unknown_loss: ["train", "loss_unknown.yaml"] => ["training.loss: unknown value `mean_squared`"];
    unknown_loss_near_a_known_one: ["train", "--set", "training.loss=mse2"] => ["training.loss: unknown value `mse2`", "did you mean `mse`?"];
    unknown_optimizer: ["train", "optimizer_unknown.yaml"] => ["training.optimizer.kind: unknown value `rmsprop`"];
    unknown_optimizer_near_a_known_one: ["train", "--set", "training.optimizer.kind=adamm"] => ["training.optimizer.kind: unknown value `adamm`", "did you mean `adam`?"];
    dropout_out_of_range: ["train", "dropout_range.yaml"] => ["model.dropout must be in [0, 1), got 1.5"];
    split_out_of_range: ["train", "split_range.yaml"] => ["data.validation_split must be in [0, 1), got 1.2"];
    splits_leave_no_training_rows: ["train", "splits_sum.yaml"] => ["must leave rows for training"];
    beta1_out_of_range: ["train", "beta1.yaml"] => ["training.optimizer.beta1 must be in [0, 1), got 1"];
    missing_config_file: ["train", "nowhere.yaml"] => ["cannot read config file nowhere.yaml"];
    empty_config_file: ["train", "empty.yaml"] => ["empty.yaml: the config file is empty"];
    blank_config_file: ["train", "blank.yaml"] => ["blank.yaml: the config file is empty"];
    binary_garbage_config: ["train", "garbage.yaml"] => ["cannot read config file garbage.yaml", "UTF-8"];
    config_that_is_a_list: ["train", "top_list.yaml"] => ["top_list.yaml: expected a mapping of keys"];
    accuracy_on_regression: ["train", "accuracy_regression.yaml"] => ["training.metrics: accuracy needs class labels", "regression"];
    schedule_key_of_another_kind: ["train", "schedule_key.yaml"] => ["training.lr_schedule.gamma does not apply to kind cosine"];
    unknown_monitor: ["train", "monitor_unknown.yaml"] => ["training.early_stopping.monitor: \"val_acc\" is not a metrics.csv column", "val_mae"];
    zero_checkpoint_interval: ["train", "checkpoint_zero.yaml"] => ["training.checkpoint_every must be > 0, got 0"];
    unknown_on_nan: ["train", "on_nan_unknown.yaml"] => ["training.on_nan: unknown value `ignore`"];
    unknown_device: ["train", "device_unknown.yaml"] => ["device must be auto, cpu, cuda or cuda:N, got \"gpu\""];
    unknown_device_flag: ["train", "--device", "tpu"] => ["device must be auto, cpu, cuda or cuda:N, got \"tpu\""];
    absent_cuda_device: ["train", "--device", "cuda:99"] => ["device cuda:99 was asked for"];
    class_weight_unknown_label: ["train", "class_weight_unknown.yaml"] => ["training.class_weight: no class \"w\" in the data (classes: x, y, z)"];
    class_weight_zero: ["train", "class_weight_zero.yaml"] => ["training.class_weight: the weight of class \"z\" must be > 0, got 0"];
    class_weight_on_regression: ["train", "--set", "training.class_weight=balanced"] => ["training.class_weight applies to classification only, but the task is regression"];
    class_weight_misspelled: ["train", "csv_gap.yaml", "--set", "training.class_weight=balance"] => ["training.class_weight: unknown value `balance`, expected `balanced`"];
    bce_with_three_classes: ["train", "bce_three.yaml"] => ["training.loss: bce needs exactly two classes, the data has 3 (x, y, z)"];
    csv_file_missing: ["train", "csv_missing_file.yaml"] => ["data.path: ", "nowhere.csv: no such file"];
    csv_file_empty: ["train", "csv_empty.yaml"] => ["empty.csv: the file is empty"];
    csv_ragged_rows: ["train", "csv_ragged.yaml"] => ["ragged.csv: row 2: has 2 fields, the header has 3"];
    csv_text_in_regression_target: ["train", "csv_text.yaml"] => ["text.csv: row 2 (line 3), column `y`: \"six\" is not a number; if it is a class label, set task: classification"];
    csv_missing_value: ["train", "csv_gap.yaml"] => ["gap.csv: row 2 (line 3), column `b`: missing value; set data.missing to drop_row or mean"];
    csv_target_column_absent: ["train", "csv_no_target.yaml"] => ["data.target: no column `price` in", "gap.csv (columns: a, b, y)"];
    csv_target_not_given: ["train", "csv_target_required.yaml"] => ["data.target is required for kind csv"];
    csv_binary_garbage: ["train", "csv_binary.yaml"] => ["binary.csv: row 1: not valid UTF-8 text"];
    parquet_list_column: ["train", "parquet_list.yaml"] => ["tags.parquet: column `tags` is a list; torchfit reads numeric, boolean and text columns"];
    parquet_corrupt_file: ["train", "parquet_corrupt.yaml"] => ["corrupt.parquet: not a readable Parquet file ("];
    parquet_missing_value: ["train", "parquet_gap.yaml"] => ["gap.parquet: row 2, column `y`: missing value; set data.missing to drop_row or mean"];
    parquet_delimiter: ["train", "parquet_gap.yaml", "--set", "data.delimiter=;"] => ["data.delimiter applies to kind csv only; this config has kind parquet"];
    predict_corrupt_parquet: ["predict", "trained.pt", "corrupt.parquet"] => ["corrupt.parquet: not a readable Parquet file ("];
    predict_list_column: ["predict", "trained.pt", "tags.parquet"] => ["tags.parquet: column `tags` is a list"];
    npy_wrong_dtype: ["train", "npy_dtype.yaml"] => ["data.x: ", "strings.npy: cannot read as .npy"];
    npy_array_for_the_mlp: ["train", "npy_rank.yaml"] => ["model.kind: mlp takes a table [samples, features]; data.x (", "rank3.npy) is an array [4, 2, 2] (float32)"];
    npy_garbage: ["train", "npy_garbage.yaml"] => ["garbage.npy: cannot read as .npy"];
    npy_without_y: ["train", "npy_half.yaml"] => ["kind npy takes either x and y (.npy files) or path"];
    init_from_not_safetensors: ["train", "init_from_garbage.yaml"] => ["model.init_from: ", "garbage.npy: cannot read safetensors"];
    init_from_missing: ["train", "--set", "model.init_from=nope.safetensors"] => ["model.init_from: ", "nope.safetensors: no such file"];
    generated_key_on_csv: ["train", "csv_gap.yaml", "--set", "data.samples=50"] => ["data.samples applies to generated kinds only; this config has kind csv"];
    embedded_generated_keys_on_csv: ["train", "--set", "data.kind=csv", "--set", "data.path=gap.csv", "--set", "data.target=y"] => ["data.samples applies to generated kinds only; this config has kind csv (it comes from the embedded default config keras_example.yaml; start from your own config file)"];
    delimiter_on_generated_kind: ["train", "--set", "data.delimiter=;"] => ["data.delimiter applies to kind csv only; this config has kind random_normal"];
    set_without_equals: ["train", "--set", "training.epochs"] => ["--set training.epochs: expected KEY=VALUE"];
    set_unknown_key: ["train", "--set", "training.epohcs=3"] => ["unknown key `training.epohcs`", "did you mean `training.epochs`?"];
    set_unknown_top_level_key: ["train", "--set", "trainig.epochs=2"] => ["unknown key `trainig`", "did you mean `training`?"];
    resume_not_a_run: ["train", "--resume", "."] => [". is not a torchfit run directory (it has no config.yaml)"];
    predict_with_a_non_torchscript_model: ["predict", "model.pt", "x.npy"] => ["model.pt is not a TorchScript model"];
    predict_input_missing: ["predict", "trained.pt", "nowhere.csv"] => ["cannot read nowhere.csv"];
    predict_without_a_categorical_column: ["predict", "titanic.pt", "no_sex.csv"] => ["no_sex.csv: no column `sex`"];
    predict_categorical_model_on_npy: ["predict", "titanic.pt", "x.npy"] => ["x.npy: a .npy array has no column names", "sex"];
    categorical_target_with_one_class: ["train", "one_class.yaml"] => ["one_class.csv: the target has 1 class (yes); classification needs at least two"];
    categorical_unknown_column: ["train", "categorical_unknown.yaml"] => ["data.categorical: `colour` is not a column of", "gap.csv"];
    categorical_target_column: ["train", "categorical_target.yaml"] => ["data.categorical: `y` is not a feature of", "gap.csv"];
    min_frequency_zero: ["train", "min_frequency_zero.yaml"] => ["data.min_frequency must be > 0, got 0"];
    categorical_on_generated_data: ["train", "--set", "data.categorical=[x0]"] => ["data.categorical applies to kind csv or parquet only"];
    embedding_width_zero: ["train", "embedding_zero.yaml"] => ["data.categorical_encoding.b: an embedding width must be > 0, got 0"];
    evaluate_not_a_run: ["evaluate", ".", "--data", "gap.csv"] => [". is not a finished torchfit run"];
    export_not_a_run: ["export", "."] => [". is not a finished torchfit run"];
    csv_crlf_line_numbers: ["train", "csv_crlf.yaml"] => ["crlf.csv: row 2 (line 3), column `y`: \"six\" is not a number"];
    predict_a_directory_takes_its_model_pt: ["predict", ".", "x.npy"] => ["./model.pt is not a TorchScript model"];
    evaluate_a_file_that_is_not_a_run: ["evaluate", "gap.csv", "--data", "gap.csv"] => ["gap.csv is a file; pass a run directory"];
    npy_truncated_for_training: ["train", "npy_trunc.yaml"] => ["data.x: ", "trunc.npy: cannot read as .npy: truncated: expected 1088 bytes (128 of header, then 960 of data for shape [80, 3] of float32), the file has 800"];
    npy_with_bytes_after_its_array: ["train", "npy_long.yaml"] => ["long.npy: cannot read as .npy: extra bytes after the array: expected 1088 bytes", "the file has 1100"];
    npy_truncated_for_prediction: ["predict", "trained.pt", "trunc.npy"] => ["input: ", "trunc.npy: cannot read as .npy: truncated: expected 1088 bytes", "the file has 800"];
    npy_infinite_for_training: ["train", "npy_inf.yaml"] => ["data.x: ", "inf3.npy: row 3, column 2 (x1): inf is not a finite number"];
    npy_infinite_for_prediction: ["predict", "trained.pt", "inf10.npy"] => ["inf10.npy: row 3, column 2 (`x1`): inf is not a finite number"];
    csv_infinite_for_prediction: ["predict", "trained.pt", "inf.csv"] => ["inf.csv: row 2 (line 3), column `x0`: \"inf\" is not a finite number"];
    csv_infinite_for_training: ["train", "csv_inf.yaml"] => ["inf.csv: row 2 (line 3), column `x0`: \"inf\" is not a finite number"];
    csv_overflowing_target_for_training: ["train", "csv_inf.yaml", "--set", "data.target=x0"] => ["inf.csv: row 2 (line 3), column `x0`: \"inf\" is not a finite number"];
    csv_1e400_for_training: ["train", "csv_inf.yaml", "--set", "data.path=huge.csv", "--set", "data.target=y"] => ["huge.csv: row 2 (line 3), column `y`: \"1e400\" is not a finite number"];
    parquet_infinite_for_training: ["train", "parquet_inf.yaml"] => ["inf.parquet: row 2, column `x`: \"inf\" is not a finite number"];
    parquet_cut_short: ["train", "parquet_inf.yaml", "--set", "data.path=cut.parquet"] => ["cut.parquet: not a readable Parquet file ("];
    csv_semicolons_without_a_delimiter: ["train", "csv_semi.yaml"] => ["data.target: no column `y` in", "semi.csv (columns: a;b;y); the header is one column, split at ',': if the file's fields are separated by \";\", set data.delimiter: \";\""];
    relative_path_beside_the_config: ["train", "sub/beside.yaml"] => ["data.path: ", "beside.csv: no such file (relative paths resolve from the working directory, ", "sub/beside.csv exists beside the config file"];
    relative_path_nowhere: ["train", "csv_missing_file.yaml"] => ["nowhere.csv: no such file (relative paths resolve from the working directory"];
    continuous_target_with_cross_entropy: ["train", "continuous.yaml"] => ["continuous.csv: the target looks continuous: 8 distinct values such as \"0.5\", read as classes; for a continuous target set task: regression and training.loss: mse"];
    ten_megabyte_column_name: ["train", "--set", "data={kind: csv, path: bigname.csv, target: zz}"] => ["data.target: no column `zz` in", "(columns: a, nnnnnnnnnn", "… (10000000 bytes), y)"];
    export_format_contradicts_the_output: ["export", ".", "--format", "torchscript", "--output", "x.safetensors"] => ["--format torchscript contradicts --output x.safetensors"];
}
