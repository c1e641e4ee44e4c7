//! `torchfit serve` end to end: the real server on 127.0.0.1, asked as curl would ask it.
//! Its answers equal `torchfit predict` on the same rows (within float32 rounding: a batch
//! of rows may take another matrix kernel than one row does); bad requests get a 4xx JSON
//! error naming the problem while the server keeps serving; slow clients are cut off
//! without holding others up; SIGTERM lets requests in flight finish and exits 0.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::server::{predict_csv, request, signal, train, Server};
use common::*;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-5 * (1.0 + b.abs())
}

fn floats(value: &Value) -> Vec<f64> {
    let mut out = Vec::new();
    fn walk(v: &Value, out: &mut Vec<f64>) {
        match v {
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            other => out.push(other.as_f64().unwrap()),
        }
    }
    walk(value, &mut out);
    out
}

/// Ten rows of the Keras example's ten features, as JSON instances and as CSV.
fn keras_rows() -> (Vec<Vec<f64>>, String) {
    let rows: Vec<Vec<f64>> =
        (0..10).map(|i| (0..10).map(|j| ((i * 7 + j * 3) % 11) as f64 / 5.0 - 1.0).collect()).collect();
    let mut csv = (0..10).map(|j| format!("x{j}")).collect::<Vec<_>>().join(",") + "\n";
    for row in &rows {
        csv += &(row.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(",") + "\n");
    }
    (rows, csv)
}

#[test]
fn v2_and_predict_answer_as_torchfit_predict_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    train(d, "keras", "configs/keras_example.yaml", &["training.epochs=2"]);
    let (rows, csv) = keras_rows();
    let want: Vec<f64> = predict_csv(d, "keras", &csv, false).iter().map(|r| r[0].parse().unwrap()).collect();
    let server = Server::start(d, Path::new("keras"), &["--name", "k"]);

    for path in ["/v2/health/live", "/v2/health/ready", "/v2/models/k/ready", "/v2/models/k/versions/1/ready"] {
        assert_eq!(server.json("GET", path, "").0, 200, "{path}");
    }
    let (status, meta) = server.json("GET", "/v2/models/k", "");
    assert_eq!(status, 200);
    assert_eq!(meta["inputs"], json!([{"name": "input", "datatype": "FP32", "shape": [-1, 10]}]));
    assert_eq!(meta["outputs"], json!([{"name": "predictions", "datatype": "FP32", "shape": [-1, 1]}]));

    // /predict, all rows at once and one by one.
    let (status, got) = server.json("POST", "/predict", &json!({ "instances": rows }).to_string());
    assert_eq!(status, 200, "{got}");
    let got = floats(&got["predictions"]);
    assert_eq!(got.len(), want.len());
    assert!(got.iter().zip(&want).all(|(a, b)| close(*a, *b)), "{got:?} != {want:?}");
    for (row, want) in rows.iter().zip(&want) {
        let (_, got) = server.json("POST", "/predict", &json!({ "instances": [row] }).to_string());
        assert!(close(floats(&got["predictions"])[0], *want), "{got} != {want}");
    }
    // Raw rows by column name, in any order, with extra columns.
    let named: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut row: serde_json::Map<String, Value> =
                r.iter().enumerate().map(|(j, v)| (format!("x{j}"), json!(v))).collect();
            row.insert("note".into(), json!("ignored"));
            Value::Object(row)
        })
        .collect();
    let (_, got) = server.json("POST", "/predict", &json!({ "rows": named }).to_string());
    assert!(floats(&got["predictions"]).iter().zip(&want).all(|(a, b)| close(*a, *b)), "{got}");

    // V2 infer, nested data, through both routes; the id comes back.
    let body = json!({"id": "r1", "inputs": [{"name": "input", "datatype": "FP32", "shape": [10, 10], "data": rows}]});
    for path in ["/v2/models/k/infer", "/v2/models/k/versions/1/infer"] {
        let (status, got) = server.json("POST", path, &body.to_string());
        assert_eq!(status, 200, "{got}");
        assert_eq!(got["id"], "r1");
        assert_eq!(got["outputs"][0]["name"], "predictions");
        assert_eq!(got["outputs"][0]["shape"], json!([10, 1]));
        assert!(floats(&got["outputs"][0]["data"]).iter().zip(&want).all(|(a, b)| close(*a, *b)), "{got}");
    }
    // The binary tensor extension: FP32 in, FP32 out.
    let header = json!({
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [10, 10], "parameters": {"binary_data_size": 400}}],
        "outputs": [{"name": "predictions", "parameters": {"binary_data": true}}],
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend(rows.iter().flatten().flat_map(|&v| (v as f32).to_le_bytes()));
    let length = header.len().to_string();
    let response = server.request("POST", "/v2/models/k/infer", &[("Inference-Header-Content-Length", &length)], &body);
    assert_eq!(response.status, 200);
    let json_length: usize = response.header("inference-header-content-length").unwrap().parse().unwrap();
    let binary = &response.body[json_length..];
    let got: Vec<f64> = binary.chunks(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64).collect();
    assert!(got.iter().zip(&want).all(|(a, b)| close(*a, *b)), "{got:?}");

    // The access log and the metrics saw all that.
    let metrics = server.request("GET", "/metrics", &[], b"");
    let text = String::from_utf8(metrics.body).unwrap();
    assert!(text.contains("torchfit_http_requests_total{route=\"/predict\",status=\"200\"} 12"), "{text}");
    assert!(text.contains("torchfit_batch_rows_count"), "{text}");
    assert!(text.contains("torchfit_http_request_duration_seconds_bucket"), "{text}");
    let status = server.terminate();
    assert_eq!(status.code(), Some(0));
}

