"""A Triton model repository written by `torchfit export --format triton`: config.pbtxt
parses into Triton's own ModelConfig protobuf (tritonclient's model_config_pb2), and its
input and output names, data types and dims are what model.pt's forward takes and returns.

usage: triton_config.py MODEL_FOLDER RUN_MODEL_PT ...   (pairs)
Prints "N passed, 0 failed" and exits 0, or names each failure and exits 1.
"""
import importlib.util
import os
import sys

import torch
import tritonclient
from google.protobuf import text_format

from checks import check, finish

# model_config_pb2 lives in tritonclient.grpc, whose __init__ needs grpcio; the generated
# module itself needs only protobuf, so it is loaded from its file.
path = os.path.join(os.path.dirname(tritonclient.__file__), "grpc", "model_config_pb2.py")
spec = importlib.util.spec_from_file_location("model_config_pb2", path)
model_config_pb2 = importlib.util.module_from_spec(spec)
spec.loader.exec_module(model_config_pb2)

TYPES = {model_config_pb2.TYPE_FP32: torch.float32, model_config_pb2.TYPE_INT64: torch.int64}
args = sys.argv[1:]
for folder, run_model in zip(args[::2], args[1::2]):
    name = os.path.basename(folder.rstrip("/"))
    config = text_format.Parse(open(os.path.join(folder, "config.pbtxt")).read(), model_config_pb2.ModelConfig())
    check(f"{name}: name", config.name == name, config.name)
    check(f"{name}: backend", config.backend == "pytorch", config.backend)
    check(f"{name}: batching", config.max_batch_size > 0 and config.HasField("dynamic_batching"))
    check(f"{name}: one input, one output", len(config.input) == 1 and len(config.output) == 1)
    inp, out = config.input[0], config.output[0]
    check(f"{name}: names", (inp.name, out.name) == ("INPUT__0", "OUTPUT__0"), f"{inp.name} {out.name}")
    check(f"{name}: input type", inp.data_type in TYPES, inp.data_type)
    model = torch.jit.load(os.path.join(folder, "1", "model.pt"))
    # Level codes 0 and 1 exist in every categorical feature, token ids 0 and 1 in every
    # vocabulary; numbers anywhere are fine. An array model's input is of its own type.
    x = torch.randint(0, 2, (5, *inp.dims)).to(TYPES.get(inp.data_type, torch.float32))
    y = model(x)
    check(f"{name}: output type", TYPES.get(out.data_type) == y.dtype, f"{out.data_type} vs {y.dtype}")
    per_item = list(out.reshape.shape) if out.HasField("reshape") else list(out.dims)
    check(f"{name}: output dims", list(y.shape) == [5, *per_item], f"{list(y.shape)} vs [5, {per_item}]")
    check(f"{name}: dims", len(out.dims) > 0 and all(d > 0 for d in out.dims), list(out.dims))
    want = torch.jit.load(run_model)(x)
    check(f"{name}: same model", torch.equal(y, want))

finish()
