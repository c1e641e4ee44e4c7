//! `torchfit runs` and the plots, end to end: tiny real runs (regression with and without
//! validation, classification, one stopped early, one interrupted by SIGINT), listed as a
//! table, CSV and JSON and checked against their own summary.json and metrics.csv; their
//! curves drawn in one PNG; loss.png's panels; unreadable files and bad arguments.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

mod common;
use common::*;

/// The runs every test reads (none writes there): trained once per test process.
fn fixture() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("runs-fixture");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("runs/group")).unwrap();
        train_runs(&dir);
        dir
    })
}

fn train_runs(d: &Path) {
    let linear = repo_file("configs/linear.yaml").display().to_string();
    let small = ["data.samples=400", "data.validation_split=0.2"];
    assert_ok(&train_config(d, &linear, "runs/reg", &[&small[..], &["training.epochs=4"]].concat()));
    // No epoch improves val_loss by 10 on the first: early stopping ends it at epoch 2.
    let stop = "training.early_stopping={monitor: val_loss, patience: 1, min_delta: 10}";
    assert_ok(&train_config(d, &linear, "runs/stopped", &[&small[..], &["training.epochs=20", stop]].concat()));
    let noval = ["data.samples=400", "training.epochs=3", "training.metrics=[]"];
    assert_ok(&train_config(d, &linear, "runs/noval", &noval));
    let data = d.join("data");
    std::fs::create_dir_all(&data).unwrap();
    colour_classifier(&data, 400, "hidden: [16]", "epochs: 6, batch_size: 32, optimizer: {kind: adam, lr: 0.003}");
    for (out, epochs) in [("runs/cls", "6"), ("runs/group/cls_short", "2")] {
        let out = d.join(out).display().to_string();
        assert_ok(&train_config(&data, "t.yaml", &out, &[&format!("training.epochs={epochs}")]));
    }
    interrupted_run(d, &linear);
    // A run that failed on resuming: its loss.png is drawn again, saying so.
    assert_ok(&train_config(d, &linear, "runs/failed", &[&small[..], &["training.epochs=2"]].concat()));
    std::fs::copy(d.join("runs/failed/loss.png"), d.join("failed-before.png")).unwrap();
    let lr = "training.optimizer.lr=1.0e+30";
    let out = torchfit(d, &["train", "--resume", "runs/failed", "--set", "training.epochs=4", "--set", lr, "--quiet"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// A run stopped by SIGINT once its first checkpoint is written.
fn interrupted_run(d: &Path, linear: &str) {
    let sets = ["data.samples=3000", "data.validation_split=0.2", "training.batch_size=16", "training.epochs=500"];
    let mut args = vec!["train", linear, "--device", "cpu", "--quiet", "--out", "runs/interrupted"];
    for s in &sets {
        args.extend(["--set", *s]);
    }
    let mut child =
        Command::new(BIN).args(&args).current_dir(d).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let last = d.join("runs/interrupted/checkpoint/last.safetensors");
    let start = Instant::now();
    while !last.exists() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before its first checkpoint");
        assert!(start.elapsed() < Duration::from_secs(60), "no checkpoint");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
}

/// The run directories below `runs/`, by name.
const RUNS: [&str; 7] = ["reg", "stopped", "noval", "cls", "group/cls_short", "interrupted", "failed"];

/// What a row must say, from the run's own files: (name, status, epochs, best, last,
/// seconds, device, world size).
type Expected = (String, String, u64, Option<f64>, Option<f64>, f64, String, u64);

fn expected(run: &Path, metric: &str, higher: bool) -> Expected {
    let s = summary(run);
    let (header, rows) = read_csv(&run.join("metrics.csv"));
    let values: Vec<f64> = match header.iter().position(|h| h == metric) {
        Some(at) => rows.iter().map(|r| r[at]).filter(|v| v.is_finite()).collect(),
        None => Vec::new(),
    };
    let best = values.iter().copied().reduce(if higher { f64::max } else { f64::min });
    (
        run.file_name().unwrap().to_string_lossy().into_owned(),
        s["status"].as_str().unwrap().to_string(),
        s["epochs"].as_u64().unwrap(),
        best,
        values.last().copied(),
        s["total_seconds"].as_f64().unwrap(),
        s["device"].as_str().unwrap().to_string(),
        s["world_size"].as_u64().unwrap(),
    )
}

/// `torchfit runs --format csv` in the fixture, as rows of `Expected`'s shape.
fn listed_csv(args: &[&str]) -> Vec<Expected> {
    let out = torchfit(fixture(), &[&["runs", "--format", "csv"], args].concat());
    assert_ok(&out);
    let mut reader = csv::Reader::from_reader(out.stdout.as_slice());
    let number = |cell: &str| (!cell.is_empty()).then(|| cell.parse::<f64>().unwrap());
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            let cell = |i: usize| r.get(i).unwrap().to_string();
            let (best, last, seconds) = (number(&cell(3)), number(&cell(4)), cell(5).parse().unwrap());
            (cell(0), cell(1), cell(2).parse().unwrap(), best, last, seconds, cell(6), cell(7).parse().unwrap())
        })
        .collect()
}

/// `rows` sorted as the table sorts them: best first, runs without the metric last.
fn sorted(mut rows: Vec<Expected>, higher: bool) -> Vec<Expected> {
    rows.sort_by(|a, b| match (a.3, b.3) {
        (Some(x), Some(y)) if higher => y.total_cmp(&x).then(a.0.cmp(&b.0)),
        (Some(x), Some(y)) => x.total_cmp(&y).then(a.0.cmp(&b.0)),
        (x, y) => y.is_some().cmp(&x.is_some()).then(a.0.cmp(&b.0)),
    });
    rows
}

#[test]
fn the_table_says_what_each_runs_files_say_best_first() {
    let d = fixture();
    let expect = sorted(RUNS.iter().map(|r| expected(&d.join("runs").join(r), "val_loss", false)).collect(), false);
    assert_eq!(listed_csv(&[]), expect);
    let status = |name: &str| expect.iter().find(|r| r.0 == name).unwrap().1.clone();
    let statuses = [status("stopped"), status("interrupted"), status("failed"), status("reg")];
    assert_eq!(statuses, ["stopped_early", "interrupted", "failed", "finished"]);
    assert_eq!(expect.last().unwrap().0, "noval", "a run without val_loss comes last");

    // The same rows as aligned text and as JSON.
    let out = torchfit(d, &["runs", "runs"]);
    assert_ok(&out);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), RUNS.len() + 1, "{text}");
    assert!(lines[0].starts_with("name") && lines[0].contains("best_val_loss"), "{text}");
    let names: Vec<&str> = lines[1..].iter().map(|l| l.split_whitespace().next().unwrap()).collect();
    assert_eq!(names, expect.iter().map(|r| r.0.as_str()).collect::<Vec<_>>());
    let at = lines[0].find("best_val_loss").unwrap();
    assert!(lines[1..].iter().all(|l| l[at..].starts_with(|c: char| c.is_ascii_digit() || c == '-')), "{text}");
    let out = torchfit(d, &["runs", "--format", "json"]);
    assert_ok(&out);
    let json: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    for (object, row) in json.iter().zip(&expect) {
        assert_eq!(object["name"], row.0.as_str());
        assert_eq!(object["metric"], "val_loss");
        assert_eq!(object["best"].as_f64(), row.3);
        assert_eq!(object["last"].as_f64(), row.4);
        assert_eq!((object["epochs"].as_u64(), object["world_size"].as_u64()), (Some(row.2), Some(row.7)));
    }
    assert_eq!(json.len(), RUNS.len());
}

