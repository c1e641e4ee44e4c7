//! The outbox against a dead port and against a stand-in server that records the calls.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::outbox::{State, MAX_OUTBOX};
use super::*;

fn new_run() -> NewRun {
    NewRun { experiment: "exp".into(), run_name: "run".into(), start_time: 1, tags: vec![] }
}

fn metrics(epoch: usize) -> Call {
    Call::LogBatch { metrics: vec![Metric::new("loss", 0.5, 2, epoch)], params: vec![] }
}

fn saved(dir: &std::path::Path) -> State {
    serde_json::from_str(&std::fs::read_to_string(dir.join(MLFLOW_JSON)).unwrap()).unwrap()
}

fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn a_dead_server_keeps_everything_and_is_left_alone_for_a_while() {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("http://127.0.0.1:{}", closed_port());
    let mut session = Session::create(dir.path(), &uri, new_run()).unwrap();
    session.push(metrics(1));
    session.push(Call::SetStatus { status: "FINISHED".into(), end_time: Some(3) });
    assert!(!session.send(Duration::from_secs(3)));
    let state = saved(dir.path());
    assert_eq!((state.run_id, state.outbox.len()), (None, 2));
    // Within the backoff, no attempt at all: no time spent.
    let started = Instant::now();
    assert!(!session.send(Duration::from_secs(3)));
    assert!(started.elapsed() < Duration::from_millis(50));
    // Reopened (a resume), the same state; another server is another session.
    let reopened = Session::open(dir.path(), &uri).unwrap().unwrap();
    assert_eq!(reopened.state, saved(dir.path()));
    assert!(Session::open(dir.path(), "http://127.0.0.1:1").unwrap().is_none());
}

#[test]
fn the_outbox_is_bounded_by_dropping_the_oldest_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let mut session = Session::create(dir.path(), "http://127.0.0.1:1", new_run()).unwrap();
    session.push(Call::SetStatus { status: "RUNNING".into(), end_time: None });
    for epoch in 1..=MAX_OUTBOX + 5 {
        session.push(metrics(epoch));
    }
    let outbox = &session.state.outbox;
    assert_eq!(outbox.len(), MAX_OUTBOX);
    assert!(matches!(outbox[0], Call::SetStatus { .. }));
    assert_eq!(outbox[1], metrics(7));
}

/// A stand-in `mlflow server`: answers each request by its path, records `METHOD path body`.
fn stand_in(refuse: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let uri = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = BufReader::new(stream.unwrap());
            let (mut line, mut length) = (String::new(), 0);
            stream.read_line(&mut line).unwrap();
            loop {
                let mut header = String::new();
                stream.read_line(&mut header).unwrap();
                if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                if header.trim().is_empty() {
                    break;
                }
            }
            let mut body = vec![0; length];
            stream.read_exact(&mut body).unwrap();
            let request: Vec<&str> = line.split_whitespace().take(2).collect();
            let path = request[1].to_string();
            log.lock().unwrap().push(format!("{} {path} {}", request[0], String::from_utf8_lossy(&body)));
            let (status, answer) = match path.as_str() {
                p if p.contains(refuse) => {
                    ("400 Bad Request", r#"{"error_code":"INVALID_PARAMETER_VALUE","message":"no"}"#)
                }
                p if p.contains("get-by-name") => ("404 Not Found", r#"{"error_code":"RESOURCE_DOES_NOT_EXIST"}"#),
                p if p.ends_with("experiments/create") => ("200 OK", r#"{"experiment_id":"7"}"#),
                p if p.ends_with("runs/create") => {
                    ("200 OK", r#"{"run":{"info":{"run_id":"r1","artifact_uri":"mlflow-artifacts:/7/r1/artifacts"}}}"#)
                }
                _ => ("200 OK", "{}"),
            };
            let reply =
                format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}", answer.len());
            stream.get_mut().write_all(reply.as_bytes()).unwrap();
        }
    });
    (uri, seen)
}

#[test]
fn calls_are_sent_in_order_after_the_run_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let (uri, seen) = stand_in("never");
    let mut session = Session::create(dir.path(), &uri, new_run()).unwrap();
    std::fs::write(dir.path().join("model.pt"), b"weights").unwrap();
    session.push(metrics(1));
    session.push(Call::Upload { file: dir.path().join("model.pt"), name: "model.pt".into() });
    session.push(Call::SetStatus { status: "FINISHED".into(), end_time: Some(3) });
    assert!(session.send(Duration::from_secs(10)));
    let seen = seen.lock().unwrap().clone();
    let heads: Vec<&str> = seen.iter().map(|s| s.split(' ').take(2).last().unwrap_or("")).collect();
    assert_eq!(
        heads,
        [
            "/api/2.0/mlflow/experiments/get-by-name?experiment_name=exp",
            "/api/2.0/mlflow/experiments/create",
            "/api/2.0/mlflow/runs/create",
            "/api/2.0/mlflow/runs/log-batch",
            "/api/2.0/mlflow-artifacts/artifacts/7/r1/artifacts/model.pt",
            "/api/2.0/mlflow/runs/update",
        ]
    );
    assert!(seen[3].contains(r#""run_id":"r1""#) && seen[3].contains(r#""step":1"#), "{}", seen[3]);
    assert!(seen[4].starts_with("PUT ") && seen[4].ends_with(" weights"), "{}", seen[4]);
    assert!(seen[5].contains(r#""status":"FINISHED""#) && seen[5].contains(r#""end_time":3"#), "{}", seen[5]);
    let state = saved(dir.path());
    assert_eq!(
        (state.run_id.as_deref(), state.experiment_id.as_deref(), state.outbox.len()),
        (Some("r1"), Some("7"), 0)
    );
}

#[test]
fn a_refused_call_is_dropped_and_the_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let (uri, seen) = stand_in("log-batch");
    let mut session = Session::create(dir.path(), &uri, new_run()).unwrap();
    session.push(metrics(1));
    session.push(Call::SetStatus { status: "FINISHED".into(), end_time: Some(3) });
    assert!(session.send(Duration::from_secs(10)));
    assert!(seen.lock().unwrap().last().unwrap().contains("runs/update"));
    assert!(saved(dir.path()).outbox.is_empty());
}

#[test]
fn a_server_that_hangs_costs_no_more_than_the_budget() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let uri = format!("http://{}", listener.local_addr().unwrap());
    // Accepts connections, reads nothing, answers nothing.
    std::thread::spawn(move || listener.incoming().map(std::mem::forget).count());
    let dir = tempfile::tempdir().unwrap();
    let mut session = Session::create(dir.path(), &uri, new_run()).unwrap();
    session.push(metrics(1));
    let started = Instant::now();
    assert!(!session.send(Duration::from_secs(1)));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_millis(2500), "{took:?}");
    assert_eq!(saved(dir.path()).outbox.len(), 1);
}
