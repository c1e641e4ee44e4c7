//! The configs of `make bench-tables` (configs/public/, bench/table_bench.py): the binary takes
//! each one, they hold at least eight public tables of both tasks and two of free text, and the
//! tables of each sort share one template (docs/tables.md: no per-table tuning), so a tuned
//! table cannot slip into the comparison.

mod common;

use common::{repo_file, BIN};
use std::process::Command;

/// `torchfit config FILE`: the resolved config as YAML.
fn resolved(path: &std::path::Path) -> serde_yaml::Value {
    let out = Command::new(BIN).arg("config").arg(path).output().expect("the torchfit binary runs");
    assert!(out.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    serde_yaml::from_slice(&out.stdout).expect("torchfit config prints YAML")
}

/// The training section less what the task decides (loss and metrics).
fn template_part(config: &serde_yaml::Value) -> (serde_yaml::Value, serde_yaml::Value) {
    let mut training = config["training"].clone();
    let map = training.as_mapping_mut().expect("training is a map");
    map.remove("loss");
    map.remove("metrics");
    (config["model"].clone(), training)
}

#[test]
fn public_tables_are_eight_or_more_of_both_tasks_on_one_template() {
    let mut files: Vec<_> = std::fs::read_dir(repo_file("configs/public"))
        .expect("configs/public exists")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let configs: Vec<_> = files.iter().map(|p| (p, resolved(p))).collect();
    // The example tables (data/ in the repository) are extras; the public ones come from pip packages.
    let public: Vec<_> = configs
        .iter()
        .filter(|(_, c)| !c["data"]["path"].as_str().unwrap_or("").starts_with("data/") && c["data"]["text"].is_null())
        .collect();
    assert!(public.len() >= 8, "only {} public tables in configs/public", public.len());
    for task in ["classification", "regression"] {
        assert!(public.iter().any(|(_, c)| c["task"].as_str() == Some(task)), "no public {task} table");
    }
    let (text, tables): (Vec<_>, Vec<_>) = configs.iter().partition(|(_, c)| !c["data"]["text"].is_null());
    assert!(text.len() >= 2, "only {} text tables in configs/public", text.len());
    for sort in [text, tables] {
        let (first_path, first) = sort[0];
        for (path, config) in &sort[1..] {
            assert_eq!(
                template_part(config),
                template_part(first),
                "{} and {} differ in model or training",
                path.display(),
                first_path.display()
            );
        }
    }
}
