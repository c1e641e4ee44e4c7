//! `logging`: where a run's progress goes besides its own directory, for the tools people
//! compare experiments in: TensorBoard event files, an MLflow tracking server (`track`
//! writes and sends them). Both are off unless asked for.

use std::path::PathBuf;

use anyhow::Result;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::validate::echo;
use super::{Config, Invalid};

/// The environment variable MLflow's own clients read the server from, used when
/// `logging.mlflow.tracking_uri` is not set.
pub const MLFLOW_TRACKING_URI: &str = "MLFLOW_TRACKING_URI";

/// The longest MLflow experiment or run name torchfit sends (MLflow's own limit is larger;
/// a name this long is a mistake).
const MAX_MLFLOW_NAME: usize = 250;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// `true`: event files in `<run>/tensorboard`; a path: in `<path>/<run directory's
    /// name>`, so that one `tensorboard --logdir <path>` shows every run logged there.
    #[serde(skip_serializing_if = "TensorBoard::is_off")]
    pub tensorboard: TensorBoard,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mlflow: Option<MlflowConfig>,
}

impl LoggingConfig {
    pub fn is_off(&self) -> bool {
        self.tensorboard.is_off() && self.mlflow.is_none()
    }
}

/// `logging.tensorboard`: `false` (the default), `true`, or a directory.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum TensorBoard {
    #[default]
    Off,
    /// `<run>/tensorboard`.
    RunDir,
    /// `<dir>/<run directory's name>`.
    Dir(PathBuf),
}

impl TensorBoard {
    pub fn is_off(&self) -> bool {
        *self == TensorBoard::Off
    }
}

#[derive(Deserialize)]
#[serde(untagged, expecting = "true, false or a directory")]
enum TensorBoardYaml {
    On(bool),
    Dir(PathBuf),
}

impl<'de> Deserialize<'de> for TensorBoard {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match TensorBoardYaml::deserialize(deserializer)? {
            TensorBoardYaml::On(false) => TensorBoard::Off,
            TensorBoardYaml::On(true) => TensorBoard::RunDir,
            TensorBoardYaml::Dir(dir) => TensorBoard::Dir(dir),
        })
    }
}

impl Serialize for TensorBoard {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            TensorBoard::Off => serializer.serialize_bool(false),
            TensorBoard::RunDir => serializer.serialize_bool(true),
            TensorBoard::Dir(dir) => dir.serialize(serializer),
        }
    }
}

/// `logging.mlflow`: a tracking server, reached through its REST API.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MlflowConfig {
    /// `http://host:port` of `mlflow server`; when absent, `$MLFLOW_TRACKING_URI`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracking_uri: Option<String>,
    /// The experiment the run is logged under (created when missing) [default: `name`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,
    /// The MLflow run's name [default: the run directory's name].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_name: Option<String>,
    /// Log the run as a child of this MLflow run (`mlflow.parentRunId`): a sweep sets it
    /// for its trials to its own parent run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_run_id: Option<String>,
}

impl MlflowConfig {
    /// The server: `tracking_uri`, else `$MLFLOW_TRACKING_URI`.
    pub fn uri(&self) -> Option<String> {
        self.tracking_uri.clone().or_else(|| std::env::var(MLFLOW_TRACKING_URI).ok().filter(|u| !u.is_empty()))
    }
}

impl Config {
    pub(super) fn validate_logging(&self) -> Result<()> {
        if let TensorBoard::Dir(dir) = &self.logging.tensorboard {
            if dir.as_os_str().is_empty() {
                return Err(invalid(
                    "logging.tensorboard",
                    "logging.tensorboard must be true, false or a directory, got \"\"",
                ));
            }
        }
        let Some(mlflow) = &self.logging.mlflow else { return Ok(()) };
        let key = "logging.mlflow.tracking_uri";
        let Some(uri) = mlflow.uri() else {
            return Err(invalid(
                key,
                &format!("{key} is needed (http://HOST:PORT of an `mlflow server`), or ${MLFLOW_TRACKING_URI}"),
            ));
        };
        if uri.starts_with("https://") {
            // TLS would add a TLS stack's build time for servers that are usually on the
            // same network; a reverse proxy's plain-HTTP side, or an SSH tunnel, serves.
            return Err(invalid(
                key,
                &format!(
                    "{key}: https:// is not supported, got {}; use the server's http:// address \
                     (or an SSH tunnel to it)",
                    echo(&uri)
                ),
            ));
        }
        let rest = uri.strip_prefix("http://");
        if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
            return Err(invalid(
                key,
                &format!("{key} must be an http:// address of an `mlflow server`, got {}", echo(&uri)),
            ));
        }
        for (key, value) in [
            ("logging.mlflow.experiment", &mlflow.experiment),
            ("logging.mlflow.run_name", &mlflow.run_name),
            ("logging.mlflow.parent_run_id", &mlflow.parent_run_id),
        ] {
            if let Some(value) = value.as_deref().filter(|v| v.trim().is_empty() || v.len() > MAX_MLFLOW_NAME) {
                return Err(invalid(
                    key,
                    &format!("{key} must be a non-empty name of at most {MAX_MLFLOW_NAME} bytes, got {}", echo(value)),
                ));
            }
        }
        Ok(())
    }
}

fn invalid(key: &str, message: &str) -> anyhow::Error {
    Invalid { key: key.to_string(), message: message.to_string() }.into()
}
