//! Unit tests of reading, resolving, checking and writing configs.

use super::*;
use anyhow::Result;
use serde_yaml::Value;

fn parse(text: &str) -> Result<Config> {
    Config::parse(text, "t.yaml", &[])
}

fn parse_err(text: &str) -> String {
    parse(text).err().map(|e| e.to_string()).unwrap_or_else(|| panic!("accepted: {text}"))
}

fn invalid(overrides: &[&str]) -> String {
    let sets: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    Config::load(None, &sets).expect_err("is invalid").to_string()
}

#[test]
fn embedded_default_is_the_keras_example() {
    let cfg = Config::load(None, &[]).unwrap();
    assert_eq!(cfg.name, "keras_example");
    assert_eq!(cfg.data.samples, Some(1000));
    assert_eq!(cfg.model.hidden, vec![10]);
    assert_eq!(cfg.training.batch_size, 32);
    assert_eq!(cfg.training.optimizer.eps(), 1e-7);
    assert_eq!(cfg.training.optimizer.semantics, Semantics::Keras);
    let file = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/keras_example.yaml")).unwrap();
    assert_eq!(file, KERAS_EXAMPLE);
}

#[test]
fn omitted_keys_take_defaults() {
    let cfg = parse("name: tiny\n").unwrap();
    assert_eq!(cfg.training.epochs, 100);
    assert_eq!(cfg.training.optimizer.kind, OptimizerKind::Adam);
    let torch = parse("training: {optimizer: {semantics: torch}}\n").unwrap();
    assert_eq!(torch.training.optimizer.eps(), 1e-8);
}

#[test]
fn overrides_set_nested_keys_as_yaml() {
    let sets = ["training.epochs=5".to_string(), "model.hidden=[4, 3]".to_string()];
    let cfg = Config::parse(KERAS_EXAMPLE, "k.yaml", &sets).unwrap();
    assert_eq!(cfg.training.epochs, 5);
    assert_eq!(cfg.model.hidden, vec![4, 3]);
}

#[test]
fn unknown_override_key_names_nearest() {
    let err = Config::parse(KERAS_EXAMPLE, "k.yaml", &["training.epoch=5".into()]).unwrap_err().to_string();
    assert!(err.contains("unknown key `training.epoch`"), "{err}");
    assert!(err.contains("did you mean `training.epochs`?"), "{err}");
}

#[test]
fn override_without_equals_is_rejected() {
    let err = Config::parse(KERAS_EXAMPLE, "k.yaml", &["training.epochs".into()]).unwrap_err().to_string();
    assert!(err.contains("expected KEY=VALUE"), "{err}");
}

#[test]
fn unknown_key_in_file_names_key_line_and_nearest() {
    let err = parse_err("name: x\ntraining:\n  batchsize: 3\n");
    assert!(err.starts_with("t.yaml: unknown key `training.batchsize` at line 3 column 3"), "{err}");
    assert!(err.ends_with("did you mean `training.batch_size`?"), "{err}");
}

#[test]
fn wrong_type_names_key_and_line() {
    let err = parse_err("training:\n  epochs: ten\n");
    assert!(err.contains("training.epochs: invalid type: string \"ten\", expected a whole number > 0"), "{err}");
    assert!(err.contains("line 2 column 11"), "{err}");
}

#[test]
fn unknown_value_names_nearest_variant() {
    let err = parse_err("model:\n  activation: relux\n");
    assert!(err.contains("model.activation: unknown value `relux`"), "{err}");
    assert!(err.contains("did you mean `relu`?"), "{err}");
}

#[test]
fn syntax_error_reports_line_and_column() {
    let err = parse_err("name: x\ntraining: [1, 2\n");
    assert!(err.contains("YAML syntax error"), "{err}");
    assert!(err.contains("line"), "{err}");
}

#[test]
fn empty_file_is_rejected() {
    assert!(parse_err("  \n").contains("empty"));
}

