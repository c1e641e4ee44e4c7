//! Free-text columns (`data.text`): a tokenizer trained on the training part (Hugging Face's
//! `tokenizers`), the bag and transformer encoders, and raw text from a CSV to a prediction.
//! Held to the Python `tokenizers` package (0.23.3, installed on first use; the checks skip
//! without pip): the tokenizer.json a run stores gives `torchfit tokenize`'s ids on a corpus of
//! Unicode, punctuation and emoji, and `torch.jit.load(model.pt)` (or onnxruntime) on those ids
//! gives `torchfit predict`'s answers within 1e-5. Then: `serve` answers raw text as `predict`
//! does, training is reproducible and resumable, and bad input is one line.

use std::path::Path;

use serde_json::json;

mod common;
use common::server::{predict_csv, Server};
use common::*;

const PY: PythonCheck = PythonCheck("tokenizers_package.py");

/// Texts a tokenizer's normalisation must agree on byte for byte, with a `stars` column: the
/// package's own hard cases and more.
fn corpus(dir: &Path) -> std::path::PathBuf {
    let texts = [
        "Great coffee, would buy again!!!",
        "Café crème: déjà vu… naïve façade",
        "Cafe\u{301} cre\u{300}me (decomposed accents)",
        "GROSSE Straße, ÆØÅ æøå, İstanbul ıi ﬁnance Ｆｕｌｌ",
        "東京は晴れです。今日は良い天気！",
        "Привет, мир! Ελληνικά κείμενα. مرحبا بالعالم",
        "Loved it 😍😍 👍🏽 👨\u{200d}👩\u{200d}👧 🇫🇷 ❤\u{fe0f}",
        "wait... what?!?! (no way) [really] {yes} <ok>",
        "$19.99 -> 20% off; 3.14159 & 1,000,000 #1 @user",
        "see https://example.com/a?b=c&d=e#f or mail x.y@z.org",
        "tabs\tand\u{a0}non-breaking\u{2003}spaces and zero\u{200b}width",
        "supercalifragilisticexpialidocious stale stale stale awful awful awful terrible broken box box",
        "",
        "a",
    ];
    let mut csv = String::from("text,stars\n");
    for (i, t) in texts.iter().enumerate() {
        csv += &format!("\"{}\",{}\n", t.replace('"', "\"\""), i % 5 + 1);
    }
    let path = dir.join("corpus.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

/// The run's validation accuracy, from summary.json.
fn val_accuracy(run: &Path) -> f64 {
    summary(run)["final_metrics"]["val_accuracy"].as_f64().unwrap()
}

/// Each model: the package's ids from the run's tokenizer.json and from model.pt's extra file
/// are `torchfit tokenize`'s, model.pt on them answers as `torchfit predict` does, and so
/// does the ONNX export of the bag encoder (its hashed n-grams included).
#[test]
fn python_tokenizes_as_torchfit_and_model_pt_on_those_ids_predicts_as_torchfit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    review_classifier(d, 600);
    let corpus = corpus(d);
    let transformer = "model.text={encoder: transformer, d_embedding: 8, n_heads: 2, n_blocks: 1}";
    let cases: &[(&str, &[&str], bool)] = &[
        ("bag", &[], true),
        ("trigrams", &["model.text={encoder: bag, d_embedding: 8, ngrams: 3, buckets: 97}"], true),
        ("transformer", &[transformer], false),
        ("resnet", &["model={kind: resnet, n_blocks: 1, d_block: 16, text: {encoder: bag, d_embedding: 8}}"], true),
        (
            "ftt",
            &[
                "model={kind: ft_transformer, n_blocks: 1, d_block: 16, attention_n_heads: 2}",
                transformer,
                "training.epochs=20",
                "training.optimizer.lr=0.003",
            ],
            false,
        ),
        ("tabm", &["model={kind: tabm, k: 4, n_blocks: 1, d_block: 16, text: {encoder: bag, d_embedding: 8}}"], true),
    ];
    for (name, sets, onnx) in cases {
        assert_ok(&train_config(d, "reviews.yaml", name, sets));
        let run = d.join(name);
        assert!(val_accuracy(&run) > 0.85, "{name} learns the reviews: {}", summary(&run));
        let (ids, preds) = (d.join(format!("{name}-ids.npy")), d.join(format!("{name}-preds.csv")));
        let c = corpus.to_str().unwrap();
        assert_ok(&torchfit(d, &["tokenize", name, c, "--output", ids.to_str().unwrap()]));
        for tokenizer in [run.join("tokenizer.json"), run.join("model.pt")] {
            let out = PY.run(&["check", tokenizer.to_str().unwrap(), c, ids.to_str().unwrap(), "text"]);
            if out.status.code() == Some(PythonCheck::SKIP) {
                println!("{}", stdout(&out).trim());
                return;
            }
            PY.assert_ok(&out, &format!("check {name}"));
        }
        assert_ok(&torchfit(d, &["predict", name, c, "--proba", "--output", preds.to_str().unwrap()]));
        let model = run.join("model.pt");
        PY.assert_ok(&PY.run(&["model", model.to_str().unwrap(), c, preds.to_str().unwrap()]), name);
        if *onnx {
            let file = d.join(format!("{name}.onnx"));
            assert_ok(&torchfit(d, &["export", name, "--format", "onnx", "--output", file.to_str().unwrap()]));
            PY.assert_ok(&PY.run(&["onnx", file.to_str().unwrap(), c, preds.to_str().unwrap()]), name);
        }
    }
}

/// `serve`'s /predict rows and V2 BYTES inputs carry raw text, tokenised in the server, and
/// answer as `predict --proba` does (an empty and a missing text included).
#[test]
fn serve_answers_raw_text_as_predict_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    review_classifier(d, 400);
    let transformer = "model.text={encoder: transformer, d_embedding: 8, n_heads: 2, n_blocks: 1}";
    assert_ok(&train_config(d, "reviews.yaml", "run", &[transformer]));
    let texts = ["this coffee was great and tasty 😍", "stale box, awful!!", "", "東京 café ?!"];
    let mut csv = String::from("stars,text\n");
    for t in texts {
        csv += &format!("3,\"{t}\"\n");
    }
    let want = predict_csv(d, "run", &csv, true);
    assert_eq!(want.len(), texts.len());
    let server = Server::start(d, Path::new("run"), &["--quiet"]);
    let mut rows: Vec<_> = texts.iter().map(|t| json!({"stars": 3, "text": t})).collect();
    rows[2] = json!({"stars": 3, "text": null});
    let (status, rows_answer) = server.json("POST", "/predict", &json!({ "rows": rows }).to_string());
    assert_eq!(status, 200, "{rows_answer}");
    let v2 = json!({"inputs": [
        {"name": "input", "datatype": "FP32", "shape": [4, 1], "data": [3, 3, 3, 3]},
        {"name": "text", "datatype": "BYTES", "shape": [4], "data": texts},
    ]});
    let (status, v2_answer) = server.json("POST", "/v2/models/reviews/infer", &v2.to_string());
    assert_eq!(status, 200, "{v2_answer}");
    let v2_proba = &v2_answer["outputs"][2]["data"];
    for (i, row) in want.iter().enumerate() {
        assert_eq!(rows_answer["labels"][i], row[0], "{rows_answer}");
        for (j, p) in row[1..].iter().enumerate() {
            let p = p.parse::<f64>().unwrap();
            let a = rows_answer["probabilities"][i][j].as_f64().unwrap();
            let b = v2_proba[i * 2 + j].as_f64().unwrap_or_else(|| panic!("{v2_answer}"));
            assert!((a - p).abs() <= 1e-6 && (b - p).abs() <= 1e-6, "row {i}: {a} {b} vs predict {p}");
        }
    }
    let (status, bad) = server.json("POST", "/predict", &json!({"rows": [{"stars": 3}]}).to_string());
    assert_eq!(status, 400, "a row without its text is the client's error: {bad}");
    assert!(bad.to_string().contains("`text`"), "{bad}");
    assert_eq!(server.terminate().code(), Some(0));
}

