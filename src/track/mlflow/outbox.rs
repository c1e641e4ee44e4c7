//! An MLflow run as torchfit keeps it: the file `mlflow.json` beside what it logs (a run
//! directory, or a sweep's for its parent run) holds the server, the run's id once it has
//! one, the last epoch handed over, and the outbox: the calls not yet sent, in order. It is
//! written atomically after every change, so that a resumed run logs into the same MLflow
//! run and sends neither an epoch twice nor one too few, and whatever a dead server missed
//! is sent when it answers again (next epoch, the run's end, `--resume`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::batch::{Metric, Param};
use super::client::{Client, Rejected};
use crate::atomic;

pub const MLFLOW_JSON: &str = "mlflow.json";

/// The most calls the outbox keeps; beyond it the oldest metrics are dropped (a server down
/// for thousands of epochs), with a warning.
pub const MAX_OUTBOX: usize = 10_000;
/// The first wait before a server that did not answer is tried again, doubled after each
/// failure up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A call to make, in its turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum Call {
    /// runs/log-batch.
    LogBatch {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        metrics: Vec<Metric>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        params: Vec<Param>,
    },
    /// An artifact proxy upload of the file `file` (its bytes as they are when sent).
    Upload { file: PathBuf, name: String },
    /// runs/update: `RUNNING`, `FINISHED`, `FAILED`, `KILLED`.
    SetStatus {
        status: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        end_time: Option<i64>,
    },
}

/// What runs/create needs, kept until the server has answered it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewRun {
    pub experiment: String,
    pub run_name: String,
    pub start_time: i64,
    pub tags: Vec<Param>,
}

/// mlflow.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub tracking_uri: String,
    pub create: NewRun,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_uri: Option<String>,
    /// The last epoch whose metrics were sent or put in the outbox.
    #[serde(default)]
    pub last_epoch: usize,
    /// The run's end status was sent or put in the outbox (a resume then opens it again).
    #[serde(default)]
    pub ended: bool,
    #[serde(default)]
    pub outbox: Vec<Call>,
}

/// A `State` with its file and a client of its server: calls queue, `send` delivers.
pub struct Session {
    pub state: State,
    path: PathBuf,
    client: Client,
    /// While the server is down: when to try again, and the wait after that.
    retry_at: Option<Instant>,
    backoff: Duration,
    warned_down: bool,
    warned_full: bool,
}

impl Session {
    /// The session `dir/mlflow.json` holds, when it holds one for `tracking_uri`.
    pub fn open(dir: &Path, tracking_uri: &str) -> Result<Option<Session>> {
        let path = dir.join(MLFLOW_JSON);
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let state: State =
            serde_json::from_str(&text).with_context(|| format!("{}: not torchfit's", path.display()))?;
        if state.tracking_uri != tracking_uri {
            return Ok(None);
        }
        Session::with(path, state).map(Some)
    }

    /// A new session for a run still to be created, saved at once.
    pub fn create(dir: &Path, tracking_uri: &str, create: NewRun) -> Result<Session> {
        let state = State {
            tracking_uri: tracking_uri.to_string(),
            create,
            experiment_id: None,
            run_id: None,
            artifact_uri: None,
            last_epoch: 0,
            ended: false,
            outbox: Vec::new(),
        };
        let session = Session::with(dir.join(MLFLOW_JSON), state)?;
        session.save()?;
        Ok(session)
    }

    fn with(path: PathBuf, state: State) -> Result<Session> {
        let client = Client::new(&state.tracking_uri)?;
        Ok(Session {
            state,
            path,
            client,
            retry_at: None,
            backoff: FIRST_BACKOFF,
            warned_down: false,
            warned_full: false,
        })
    }