#[test]
fn invalid_values_name_their_key() {
    assert_eq!(invalid(&["training.epochs=0"]), "training.epochs must be > 0, got 0");
    assert_eq!(invalid(&["training.batch_size=0"]), "training.batch_size must be > 0, got 0");
    assert!(invalid(&["training.optimizer.lr=0"]).starts_with("training.optimizer.lr must be > 0"));
    assert!(invalid(&["training.optimizer.lr=-1e-3"]).starts_with("training.optimizer.lr must be > 0"));
    assert!(invalid(&["model.hidden=[10, 0]"]).starts_with("model.hidden[1] must be > 0"));
    assert!(invalid(&["training.optimizer.beta2=1.0"]).starts_with("training.optimizer.beta2 must be in [0, 1)"));
    assert_eq!(
        invalid(&["device=gpu"]),
        "embedded keras_example.yaml with --set: device must be auto, cpu, cuda or cuda:N, got \"gpu\""
    );
}

#[test]
fn accuracy_on_regression_is_rejected_with_reason() {
    let err = invalid(&["training.metrics=[mae, accuracy]"]);
    assert!(err.starts_with("training.metrics: accuracy needs class labels"), "{err}");
    assert!(err.contains("regression"), "{err}");
}

#[test]
fn task_follows_loss_or_data() {
    let load = |sets: &[&str]| {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Config::parse("name: t\n", "t.yaml", &sets).unwrap()
    };
    assert_eq!(load(&[]).task(), Task::Regression);
    assert_eq!(load(&["training.loss=bce"]).task(), Task::Classification);
    assert_eq!(load(&["training.metrics=[f1]"]).task(), Task::Regression, "metrics do not decide the task");
    let moons = load(&["data.kind=moons"]);
    assert_eq!(
        (moons.task(), moons.loss(), moons.metrics()),
        (Task::Classification, Loss::CrossEntropy, vec![Metric::Accuracy])
    );
}

#[test]
fn keys_for_other_kinds_are_rejected() {
    assert!(invalid(&["training.lr_schedule.gamma=0.5"])
        .contains("training.lr_schedule.gamma does not apply to kind constant"));
    assert!(invalid(&["data.path=x.csv"]).contains("data.path applies to kind csv, parquet or npy only"));
    // The embedded default's data section is for a generated kind, so a csv one replaces it.
    assert!(invalid(&["data={kind: csv, path: x.csv}"]).contains("data.target is required for kind csv"));
    assert!(invalid(&["data.kind=moons", "training.loss=mse"]).contains("data.kind moons makes classification data"));
    assert!(invalid(&["data.validation_split=0.5", "data.test_split=0.5"]).contains("must leave rows for training"));
    assert!(invalid(&["data.features=[a, b]"]).contains("takes a number of features, not column names"));
}

#[test]
fn monitors_must_be_metrics_columns() {
    let err = invalid(&["training.early_stopping={monitor: val_loss}"]);
    assert!(
        err.contains("\"val_loss\" is not a metrics.csv column") && err.contains("needs data.validation_split > 0"),
        "{err}"
    );
    let ok = Config::load(
        None,
        &["data.validation_split=0.2".into(), "training.early_stopping={monitor: val_mae, patience: 3}".into()],
    );
    assert!(ok.is_ok(), "{ok:?}");
}

#[test]
fn resolved_yaml_round_trips() {
    // Without an explicit eps, the resolved file carries the semantics' default.
    let mut cfg = parse("name: x\ntraining: {optimizer: {semantics: torch, kind: adamw}}\n").unwrap();
    let yaml = cfg.to_yaml().unwrap();
    cfg.resolve();
    let again = parse(&yaml).unwrap();
    assert_eq!(again, cfg);
    assert_eq!(again.training.optimizer.eps, Some(1e-8));
    assert_eq!(again.training.optimizer.weight_decay, Some(0.01));
    assert_eq!(again.data.features, Some(Features::Count(10)));
}

/// Loads `yaml` as the config file `c.yaml` in `dir`, with `--set` overrides.
fn load_file(dir: &std::path::Path, yaml: &str, sets: &[&str]) -> Result<Config> {
    let path = dir.join("c.yaml");
    std::fs::write(&path, yaml).unwrap();
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    Config::load(Some(&path), &sets)
}

