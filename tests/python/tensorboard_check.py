"""TensorBoard's side of tests/tensorboard.rs: TensorBoard's own readers on the event files a
torchfit run writes (logging.tensorboard), held to the run's metrics.csv and config.yaml.

usage: tensorboard_check.py scalars LOGDIR RUN
           every scalar of LOGDIR/train and LOGDIR/validation, read back by TensorBoard's
           EventAccumulator and by tbparse's SummaryReader, equals (as float32) its column of
           RUN/metrics.csv (epoch_<column> in train with epoch_learning_rate = lr, epoch_<name>
           in validation for each val_<name>), at step = epoch; and the raw event files
           (EventFileLoader, which keeps duplicates) hold exactly one value per tag and epoch
       tensorboard_check.py hparams LOGDIR RUN STATUS
           the HParams plugin's summaries in LOGDIR, parsed by the plugin's own metadata code:
           the session's hyperparameters equal RUN/config.yaml flattened (dotted keys, lists
           as JSON text), the experiment has a column for each of them and for each scalar
           tag, and the session ended with STATUS (STATUS_SUCCESS, ...)
       tensorboard_check.py steps LOGDIR
           prints the steps of epoch_loss in LOGDIR/train's event files (raw, duplicates kept)
           as a JSON list
       tensorboard_check.py sessions DIR N
           the HParams plugin's own handlers (ListSessionGroups, GetExperiment) over
           `tensorboard --logdir DIR`: N sessions, each with its hyperparameters and its last
           validation epoch_loss, and the experiment's columns
       tensorboard_check.py server DIR N
           the same asked of `tensorboard --logdir DIR --load_fast true` over HTTP, as the
           HParams tab asks it: N session groups, each with its last validation epoch_loss

The packages (tensorboard==2.21.0, tbparse==0.0.9 and what they need) are installed on first
use with `pip install --target ~/.cache/torchfit/tensorboard`; when that fails, every command
exits 77 and the Rust side skips, saying why.
"""
import csv
import glob
import json
import math
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import yaml

from checks import check, finish, pip_install_once, require

SKIP = 77
PACKAGES = ["tensorboard==2.21.0", "tbparse==0.0.9"]
PACKAGES_DIR = os.path.expanduser("~/.cache/torchfit/tensorboard")


def install():
    """The packages, installed into PACKAGES_DIR on first use (tests run at once share it: the
    folder appears whole or not at all); exits SKIP when pip cannot install them."""
    pip_install_once(PACKAGES_DIR, "tbparse", PACKAGES, " ".join(PACKAGES), no_deps=False)
    # After torch's folder: its numpy and PyYAML are the ones this script was started with.
    sys.path.append(PACKAGES_DIR)