/// A classifier with categorical columns: raw rows with text, unseen levels and missing
/// cells, answered as `torchfit predict --proba` answers them.
#[test]
fn raw_rows_with_categorical_columns_and_classes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let titanic = repo_file("data/titanic.csv").display().to_string();
    train(
        d,
        "titanic",
        "configs/titanic.yaml",
        &[
            &format!("data.path={titanic}"),
            "training.epochs=3",
            "data.categorical_encoding={sex: one_hot, embarked: embedding, deck: 3}",
        ],
    );
    let csv =
        "pclass,sex,age,fare,embarked,deck,alone\n1,female,38,70.5,S,A,no\n3,male,,8.05,Q,Z,yes\n2,female,4,,,,no\n";
    let want = predict_csv(d, "titanic", csv, true);
    let server = Server::start(d, Path::new("titanic"), &["--quiet"]);
    let rows = json!([
        {"pclass": 1, "sex": "female", "age": 38, "fare": 70.5, "embarked": "S", "deck": "A", "alone": "no"},
        {"pclass": "3", "sex": "male", "age": null, "fare": 8.05, "embarked": "Q", "deck": "Z", "alone": true},
        {"pclass": 2, "sex": " female ", "age": 4, "fare": "", "embarked": null, "deck": "NA", "alone": "no"},
    ]);
    let (status, got) = server.json("POST", "/predict", &json!({ "rows": rows }).to_string());
    assert_eq!(status, 200, "{got}");
    for (i, row) in want.iter().enumerate() {
        assert_eq!(got["labels"][i], row[0], "{got}");
        let p = floats(&got["probabilities"][i]);
        assert!(p.iter().zip(&row[1..]).all(|(a, b)| close(*a, b.parse().unwrap())), "{got} {row:?}");
    }
    // The same through V2: numeric features as FP32, each categorical column as BYTES.
    let (_, meta) = server.json("GET", "/v2/models/titanic", "");
    let inputs: Vec<&str> = meta["inputs"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(inputs[0], "input");
    let numeric = meta["inputs"][0]["shape"][1].as_u64().unwrap() as usize;
    let mut categorical = inputs[1..].to_vec();
    categorical.sort();
    assert_eq!(categorical, ["deck", "embarked", "pclass", "sex"], "{meta}");
    // The first row: its numeric features in the order the metadata names them.
    let first = &rows[0];
    let features: Vec<&str> =
        meta["parameters"]["features"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    assert_eq!(features.len(), numeric, "{meta}");
    let number = |v: &Value| match v {
        Value::String(s) if s == "no" => 0.0,
        Value::String(s) if s == "yes" => 1.0,
        v => v.as_f64().unwrap(),
    };
    let mut body_inputs = vec![json!({
        "name": "input", "datatype": "FP32", "shape": [1, numeric],
        "data": features.iter().map(|f| number(&first[*f])).collect::<Vec<_>>(),
    })];
    for name in &inputs[1..] {
        let text = match &first[*name] {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        body_inputs.push(json!({"name": name, "datatype": "BYTES", "shape": [1], "data": [text]}));
    }
    let (status, got) = server.json("POST", "/v2/models/titanic/infer", &json!({ "inputs": body_inputs }).to_string());
    assert_eq!(status, 200, "{got}");
    let labels = got["outputs"].as_array().unwrap().iter().find(|o| o["name"] == "labels").unwrap();
    assert_eq!(labels["data"][0], want[0][0], "{got}");
    let proba = got["outputs"].as_array().unwrap().iter().find(|o| o["name"] == "probabilities").unwrap();
    assert!(floats(&proba["data"]).iter().zip(&want[0][1..]).all(|(a, b)| close(*a, b.parse().unwrap())), "{got}");
    assert_eq!(server.terminate().code(), Some(0));
}

#[test]
fn bad_requests_get_4xx_json_naming_the_problem_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    train(d, "keras", "configs/keras_example.yaml", &["training.epochs=1"]);
    let server = Server::start(d, Path::new("keras/model.pt"), &["--name", "k", "--max-body", "65536"]);
    let row = || (0..10).map(|j| j as f64 / 10.0).collect::<Vec<_>>();
    let tensor = |datatype: &str, shape: Value, data: Value| {
        json!({"inputs": [{"name": "input", "datatype": datatype, "shape": shape, "data": data}]}).to_string()
    };
    let mut nan_row: Vec<Value> = row().into_iter().map(|v| json!(v)).collect();
    nan_row[3] = Value::Null;
    let mut inf_row: Vec<Value> = row().into_iter().map(|v| json!(v)).collect();
    inf_row[4] = json!(1e39);
    let big = format!("{{\"instances\": [{}]}}", vec![format!("{:?}", row()); 2000].join(","));
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        ("POST", "/predict", "{not json".into(), 400, "not valid JSON"),
        ("POST", "/predict", "[1, 2]".into(), 400, "JSON object"),
        (
            "POST",
            "/predict",
            json!({"instances": [[1, 2, 3]]}).to_string(),
            400,
            "instances[0] has 3 values, but the model takes 10",
        ),
        ("POST", "/predict", json!({"instances": []}).to_string(), 400, "`instances` is empty"),
        ("POST", "/predict", json!({"instances": [nan_row]}).to_string(), 400, "row 1 column `x3` is missing"),
        (
            "POST",
            "/predict",
            json!({"instances": [inf_row]}).to_string(),
            400,
            "instances[0][4] (`x4`): 1e+39: infinite",
        ),
        ("POST", "/predict", json!({"rows": [{"x0": 1}]}).to_string(), 400, "rows[0] has no `x1`"),
        ("POST", "/predict", json!({"rows": [{"x0": "abc"}]}).to_string(), 400, "rows[0].x0: \"abc\" is not a number"),
        ("POST", "/predict", big, 413, "over the limit of 65536 bytes"),
        (
            "POST",
            "/v2/models/k/infer",
            tensor("INT64", json!([1, 10]), json!(row())),
            400,
            "datatype INT64, but the model takes FP32",
        ),
        (
            "POST",
            "/v2/models/k/infer",
            tensor("FP32", json!([2, 5]), json!(row())),
            400,
            "shape [2, 5], but the model takes [batch, 10]",
        ),
        (
            "POST",
            "/v2/models/k/infer",
            tensor("FP32", json!([2, 10]), json!(row())),
            400,
            "has 10 values, but its shape [2, 10] holds 20",
        ),
        ("POST", "/v2/models/k/infer", tensor("FP32", json!([0, 10]), json!([])), 400, "the batch is empty"),
        (
            "POST",
            "/v2/models/k/infer",
            tensor("FP32", json!([1, 10]), json!(vec!["a"; 10])),
            400,
            "value 0 (\"a\") is not a number",
        ),
        (
            "POST",
            "/v2/models/k/infer",
            json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 10], "data": row()}]}).to_string(),
            400,
            "no input `x`",
        ),
        ("POST", "/v2/models/k/infer", json!({"outputs": []}).to_string(), 400, "no `inputs`"),
        (
            "POST",
            "/v2/models/nope/infer",
            tensor("FP32", json!([1, 10]), json!(row())),
            404,
            "unknown model `nope`; this server serves `k`",
        ),
        ("GET", "/v2/models/k/versions/2", String::new(), 404, "no version `2`"),
        ("GET", "/nowhere", String::new(), 404, "no such route"),
        ("GET", "/predict", String::new(), 405, "method not allowed: GET /predict; use POST"),
        // Declared shapes far past the data: a 400 naming the mismatch, nothing allocated.
        (
            "POST",
            "/v2/models/k/infer",
            tensor("FP32", json!([1_000_000_000u64, 10]), json!(row())),
            400,
            "has 10 values, but its shape [1000000000, 10] holds 10000000000",
        ),
        (
            "POST",
            "/v2/models/k/infer",
            tensor("FP32", json!([1u64 << 61, 10]), json!(row())),
            400,
            "which holds too many values",
        ),
        ("POST", "/v2/models/k/infer", tensor("FP32", json!([u64::MAX, 10]), json!(row())), 400, "too many values"),
        (
            "POST",
            "/v2/models/k/infer",
            tensor("FP32", json!([1_000_000_000u64, 4]), json!([39.1, 18.7, 181, 3750])),
            400,
            "shape [1000000000, 4], but the model takes [batch, 10]",
        ),
    ];
    let good = json!({ "instances": [row()] }).to_string();
    for (method, path, body, status, words) in &cases {
        let (got_status, got) = server.json(method, path, body);
        assert_eq!(got_status, *status, "{method} {path}: {got}");
        let error = got["error"].as_str().unwrap_or_else(|| panic!("{got}"));
        assert!(error.contains(words), "{method} {path}: expected {words:?} in {error:?}");
        assert_eq!(error.lines().count(), 1);
        assert_no_internals(error);
        let (status, answer) = server.json("POST", "/predict", &good);
        assert_eq!(status, 200, "after {path}: {answer}");
    }
    // A body over the limit that does not say its length up front is cut off too.
    let chunked = b"1000\r\n".iter().chain(&[b' '; 0x1000]).chain(b"\r\n").copied().collect::<Vec<u8>>().repeat(20);
    let response = request_raw(
        server.port,
        "POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        &chunked,
    );
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert_eq!(server.terminate().code(), Some(0));
}

