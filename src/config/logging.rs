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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::load_text(text, "t.yaml", &[], false)
    }

    #[test]
    fn tensorboard_is_off_true_or_a_directory_and_round_trips() {
        assert_eq!(parse("name: a\n").unwrap().logging, LoggingConfig::default());
        for (yaml, want) in [
            ("false", TensorBoard::Off),
            ("true", TensorBoard::RunDir),
            ("logs/tb", TensorBoard::Dir("logs/tb".into())),
        ] {
            let config = parse(&format!("logging: {{tensorboard: {yaml}}}\n")).unwrap();
            assert_eq!(config.logging.tensorboard, want);
            let again = parse(&config.to_yaml().unwrap()).unwrap();
            assert_eq!(again.logging, config.logging, "{yaml}");
        }
        // Off is the default, and leaves the resolved config as it was before `logging`.
        assert!(!parse("logging: {tensorboard: false}\n").unwrap().to_yaml().unwrap().contains("logging"));
        let err = parse("logging: {tensorboard: 3}\n").unwrap_err().to_string();
        assert!(err.contains("logging.tensorboard") && err.contains("true, false or a directory"), "{err}");
        let err = parse("logging: {tensorboard: ''}\n").unwrap_err().to_string();
        assert!(err.contains("logging.tensorboard must be true, false or a directory"), "{err}");
    }

    #[test]
    fn mlflow_needs_an_http_server_and_names_that_fit() {
        let ok = parse("logging: {mlflow: {tracking_uri: 'http://127.0.0.1:5000', experiment: e}}\n").unwrap();
        let mlflow = ok.logging.mlflow.unwrap();
        assert_eq!(mlflow.uri().as_deref(), Some("http://127.0.0.1:5000"));
        assert_eq!(mlflow.experiment.as_deref(), Some("e"));
        for (uri, words) in [
            ("ftp://host", "must be an http:// address"),
            ("http://", "must be an http:// address"),
            ("127.0.0.1:5000", "must be an http:// address"),
            ("https://mlflow.example.com", "https:// is not supported"),
        ] {
            let err = parse(&format!("logging: {{mlflow: {{tracking_uri: '{uri}'}}}}\n")).unwrap_err().to_string();
            assert!(err.contains("logging.mlflow.tracking_uri") && err.contains(words), "{uri}: {err}");
        }
        let long = "x".repeat(300);
        let err = parse(&format!("logging: {{mlflow: {{tracking_uri: 'http://h', experiment: {long}}}}}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("logging.mlflow.experiment must be a non-empty name"), "{err}");
        let err = parse("logging: {mlflow: {tracking_uri: 'http://h', run_name: ' '}}\n").unwrap_err().to_string();
        assert!(err.contains("logging.mlflow.run_name"), "{err}");
        let err = parse("logging: {mlflow: {tracking_ur: 'http://h'}}\n").unwrap_err().to_string();
        assert!(err.contains("did you mean `logging.mlflow.tracking_uri`"), "{err}");
    }
}