/// Two processes train the same BPE tokenizer and weights from one config (the WordPiece
/// trainer of tokenizers 0.23 is not deterministic, so BPE is the default); a resumed text run
/// ends with the weights of an uninterrupted one, dropout in the transformer included.
#[test]
fn text_runs_are_reproducible_and_resume_to_the_uninterrupted_weights() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    review_classifier(d, 300);
    assert_ok(&train_config(d, "reviews.yaml", "one", &[]));
    assert_ok(&train_config(d, "reviews.yaml", "two", &[]));
    for file in ["tokenizer.json", "weights.safetensors"] {
        let read = |run: &str| std::fs::read(d.join(run).join(file)).unwrap();
        assert!(read("one") == read("two"), "{file} differs between two runs of one config");
    }
    let transformer = "model.text={encoder: transformer, d_embedding: 8, n_heads: 2, n_blocks: 1, dropout: 0.2}";
    assert!(resumes_to_the_uninterrupted_weights(d, "reviews.yaml", &[transformer], 4), "resuming changes nothing");
}

/// Bad configs name their key; a tokenizer of one's own is used as it is; a text column
/// missing at prediction, or text that is not UTF-8, is one line; empty text is all padding.
#[test]
fn bad_text_input_is_one_line_and_empty_text_is_padding() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    review_classifier(d, 200);
    let cases: &[(&[&str], &str)] = &[
        (&["data.text=[nope]"], "data.text"),
        (&["data.text=[text, text]"], "data.text"),
        (&["data.text=[label]"], "data.text"),
        (&["data.tokenizer.max_length=0"], "data.tokenizer.max_length"),
        (&["data.tokenizer.max_length=100000"], "data.tokenizer.max_length"),
        (&["data.tokenizer.vocab_size=2"], "data.tokenizer.vocab_size"),
        (&["data.tokenizer.path=missing.json", "data.tokenizer.vocab_size=null"], "data.tokenizer.path"),
        (&["data.tokenizer.path=reviews.csv", "data.tokenizer.vocab_size=null"], "data.tokenizer.path"),
        (&["model.text.n_heads=2"], "model.text.n_heads"),
        (&["model.text={encoder: transformer, d_embedding: 10, n_heads: 3}"], "model.text.n_heads"),
        (&["model.text.encoder=lstm"], "model.text.encoder"),
        (&["data.text=null", "data.tokenizer=null"], "model.text"),
        (&["model={kind: torchscript, path: m.pt, text: {encoder: bag}}"], "model.text"),
    ];
    assert_each_fails_with(d, "reviews.yaml", cases);

    assert_ok(&train_config(d, "reviews.yaml", "run", &["training.epochs=1"]));
    // The run's own tokenizer.json, brought back as data.tokenizer.path, gives the same ids.
    let own = format!("data.tokenizer={{path: {}, max_length: 24}}", d.join("run/tokenizer.json").display());
    assert_ok(&train_config(d, "reviews.yaml", "own", &["training.epochs=1", &own]));
    let read = |run: &str| std::fs::read_to_string(d.join(run).join("tokenizer.json")).unwrap();
    assert_eq!(read("run"), read("own"));

    std::fs::write(d.join("no_text.csv"), "stars\n3\n").unwrap();
    assert_fails_with(&torchfit(d, &["predict", "run", "no_text.csv"]), &["no_text.csv", "`text`"]);
    std::fs::write(d.join("latin1.csv"), b"stars,text\n3,caf\xe9 au lait\n").unwrap();
    assert_fails_with(&torchfit(d, &["predict", "run", "latin1.csv"]), &["latin1.csv", "UTF-8"]);
    let empty = predict_csv(d, "run", "stars,text\n3,\n3,\"\"\n3,\"   \"\n", true);
    assert_eq!(empty.len(), 3);
    assert!(empty[0] == empty[1] && empty[1] == empty[2], "empty, missing and blank text alike: {empty:?}");
    assert!(empty.iter().all(|r| r[1..].iter().all(|p| p.parse::<f64>().is_ok_and(f64::is_finite))), "{empty:?}");
}