fn request_raw(port: u16, head: &str, body: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let _ = stream.write_all(body);
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn slow_clients_are_cut_off_without_holding_others_up() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    train(d, "keras", "configs/keras_example.yaml", &["training.epochs=1"]);
    let server = Server::start(d, Path::new("keras"), &["--read-timeout", "1", "--quiet"]);
    let good = json!({ "instances": [vec![0.0; 10]] }).to_string();
    // Slowloris: half a request head, then nothing.
    let mut slow_head = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    slow_head.write_all(b"POST /predict HTTP/1.1\r\nHost: x\r\n").unwrap();
    // A head, and half the body it announces.
    let mut slow_body = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    slow_body.write_all(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"instances\"").unwrap();
    let started = Instant::now();
    for _ in 0..5 {
        assert_eq!(server.json("POST", "/predict", &good).0, 200);
    }
    assert!(started.elapsed() < Duration::from_millis(900), "others waited {:?}", started.elapsed());
    for stream in [&mut slow_head, &mut slow_body] {
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut answer = Vec::new();
        let read = stream.read_to_end(&mut answer);
        assert!(read.is_ok(), "the server did not close a slow connection: {read:?}");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(server.json("POST", "/predict", &good).0, 200);
}

/// 8 connections for two seconds, good and bad requests mixed: every good answer equals
/// `torchfit predict`, every bad one is a 400, and batches formed.
#[test]
fn a_concurrent_burst_is_answered_right_and_batched() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    train(d, "keras", "configs/keras_example.yaml", &["training.epochs=1"]);
    let (rows, csv) = keras_rows();
    let want: Vec<f64> = predict_csv(d, "keras", &csv, false).iter().map(|r| r[0].parse().unwrap()).collect();
    let server = Server::start(d, Path::new("keras"), &["--quiet", "--max-delay-ms", "2", "--max-batch", "8"]);
    let port = server.port;
    let until = Instant::now() + Duration::from_secs(2);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let rows = rows.clone();
            let want = want.clone();
            std::thread::spawn(move || {
                let mut n = 0usize;
                while Instant::now() < until {
                    let i = (n + t) % rows.len();
                    if (n + t) % 5 == 0 {
                        let response = request(port, "POST", "/predict", &[], br#"{"instances": [[1, 2]]}"#);
                        assert_eq!(response.status, 400);
                    } else {
                        let body = json!({ "instances": [rows[i]] }).to_string();
                        let response = request(port, "POST", "/predict", &[], body.as_bytes());
                        assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
                        let got: Value = serde_json::from_slice(&response.body).unwrap();
                        let got = floats(&got["predictions"])[0];
                        assert!(close(got, want[i]), "row {i}: {got} != {}", want[i]);
                    }
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(total > 50, "only {total} requests in two seconds");
    let metrics = String::from_utf8(server.request("GET", "/metrics", &[], b"").body).unwrap();
    let passes: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("torchfit_batch_rows_count "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    let batched_rows: f64 =
        metrics.lines().find_map(|l| l.strip_prefix("torchfit_batch_rows_sum ")).unwrap().trim().parse().unwrap();
    assert!(batched_rows > passes, "no forward pass took more than one row: {metrics}");
    assert_eq!(server.terminate().code(), Some(0));
}

/// SIGTERM while a request waits in the batcher: the request is answered, the server exits 0.
#[test]
fn sigterm_finishes_requests_in_flight_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    train(d, "keras", "configs/keras_example.yaml", &["training.epochs=1"]);
    let server = Server::start(d, Path::new("keras"), &["--max-delay-ms", "1500", "--max-batch", "100"]);
    let port = server.port;
    let in_flight = std::thread::spawn(move || {
        request(port, "POST", "/predict", &[], json!({ "instances": [vec![0.5; 10]] }).to_string().as_bytes())
    });
    std::thread::sleep(Duration::from_millis(500));
    signal(server.pid(), "TERM");
    let response = in_flight.join().unwrap();
    assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
    let log = server.log.clone();
    let status = server.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", log.lock().unwrap());
    assert!(log.lock().unwrap().contains("\"path\":\"/predict\",\"status\":200"));
    // Nothing listens any more.
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

/// `--device`: cpu serves (and says so); cuda serves on a GPU where there is one, and
/// where there is none is a one-line error, exit 2, before anything listens.
#[test]
fn device_cpu_serves_and_absent_cuda_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    train(d, "keras", "configs/keras_example.yaml", &["training.epochs=1"]);
    let (rows, csv) = keras_rows();
    let want: Vec<f64> = predict_csv(d, "keras", &csv, false).iter().map(|r| r[0].parse().unwrap()).collect();
    let mut devices = vec!["cpu"];
    if tch::Cuda::device_count() > 0 {
        devices.push("cuda");
    } else {
        for asked in ["cuda", "cuda:1"] {
            let out = torchfit(d, &["serve", "keras", "--port", "0", "--device", asked]);
            assert_fails_with(&out, &["--device", "was asked for", "finds no CUDA device"]);
        }
    }
    for device in devices {
        let server = Server::start(d, Path::new("keras"), &["--device", device, "--quiet"]);
        let on = if device == "cpu" { "on cpu)" } else { "on cuda:0)" };
        let log = server.log.lock().unwrap().clone();
        assert!(log.contains(on), "{device}: {log}");
        let (status, got) = server.json("POST", "/predict", &json!({ "instances": rows }).to_string());
        assert_eq!(status, 200, "{device}: {got}");
        let got = floats(&got["predictions"]);
        assert!(got.iter().zip(&want).all(|(a, b)| close(*a, *b)), "{device}: {got:?} != {want:?}");
        assert_eq!(server.terminate().code(), Some(0), "{device}");
    }
}

/// What no error may show a client: libtorch's C++ backtrace, library paths, addresses.
fn assert_no_internals(error: &str) {
    for internals in ["Exception raised from", ".so", "0x", "frame #", "libtorch"] {
        assert!(!error.contains(internals), "{internals:?} in {error}");
    }
}

/// A V2 request with `input` in the binary extension: `shape` declared, `values` sent.
fn binary_infer(port: u16, shape: Value, values: &[f64]) -> common::server::Response {
    let size = values.len() * 4;
    let header = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": shape,
        "parameters": {"binary_data_size": size}}]})
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend(values.iter().flat_map(|&v| (v as f32).to_le_bytes()));
    let length = header.len().to_string();
    request(port, "POST", "/v2/models/k/infer", &[("Inference-Header-Content-Length", &length)], &body)
}