#[test]
fn device_is_parsed_once_into_a_choice_and_written_back_as_spelled() {
    for (name, choice) in [
        ("auto", DeviceChoice::Auto),
        ("cpu", DeviceChoice::Cpu),
        ("cuda", DeviceChoice::Cuda(0)),
        ("cuda:3", DeviceChoice::Cuda(3)),
    ] {
        assert_eq!(name.parse::<DeviceChoice>(), Ok(choice));
        assert_eq!(parse(&format!("device: {name}\n")).unwrap().device, choice);
    }
    for bad in ["gpu", "cuda:", "cuda:x", "CPU"] {
        assert_eq!(bad.parse::<DeviceChoice>(), Err(format!("device must be auto, cpu, cuda or cuda:N, got {bad:?}")));
    }
    assert_eq!(
        parse_err("name: x\ndevice: gpu\n"),
        "t.yaml: device must be auto, cpu, cuda or cuda:N, got \"gpu\" at line 2 column 9"
    );
    let yaml = parse("device: cuda:1\n").unwrap().to_yaml().unwrap();
    assert!(yaml.contains("\ndevice: cuda:1\n"), "{yaml}");
    assert_eq!(parse(&yaml).unwrap().device, DeviceChoice::Cuda(1));
}

#[test]
fn schedule_defaults_live_in_one_place() {
    let step = LrSchedule { kind: ScheduleKind::Step, ..LrSchedule::default() };
    assert_eq!(step.resolved(false), Schedule::Step { step_size: 10, gamma: 0.1 });
    let cosine = LrSchedule { kind: ScheduleKind::Cosine, warmup_epochs: Some(2), ..LrSchedule::default() };
    assert_eq!(cosine.resolved(false), Schedule::Cosine { warmup_epochs: 2, min_lr: 0.0 });
    let plateau = LrSchedule { kind: ScheduleKind::ReduceOnPlateau, patience: Some(3), ..LrSchedule::default() };
    let want = Schedule::ReduceOnPlateau {
        monitor: "val_loss".into(),
        factor: 0.1,
        patience: 3,
        min_delta: 1e-4,
        min_lr: 0.0,
    };
    assert_eq!(plateau.resolved(true), want);

    // resolve writes those values into the config, so a resolved schedule needs no defaults:
    // what LrScheduler reads from it is what resolve chose.
    let mut cfg =
        parse("data: {validation_split: 0.2}\ntraining: {lr_schedule: {kind: reduce_on_plateau, patience: 3}}\n")
            .unwrap();
    cfg.resolve();
    let s = &cfg.training.lr_schedule;
    assert_eq!(
        (s.monitor.as_deref(), s.factor, s.patience, s.min_delta, s.min_lr, s.step_size, s.gamma),
        (Some("val_loss"), Some(0.1), Some(3), Some(1e-4), Some(0.0), None, None)
    );
    assert_eq!(s.resolved(false), want);
}

#[test]
fn data_keys_the_kind_does_not_read_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let err = |yaml: &str, set: &str| load_file(dir.path(), yaml, &[set]).unwrap_err().to_string();
    let csv = "data: {kind: csv, path: d.csv, target: y}\n";
    for key in ["samples=50", "noise=0.5", "targets=2"] {
        let name = key.split('=').next().unwrap_or_default();
        assert_eq!(
            err(csv, &format!("data.{key}")),
            format!("data.{name} applies to generated kinds only; this config has kind csv")
        );
    }
    assert_eq!(
        err(csv, "data.features=3"),
        "data.features: for kind csv, a list of column names (default: every column but the target)"
    );
    assert_eq!(err(csv, "data.x=x.npy"), "data.x applies to kind npy only; this config has kind csv");
    let npy = "data: {kind: npy, x: x.npy, y: y.npy}\n";
    assert_eq!(err(npy, "data.samples=3"), "data.samples applies to generated kinds only; this config has kind npy");
    assert_eq!(
        err(npy, "data.features=3"),
        "data.features applies to kind csv, parquet and generated kinds only; this config has kind npy"
    );
    assert_eq!(err(npy, "data.delimiter=';'"), "data.delimiter applies to kind csv only; this config has kind npy");
    assert_eq!(
        err("data: {kind: moons}\n", "data.delimiter=';'"),
        "data.delimiter applies to kind csv only; this config has kind moons"
    );
    assert_eq!(load_file(dir.path(), csv, &["data.delimiter=';'"]).unwrap().data.delimiter.as_deref(), Some(";"));
}

