"""onnxruntime's view of `torchfit export --format onnx`, run by tests/onnx_export.rs.

usage: onnx_check.py MODEL.onnx NUMERIC.npy CODES.npy|- PREDICTIONS.csv [...4 more each]

For each model: onnx.checker.check_model passes (full check, with shape inference); the
opset is 17 or newer; the inputs and outputs are named, typed and shaped as docs/interop.md
says; the metadata carries features (and labels, categorical); and onnxruntime's outputs on
the inputs equal `torchfit predict` (with --proba for classifiers) on the same rows within
1e-5 (relative to the value's size for regression outputs in the data's units). Prints
'N passed, 0 failed'.
"""
import csv
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort

from checks import finish, require

FLOAT, INT64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64
def signature(values):
    """{name: (elem_type, [dim or 'batch'])} of graph inputs or outputs."""
    out = {}
    for v in values:
        t = v.type.tensor_type
        dims = [d.dim_param if d.HasField("dim_param") else d.dim_value for d in t.shape.dim]
        out[v.name] = (t.elem_type, dims)
    return out


def check_model(path, numeric_path, codes_path, predictions_path):
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    require(True, f"{path}: onnx.checker.check_model")
    opset = {o.domain: o.version for o in model.opset_import}
    require(opset.get("", 0) >= 17, f"{path}: opset {opset}")
    meta = {p.key: p.value for p in model.metadata_props}
    features = json.loads(meta["features"])
    labels = json.loads(meta["labels"]) if "labels" in meta else None
    categorical = json.loads(meta["categorical"]) if "categorical" in meta else []

    numeric = np.load(numeric_path).astype(np.float32)
    feeds = {}
    want_inputs = {}
    if features:
        feeds["numeric"] = numeric
        want_inputs["numeric"] = (FLOAT, ["batch", len(features)])
    require(numeric.shape[1] == len(features), f"{path}: metadata features names the numeric columns")
    if codes_path != "-":
        codes = np.load(codes_path)
        require(codes.dtype == np.int64, f"{path}: codes are int64")
        feeds["codes"] = codes
        want_inputs["codes"] = (INT64, ["batch", len(categorical)])
        for j, feature in enumerate(categorical):
            require(codes[:, j].max() < len(feature["levels"]), f"{path}: codes of {feature['name']} are level indices")
    else:
        require(categorical == [], f"{path}: no codes input without categorical features")
    require(signature(model.graph.input) == want_inputs, f"{path}: inputs {signature(model.graph.input)}")

    with open(predictions_path) as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    got = signature(model.graph.output)
    if labels is None:
        theirs = np.array([[float(v) for v in r] for r in body], dtype=np.float64)
        require(got == {"predictions": (FLOAT, ["batch", theirs.shape[1]])}, f"{path}: outputs {got}")
        mine = outputs["predictions"].astype(np.float64)
        require(mine.shape == theirs.shape, f"{path}: predictions shape {mine.shape} vs {theirs.shape}")
        err = (np.abs(mine - theirs) / np.maximum(1.0, np.abs(theirs))).max()
        require(err <= 1e-5, f"{path}: onnxruntime vs torchfit predict: max relative diff {err}")
    else:
        want = {"predictions": (INT64, ["batch"]), "probabilities": (FLOAT, ["batch", len(labels)])}
        require(got == want, f"{path}: outputs {got}")
        require(header == ["label"] + [f"p_{l}" for l in labels], f"{path}: predictions were written with --proba")
        index = outputs["predictions"]
        require(index.dtype == np.int64 and index.shape == (len(body),), f"{path}: class indices [batch]")
        require([labels[i] for i in index] == [r[0] for r in body], f"{path}: labels match torchfit predict")
        proba = outputs["probabilities"]
        theirs = np.array([[float(v) for v in r[1:]] for r in body], dtype=np.float32)
        diff = np.abs(proba - theirs).max()
        require(diff <= 1e-5, f"{path}: probabilities vs torchfit predict --proba: max abs diff {diff}")
        require(np.allclose(proba.sum(1), 1.0, atol=1e-5), f"{path}: probabilities sum to 1")

    # Any batch size, one row included.
    one = {k: v[:1] for k, v in feeds.items()}
    first = session.run(None, one)[0]
    require(np.allclose(first, outputs["predictions"][:1], rtol=1e-6, atol=1e-6), f"{path}: one row alone")


def main(args):
    if len(args) == 0 or len(args) % 4 != 0:
        sys.exit(__doc__)
    for i in range(0, len(args), 4):
        check_model(*args[i:i + 4])
    finish("onnx: ")


if __name__ == "__main__":
    main(sys.argv[1:])