/// A byte count that disagrees with the declared shape, alone: a 400 naming it. (Before,
/// two rows' bytes under shape [1, 10] reached libtorch, whose error, backtrace and all,
/// came back as the 400's text.)
#[test]
fn binary_byte_counts_must_match_the_shape_and_errors_carry_no_internals() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    train(d, "keras", "configs/keras_example.yaml", &["training.epochs=1"]);
    let server = Server::start(d, Path::new("keras"), &["--name", "k", "--quiet"]);
    let (rows, _) = keras_rows();
    let two: Vec<f64> = rows[0].iter().chain(&rows[1]).copied().collect();
    let cases = [
        (json!([1, 10]), two.clone(), "binary_data_size is 80 bytes, but its shape [1, 10] of FP32 takes 10 x 4 bytes"),
        (
            json!([2, 10]),
            rows[0].clone(),
            "binary_data_size is 40 bytes, but its shape [2, 10] of FP32 takes 20 x 4 bytes",
        ),
        (json!([3, 10]), two.clone(), "but its shape [3, 10]"),
        (json!([u64::MAX, 10]), two, "which holds too many values"),
    ];
    for (shape, values, words) in cases {
        let response = binary_infer(server.port, shape, &values);
        let body: Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(response.status, 400, "{body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(words), "expected {words:?} in {error}");
        assert_no_internals(error);
    }
    let response = binary_infer(server.port, json!([1, 10]), &rows[0]);
    assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
    assert_eq!(server.terminate().code(), Some(0));
}