#[test]
fn keys_from_the_embedded_default_say_where_they_come_from() {
    assert_eq!(
        invalid(&["data.kind=csv", "data.path=x.csv", "data.target=y"]),
        "data.samples applies to generated kinds only; this config has kind csv (it comes from the embedded \
         default config keras_example.yaml; start from your own config file)"
    );
    // Set by the user, directly or with its whole section: no note.
    assert_eq!(
        invalid(&["data.kind=csv", "data.samples=5"]),
        "data.samples applies to generated kinds only; this config has kind csv"
    );
    assert_eq!(
        invalid(&["data={kind: csv, path: x.csv, target: y, samples: 5}"]),
        "data.samples applies to generated kinds only; this config has kind csv"
    );
    let ok = Config::load(None, &["data={kind: csv, path: x.csv, target: y}".into()]);
    assert!(ok.is_ok(), "{ok:?}");
}

#[test]
fn resolved_config_carries_only_the_keys_its_kind_reads() {
    let dir = tempfile::tempdir().unwrap();
    let csv = load_file(dir.path(), "data: {kind: csv, path: d.csv, target: y}\n", &[]).unwrap();
    let d = &csv.data;
    assert_eq!(
        (d.samples, d.noise, d.targets, &d.features, d.delimiter.as_deref()),
        (None, None, None, &None, Some(","))
    );
    let yaml = csv.to_yaml().unwrap();
    for key in ["samples:", "noise:", "targets:", "features:"] {
        assert!(!yaml.contains(key), "{key} in\n{yaml}");
    }
    assert_eq!(load_file(dir.path(), &yaml, &[]).unwrap(), csv, "the saved config loads again");

    let mut moons = parse("data: {kind: moons}\n").unwrap();
    moons.resolve();
    let d = &moons.data;
    assert_eq!(
        (d.samples, &d.features, d.targets, d.noise, &d.delimiter),
        (Some(1000), &Some(Features::Count(2)), Some(1), Some(0.1), &None)
    );
    let linear = Config::load(None, &["data={kind: linear, samples: 50}".into()]).unwrap();
    assert_eq!((linear.data.samples, linear.data.feature_count()), (Some(50), 10));
}

#[test]
fn messages_use_the_users_words() {
    let cases = [
        (
            "training:\n  epochs: 2.5\n",
            "training.epochs: invalid type: floating point `2.5`, expected a whole number > 0 at line 2 column 11",
        ),
        ("seed: -1\n", "seed: invalid type: integer `-1`, expected a whole number >= 0 at line 1 column 7"),
        (
            "model:\n  dropout: lots\n",
            "model.dropout: invalid type: string \"lots\", expected a number at line 2 column 12",
        ),
        (
            "training:\n  shuffle: maybe\n",
            "training.shuffle: invalid type: string \"maybe\", expected true or false at line 2 column 12",
        ),
        (
            "training:\n  batch_size:\n",
            "training.batch_size: invalid type: an empty value, expected a whole number > 0",
        ),
    ];
    for (text, want) in cases {
        let err = parse_err(text);
        assert!(err.starts_with(&format!("t.yaml: {want}")), "{err}\nwant {want}");
    }
    assert_eq!(
        invalid(&["training.lr_schedule={kind: reduce_on_plateau, gamma: 0.5}"]),
        "training.lr_schedule.gamma does not apply to kind reduce_on_plateau"
    );
    assert_eq!(
        invalid(&["task=classification", "training.loss=mse", "data={kind: csv, path: x.csv, target: y}"]),
        "training.loss: mse is a regression loss, but the task is classification"
    );
    assert_eq!(
        [yaml_name(&Loss::CrossEntropy), yaml_name(&OptimizerKind::Adamw), yaml_name(&DeviceChoice::Cuda(2))],
        ["cross_entropy", "adamw", "cuda:2"]
    );
}

/// YAML 1.1's float: `^[-+]?([0-9][0-9_]*)?\.[0-9.]*([eE][-+][0-9]+)?$`.
fn is_yaml11_float(text: &str) -> bool {
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
        None => (unsigned, None),
    };
    let Some((whole, fraction)) = mantissa.split_once('.') else { return false };
    let whole_ok = whole.is_empty()
        || (whole.starts_with(|c: char| c.is_ascii_digit()) && whole.chars().all(|c| c.is_ascii_digit() || c == '_'));
    let fraction_ok = fraction.chars().all(|c| c.is_ascii_digit() || c == '.');
    let exponent_ok =
        exponent.is_none_or(|e| e.len() > 1 && e.starts_with(['-', '+']) && e[1..].chars().all(|c| c.is_ascii_digit()));
    whole_ok && fraction_ok && exponent_ok
}

