//! A sweep logged to MLflow (its base config has `logging.mlflow`): a parent run named
//! after the sweep directory, with the search as params (method, metric, the space of
//! each parameter), created once and kept in `<sweep>/mlflow.json` so that a continued
//! sweep reuses it; every trial's run is its child (`logging.mlflow.parent_run_id`). When
//! the sweep is complete the parent logs the best trial's metric and ends FINISHED.

use std::path::Path;

use serde_json::Value;

use super::space::Space;
use super::spec::Sweep;
use super::table::{self, Row};
use super::SweepDir;
use crate::config::{Config, MlflowConfig};
use crate::track::mlflow::{self, Call, Metric, NewRun, Param, Session};

/// The base config's `logging.mlflow` and its server, when the sweep logs to MLflow.
fn mlflow_of(sweep: &Sweep) -> Option<(MlflowConfig, String, Config)> {
    let base = sweep.base_config().ok()?;
    let mlflow = base.logging.mlflow.clone()?;
    let uri = mlflow.uri()?;
    Some((mlflow, uri, base))
}

/// Creates the parent run (or finds the one the sweep directory holds) before any trial
/// starts, so that the trials find its id. A server that is down is a warning: the trials
/// then log without a parent.
pub fn open_parent(dir: &SweepDir, sweep: &Sweep) {
    let Some((config, uri, base)) = mlflow_of(sweep) else { return };
    let session = match Session::open(dir.path(), &uri) {
        Ok(Some(session)) => Ok(session),
        Ok(None) => create(dir, sweep, &config, &uri, &base),
        Err(err) => Err(err),
    };
    match session {
        Ok(mut session) => {
            session.send(mlflow::END_BUDGET);
        }
        Err(err) => eprintln!("torchfit: warning: mlflow: {err:#}"),
    }
}

fn create(dir: &SweepDir, sweep: &Sweep, config: &MlflowConfig, uri: &str, base: &Config) -> anyhow::Result<Session> {
    let path = dir.path();
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| base.name.clone());
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let tags = vec![
        param("mlflow.source.name", "torchfit"),
        param("torchfit.version", env!("CARGO_PKG_VERSION")),
        param("torchfit.sweep_dir", &absolute.display().to_string()),
    ];
    let create = NewRun {
        experiment: config.experiment.clone().unwrap_or_else(|| base.name.clone()),
        run_name: config.run_name.clone().unwrap_or(name),
        start_time: mlflow::now_ms(),
        tags,
    };
    let mut session = Session::create(path, uri, create)?;
    for params in mlflow::chunks(&summary(sweep), mlflow::MAX_PARAMS_PER_BATCH) {
        session.push(Call::LogBatch { metrics: Vec::new(), params });
    }
    Ok(session)
}

/// The search as params: `method`, `metric`, `mode`, `trials`, and `parameters.<key>`
/// with its values (`[0.001,0.01]`) or distribution (`log_uniform(0.0001, 0.1)`).
fn summary(sweep: &Sweep) -> Vec<Param> {
    let spec = &sweep.spec;
    let mut params = vec![
        param("method", &yaml_text(&spec.method)),
        param("metric", &sweep.metric),
        param("mode", &yaml_text(&sweep.mode)),
        param("trials", &sweep.trials().len().to_string()),
        param("epochs", &sweep.epochs.to_string()),
    ];
    if let Some(early) = &spec.early_termination {
        params.push(param("early_termination", &serde_json::to_string(early).unwrap_or_default()));
    }
    for (name, space) in &sweep.parameters {
        let text = match space {
            Space::Values { values } => serde_json::to_string(values).unwrap_or_default(),
            Space::Distribution { distribution, min, max } => format!("{}({min}, {max})", yaml_text(distribution)),
        };
        params.push(param(&format!("parameters.{name}"), &text));
    }
    params
}

fn yaml_text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

fn param(key: &str, value: &str) -> Param {
    Param { key: mlflow::key_of(key), value: value.to_string() }
}

/// The parent run's id, once the server has created it.
fn parent_id(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(mlflow::MLFLOW_JSON)).ok()?;
    let state: Value = serde_json::from_str(&text).ok()?;
    state["run_id"].as_str().map(str::to_string)
}

/// A new trial's config, made a child of the sweep's parent run when there is one.
pub fn with_parent(mut config: Config, dir: &SweepDir) -> Config {
    if let Some(mlflow) = config.logging.mlflow.as_mut().filter(|m| m.parent_run_id.is_none()) {
        mlflow.parent_run_id = parent_id(dir.path());
    }
    config
}

/// The sweep is complete: the parent logs the best trial (`best_<metric>`, and
/// `best_trial`, its number) and ends FINISHED, once.
pub fn end_parent(dir: &SweepDir, sweep: &Sweep, rows: &[Row]) {
    let Some((_, uri, _)) = mlflow_of(sweep) else { return };
    let mut session = match Session::open(dir.path(), &uri) {
        Ok(Some(session)) if !session.state.ended => session,
        Ok(_) => return,
        Err(err) => return eprintln!("torchfit: warning: mlflow: {err:#}"),
    };
    let now = mlflow::now_ms();
    if let Some(best) = table::best(rows, sweep.mode) {
        let metrics = vec![
            Metric::new(&format!("best_{}", sweep.metric), best.best.unwrap_or(f64::NAN), now, 0),
            Metric::new("best_trial", best.trial.index as f64, now, 0),
        ];
        session.push(Call::LogBatch { metrics, params: Vec::new() });
    }
    session.push(Call::SetStatus { status: "FINISHED".into(), end_time: Some(now) });
    session.state.ended = true;
    session.send(mlflow::END_BUDGET);
}