#[test]
fn a_metric_where_higher_is_better_sorts_by_its_highest_value() {
    let d = fixture();
    let expect = sorted(RUNS.iter().map(|r| expected(&d.join("runs").join(r), "val_accuracy", true)).collect(), true);
    let listed = listed_csv(&["--metric", "val_accuracy", "runs/group", "runs"]);
    assert_eq!(listed, expect);
    assert_eq!((listed[0].0.as_str(), listed[1].0.as_str()), ("cls", "cls_short"));
    assert!(listed[2..].iter().all(|r| r.3.is_none()), "{listed:?}");
    // The best is the highest, not merely the last: the longer run's accuracy moved.
    let (header, rows) = read_csv(&d.join("runs/cls/metrics.csv"));
    let at = header.iter().position(|h| h == "val_accuracy").unwrap();
    let lowest = rows.iter().map(|r| r[at]).fold(f64::INFINITY, f64::min);
    assert!(listed[0].3.unwrap() > lowest, "{rows:?}");
}

/// A PNG's width, height and pixels.
fn decode(path: &Path) -> (u32, u32, Vec<u8>) {
    let mut reader = png::Decoder::new(std::fs::File::open(path).unwrap()).read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).unwrap();
    pixels.truncate(info.buffer_size());
    (info.width, info.height, pixels)
}