#[test]
fn resolved_floats_read_as_floats_in_yaml_1_1() {
    assert!(is_yaml11_float("1.0e-7") && is_yaml11_float("0.001") && is_yaml11_float("-2.5e+20"));
    assert!(!is_yaml11_float("1e-7") && !is_yaml11_float("1.0e7") && !is_yaml11_float("1000"));

    let mut cfg = parse(
        "name: f\ndata: {kind: linear, noise: 2.5e-6, validation_split: 0.2}\n\
         training: {gradient_clip: 1.0e+20, lr_schedule: {kind: reduce_on_plateau, min_lr: 1e-9}}\n",
    )
    .unwrap();
    let yaml = cfg.to_yaml().unwrap();
    let mut floats = 0;
    for line in yaml.lines() {
        let Some((_, scalar)) = line.split_once(": ") else { continue };
        if let Ok(Value::Number(n)) = serde_yaml::from_str::<Value>(scalar) {
            if n.is_f64() {
                floats += 1;
                assert!(is_yaml11_float(scalar), "{line}");
            }
        }
    }
    assert!(floats >= 12, "{floats} floats in\n{yaml}");
    for line in ["eps: 1.0e-7", "gradient_clip: 1.0e+20", "min_lr: 1.0e-9", "noise: 2.5e-6", "lr: 0.001"] {
        assert!(yaml.contains(&format!(" {line}\n")), "{line} in\n{yaml}");
    }
    cfg.resolve();
    assert_eq!(parse(&yaml).unwrap(), cfg);

    // A line inside a multi-line string is no `key: value`, and stays as written.
    let odd = Config { name: "x\ny: 1e5".into(), ..Config::default() };
    assert_eq!(parse(&odd.to_yaml().unwrap()).unwrap().name, odd.name);
}

#[test]
fn a_csv_label_column_of_text_means_classification() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Missing markers are no labels; the label comes after them.
    std::fs::write(d.join("text.csv"), "a;species\n1;NA\n2;\n3; Adelie\n").unwrap();
    std::fs::write(d.join("numbers.csv"), "a,y\n1,0.5\n2,nan\n3,N/A\n4,1e3\n").unwrap();
    std::fs::write(d.join("late.csv"), format!("a,y\n{}1,Adelie\n", "1,2\n".repeat(1000))).unwrap();
    let task = |extra: &str, file: &str, rest: &str| {
        let path = d.join(file).display().to_string();
        let cfg = load_file(d, &format!("{extra}data: {{kind: csv, path: {path}, {rest}}}\n"), &[]).unwrap();
        (cfg.task(), cfg.loss(), cfg.metrics())
    };
    let labels = "target: species, delimiter: ';'";
    let classification = (Task::Classification, Loss::CrossEntropy, vec![Metric::Accuracy]);
    let regression = (Task::Regression, Loss::Mse, vec![Metric::Mae]);
    assert_eq!(task("", "text.csv", labels), classification);
    assert_eq!(task("", "numbers.csv", "target: y"), regression);
    assert_eq!(task("", "late.csv", "target: y"), regression, "only the first 1000 rows are read");
    assert_eq!(task("", "nowhere.csv", "target: y"), regression, "the data loader reports the file");
    assert_eq!(task("", "text.csv", "target: [a, species], delimiter: ';'"), regression, "two targets");
    // The delimiter is honoured: with `,` the header is one column, `a;species`.
    assert_eq!(task("", "text.csv", "target: species"), regression);
    // An explicit task or loss decides.
    assert_eq!(task("task: regression\n", "text.csv", labels), regression);
    let huber = (Task::Regression, Loss::Huber, vec![Metric::Mae]);
    assert_eq!(task("training: {loss: huber}\n", "text.csv", labels), huber);
}

