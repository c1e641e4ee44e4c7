//! The router in process (tower's `oneshot`), on small models written here: every 4xx and
//! 5xx shape the server answers, each a one-line JSON error saying what was wrong (or, for
//! a 500, no more than that), and a batch that always splits back into each request's own
//! rows. The sockets (slow clients, bursts, signals) are tests/serve.rs's.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tch::{Device, Tensor};
use tower::ServiceExt;

use super::error::INTERNAL;
use super::{app, routes, Limits, Options};
use crate::config::{Activation, DeviceChoice, Init, Loss, ModelConfig};
use crate::data::{CategoricalFeature, Preprocessing, TextColumn};
use crate::model::{Categorical, Input, Mlp};
use crate::predict::Predictor;

const CONFIG: &str = include_str!("../../configs/keras_example.yaml");

/// A regression over numeric features f0..f3 (no missing values filled) and, with
/// `levels`, a categorical feature `color` whose categorical.json knows `levels` values
/// while the model's embedding has 3 rows: with more than 3, an unseen value's code is
/// out of the table, and libtorch fails inside the forward pass (a damaged model.pt).
fn write_model(dir: &Path, levels: Option<usize>) -> std::path::PathBuf {
    let _rng = crate::testing::seed(0);
    let cfg = ModelConfig {
        hidden: vec![6],
        activation: Activation::Relu,
        init: Init::Torch,
        dropout: Some(0.0),
        init_from: None,
        ..ModelConfig::default()
    };
    let categorical: Vec<Categorical> = levels.iter().map(|_| Categorical { levels: 3, embedding: Some(2) }).collect();
    let model = Mlp::new(&cfg, &Input { numeric: 4, categorical, text: None }, 1, Device::Cpu).unwrap();
    let features = levels.map(|n| CategoricalFeature {
        name: "color".into(),
        levels: (0..n).map(|i| format!("c{i}")).chain(["(other)".to_string()]).collect(),
        other: n,
        missing: Some(0),
        embedding: Some(2),
    });
    let pre = Preprocessing {
        feature_names: (0..4).map(|i| format!("f{i}")).collect(),
        target_names: vec!["y".into()],
        input_mean: vec![0.0; 4],
        input_std: vec![1.0; 4],
        input_fill: None,
        target_mean: vec![0.0],
        target_std: vec![1.0],
        labels: None,
        input: None,
        categorical: features.into_iter().collect(),
        numeric_bins: None,
        text: None,
    };
    let path = dir.join("model.pt");
    crate::export::write_torchscript(&model, &pre, Loss::Mse, CONFIG, &path).unwrap();
    path
}

fn options(model: &Path, max_delay: Duration) -> Options {
    Options {
        model: model.to_path_buf(),
        host: "127.0.0.1".into(),
        port: 0,
        name: Some("m".into()),
        device: DeviceChoice::Cpu,
        max_batch: 64,
        max_delay,
        limits: Limits { max_body: 4096, read_timeout: Duration::from_secs(5) },
        max_connections: 4,
        quiet: true,
    }
}

fn router(model: &Path, max_delay: Duration) -> (Router, Arc<Predictor>) {
    let predictor = Arc::new(Predictor::load(model).unwrap());
    let (state, _worker) = app(predictor.clone(), &options(model, max_delay), None).unwrap();
    (routes::router(state), predictor)
}

struct Answer {
    status: StatusCode,
    allow: Option<String>,
    json: Value,
}

async fn call(router: &Router, method: &str, uri: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Answer {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = router.clone().oneshot(request.body(Body::from(body)).unwrap()).await.unwrap();
    let status = response.status();
    let allow = response.headers().get(header::ALLOW).map(|v| v.to_str().unwrap().to_string());
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{method} {uri}: not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    Answer { status, allow, json }
}

/// A V2 body with `input` as binary: the JSON header and the bytes after it.
fn binary(shape: Value, size: usize, values: &[f32]) -> (String, Vec<u8>) {
    let header = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": shape,
        "parameters": {"binary_data_size": size}}]})
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    (header.len().to_string(), body)
}

fn v2_json(shape: Value, data: Value) -> Vec<u8> {
    json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": shape, "data": data}]}).to_string().into_bytes()
}

/// The error line, checked for what every error must be: one line, no C++ in it.
fn error_line(answer: &Answer) -> &str {
    let error = answer.json["error"].as_str().unwrap_or_else(|| panic!("{}", answer.json));
    assert_eq!(error.lines().count(), 1, "{error}");
    for internals in ["Exception raised from", ".so", "0x", "frame #"] {
        assert!(!error.contains(internals), "{error}");
    }
    error
}

