"""Python's side of the MLflow tests: MLflow's own client reading back what torchfit logged to
an `mlflow server`.

usage: mlflow_check.py install          installs the package on first use; prints its folder
                                         (the Rust side starts `python3 -m mlflow server` with it)
       mlflow_check.py run URI RUN_DIR  the run RUN_DIR/mlflow.json names: params equal to
                                         config.yaml flattened to dotted keys, every metric at
                                         every epoch equal to metrics.csv (step = epoch, one value
                                         per epoch), test_* metrics of summary.json, the tags,
                                         status FINISHED, the artifacts listed, model.pt's bytes
       mlflow_check.py sweep URI SWEEP_DIR TRIALS
                                         the sweep's parent run (SWEEP_DIR/mlflow.json): FINISHED,
                                         its search params and best metric; exactly TRIALS child
                                         runs (tag mlflow.parentRunId) and no other run in the
                                         experiment, each the run of a trial directory, checked as
                                         `run` checks it

The package (mlflow 3.17.2: the registry mirror has no mlflow-tracing 3.18.0, which mlflow
3.18.0 pins) is installed on first use with `pip install --target ~/.cache/torchfit/mlflow`
(about 45 s and 830 MB); when that fails, every command exits 77 and the Rust side skips.
"""
import csv
import json
import math
import os
import sys
import tempfile

from checks import check, finish, pip_install_once, require

SKIP = 77
PACKAGE = "mlflow==3.17.2"
MLFLOW_DIR = os.path.expanduser("~/.cache/torchfit/mlflow")


def install():
    """MLFLOW_DIR with the package, installed on first use (tests run at once share it: the
    folder appears whole or not at all); exits SKIP when pip cannot install it."""
    return pip_install_once(MLFLOW_DIR, "mlflow", [PACKAGE], PACKAGE, no_deps=False)


def client(uri):
    sys.path.insert(0, install())
    import mlflow

    return mlflow.MlflowClient(uri)


