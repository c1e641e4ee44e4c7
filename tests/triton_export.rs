//! `torchfit export --format triton`: the repository's config.pbtxt parses into Triton's
//! ModelConfig protobuf and matches model.pt's forward (tests/python/triton_config.py, with
//! the tritonclient package that scripts/libtorch.sh installs into the torch cache).

use std::path::Path;
use std::process::Command;

mod common;
use common::server::train;
use common::*;

#[test]
fn triton_repository_config_matches_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    train(d, "keras", "configs/keras_example.yaml", &["training.epochs=1"]);
    let titanic = repo_file("data/titanic.csv").display().to_string();
    train(d, "titanic", "configs/titanic.yaml", &[&format!("data.path={titanic}"), "training.epochs=1"]);
    train(d, "moons", "configs/moons.yaml", &["training.loss=bce", "training.epochs=1"]);
    let mut args = vec![repo_file("tests/python/triton_config.py").display().to_string()];
    for (run, name) in [("keras", "keras_example"), ("titanic", "titanic"), ("moons", "moons")] {
        let out = torchfit(d, &["export", run, "--format", "triton", "--output", "repo"]);
        assert_ok(&out);
        assert_eq!(stdout(&out).trim(), format!("wrote repo/{name}"));
        args.push(d.join("repo").join(name).display().to_string());
        args.push(d.join(run).join("model.pt").display().to_string());
    }
    // A repository needs a folder to go to.
    assert_fails_with(&torchfit(d, &["export", "keras", "--format", "triton"]), &["--output REPO_DIR"]);
    let python_path = env!("TORCHFIT_TORCH_PYTHONPATH");
    assert!(
        Path::new(python_path).join("tritonclient").is_dir(),
        "no tritonclient at {python_path}: run through scripts/libtorch.sh"
    );
    let out = Command::new("python3").args(&args).env("PYTHONPATH", python_path).output().expect("python3 runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "triton_config.py failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}