def metrics(run):
    """metrics.csv's columns, each a list of floats by epoch, and the epochs."""
    with open(os.path.join(run, "metrics.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    columns = {name: [float(r[name]) for r in rows] for name in rows[0]}
    return columns, [int(e) for e in columns.pop("epoch")]


def expected(run):
    """{(group, tag): {epoch: float32 value}} as torchfit should have written them."""
    columns, epochs = metrics(run)
    want = {}
    for name, values in columns.items():
        if name == "seconds":
            continue
        group, tag = ("train", "epoch_learning_rate") if name == "lr" else \
            ("validation", "epoch_" + name[4:]) if name.startswith("val_") else ("train", "epoch_" + name)
        want[(group, tag)] = {e: np.float32(v) for e, v in zip(epochs, values)}
    return want


def same(a, b):
    return (math.isnan(a) and math.isnan(b)) or np.float32(a) == np.float32(b)


def raw_counts(directory):
    """{(tag, step): count} over every event file in `directory`, duplicates kept."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    counts = Counter()
    for path in sorted(glob.glob(os.path.join(directory, "events.out.tfevents.*"))):
        for event in EventFileLoader(path).Load():
            for value in event.summary.value:
                counts[(value.tag, event.step)] += 1
    return counts


def check_scalars(logdir, run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tbparse import SummaryReader
    want = expected(run)
    frame = SummaryReader(logdir, pivot=False, extra_columns={"dir_name"}).scalars
    for group in ("train", "validation"):
        tags = sorted(tag for g, tag in want if g == group)
        accumulator = EventAccumulator(os.path.join(logdir, group), size_guidance={"scalars": 0})
        accumulator.Reload()
        require(sorted(accumulator.Tags()["scalars"]) == tags, f"{group}: tags {accumulator.Tags()['scalars']} != {tags}")
        counts = raw_counts(os.path.join(logdir, group))
        for tag in tags:
            values = want[(group, tag)]
            read = {e.step: e.value for e in accumulator.Scalars(tag)}
            check(f"{group}/{tag} steps", sorted(read) == sorted(values), f"{sorted(read)} != {sorted(values)}")
            bad = [(s, read.get(s), v) for s, v in values.items() if s not in read or not same(read[s], v)]
            check(f"{group}/{tag} values", not bad, f"(epoch, event file, metrics.csv): {bad[:5]}")
            once = {step: counts[(tag, step)] for step in values}
            extra = {step for (t, step) in counts if t == tag} - set(values)
            check(f"{group}/{tag} one value per epoch", set(once.values()) == {1} and not extra,
                  f"counts {once}, steps not in metrics.csv {sorted(extra)}")
            rows = frame[(frame.dir_name == group) & (frame.tag == tag)]
            parsed = dict(zip(rows.step.astype(int), rows.value))
            check(f"tbparse {group}/{tag}", len(rows) == len(values) and sorted(parsed) == sorted(values)
                  and all(same(parsed[s], v) for s, v in values.items()), f"{len(rows)} rows for {len(values)} epochs")
    print(f"{sum(len(v) for v in want.values())} scalars over {len(want)} tags checked")


def flatten(value, name=""):
    if isinstance(value, dict):
        out = {}
        for key, inner in value.items():
            out.update(flatten(inner, f"{name}.{key}" if name else key))
        return out
    if value is None:
        return {}
    if isinstance(value, list):
        return {name: json.dumps(value, separators=(",", ":"))}
    return {name: value}


def plugin_values(logdir):
    """{tag: [content bytes]} of the hparams plugin's values in the event files of `logdir`."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    found = {}
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        for event in EventFileLoader(path).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "hparams":
                    require(value.HasField("tensor"), f"{value.tag} has no tensor")
                    found.setdefault(value.tag, []).append(value.metadata.plugin_data.content)
    return found


def proto_value(v):
    kind = v.WhichOneof("kind")
    return getattr(v, kind)


def check_hparams(logdir, run, status):
    from tensorboard.plugins.hparams import api_pb2, metadata
    found = plugin_values(logdir)
    require(sorted(found) == sorted([metadata.EXPERIMENT_TAG, metadata.SESSION_START_INFO_TAG,
                                      metadata.SESSION_END_INFO_TAG]), f"tags {sorted(found)}")
    for tag, contents in found.items():
        check(f"one {tag}", len(contents) == 1, f"{len(contents)} of them")
    start = metadata.parse_session_start_info_plugin_data(found[metadata.SESSION_START_INFO_TAG][0])
    with open(os.path.join(run, "config.yaml")) as f:
        config = flatten(yaml.safe_load(f))
    got = {k: proto_value(v) for k, v in start.hparams.items()}
    check("hparam keys", sorted(got) == sorted(config), f"{sorted(set(got) ^ set(config))}")
    bad = [(k, got.get(k), v) for k, v in config.items() if got.get(k) != v or isinstance(got.get(k), bool) != isinstance(v, bool)]
    check("hparam values", not bad, f"(key, session_start_info, config.yaml): {bad[:5]}")
    for key in ("training.optimizer.lr", "model.hidden"):
        check(f"has {key}", key in got, "")
    experiment = metadata.parse_experiment_plugin_data(found[metadata.EXPERIMENT_TAG][0])
    check("experiment hparams", sorted(h.name for h in experiment.hparam_infos) == sorted(config), "")
    metric_names = sorted((m.name.group, m.name.tag) for m in experiment.metric_infos)
    check("experiment metrics", metric_names == sorted(expected(run)), f"{metric_names}")
    end = metadata.parse_session_end_info_plugin_data(found[metadata.SESSION_END_INFO_TAG][0])
    check("session end status", api_pb2.Status.Name(end.status) == status, api_pb2.Status.Name(end.status))
    print(f"{len(got)} hyperparameters checked, status {api_pb2.Status.Name(end.status)}")


def check_sessions(directory, n):
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, get_experiment, list_session_groups
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(directory)
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, directory)
    tb = base_plugin.TBContext(logdir=directory, multiplexer=multiplexer, data_provider=provider)
    backend = backend_context.Context(tb)
    ctx = context.RequestContext()
    experiment = get_experiment.Handler(ctx, backend, "", api_pb2.GetExperimentRequest()).run()
    names = {h.name for h in experiment.hparam_infos}
    check("experiment columns", {"training.optimizer.lr", "model.hidden"} <= names, f"{sorted(names)[:10]}")
    metric = api_pb2.MetricName(group="validation", tag="epoch_loss")
    # Every status, as the HParams tab asks by default.
    statuses = [api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS, api_pb2.STATUS_FAILURE, api_pb2.STATUS_RUNNING]
    request = api_pb2.ListSessionGroupsRequest(
        start_index=0, slice_size=100, aggregation_type=api_pb2.AGGREGATION_AVG, allowed_statuses=statuses,
        col_params=[api_pb2.ColParams(hparam="training.optimizer.lr"), api_pb2.ColParams(metric=metric)])
    groups = list_session_groups.Handler(ctx, backend, "", request).run()
    sessions = [s for g in groups.session_groups for s in g.sessions]
    require(len(sessions) == n, f"{len(sessions)} sessions: {[s.name for s in sessions]}")
    lrs = set()
    for group in groups.session_groups:
        lrs.add(proto_value(group.hparams["training.optimizer.lr"]))
        losses = [m.value for m in group.metric_values if m.name == metric]
        check(f"{group.name} validation epoch_loss", len(losses) == 1 and math.isfinite(losses[0]), f"{losses}")
    for s in sessions:
        check(f"{s.name} status", api_pb2.Status.Name(s.status) == "STATUS_SUCCESS", api_pb2.Status.Name(s.status))
        # The session is the trial's logdir, <trial>/tensorboard: its last val_loss is the metric.
        columns, _ = metrics(os.path.join(directory, os.path.dirname(s.name)))
        losses = [m.value for m in s.metric_values if m.name == metric]
        check(f"{s.name} last val_loss", len(losses) == 1 and same(losses[0], columns["val_loss"][-1]),
              f"{losses} != {columns['val_loss'][-1]}")
    check("distinct lr per session", len(lrs) == n, f"{lrs}")
    print(f"{len(sessions)} sessions: {sorted(s.name for s in sessions)}")


def check_server(directory, n):
    """`tensorboard --logdir DIR --load_fast true` (the Rust data server reads the files): its
    HParams tab's request for session groups answers N sessions with the validation loss."""
    import socket
    import time
    import urllib.request
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path[1:]))
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", directory, "--host", "127.0.0.1",
                               "--port", str(port), "--load_fast", "true", "--reload_interval", "1"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    body = json.dumps({"startIndex": 0, "sliceSize": 100, "aggregationType": "AGGREGATION_AVG",
                       "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
                       "colParams": [{"metric": {"group": "validation", "tag": "epoch_loss"}}]}).encode()
    groups, deadline = [], time.monotonic() + 90
    try:
        while len(groups) < n and time.monotonic() < deadline and server.poll() is None:
            time.sleep(1)
            request = urllib.request.Request(f"http://127.0.0.1:{port}/data/plugin/hparams/session_groups", data=body,
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    groups = json.load(response).get("sessionGroups", [])
            except OSError:
                continue
            # The data server loads the runs over a few reloads: wait for every metric.
            if any(not g.get("metricValues") for g in groups):
                groups = []
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
    require(len(groups) == n, f"{len(groups)} session groups from the server: {err.decode()[-2000:]}")
    for group in groups:
        values = [m["value"] for m in group["metricValues"] if m["name"] == {"group": "validation", "tag": "epoch_loss"}]
        columns, _ = metrics(os.path.join(directory, os.path.dirname(group["name"])))
        check(f"server {group['name']} val_loss", len(values) == 1 and same(values[0], columns["val_loss"][-1]),
              f"{values} != {columns['val_loss'][-1]}")
        check(f"server {group['name']} lr", "training.optimizer.lr" in group["hparams"], "")
    print(f"tensorboard served {len(groups)} sessions: {sorted(g['name'] for g in groups)}")


def main():
    install()
    command, args = sys.argv[1], sys.argv[2:]
    if command == "scalars":
        check_scalars(*args)
    elif command == "hparams":
        check_hparams(*args)
    elif command == "steps":
        counts = raw_counts(os.path.join(args[0], "train"))
        print(json.dumps(sorted(step for tag, step in counts if tag == "epoch_loss")))
        return
    elif command == "sessions":
        check_sessions(args[0], int(args[1]))
    elif command == "server":
        check_server(args[0], int(args[1]))
    else:
        sys.exit(f"unknown command {command}")
    finish()


if __name__ == "__main__":
    main()