    pub fn save(&self) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.state)?;
        atomic::write(&self.path, text.as_bytes())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues `call` (not sent yet: `send` does).
    pub fn push(&mut self, call: Call) {
        self.state.outbox.push(call);
        if self.state.outbox.len() > MAX_OUTBOX {
            if let Some(at) = self.state.outbox.iter().position(|c| matches!(c, Call::LogBatch { .. })) {
                self.state.outbox.remove(at);
                if !std::mem::replace(&mut self.warned_full, true) {
                    eprintln!(
                        "torchfit: warning: mlflow: {} holds {MAX_OUTBOX} calls not sent; dropping the oldest metrics",
                        self.path.display()
                    );
                }
            }
        }
    }

    /// Sends what the outbox holds, in order, for at most about `budget` (each request has
    /// its own deadline too), and saves the state (whether or not anything was sent). Returns whether everything was sent. A
    /// server that does not answer is warned about once and left alone for a growing
    /// backoff; a call it refuses (4xx) is dropped with a warning, as resending cannot help.
    pub fn send(&mut self, budget: Duration) -> bool {
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            self.save_or_warn();
            return false;
        }
        let deadline = Instant::now() + budget;
        self.client.set_deadline(deadline);
        let queued = self.state.outbox.len();
        let delivered = loop {
            if Instant::now() >= deadline {
                break false;
            }
            match self.next() {
                Ok(true) => {}
                Ok(false) => break true,
                Err(err) if err.is::<Rejected>() => {
                    eprintln!("torchfit: warning: mlflow: {err:#}; dropped that call");
                    self.drop_next();
                }
                Err(err) => {
                    self.down(&err);
                    break false;
                }
            }
        };
        if delivered && self.warned_down {
            eprintln!("torchfit: mlflow: {} answers again; sent the {queued} calls kept meanwhile", self.client.uri());
            self.warned_down = false;
        }
        self.save_or_warn();
        delivered
    }

    fn save_or_warn(&self) {
        if let Err(err) = self.save() {
            eprintln!("torchfit: warning: mlflow: {err:#}");
        }
    }

    /// Makes the next call (creating the run first when it has no id yet). Ok(false) when
    /// there was nothing left to do.
    fn next(&mut self) -> Result<bool> {
        if self.state.run_id.is_none() {
            self.create_run()?;
            return Ok(true);
        }
        let Some(call) = self.state.outbox.first() else { return Ok(false) };
        let run_id = self.state.run_id.clone().unwrap_or_default();
        match call {
            Call::LogBatch { metrics, params } => {
                self.client.post("runs/log-batch", &json!({"run_id": run_id, "metrics": metrics, "params": params}))?;
            }
            Call::SetStatus { status, end_time } => {
                let mut body = json!({"run_id": run_id, "status": status});
                if let Some(end_time) = end_time {
                    body["end_time"] = json!(end_time);
                }
                self.client.post("runs/update", &body)?;
            }
            Call::Upload { file, name } => {
                let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()));
                match bytes {
                    Ok(bytes) => self.client.upload(self.state.artifact_uri.as_deref().unwrap_or(""), name, bytes)?,
                    // Gone since (a run directory cleaned up): nothing to send.
                    Err(err) => eprintln!("torchfit: warning: mlflow: {err:#}; not uploaded"),
                }
            }
        }
        self.state.outbox.remove(0);
        Ok(true)
    }

    fn drop_next(&mut self) {
        if self.state.run_id.is_none() {
            // The run itself cannot be created: nothing queued for it can be sent.
            self.state.outbox.clear();
            self.retry_at = Some(Instant::now() + MAX_BACKOFF);
        } else if !self.state.outbox.is_empty() {
            self.state.outbox.remove(0);
        }
    }

    /// experiments/get-by-name (or create), then runs/create.
    fn create_run(&mut self) -> Result<()> {
        let create = &self.state.create;
        let experiment_id = match self.state.experiment_id.clone() {
            Some(id) => id,
            None => experiment_id(&self.client, &create.experiment)?,
        };
        self.state.experiment_id = Some(experiment_id.clone());
        let answer = self.client.post(
            "runs/create",
            &json!({"experiment_id": experiment_id, "run_name": create.run_name,
                    "start_time": create.start_time, "tags": create.tags}),
        )?;
        let info = &answer["run"]["info"];
        let run_id = info["run_id"].as_str().context("runs/create answered without run.info.run_id")?;
        self.state.run_id = Some(run_id.to_string());
        self.state.artifact_uri = info["artifact_uri"].as_str().map(str::to_string);
        // Saved at once: a crash now must not create the run a second time.
        self.save()
    }

    fn down(&mut self, err: &anyhow::Error) {
        if !std::mem::replace(&mut self.warned_down, true) {
            eprintln!(
                "torchfit: warning: mlflow: {err:#}; training goes on, what is not sent is kept in {} \
                 and sent when the server answers (at a later epoch, at the end, or on --resume)",
                self.path.display()
            );
        }
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }
}

/// The id of the experiment named `name`, created when there is none.
fn experiment_id(client: &Client, name: &str) -> Result<String> {
    let found = client.get("experiments/get-by-name", &[("experiment_name", name)]);
    match found {
        Ok(answer) => return id_of(&answer["experiment"]["experiment_id"]),
        Err(err) if err.downcast_ref::<Rejected>().is_some_and(|r| r.status == 404) => {}
        Err(err) => return Err(err),
    }
    match client.post("experiments/create", &json!({"name": name})) {
        Ok(answer) => id_of(&answer["experiment_id"]),
        // Created meanwhile by another process (a sweep's trials start together).
        Err(err) if err.is::<Rejected>() => {
            let answer = client.get("experiments/get-by-name", &[("experiment_name", name)])?;
            id_of(&answer["experiment"]["experiment_id"])
        }
        Err(err) => Err(err),
    }
}

fn id_of(value: &Value) -> Result<String> {
    value.as_str().map(str::to_string).context("the server answered without an experiment id")
}

/// Milliseconds since the Unix epoch, MLflow's timestamps.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