/// A sweep over the text encoder (whole `model.text` sections as choices) and a knob of it:
/// every trial trains, and its config has the encoder it was given.
#[test]
fn a_sweep_chooses_between_text_encoders() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    review_classifier(d, 200);
    let sweep = "base: reviews.yaml\nmethod: grid\nparameters:\n  \
                 model.text: {values: [{encoder: bag, d_embedding: 8}, {encoder: transformer, d_embedding: 8, n_heads: 2, n_blocks: 1}]}\n  \
                 training.epochs: {values: [2]}\n  data.tokenizer.max_length: {values: [8, 16]}\n";
    std::fs::write(d.join("sweep.yaml"), sweep).unwrap();
    assert_ok(&torchfit(d, &["sweep", "sweep.yaml", "--out", "s", "--jobs", "1"]));
    let results = std::fs::read_to_string(d.join("s/results.csv")).unwrap();
    assert_eq!(results.lines().count(), 5, "{results}");
    assert_eq!(results.matches("finished").count(), 4, "{results}");
    for (trial, encoder, length) in [("0000", "bag", 8), ("0003", "transformer", 16)] {
        let config: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(d.join("s/trials").join(trial).join("config.yaml")).unwrap())
                .unwrap();
        assert_eq!(config["model"]["text"]["encoder"], encoder, "{config:?}");
        assert_eq!(config["data"]["tokenizer"]["max_length"], length, "{config:?}");
    }
}