#[tokio::test]
async fn every_client_error_is_a_4xx_json_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (router, _) = router(&write_model(dir.path(), None), Duration::ZERO);
    let row = [0.5f32, -1.0, 2.0, 0.25];
    let two_rows: Vec<f32> = row.iter().chain(&row).copied().collect();
    let infer = "/v2/models/m/infer";
    let huge = u64::MAX;
    let near = 1u64 << 61;
    let cases: Vec<(&str, &str, Option<(String, Vec<u8>)>, Vec<u8>, u16, &str)> = vec![
        // Declared shapes far beyond the data: refused by the data, nothing allocated.
        ("POST", infer, None, v2_json(json!([1_000_000_000u64, 4]), json!(row)), 400, "has 4 values, but its shape [1000000000, 4] holds 4000000000"),
        ("POST", infer, None, v2_json(json!([near, 4]), json!(row)), 400, "holds 9223372036854775808"),
        ("POST", infer, None, v2_json(json!([huge, 4]), json!(row)), 400, "which holds too many values"),
        ("POST", infer, None, v2_json(json!([huge, 4]), json!([])), 400, "which holds too many values"),
        ("POST", infer, Some(binary(json!([near, 4]), 16, &row)), vec![], 400, "binary_data_size is 16 bytes, but its shape [2305843009213693952, 4] of FP32"),
        ("POST", infer, Some(binary(json!([huge, 4]), 16, &row)), vec![], 400, "which holds too many values"),
        // Byte counts that disagree with the shape, either way.
        ("POST", infer, Some(binary(json!([2, 4]), 16, &row)), vec![], 400, "binary_data_size is 16 bytes, but its shape [2, 4] of FP32 takes 8 x 4 bytes"),
        ("POST", infer, Some(binary(json!([1, 4]), 32, &two_rows)), vec![], 400, "binary_data_size is 32 bytes, but its shape [1, 4]"),
        ("POST", infer, Some(binary(json!([1, 4]), 15, &row)), vec![], 400, "binary_data_size is 15 bytes, but its shape [1, 4]"),
        ("POST", infer, Some(binary(json!([1, 4]), 17, &row)), vec![], 400, "binary_data_size 17 runs past"),
        ("POST", infer, Some(binary(json!([1, 4]), usize::MAX, &row)), vec![], 400, "runs past"),
        ("POST", infer, Some(("9999".into(), b"{}".to_vec())), vec![], 400, "Inference-Header-Content-Length \"9999\""),
        // Values: non-finite, missing where the model fills none, not numbers.
        ("POST", infer, Some(binary(json!([1, 4]), 16, &[0.0, f32::INFINITY, 0.0, 0.0])), vec![], 400, "value 1: infinite"),
        ("POST", infer, Some(binary(json!([1, 4]), 16, &[0.0, 0.0, f32::NAN, 0.0])), vec![], 400, "row 1 column `f2` is missing"),
        ("POST", infer, None, v2_json(json!([1, 4]), json!([0, null, 0, 0])), 400, "value 1 (null) is not a number"),
        ("POST", "/predict", None, json!({"instances": [[0, "1e39", 0, 0]]}).to_string().into_bytes(), 400, "instances[0][1] (`f1`): \"1e39\": infinite"),
        ("POST", "/predict", None, json!({"instances": [[0, 0, "NA", 0]]}).to_string().into_bytes(), 400, "row 1 column `f2` is missing"),
        ("POST", "/predict", None, json!({"rows": [{"f0": 1, "f1": "maybe", "f2": 0, "f3": 0}]}).to_string().into_bytes(), 400, "rows[0].f1: \"maybe\" is not a number"),
        // Datatypes, shapes, names.
        ("POST", infer, None, json!({"inputs": [{"name": "input", "datatype": "INT64", "shape": [1, 4], "data": row}]}).to_string().into_bytes(), 400, "datatype INT64, but the model takes FP32"),
        ("POST", infer, None, v2_json(json!([1, 4, 1]), json!(row)), 400, "shape [1, 4, 1], but the model takes [batch, 4]"),
        ("POST", infer, None, v2_json(json!([-1, 4]), json!(row)), 400, "shape must be a list of whole numbers >= 0"),
        ("POST", infer, None, v2_json(json!([0, 4]), json!([])), 400, "the batch is empty"),
        ("POST", infer, None, json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": row}], "outputs": [{"name": "nope"}]}).to_string().into_bytes(), 400, "the model has no output `nope` (its outputs are `predictions`)"),
        ("POST", "/predict", None, b"{not json".to_vec(), 400, "not valid JSON"),
        // Size, routes, methods, models.
        ("POST", "/predict", None, vec![b' '; 5000], 413, "over the limit of 4096 bytes"),
        ("GET", "/predict", None, vec![], 405, "method not allowed: GET /predict; use POST"),
        ("PUT", infer, None, vec![], 405, "use POST"),
        ("POST", "/v2/health/live", None, vec![], 405, "use GET"),
        ("GET", "/nowhere", None, vec![], 404, "no such route"),
        ("POST", "/v2/models/other/infer", None, v2_json(json!([1, 4]), json!(row)), 404, "unknown model `other`; this server serves `m`"),
        ("GET", "/v2/models/m/versions/7", None, vec![], 404, "no version `7`"),
    ];
    for (method, uri, header_length, body, status, words) in cases {
        let (headers, body) = match header_length {
            Some((length, body)) => (vec![("inference-header-content-length", length)], body),
            None => (vec![], body),
        };
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let answer = call(&router, method, uri, &headers, body).await;
        assert_eq!(answer.status.as_u16(), status, "{method} {uri} {words}: {}", answer.json);
        let error = error_line(&answer);
        assert!(error.contains(words), "{method} {uri}: expected {words:?} in {error:?}");
        if status == 405 {
            assert!(answer.allow.is_some(), "{method} {uri}: no Allow header");
        }
    }
}

