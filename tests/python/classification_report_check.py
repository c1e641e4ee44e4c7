"""Python's side of tests/evaluate_report.rs: scikit-learn's classification_report and
confusion_matrix held against `torchfit evaluate --format json` and its text.

usage: classification_report_check.py DATA.csv TARGET PREDICTIONS.csv ID REPORT.json REPORT.txt LABEL [LABEL ...]

DATA.csv holds the true labels (column TARGET) and an id column ID; PREDICTIONS.csv is what
`torchfit predict MODEL DATA.csv --keep ID` wrote (ID, then `label`), matched to the data by
ID; REPORT.json and REPORT.txt are `torchfit evaluate RUN DATA.csv` in either format; the
LABELs are the model's classes in its order (some may be absent from DATA.csv). Checked:
the JSON's labels are the LABELs; its matrix is confusion_matrix(labels=LABELS) exactly; its
classification_report is classification_report(labels=LABELS, zero_division=0,
output_dict=True), same keys, numbers within 1e-12 (supports exact); the text holds
classification_report's own text (digits=2) and a matrix row per class.

scikit-learn (1.9.1, with scipy, joblib, threadpoolctl and narwhals; numpy comes with torch)
is installed on first use with `pip install --no-deps --target ~/.cache/torchfit/sklearn`;
when that fails the script exits 77 and the Rust side skips, saying why.
"""
import csv
import json
import os
import sys

from checks import check, finish, pip_install_once, require

SKIP = 77
PACKAGES = ["scikit-learn==1.9.1", "scipy==1.17.1", "joblib==1.6.0", "threadpoolctl==3.8.0", "narwhals==2.28.0"]
SKLEARN_DIR = os.path.expanduser("~/.cache/torchfit/sklearn")


def sklearn_metrics():
    """sklearn.metrics, installed into SKLEARN_DIR on first use (tests run at once share it:
    the folder appears whole or not at all); exits SKIP when pip cannot install it."""
    sys.path.insert(0, pip_install_once(SKLEARN_DIR, "sklearn", PACKAGES, "scikit-learn"))
    import sklearn.metrics
    return sklearn.metrics


def rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def close(a, b):
    return abs(a - b) <= 1e-12


def main(data, target, predictions, id_column, report_json, report_txt, *labels):
    metrics = sklearn_metrics()
    labels = list(labels)
    truth = {row[id_column]: row[target] for row in rows(data)}
    predicted = {row[id_column]: row["label"] for row in rows(predictions)}
    require(truth.keys() == predicted.keys(), "the predictions' ids are the data's")
    ids = list(truth)
    y_true, y_pred = [truth[i] for i in ids], [predicted[i] for i in ids]
    with open(report_json, encoding="utf-8") as f:
        got = json.load(f)
    require(got["confusion_matrix"]["labels"] == labels,
            f"labels {got['confusion_matrix']['labels']} are the model's {labels}")
    want_matrix = metrics.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    check("confusion matrix", got["confusion_matrix"]["matrix"] == want_matrix,
          f"{got['confusion_matrix']['matrix']} vs {want_matrix}")
    want = metrics.classification_report(y_true, y_pred, labels=labels, zero_division=0, output_dict=True)
    report = got["classification_report"]
    check("report keys", list(report) == list(want), f"{list(report)} vs {list(want)}")
    for key, scores in want.items():
        if key == "accuracy":
            check("accuracy", close(report[key], scores), f"{report[key]} vs {scores}")
            continue
        for name, value in scores.items():
            mine = report.get(key, {}).get(name)
            if name == "support":
                check(f"{key} support", mine == value and isinstance(mine, int), f"{mine} vs {value}")
            else:
                check(f"{key} {name}", mine is not None and close(mine, value), f"{mine} vs {value}")
    check("metrics accuracy", "accuracy" not in got["metrics"] or close(got["metrics"]["accuracy"], want["accuracy"]),
          f"{got['metrics']} vs {want['accuracy']}")
    with open(report_txt, encoding="utf-8") as f:
        text = f.read()
    want_text = metrics.classification_report(y_true, y_pred, labels=labels, zero_division=0)
    check("text report", want_text in text, f"\n{text}\nlacks\n{want_text}")
    for label, counts in zip(labels, want_matrix):
        row = " ".join([label] + [str(c) for c in counts])
        check(f"text matrix row {label}", any(" ".join(line.split()) == row for line in text.splitlines()),
              f"no line {row!r} in\n{text}")
    finish()


if __name__ == "__main__":
    if len(sys.argv) < 8:
        sys.exit(__doc__)
    main(*sys.argv[1:])