/// 12 clients at once, with a batching delay so that requests share forward passes: good
/// ones (JSON and binary, one and two rows) among malformed ones (byte counts off either
/// way, huge shapes, infinities, missing values, wrong datatypes). Every good request gets
/// exactly its own rows' predictions (as `torchfit predict` computes them), every bad one a
/// 4xx that names its problem and shows no internals.
#[test]
fn concurrent_good_and_malformed_requests_each_get_exactly_their_own_answer() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    train(d, "keras", "configs/keras_example.yaml", &["training.epochs=2"]);
    let (rows, csv) = keras_rows();
    let want: Vec<f64> = predict_csv(d, "keras", &csv, false).iter().map(|r| r[0].parse().unwrap()).collect();
    // The rows' answers are far enough apart that a row answered for another shows.
    for (i, a) in want.iter().enumerate() {
        assert!(want[i + 1..].iter().all(|b| !close(*a, *b)), "rows with equal predictions: {want:?}");
    }
    let server =
        Server::start(d, Path::new("keras"), &["--name", "k", "--quiet", "--max-delay-ms", "20", "--max-batch", "16"]);
    let port = server.port;
    let until = Instant::now() + Duration::from_secs(4);
    let threads: Vec<_> = (0..12)
        .map(|t| {
            let (rows, want) = (rows.clone(), want.clone());
            std::thread::spawn(move || {
                let (mut good, mut bad) = (0, 0);
                for n in 0..60 {
                    if Instant::now() > until {
                        break;
                    }
                    let (i, j) = ((n + 3 * t) % 10, (n + 3 * t + 1) % 10);
                    match mixed_request(port, (n + t) % 8, &rows[i], &rows[j]) {
                        Ok(got) => {
                            let expected = if got.len() == 2 { vec![want[i], want[j]] } else { vec![want[i]] };
                            assert!(
                                got.iter().zip(&expected).all(|(a, b)| close(*a, *b)),
                                "client {t} request {n}: got {got:?}, its own rows' answer is {expected:?}"
                            );
                            good += 1;
                        }
                        Err((status, error)) => {
                            assert!((400..500).contains(&status), "client {t} request {n}: {status} {error}");
                            assert_no_internals(&error);
                            bad += 1;
                        }
                    }
                }
                (good, bad)
            })
        })
        .collect();
    let (mut good, mut bad) = (0, 0);
    for thread in threads {
        let (g, b) = thread.join().unwrap();
        good += g;
        bad += b;
    }
    assert!(good > 40 && bad > 20, "only {good} good and {bad} bad requests answered");
    let metrics = String::from_utf8(server.request("GET", "/metrics", &[], b"").body).unwrap();
    let sum: f64 =
        metrics.lines().find_map(|l| l.strip_prefix("torchfit_batch_rows_sum ")).unwrap().trim().parse().unwrap();
    let count: f64 =
        metrics.lines().find_map(|l| l.strip_prefix("torchfit_batch_rows_count ")).unwrap().trim().parse().unwrap();
    assert!(sum > count, "no forward pass took more than one request: {metrics}");
    assert_eq!(server.terminate().code(), Some(0));
}