#[test]
fn a_saved_config_of_an_earlier_version_still_loads() {
    // What torchfit wrote for a CSV run before data keys were checked against the kind.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let old = "name: old\ntask: regression\ndata:\n  kind: csv\n  samples: 1000\n  features: 10\n  targets: 1\n  noise: 0.1\n  path: /x.csv\n  target: y\n  delimiter: ','\n";
    std::fs::write(&path, old).unwrap();
    let err = Config::load(Some(&path), &[]).unwrap_err().to_string();
    assert!(err.contains("data.samples applies to generated kinds only"), "{err}");
    let saved = Config::load_saved(&path, &[]).unwrap();
    assert_eq!((saved.data.samples, saved.data.noise, saved.data.features.clone()), (None, None, None));
    assert_eq!(saved.data.delimiter(), b',');
    let generated = "name: old\ndata:\n  kind: linear\n  samples: 50\n  delimiter: ','\n";
    std::fs::write(&path, generated).unwrap();
    assert_eq!(Config::load_saved(&path, &[]).unwrap().data.samples, Some(50));
}

#[test]
fn class_weight_reads_balanced_or_labels_as_text_and_writes_them_back() {
    let moons = "data: {kind: moons}\ntraining:\n  class_weight: ";
    let cfg = parse(&format!("{moons}balanced\n")).unwrap();
    assert_eq!(cfg.training.class_weight, Some(ClassWeight::Balanced));
    // Numbers and text alike become the labels' text; weights may be written as integers.
    let cfg = parse(&format!("{moons}{{0: 1, 1: 2.5, cat: 3, 0.5: 1}}\n")).unwrap();
    let want: Vec<(String, f64)> = vec![("0".into(), 1.0), ("1".into(), 2.5), ("cat".into(), 3.0), ("0.5".into(), 1.0)];
    assert_eq!(cfg.training.class_weight, Some(ClassWeight::Labels(want)));
    // The saved config reads back the same (its labels are quoted text there).
    let yaml = cfg.to_yaml().unwrap();
    assert_eq!(parse(&yaml).unwrap().training.class_weight, cfg.training.class_weight, "{yaml}");
    assert!(parse("training: {epochs: 1}\n").unwrap().training.class_weight.is_none());
    assert!(!Config::load(None, &[]).unwrap().to_yaml().unwrap().contains("class_weight"));

    let err = parse_err(&format!("{moons}balance\n"));
    assert!(err.contains("training.class_weight: unknown value `balance`, expected `balanced`"), "{err}");
    assert!(err.contains("line 3"), "{err}");
    let err = parse_err(&format!("{moons}{{a: heavy}}\n"));
    assert!(err.contains("training.class_weight") && err.contains("expected a number"), "{err}");
}

#[test]
fn class_weight_is_checked_before_the_data_is_read() {
    let err = invalid(&["training.class_weight=balanced"]);
    assert_eq!(err, "training.class_weight applies to classification only, but the task is regression");
    let dir = tempfile::tempdir().unwrap();
    let with = |weights: &str| {
        let set = format!("training.class_weight={weights}");
        let moons = "data: {kind: moons}\n";
        load_file(dir.path(), moons, &[&set]).expect_err("is invalid").to_string()
    };
    assert!(load_file(dir.path(), "data: {kind: moons}\n", &["training.class_weight={0: 2}"]).is_ok());
    assert_eq!(with("{0: 1, 1: 0}"), "training.class_weight: the weight of class \"1\" must be > 0, got 0");
    assert_eq!(with("{0: -2}"), "training.class_weight: the weight of class \"0\" must be > 0, got -2");
    assert!(with("{0: .inf}").contains("must be > 0, got inf"));
    assert_eq!(with("{1: 2, '1': 3}"), "training.class_weight: class \"1\" is given more than once");
}

#[test]
fn class_weights_in_force_follow_the_training_labels() {
    let labels: Vec<String> = ["a", "b", "c"].iter().map(|l| l.to_string()).collect();
    // scikit-learn: n_samples / (n_classes * bincount(y)) = 100 / (3 * count).
    let balanced = ClassWeight::Balanced.weights(&labels, &[50, 40, 10]).unwrap();
    let want = [100.0 / 150.0, 100.0 / 120.0, 100.0 / 30.0];
    assert!(balanced.iter().zip(want).all(|(got, want)| (got - want).abs() < 1e-12), "{balanced:?}");
    // Classes not listed weigh 1, as in Keras.
    let given = ClassWeight::Labels(vec![("c".into(), 4.0), ("a".into(), 0.5)]);
    assert_eq!(given.weights(&labels, &[1, 1, 1]).unwrap(), vec![0.5, 1.0, 4.0]);
    let unknown = ClassWeight::Labels(vec![("a".into(), 2.0), ("x".into(), 3.0)]);
    let err = unknown.weights(&labels, &[1, 1, 1]).unwrap_err().to_string();
    assert_eq!(err, "training.class_weight: no class \"x\" in the data (classes: a, b, c)");
}

