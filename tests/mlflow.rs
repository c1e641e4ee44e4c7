//! `logging.mlflow` against a real `mlflow server` (sqlite store, artifacts proxied to a
//! folder) that each test starts on a free port and stops even when it fails; MLflow's own
//! client (tests/python/mlflow_check.py) reads back what torchfit logged: params, every
//! metric at every epoch against metrics.csv, tags, status, artifacts. Skips (saying why)
//! when the mlflow package cannot be installed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

const PY: PythonCheck = PythonCheck("mlflow_check.py");

/// An `mlflow server` process (its process group), killed when dropped.
struct MlflowServer {
    child: Child,
    uri: String,
}

impl MlflowServer {
    /// Starts the server on `port` with its store in `dir` (the same `dir` and `port` again
    /// after a stop: the same server, as a restarted one), and waits for /health.
    fn start(package: &Path, dir: &Path, port: u16) -> MlflowServer {
        let db = format!("sqlite:///{}", dir.join("mlflow.db").display());
        let log = std::fs::File::create(dir.join(format!("server-{}.log", now_ns()))).unwrap();
        let mut command = Command::new("python3");
        command
            .args(["-m", "mlflow", "server", "--backend-store-uri", &db, "--artifacts-destination"])
            .arg(dir.join("artifacts"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--workers", "1"])
            .env("PYTHONPATH", package)
            // No job runner and its queue consumers (seven processes): half the start time.
            .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().expect("python3 -m mlflow server starts");
        let server = MlflowServer { child, uri: format!("http://127.0.0.1:{port}") };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(120) {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && server::request(port, "GET", "/health", &[], b"").status == 200
            {
                return server;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("mlflow server did not answer /health within 120 s (see {}/server-*.log)", dir.display());
    }

    /// Kills the server and every process it started, and waits for it (once).
    fn stop(&mut self) {
        if self.child.try_wait().is_ok_and(|status| status.is_some()) {
            return;
        }
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

impl Drop for MlflowServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn now_ns() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

/// The mlflow package's folder, installed on first use; None (the reason printed) when pip
/// cannot install it.
fn package() -> Option<PathBuf> {
    let out = PY.run(&["install"]);
    if out.status.code() == Some(PythonCheck::SKIP) {
        println!("{}", stdout(&out).trim());
        return None;
    }
    PY.assert_ok(&out, "install");
    Some(PathBuf::from(stdout(&out).trim()))
}

/// A classifier of `colour_table` with a test part (test metrics), logged to `uri` under
/// the experiment `exp`.
fn config(dir: &Path, rows: usize, epochs: usize, uri: &str) {
    colour_classifier(dir, rows, "hidden: [16]", &format!("epochs: {epochs}, batch_size: 16"));
    let mut text = std::fs::read_to_string(dir.join("t.yaml")).unwrap().replace("test_split: 0", "test_split: 0.2");
    text += &format!("name: colours\nlogging: {{mlflow: {{tracking_uri: \"{uri}\", experiment: exp}}}}\n");
    std::fs::write(dir.join("t.yaml"), text).unwrap();
}

fn check_run(uri: &str, run: &Path) {
    let out = PY.run(&["run", uri, run.to_str().unwrap()]);
    PY.assert_ok(&out, "run");
    println!("{}", stdout(&out).trim());
}

#[test]
fn a_run_logs_params_metrics_tags_and_artifacts() {
    let Some(package) = package() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = MlflowServer::start(&package, dir.path(), free_port());
    config(dir.path(), 300, 4, &server.uri);
    let out = train_config(dir.path(), "t.yaml", "run", &[]);
    assert_ok(&out);
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    check_run(&server.uri, &dir.path().join("run"));
}

#[test]
fn a_sweep_logs_a_parent_run_and_its_trials_as_children() {
    let Some(package) = package() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = MlflowServer::start(&package, dir.path(), free_port());
    config(dir.path(), 200, 2, &server.uri);
    let sweep = "base: t.yaml\nmethod: grid\nparameters:\n  training.optimizer.lr: {values: [0.001, 0.01]}\n  \
                 model.hidden: {values: [[8], [16]]}\n";
    std::fs::write(dir.path().join("s.yaml"), sweep).unwrap();
    let out = torchfit(dir.path(), &["sweep", "s.yaml", "--out", "sw", "--jobs", "2"]);
    assert_ok(&out);
    // Continued (here with nothing left to do), the sweep keeps its parent: no second one.
    let out = torchfit(dir.path(), &["sweep", "s.yaml", "--out", "sw", "--jobs", "2"]);
    assert_ok(&out);
    let out = PY.run(&["sweep", &server.uri, dir.path().join("sw").to_str().unwrap(), "4"]);
    PY.assert_ok(&out, "sweep");
    println!("{}", stdout(&out).trim());
}

/// Starts `torchfit train t.yaml --out run` in `dir` and waits until MLflow has epoch 3 of
/// it: the training process and the run's mlflow.json.
fn train_until_epoch_3_is_logged(dir: &Path) -> (Child, PathBuf) {
    let training = Command::new(BIN)
        .args(["train", "t.yaml", "--device", "cpu", "--quiet", "--out", "run"])
        .current_dir(dir)
        .env_remove("LD_LIBRARY_PATH")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let state = dir.join("run/mlflow.json");
    let started = Instant::now();
    while last_epoch(&state) < 3 {
        assert!(started.elapsed() < Duration::from_secs(300), "no epoch 3 reached MLflow");
        std::thread::sleep(Duration::from_millis(5));
    }
    (training, state)
}

/// The server killed after a few epochs: training goes on and ends well (a warning), what
/// the server missed waits in mlflow.json, and `--resume` of the finished run, with the
/// server back on its port and database, delivers it: one value per epoch, FINISHED.
#[test]
fn a_server_that_dies_mid_run_gets_the_rest_on_resume() {
    let Some(package) = package() else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = MlflowServer::start(&package, dir.path(), port);
    config(dir.path(), 3000, 30, &server.uri);
    let (training, state) = train_until_epoch_3_is_logged(dir.path());
    server.stop();
    let out = training.wait_with_output().unwrap();
    assert_ok(&out);
    let err = stderr(&out);
    assert!(err.contains("warning: mlflow") && err.contains("mlflow.json"), "{err}");
    assert_eq!(err.lines().filter(|l| l.contains("warning")).count(), 1, "one warning, not one per epoch: {err}");
    let held = std::fs::read_to_string(&state).unwrap();
    assert!(held.contains("\"FINISHED\""), "the end status waits in the outbox: {held}");
    assert!(held.contains("\"log_batch\"") && held.contains("model.pt"), "epochs and artifacts wait too: {held}");

    let server = MlflowServer::start(&package, dir.path(), port);
    let out = torchfit(dir.path(), &["train", "--resume", "run", "--quiet"]);
    assert_ok(&out);
    check_run(&server.uri, &dir.path().join("run"));
}

/// A run stopped by SIGINT after a few epochs (MLflow status KILLED) and resumed logs into
/// the same MLflow run: the epochs it trains again after its checkpoint are not sent twice,
/// and it ends FINISHED.
#[test]
fn an_interrupted_run_resumes_into_the_same_mlflow_run() {
    let Some(package) = package() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = MlflowServer::start(&package, dir.path(), free_port());
    config(dir.path(), 3000, 100, &server.uri);
    let text = std::fs::read_to_string(dir.path().join("t.yaml")).unwrap();
    std::fs::write(dir.path().join("t.yaml"), text.replace("batch_size: 16", "batch_size: 16, checkpoint_every: 2"))
        .unwrap();
    let (training, state) = train_until_epoch_3_is_logged(dir.path());
    server::signal(training.id(), "INT");
    let out = training.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let before = last_epoch(&state);
    assert!(before < 100, "the run ended before the signal");
    let run_id = |state: &Path| {
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(state).unwrap()).unwrap()["run_id"].clone()
    };
    let id = run_id(&state);
    let out = torchfit(dir.path(), &["train", "--resume", "run", "--quiet"]);
    assert_ok(&out);
    assert_eq!(run_id(&state), id);
    check_run(&server.uri, &dir.path().join("run"));
}

fn last_epoch(state: &Path) -> u64 {
    let Ok(text) = std::fs::read_to_string(state) else { return 0 };
    let Ok(state) = serde_json::from_str::<serde_json::Value>(&text) else { return 0 };
    // Sent, not only queued: the outbox is empty.
    let sent = state["outbox"].as_array().is_none_or(Vec::is_empty);
    if sent {
        state["last_epoch"].as_u64().unwrap_or(0)
    } else {
        0
    }
}

/// https:// would need a TLS stack: refused when the config is read, in one line.
#[test]
fn an_https_tracking_uri_is_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), 50, 1, "https://mlflow.example.com");
    let out = train_config(dir.path(), "t.yaml", "run", &[]);
    assert_fails_with(&out, &["logging.mlflow.tracking_uri", "https://", "not supported"]);
    assert!(!dir.path().join("run").exists());
}