#[tokio::test]
async fn predict_reads_text_cells_by_the_csv_rule() {
    let dir = tempfile::tempdir().unwrap();
    let (router, predictor) = router(&write_model(dir.path(), None), Duration::ZERO);
    let answer = |body: Value| {
        let router = router.clone();
        async move { call(&router, "POST", "/predict", &[], body.to_string().into_bytes()).await }
    };
    let words = answer(json!({"instances": [["yes", " 2.5 ", "F", "-1e1"]]})).await;
    let numbers = answer(json!({"instances": [[1, 2.5, 0, -10]]})).await;
    assert_eq!(words.status, StatusCode::OK, "{}", words.json);
    assert_eq!(words.json, numbers.json);
    let x = Tensor::from_slice(&[1f32, 2.5, 0.0, -10.0]).view([1, 4]);
    let alone = f64::try_from(predictor.predict(&x, &[], false).unwrap().output.view([-1])).unwrap();
    let got = words.json["predictions"][0].as_f64().unwrap();
    assert!((got - alone).abs() < 1e-5, "{got} != {alone}");
}

/// categorical.json knows 5 levels, the model's table 3 rows: an unseen value makes
/// libtorch fail inside the forward pass. That is the server's failure, not the client's:
/// a 500 that says nothing of libtorch; a good request batched with it is still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_forward_pass_is_a_500_and_spares_the_rest_of_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (router, predictor) = router(&write_model(dir.path(), Some(5)), Duration::from_millis(300));
    let body = |color: &str| {
        json!({"inputs": [
            {"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [0.5, 0.25, -1.0, 2.0]},
            {"name": "color", "datatype": "BYTES", "shape": [1], "data": [color]},
        ]})
        .to_string()
        .into_bytes()
    };
    let infer = "/v2/models/m/infer";
    let (bad, good) = tokio::join!(call(&router, "POST", infer, &[], body("unseen")), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        call(&router, "POST", infer, &[], body("c1")).await
    });
    assert_eq!(bad.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", bad.json);
    assert_eq!(error_line(&bad), INTERNAL);
    assert_eq!(good.status, StatusCode::OK, "{}", good.json);
    let x = Tensor::from_slice(&[0.5f32, 0.25, -1.0, 2.0]).view([1, 4]);
    let color = TextColumn { name: "color".into(), values: crate::data::Text::from_values([Some("c1")]) };
    let alone = f64::try_from(predictor.predict(&x, &[color], false).unwrap().output.view([-1])).unwrap();
    let got = good.json["outputs"][0]["data"][0].as_f64().unwrap();
    assert!((got - alone).abs() < 1e-5, "{got} != {alone}");
}