def flatten(tree, prefix=""):
    """config.yaml as torchfit sends it: mappings joined with dots, null and {} left out."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif value is not None:
            out[name] = value
    return out


def same_param(got, want):
    if isinstance(want, str):
        return got == want
    try:
        return json.loads(got) == want
    except ValueError:
        return False


def read_metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.csv"), newline="") as f:
        return list(csv.DictReader(f))


def same_value(column, got, want):
    if math.isnan(want):
        return math.isnan(got)
    # metrics.csv rounds lr to 12 significant digits; every other column is exact.
    return got == want if column != "lr" else abs(got - want) <= 1e-11 * abs(want)


def check_run(c, run_dir, parent=None):
    import yaml

    state = json.load(open(os.path.join(run_dir, "mlflow.json")))
    require(state.get("run_id"), f"{run_dir}/mlflow.json has no run id: {state}")
    require(not state.get("outbox"), f"{run_dir}/mlflow.json still holds calls not sent: {state['outbox'][:3]}")
    run = c.get_run(state["run_id"])
    name = os.path.basename(os.path.normpath(run_dir))
    check(f"{name} status", run.info.status == "FINISHED", f"status {run.info.status}")

    config = flatten(yaml.safe_load(open(os.path.join(run_dir, "config.yaml"))))
    params = run.data.params
    check(f"{name} param keys", set(params) == set(config),
          f"only in MLflow {sorted(set(params) - set(config))}, only in config.yaml {sorted(set(config) - set(params))}")
    for key, want in config.items():
        if key in params:
            check(f"{name} param {key}", same_param(params[key], want), f"MLflow {params[key]!r}, config.yaml {want!r}")

    tags = run.data.tags
    check(f"{name} tag source", tags.get("mlflow.source.name") == "torchfit", str(tags))
    for tag in ["torchfit.version", "torchfit.world_size", "torchfit.device", "torchfit.run_dir"]:
        check(f"{name} tag {tag}", tag in tags, f"tags {sorted(tags)}")
    check(f"{name} run_dir tag", os.path.samefile(tags.get("torchfit.run_dir", "/nonexistent"), run_dir),
          tags.get("torchfit.run_dir"))
    check(f"{name} parent", tags.get("mlflow.parentRunId") == parent, f"{tags.get('mlflow.parentRunId')} != {parent}")

    rows = read_metrics(run_dir)
    columns = [k for k in rows[0] if k not in ("epoch", "seconds")]
    for column in columns:
        history = c.get_metric_history(run.info.run_id, column)
        steps = [m.step for m in history]
        check(f"{name} {column} steps", sorted(steps) == [int(r["epoch"]) for r in rows],
              f"MLflow steps {sorted(steps)}, metrics.csv epochs {[r['epoch'] for r in rows]}")
        by_step = {m.step: m.value for m in history}
        for r in rows:
            step, want = int(r["epoch"]), float(r[column])
            if step in by_step:
                check(f"{name} {column} epoch {step}", same_value(column, by_step[step], want),
                      f"MLflow {by_step[step]!r}, metrics.csv {want!r}")

    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    for key, want in (summary.get("test_metrics") or {}).items():
        got = run.data.metrics.get(f"test_{key}")
        check(f"{name} test_{key}", got == want, f"MLflow {got}, summary.json {want}")

    listed = {a.path for a in c.list_artifacts(run.info.run_id)}
    for artifact in ["model.pt", "weights.safetensors", "config.yaml", "metrics.csv", "loss.png"]:
        if os.path.isfile(os.path.join(run_dir, artifact)):
            check(f"{name} artifact {artifact}", artifact in listed, f"listed {sorted(listed)}")
    with tempfile.TemporaryDirectory() as tmp:
        got = c.download_artifacts(run.info.run_id, "model.pt", tmp)
        same = open(got, "rb").read() == open(os.path.join(run_dir, "model.pt"), "rb").read()
        check(f"{name} model.pt bytes", same, "the uploaded model.pt differs from the run's")
    return run


def check_sweep(c, sweep_dir, trials):
    state = json.load(open(os.path.join(sweep_dir, "mlflow.json")))
    parent = c.get_run(state["run_id"])
    check("parent status", parent.info.status == "FINISHED", parent.info.status)
    params = parent.data.params
    check("parent params", {"method", "metric", "mode", "trials"} <= set(params), str(params))
    check("parent trials param", params.get("trials") == str(trials), str(params))
    metric = params.get("metric")
    check("parent best metric", f"best_{metric}" in parent.data.metrics, str(parent.data.metrics))
    children = c.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    check("children", len(children) == trials, f"{len(children)} child runs, {trials} trials")
    everything = c.search_runs([parent.info.experiment_id])
    check("one parent", len(everything) == trials + 1, f"{len(everything)} runs in the experiment, {trials} trials")
    trial_dirs = sorted(os.listdir(os.path.join(sweep_dir, "trials")))
    ids = set()
    for trial in trial_dirs:
        run = check_run(c, os.path.join(sweep_dir, "trials", trial), parent=parent.info.run_id)
        ids.add(run.info.run_id)
    check("children are the trials", ids == {r.info.run_id for r in children}, "")
    pick = min if params.get("mode") == "min" else max
    bests = [pick(m.value for m in c.get_metric_history(i, metric)) for i in ids]
    got = parent.data.metrics.get(f"best_{metric}")
    check("parent's best is the children's", got == pick(bests), f"parent {got}, children's best {pick(bests)}")


def main():
    args = sys.argv[1:]
    if args == ["install"]:
        print(install())
        return
    if len(args) == 3 and args[0] == "run":
        check_run(client(args[1]), args[2])
        return finish("mlflow run: ")
    if len(args) == 4 and args[0] == "sweep":
        check_sweep(client(args[1]), args[2], int(args[3]))
        return finish("mlflow sweep: ")
    sys.exit(__doc__)


if __name__ == "__main__":
    main()