#[test]
fn plot_draws_the_runs_curves_in_one_png() {
    let d = fixture();
    let out_dir = tempfile::tempdir().unwrap();
    let (two, three) = (out_dir.path().join("two.png"), out_dir.path().join("three.png"));
    let out = torchfit(d, &["runs", "--plot", "val_loss", "-o", two.to_str().unwrap(), "runs/reg", "runs/stopped"]);
    assert_ok(&out);
    assert!(stdout(&out).contains("(2 runs)"), "{}", stdout(&out));
    let out = torchfit(
        d,
        &["runs", "--plot", "val_loss", "-o", three.to_str().unwrap(), "runs/reg", "runs/stopped", "runs/cls"],
    );
    assert_ok(&out);
    let (two, three) = (decode(&two), decode(&three));
    assert_eq!((two.0, two.1), (1000, 600));
    assert_eq!((three.0, three.1), (1000, 600));
    assert_ne!(two.2, three.2, "a third run changes the picture");

    // Of 13 runs, the 12 best are drawn, and the command says so.
    let many = out_dir.path().join("many");
    for i in 0..13 {
        copy_run(&many.join(format!("r{i:02}")));
    }
    let out = torchfit(out_dir.path(), &["runs", "--plot", "val_loss", "many"]);
    assert_ok(&out);
    assert!(stdout(&out).contains("wrote runs.png (12 runs)"), "{}", stdout(&out));
    assert!(stderr(&out).contains("13 runs have val_loss; drawing the 12 best"), "{}", stderr(&out));
    assert_eq!(decode(&out_dir.path().join("runs.png")).0, 1000);

    let out = torchfit(d, &["runs", "--plot", "val_acc", "-o", "x.png"]);
    assert_fails_with(&out, &["val_acc", "val_accuracy", "val_loss", "mae"]);
    assert!(!d.join("x.png").exists());
}

#[test]
fn loss_png_has_a_panel_per_metric_and_unfinished_runs_have_it_too() {
    let d = fixture().join("runs");
    let size = |run: &str| {
        let (w, h, _) = decode(&d.join(run).join("loss.png"));
        (w, h)
    };
    assert_eq!(size("noval"), (800, 500), "the loss alone: one panel, as before");
    assert_eq!(size("cls"), (800, 680), "loss and accuracy");
    assert_eq!(size("reg"), (800, 1020), "loss, mae and rmse");
    assert_eq!(size("stopped"), (800, 1020));
    assert_eq!(size("interrupted"), (800, 1020), "an interrupted run has its plot");
    assert_eq!(size("failed"), (800, 1020));
    let before = decode(&fixture().join("failed-before.png"));
    assert_ne!(decode(&d.join("failed/loss.png")).2, before.2, "a failed run's plot marks where it stopped");
}

