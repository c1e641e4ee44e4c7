"""Triton's own Python HTTP client (tritonclient) against `torchfit serve`: health, metadata,
and inference with binary and JSON tensors, compared with `torchfit predict`; errors come back
as InferenceServerException naming the problem.

usage: serve_client.py SPEC.json   (written by tests/serve_python.rs)
Prints "N passed, 0 failed" and exits 0, or names each failure and exits 1.
"""
import json
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from checks import check, finish


def close(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= 1e-5 * (1 + np.abs(b))))


def raises(name, call, words):
    try:
        call()
    except InferenceServerException as e:
        check(name, words in str(e), f"expected {words!r} in {e}")
        return
    check(name, False, "no error")


def regression(spec):
    client = httpclient.InferenceServerClient(f"127.0.0.1:{spec['port']}")
    name = spec["name"]
    check("live", client.is_server_live())
    check("ready", client.is_server_ready())
    check("model ready", client.is_model_ready(name))
    meta = client.get_model_metadata(name)
    check("metadata inputs", meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 10]}], meta)
    check("server metadata", client.get_server_metadata()["name"] == "torchfit")
    x = np.array(spec["rows"], dtype=np.float32)
    want = np.array(spec["want"]).reshape(-1, 1)
    for binary in (True, False):
        tensor = httpclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=binary)
        outputs = [httpclient.InferRequestedOutput("predictions", binary_data=binary)]
        result = client.infer(name, [tensor], outputs=outputs, request_id="42")
        got = result.as_numpy("predictions")
        check(f"predictions (binary={binary})", close(got, want), f"{got} != {want}")
        check("request id", result.get_response()["id"] == "42")
    # No outputs named: all of them, binary (tritonclient's default).
    tensor = httpclient.InferInput("input", [1, 10], "FP32")
    tensor.set_data_from_numpy(x[:1])
    check("one row", close(client.infer(name, [tensor]).as_numpy("predictions"), want[:1]))
    bad = httpclient.InferInput("input", [1, 5], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 5), dtype=np.float32))
    raises("wrong shape", lambda: client.infer(name, [bad]), "shape [1, 5], but the model takes [batch, 10]")
    wrong = httpclient.InferInput("input", [1, 10], "FP64")
    wrong.set_data_from_numpy(np.zeros((1, 10), dtype=np.float64))
    raises("wrong datatype", lambda: client.infer(name, [wrong]), "datatype FP64, but the model takes FP32")
    raises("unknown model", lambda: client.infer("nope", [tensor]), "unknown model `nope`")
    check("still serving", close(client.infer(name, [tensor]).as_numpy("predictions"), want[:1]))


def categorical(spec):
    client = httpclient.InferenceServerClient(f"127.0.0.1:{spec['port']}")
    name = spec["name"]
    meta = client.get_model_metadata(name)
    features = meta["parameters"]["features"]
    rows = spec["rows"]

    def number(v):
        return {"no": 0.0, "yes": 1.0, None: float("nan"), "": float("nan")}.get(v, v) if not isinstance(v, (int, float)) else v

    # Missing numeric values are NaN, which JSON cannot carry (the binary extension can):
    # the rows here have none; missing categorical values are empty strings.
    x = np.array([[number(r[f]) for f in features] for r in rows], dtype=np.float32)
    for binary in (True, False):
        inputs = [httpclient.InferInput("input", list(x.shape), "FP32")]
        inputs[0].set_data_from_numpy(x, binary_data=binary)
        for meta_input in meta["inputs"][1:]:
            column = np.array([("" if r[meta_input["name"]] is None else str(r[meta_input["name"]])).encode() for r in rows], dtype=object)
            tensor = httpclient.InferInput(meta_input["name"], [len(rows)], "BYTES")
            tensor.set_data_from_numpy(column, binary_data=binary)
            inputs.append(tensor)
        outputs = [httpclient.InferRequestedOutput(o, binary_data=binary) for o in ("labels", "probabilities", "predictions")]
        result = client.infer(name, inputs, outputs=outputs)
        labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("labels").tolist()]
        check(f"labels (binary={binary})", labels == spec["labels"], f"{labels} != {spec['labels']}")
        proba = result.as_numpy("probabilities")
        check(f"probabilities (binary={binary})", close(proba, spec["proba"]), f"{proba} != {spec['proba']}")
        check("class indices", result.as_numpy("predictions").dtype == np.int64)
    raises("missing categorical input", lambda: client.infer(name, inputs[:1]), "is missing (BYTES [batch])")


spec = json.load(open(sys.argv[1]))
regression(spec["regression"])
categorical(spec["categorical"])
finish()
