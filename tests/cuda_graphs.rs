//! `training.cuda_graphs`: off CUDA, `on` is an error naming the key and `auto` is off; on a
//! CUDA machine, a run replayed from a CUDA graph ends where the eager run ends (same seed),
//! within 1e-6 relative. scripts/device-check.sh runs the CUDA test on a GPU.

use std::path::Path;

mod common;
use common::*;

fn cuda_available(dir: &Path) -> bool {
    let info = stdout(&torchfit(dir, &["info"]));
    info.lines().any(|l| l.trim() == "cuda available: true")
}

#[test]
fn on_without_cuda_is_an_error_and_auto_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = torchfit(d, &["train", "--device", "cpu", "--quiet", "--set", "training.cuda_graphs=on"]);
    assert_fails_with(&out, &["training.cuda_graphs", "CUDA"]);
    let out = torchfit(d, &["train", "--device", "cpu", "--quiet", "--out", "auto", "--set", "training.epochs=2"]);
    assert_ok(&out);
    assert_eq!(summary(&d.join("auto"))["cuda_graphs"], false);
    let out = torchfit(d, &["train", "--device", "cpu", "--quiet", "--set", "training.cuda_graphs=sometimes"]);
    assert_fails_with(&out, &["training.cuda_graphs"]);
}

#[test]
fn cuda_graph_runs_equal_eager_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    if !cuda_available(d) {
        println!("skipped: no CUDA device (torchfit info says cuda available: false)");
        return;
    }
    // The Keras example (a launch-bound step; its last batch of an epoch is smaller and runs
    // eagerly), in each precision and with each optimizer rule the graph must capture.
    let cases: [&[&str]; 4] = [
        &[],
        &["training.precision=bf16"],
        &["training.optimizer.semantics=torch", "training.gradient_clip=1.0"],
        &["training.optimizer.kind=sgd", "training.optimizer.momentum=0.9", "training.lr_schedule.kind=cosine"],
    ];
    for (i, sets) in cases.iter().enumerate() {
        let mut losses = Vec::new();
        for graphs in ["on", "off"] {
            let run = format!("run{i}-{graphs}");
            let mut args = vec!["train", "--device", "cuda", "--quiet", "--out", &run];
            let mode = format!("training.cuda_graphs={graphs}");
            args.extend(["--set", &mode, "--set", "training.epochs=20"]);
            for s in sets.iter() {
                args.extend(["--set", s]);
            }
            assert_ok(&torchfit(d, &args));
            let s = summary(&d.join(&run));
            assert_eq!(s["cuda_graphs"], graphs == "on", "{sets:?}");
            losses.push(s["final_metrics"]["loss"].as_f64().unwrap());
        }
        let relative = (losses[0] - losses[1]).abs() / losses[1].abs();
        assert!(relative <= 1e-6, "{sets:?}: graphs {} vs eager {}: {relative:e}", losses[0], losses[1]);
    }
}