/// One request of kind `kind` (0-3 good, 4-7 malformed) for rows `a` (and `b`): the
/// predictions, or the error's status and text.
fn mixed_request(port: u16, kind: usize, a: &[f64], b: &[f64]) -> Result<Vec<f64>, (u16, String)> {
    let both: Vec<f64> = a.iter().chain(b).copied().collect();
    let json_infer = |shape: Value, data: Value| {
        let body = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": shape, "data": data}]});
        request(port, "POST", "/v2/models/k/infer", &[], body.to_string().as_bytes())
    };
    let response = match kind {
        0 => request(port, "POST", "/predict", &[], json!({ "instances": [a] }).to_string().as_bytes()),
        1 => binary_infer(port, json!([2, 10]), &both),
        2 => json_infer(json!([1, 10]), json!(a)),
        3 => binary_infer(port, json!([1, 10]), a),
        4 => binary_infer(port, json!([1, 10]), &both),
        5 => binary_infer(port, json!([2, 10]), a),
        6 => json_infer(json!([1_000_000_000u64, 10]), json!(a)),
        _ => {
            let mut bad = a.to_vec();
            bad[2] = 1e39;
            binary_infer(port, json!([1, 10]), &bad)
        }
    };
    let body: Value = serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&response.body)));
    if response.status != 200 {
        let error = body["error"].as_str().unwrap_or_else(|| panic!("{body}")).to_string();
        assert_eq!(error.lines().count(), 1, "{error}");
        return Err((response.status, error));
    }
    assert!(kind < 4, "malformed request {kind} was answered: {body}");
    let predictions = if kind == 0 { &body["predictions"] } else { &body["outputs"][0]["data"] };
    Ok(floats(predictions))
}