#[tokio::test]
async fn categorical_inputs_must_hold_as_many_rows_as_the_numeric_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (router, _) = router(&write_model(dir.path(), Some(2)), Duration::ZERO);
    let numeric =
        |rows: usize| json!({"name": "input", "datatype": "FP32", "shape": [rows, 4], "data": vec![0.5; rows * 4]});
    let color = |shape: Value, data: Value| json!({"name": "color", "datatype": "BYTES", "shape": shape, "data": data});
    let cases = [
        (
            json!([numeric(1), color(json!([1]), json!(["c0", "c1"]))]),
            "input `color` has 2 values, but its shape [1] holds 1",
        ),
        (json!([numeric(2), color(json!([1]), json!(["c0"]))]), "input `color` has 1 rows, but `input` has 2"),
        (json!([numeric(1)]), "input `color` is missing"),
        (
            json!([numeric(1), color(json!([1, 2]), json!(["c0", "c1"]))]),
            "shape [1, 2], but the model takes [batch] or [batch, 1]",
        ),
    ];
    for (inputs, words) in cases {
        let answer =
            call(&router, "POST", "/v2/models/m/infer", &[], json!({ "inputs": inputs }).to_string().into_bytes())
                .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.json);
        assert!(error_line(&answer).contains(words), "{words:?} in {}", answer.json);
    }
    // Binary BYTES: two elements where the shape says one.
    let header = json!({"inputs": [numeric(1), {"name": "color", "datatype": "BYTES", "shape": [1],
        "parameters": {"binary_data_size": 12}}]})
    .to_string();
    let mut body = header.clone().into_bytes();
    for element in ["c0", "c1"] {
        body.extend((element.len() as u32).to_le_bytes());
        body.extend(element.as_bytes());
    }
    let length = header.len().to_string();
    let answer =
        call(&router, "POST", "/v2/models/m/infer", &[("inference-header-content-length", &length)], body).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.json);
    assert!(error_line(&answer).contains("more elements than its shape [1]"), "{}", answer.json);
}

/// An array model of int64 samples `[2, 3]` (token ids) whose answer is each sample's sum,
/// so that every request can tell its own rows from another's.
fn write_array_model(dir: &Path) -> std::path::PathBuf {
    let mut module = crate::shim::ScriptModule::new("__torch__.Sums").unwrap();
    module
        .define("def forward(self, x: Tensor) -> Tensor:\n    return x.reshape([x.size(0), -1]).float().sum(1, keepdim=True)\n")
        .unwrap();
    let path = dir.join("model.pt");
    let input = br#"{"shape": [2, 3], "dtype": "int64"}"#;
    module.save(&path, &[("config.yaml", CONFIG.as_bytes()), ("input.json", input)]).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn array_samples_are_checked_and_batched_back_to_their_requests() {
    let dir = tempfile::tempdir().unwrap();
    let (router, _) = router(&write_array_model(dir.path()), Duration::from_millis(20));
    let infer = "/v2/models/m/infer";
    let int64 = |shape: Value, data: Value| {
        json!({"inputs": [{"name": "input", "datatype": "INT64", "shape": shape, "data": data}]})
            .to_string()
            .into_bytes()
    };
    let cases = [
        (
            int64(json!([1, 3, 2]), json!([1, 2, 3, 4, 5, 6])),
            "has shape [1, 3, 2], but the model takes INT64 [batch, 2, 3]",
        ),
        (int64(json!([1, 2, 3]), json!([1, 2, 3, 4, 5, 6.5])), "value 5 (6.5) is not a whole number"),
        (int64(json!([2, 2, 3]), json!([1, 2, 3, 4, 5, 6])), "has 6 values, but its shape [2, 2, 3] holds 12"),
        (
            v2_json(json!([1, 2, 3]), json!([1, 2, 3, 4, 5, 6])),
            "has datatype FP32, but the model takes INT64 [batch, 2, 3]",
        ),
    ];
    for (body, expected) in cases {
        let answer = call(&router, "POST", infer, &[], body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.json);
        assert!(error_line(&answer).contains(expected), "{}", answer.json);
    }
    let ragged = json!({"instances": [[[1, 2, 3], [4, 5]]]}).to_string().into_bytes();
    let answer = call(&router, "POST", "/predict", &[], ragged).await;
    assert!(error_line(&answer).contains("instances[0] is not a list of shape [2, 3]"), "{}", answer.json);
    // Requests at once, batched together: each gets its own samples' sums.
    let requests = (0..8i64).map(|k| {
        let router = router.clone();
        tokio::spawn(async move {
            let samples = k % 3 + 1;
            let data: Vec<i64> = (0..samples * 6).map(|i| k * 100 + i).collect();
            let answer = call(&router, "POST", infer, &[], int64(json!([samples, 2, 3]), json!(data))).await;
            let want: Vec<f64> = data.chunks(6).map(|s| s.iter().sum::<i64>() as f64).collect();
            (answer.status, answer.json["outputs"][0]["data"].clone(), json!(want))
        })
    });
    for request in requests {
        let (status, got, want) = request.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{got}");
        assert_eq!(got, want);
    }
}
