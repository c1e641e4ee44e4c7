//! `logging.mlflow`: the run logged to an MLflow tracking server through its REST API. On
//! start, the experiment (found or created) and the run, with tags and the resolved config
//! as params; after each epoch, metrics.csv's row (step = epoch); at the end, the test
//! metrics, the artifacts (through the server's artifact proxy) and the status. Everything
//! goes through the outbox of `<run>/mlflow.json` (outbox.rs), so that a server that is
//! down costs a warning, and what it missed is sent when it is back.

use std::time::Duration;

use anyhow::{Context, Result};

use super::{Ended, Started, Tracker};
use crate::config::{Config, MlflowConfig};
use crate::report::EpochRecord;
use crate::rundir::{RunDir, Status};

mod batch;
mod client;
mod outbox;

pub use batch::{chunks, key_of, Metric, Param, MAX_METRICS_PER_BATCH, MAX_PARAMS_PER_BATCH};
pub use outbox::{now_ms, Call, NewRun, Session, MLFLOW_JSON};

/// How long an epoch's end may wait on the server, all calls together.
const EPOCH_BUDGET: Duration = Duration::from_secs(3);
/// How long the run's end may wait (artifacts are uploaded then).
pub const END_BUDGET: Duration = Duration::from_secs(60);

pub struct Mlflow {
    config: MlflowConfig,
    /// The server's address, resolved once (`tracking_uri` or $MLFLOW_TRACKING_URI).
    uri: String,
    session: Option<Session>,
    /// metrics.csv's value columns.
    columns: Vec<String>,
}

impl Mlflow {
    pub fn new(config: &MlflowConfig) -> Mlflow {
        let uri = config.uri().unwrap_or_default();
        Mlflow { config: config.clone(), uri, session: None, columns: Vec::new() }
    }

    fn session(&mut self) -> Result<&mut Session> {
        self.session.as_mut().context("internal error: the MLflow tracker was not started")
    }
}

impl Tracker for Mlflow {
    fn name(&self) -> &'static str {
        "mlflow"
    }

    fn start(&mut self, run: &Started) -> Result<()> {
        self.columns = run.columns.to_vec();
        let dir = run.dir.path();
        let mut session = match Session::open(dir, &self.uri)? {
            Some(mut session) => {
                // A resumed run: the same MLflow run, open again if its end was sent.
                session.state.outbox.retain(|c| !matches!(c, Call::SetStatus { .. }));
                if std::mem::take(&mut session.state.ended) {
                    session.push(Call::SetStatus { status: "RUNNING".into(), end_time: None });
                }
                session
            }
            None => {
                let mut session = Session::create(dir, &self.uri, new_run(&self.config, run)?)?;
                let params = batch::params(&super::hyperparameters(run.config_yaml)?);
                for params in chunks(&params, MAX_PARAMS_PER_BATCH) {
                    session.push(Call::LogBatch { metrics: Vec::new(), params });
                }
                session
            }
        };
        session.send(EPOCH_BUDGET);
        self.session = Some(session);
        Ok(())
    }

    fn epoch(&mut self, record: &EpochRecord) -> Result<()> {
        let columns = self.columns.clone();
        let session = self.session()?;
        // A resumed run trains the epochs after its checkpoint again, bit for bit: those
        // already sent (or queued) are not sent twice.
        if record.epoch <= session.state.last_epoch {
            return Ok(());
        }
        let now = now_ms();
        let mut metrics: Vec<Metric> =
            columns.iter().zip(&record.values).map(|(name, &v)| Metric::new(name, v, now, record.epoch)).collect();
        metrics.push(Metric::new("lr", record.lr, now, record.epoch));
        for metrics in chunks(&metrics, MAX_METRICS_PER_BATCH) {
            session.push(Call::LogBatch { metrics, params: Vec::new() });
        }
        session.state.last_epoch = record.epoch;
        session.send(EPOCH_BUDGET);
        Ok(())
    }

    fn end(&mut self, run: &Ended) -> Result<()> {
        let session = self.session()?;
        let now = now_ms();
        let step = run.history.last().map_or(0, |r| r.epoch);
        let tests: Vec<Metric> = run
            .test_metrics
            .iter()
            .filter_map(|(name, v)| v.as_f64().map(|v| Metric::new(&format!("test_{name}"), v, now, step)))
            .collect();
        for metrics in chunks(&tests, MAX_METRICS_PER_BATCH) {
            session.push(Call::LogBatch { metrics, params: Vec::new() });
        }
        for name in &run.artifacts {
            let file = std::path::absolute(run.dir.file(name)).unwrap_or_else(|_| run.dir.file(name));
            session.push(Call::Upload { file, name: name.to_string() });
        }
        session.push(Call::SetStatus { status: mlflow_status(run.status).into(), end_time: Some(now) });
        session.state.ended = true;
        session.send(END_BUDGET);
        Ok(())
    }
}

/// MLflow's name of how a run ended. Interrupted and paused runs (a signal, an ASHA rung)
/// are KILLED: stopped from outside, resumable; a resume sets the run RUNNING again.
fn mlflow_status(status: Status) -> &'static str {
    match status {
        Status::Running => "RUNNING",
        Status::Finished | Status::StoppedEarly => "FINISHED",
        Status::Failed => "FAILED",
        Status::Interrupted | Status::Paused => "KILLED",
    }
}

fn new_run(config: &MlflowConfig, run: &Started) -> Result<NewRun> {
    let dir = run.dir.path();
    let dir_name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| run.config.name.clone());
    let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut tags = vec![
        tag("mlflow.source.name", "torchfit"),
        tag("torchfit.version", env!("CARGO_PKG_VERSION")),
        tag("torchfit.world_size", &run.world_size.to_string()),
        tag("torchfit.device", run.device),
        tag("torchfit.run_dir", &absolute.display().to_string()),
    ];
    if let Some(parent) = &config.parent_run_id {
        tags.push(tag("mlflow.parentRunId", parent));
    }
    Ok(NewRun {
        experiment: config.experiment.clone().unwrap_or_else(|| run.config.name.clone()),
        run_name: config.run_name.clone().unwrap_or(dir_name),
        start_time: now_ms(),
        tags,
    })
}

fn tag(key: &str, value: &str) -> Param {
    Param { key: key.to_string(), value: value.to_string() }
}

/// `train --resume` of a run that had already finished: sends what its outbox still holds
/// (a server that was down at its end), if anything.
pub fn deliver(config: &Config, dir: &RunDir) {
    let Some(uri) = config.logging.mlflow.as_ref().and_then(MlflowConfig::uri) else { return };
    match Session::open(dir.path(), &uri) {
        Ok(Some(mut session)) if !session.state.outbox.is_empty() || session.state.run_id.is_none() => {
            if session.send(END_BUDGET) {
                eprintln!("torchfit: mlflow: sent what {} held", session.path().display());
            }
        }
        Ok(_) => {}
        Err(err) => eprintln!("torchfit: warning: mlflow: {err:#}"),
    }
}

#[cfg(test)]
mod tests;