/// A copy of the fixture's `reg` run at `to`.
fn copy_run(to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for file in ["summary.json", "metrics.csv", "config.yaml"] {
        std::fs::copy(fixture().join("runs/reg").join(file), to.join(file)).unwrap();
    }
}

#[test]
fn unreadable_files_are_one_line_warnings_and_bad_arguments_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for run in ["half", "junk", "huge", "fine", "sweep/trials/0001"] {
        copy_run(&d.join("all").join(run));
    }
    let all = d.join("all");
    let summary_text = std::fs::read_to_string(all.join("half/summary.json")).unwrap();
    std::fs::write(all.join("half/summary.json"), &summary_text[..summary_text.len() / 2]).unwrap();
    // Epoch 2's loss, a terminal's clear-screen escape.
    let metrics = std::fs::read_to_string(all.join("junk/metrics.csv")).unwrap();
    let lines: Vec<String> = metrics
        .lines()
        .map(|l| match l.split_once(',') {
            Some(("2", rest)) => format!("2,\u{1b}[2J,{}", rest.split_once(',').unwrap().1),
            _ => l.to_string(),
        })
        .collect();
    std::fs::write(all.join("junk/metrics.csv"), lines.join("\n") + "\n").unwrap();
    std::fs::write(all.join("huge/summary.json"), vec![b' '; 5 << 20]).unwrap();
    // A sweep trial ASHA left at its rung.
    let trial = all.join("sweep/trials/0001/summary.json");
    std::fs::write(&trial, std::fs::read_to_string(&trial).unwrap().replace("\"finished\"", "\"paused\"")).unwrap();
    std::fs::write(all.join("sweep/results.csv"), "trial,status,epochs\n0001,pruned,4\n").unwrap();
    // A folder of configs is not a run, and a run below it is found.
    copy_run(&all.join("configs/nested"));
    std::fs::copy(all.join("configs/nested/config.yaml"), all.join("configs/config.yaml")).unwrap();

    let out = torchfit(d, &["runs", "all"]);
    assert_ok(&out);
    let err = stderr(&out);
    let warnings: Vec<&str> = err.lines().collect();
    assert_eq!(warnings.len(), 3, "{err}");
    assert!(warnings.iter().all(|w| w.starts_with("torchfit: warning: ")), "{err}");
    assert!(warnings.iter().any(|w| w.contains("half/summary.json: not valid JSON")), "{err}");
    assert!(warnings.iter().any(|w| w.contains("huge/summary.json: larger than 4 MiB")), "{err}");
    assert!(warnings.iter().any(|w| w.contains("junk/metrics.csv: row 3: loss is \"\u{fffd}[2J\"")), "{err}");
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 7, "every run is listed with what could be read:\n{text}");
    assert!(
        text.lines().any(|l| l.starts_with("nested ")) && !text.lines().any(|l| l.starts_with("configs ")),
        "{text}"
    );
    let line = |name: &str| text.lines().find(|l| l.starts_with(name)).unwrap().to_string();
    assert!(line("half ").split_whitespace().nth(1) == Some("-"), "{text}");
    assert!(line("0001").contains(" pruned "), "{text}");
    assert!(!text.contains('\u{1b}'), "{text}");

    assert_fails_with(&torchfit(d, &["runs", "missing"]), &["missing does not exist"]);
    assert_fails_with(&torchfit(d, &["runs", "all/fine/summary.json"]), &["summary.json is not a directory"]);
    assert_fails_with(&torchfit(d, &["runs"]), &["runs does not exist"]);
    assert_fails_with(&torchfit(d, &["runs", "--metric", "acuracy", "all/fine"]), &["acuracy", "val_loss, val_mae"]);
    assert_fails_with(&torchfit(d, &["runs", "--format", "xml", "all"]), &["xml"]);
}