#[test]
fn kind_parquet_takes_the_csv_keys_but_the_delimiter() {
    let dir = tempfile::tempdir().unwrap();
    let err = |yaml: &str, set: &[&str]| load_file(dir.path(), yaml, set).unwrap_err().to_string();
    let parquet = "data: {kind: parquet, path: d.parquet, target: y}\n";
    let cfg = load_file(dir.path(), parquet, &["data.categorical=[a]", "data.categorical_encoding=embedding"]).unwrap();
    let d = &cfg.data;
    assert_eq!(
        (d.kind, d.min_frequency, d.delimiter.as_deref(), d.standardize),
        (DataKind::Parquet, Some(1), None, Some(true))
    );
    assert_eq!(load_file(dir.path(), &cfg.to_yaml().unwrap(), &[]).unwrap(), cfg, "the saved config loads again");
    assert_eq!(
        err(parquet, &["data.delimiter=';'"]),
        "data.delimiter applies to kind csv only; this config has kind parquet"
    );
    assert_eq!(
        err(parquet, &["data.samples=5"]),
        "data.samples applies to generated kinds only; this config has kind parquet"
    );
    assert_eq!(
        err(parquet, &["data.features=3"]),
        "data.features: for kind parquet, a list of column names (default: every column but the target)"
    );
    assert!(
        err("data: {kind: parquet, path: d.parquet}\n", &[]).starts_with("data.target is required for kind parquet")
    );
    assert_eq!(err("data: {kind: parquet, target: y}\n", &[]), "data.path is required for kind parquet");
    assert_eq!(
        err("data: {kind: npy, x: x.npy, y: y.npy}\n", &["data.min_frequency=2"]),
        "data.min_frequency applies to kind csv or parquet only; this config has kind npy"
    );
}

#[test]
fn a_parquet_label_column_typed_as_text_or_boolean_means_classification() {
    use arrow_array::{ArrayRef, BooleanArray, DictionaryArray, Float64Array, StringArray};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let species: DictionaryArray<arrow_array::types::Int8Type> = vec!["Adelie", "Gentoo"].into_iter().collect();
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("x", Arc::new(Float64Array::from(vec![1.0, 2.0]))),
        ("name", Arc::new(StringArray::from(vec!["a", "b"]))),
        ("species", Arc::new(species)),
        ("flag", Arc::new(BooleanArray::from(vec![true, false]))),
    ];
    crate::testing::write_parquet(&d.join("t.parquet"), columns, 10);
    std::fs::write(d.join("broken.parquet"), b"PAR1 not parquet").unwrap();
    let task = |extra: &str, file: &str, target: &str| {
        let path = d.join(file).display().to_string();
        load_file(d, &format!("{extra}data: {{kind: parquet, path: {path}, target: {target}}}\n"), &[]).unwrap().task()
    };
    assert_eq!(task("", "t.parquet", "name"), Task::Classification);
    assert_eq!(task("", "t.parquet", "species"), Task::Classification, "dictionary-encoded text");
    assert_eq!(task("", "t.parquet", "flag"), Task::Classification, "true/false, as a CSV would hold them");
    assert_eq!(task("", "t.parquet", "x"), Task::Regression);
    assert_eq!(task("", "t.parquet", "[name, flag]"), Task::Regression, "two targets");
    assert_eq!(task("", "broken.parquet", "name"), Task::Regression, "the data loader reports the file");
    assert_eq!(task("task: regression\n", "t.parquet", "name"), Task::Regression);
}

#[test]
fn the_first_difference_between_configs_is_named() {
    let a = "training: {epochs: 5, lr: 0.1}\nname: x\n";
    let b = "training: {epochs: 3, lr: 0.1}\nname: x\n";
    assert_eq!(yaml_difference(a, b), ("training.epochs".into(), "5".into(), "3".into()));
    let c = "training: {epochs: 5}\nname: x\n";
    assert_eq!(yaml_difference(a, c), ("training.lr".into(), "0.1".into(), "absent".into()));
}