/// A complete head, then a body byte every half second (each byte well within the read
/// timeout, the whole body not): a 408 once --read-timeout has passed since the body began.
/// And such a client holds a graceful shutdown no longer than that either.
#[test]
fn a_trickling_body_gets_408_after_the_read_timeout_and_does_not_hold_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    train(d, "keras", "configs/keras_example.yaml", &["training.epochs=1"]);
    let server = Server::start(d, Path::new("keras"), &["--read-timeout", "2", "--quiet"]);
    let trickle = |port: u16| {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.write_all(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 200\r\n\r\n").unwrap();
        let mut writer = stream.try_clone().unwrap();
        std::thread::spawn(move || {
            for _ in 0..40 {
                if writer.write_all(b" ").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        stream
    };
    let started = Instant::now();
    let mut stream = trickle(server.port);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    let waited = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "after {waited:?}: {answer:?}");
    assert!(answer.contains("--read-timeout"), "{answer}");
    assert!(waited >= Duration::from_millis(1900) && waited < Duration::from_secs(5), "408 after {waited:?}");

    // Shutdown while one trickles: over within the read timeout, not the 30 s drain.
    let mut stream = trickle(server.port);
    std::thread::sleep(Duration::from_millis(300));
    let stopping = Instant::now();
    signal(server.pid(), "TERM");
    let status = server.wait(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    assert!(stopping.elapsed() < Duration::from_secs(4), "shutdown took {:?}", stopping.elapsed());
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
}

/// --max-connections 1: while one client holds the only connection, the next waits (it is
/// not refused), and is answered as soon as the first one leaves.
#[test]
fn past_max_connections_clients_wait_for_a_free_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    train(d, "keras", "configs/keras_example.yaml", &["training.epochs=1"]);
    let server = Server::start(d, Path::new("keras"), &["--max-connections", "1", "--read-timeout", "20", "--quiet"]);
    let holder = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let body = json!({ "instances": [vec![0.5; 10]] }).to_string();
    let mut waiting = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let head =
        format!("POST /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n", body.len());
    waiting.write_all(head.as_bytes()).unwrap();
    waiting.write_all(body.as_bytes()).unwrap();
    waiting.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
    let mut first = [0u8; 1];
    let early = waiting.read(&mut first);
    assert!(early.is_err(), "answered while the only connection was taken: {early:?}");
    let freed = Instant::now();
    drop(holder);
    waiting.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = Vec::new();
    let _ = waiting.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(freed.elapsed() < Duration::from_secs(3), "answered {:?} after the slot was freed", freed.elapsed());
    assert_eq!(server.terminate().code(), Some(0));
}

/// The access log never holds up a request: with nobody reading the server's standard
/// error (a full pipe), requests are still answered at full speed; and once it is read
/// again, every request's line is there by the time a SIGTERM has ended the server.
#[test]
fn the_access_log_does_not_block_requests_and_loses_no_line_at_shutdown() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    train(d, "keras", "configs/keras_example.yaml", &["training.epochs=1"]);
    let mut child = Command::new(BIN)
        .args(["serve", "keras", "--port", "0"])
        .current_dir(d)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let port: u16 = loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "the server ended before listening");
        if let Some(rest) = line.split("on http://127.0.0.1:").nth(1) {
            break rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().unwrap();
        }
    };
    // ~150 bytes a line: 1500 lines are several times a pipe's 64 KiB.
    let total = 1500;
    let (done_tx, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let body = json!({ "instances": [vec![0.25; 10]] }).to_string();
        for _ in 0..total {
            assert_eq!(request(port, "POST", "/predict", &[], body.as_bytes()).status, 200);
        }
        let _ = done_tx.send(());
    });
    let answered = done.recv_timeout(Duration::from_secs(60));
    let reader = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
        rest
    });
    if answered.is_err() {
        let _ = child.kill();
        panic!("requests stalled while standard error was not read");
    }
    signal(child.id(), "TERM");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let log = reader.join().unwrap();
    let lines = log.lines().filter(|l| l.contains("\"path\":\"/predict\",\"status\":200")).count();
    assert_eq!(lines, total, "{}", log.lines().last().unwrap_or(""));
}

/// `serve --help` states the body limit's default once.
#[test]
fn serve_help_states_each_default_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = torchfit(dir.path(), &["serve", "--help"]);
    assert_ok(&out);
    let help = stdout(&out);
    let max_body = help.split("--max-body").nth(1).unwrap().split("\n      --").next().unwrap();
    assert_eq!(max_body.matches("default").count(), 1, "{max_body}");
    assert!(help.contains("--max-connections <N>"), "{help}");
    let connections = help.split("--max-connections").nth(1).unwrap();
    assert!(connections.contains("[default: 1024]"), "{help}");
}
