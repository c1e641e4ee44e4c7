"""The serving section of docs/benchmarks.md: `torchfit serve` next to FastAPI + uvicorn
(bench/reference_serve.py) on the Keras example's model.pt, single-row POST /predict
requests from `wrk` (8 connections, 2 threads, a few seconds), each server alone on the
machine in turn. Both run without access logs; then torchfit serve again with its access log
on (the default; standard error to a file), as a share of its `--quiet` throughput (goal: at
least 0.8x). bench/run.py calls `section` for `make bench`; run alone (`make bench-serve`) it
prints the section:

    PYTHONPATH=<torch> python3 bench/serving.py --binary target/release/torchfit [--seconds 5]

Needs wrk (apt-get install wrk) and, for the reference, fastapi + uvicorn in
~/.cache/torchfit/serve-bench (`make bench-serve-deps`); without wrk the section says so in
one line, without fastapi or uvicorn it measures torchfit alone and says so.
"""
import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BODY = '{"instances": [[0.1, -0.2, 0.3, -0.4, 0.5, -0.6, 0.7, -0.8, 0.9, -1.0]]}'


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Unavailable(Exception):
    """A server that did not come up; the section reports it instead of failing."""


def wait_ready(port, proc, limit=60):
    deadline = time.time() + limit
    while time.time() < deadline:
        if proc.poll() is not None:
            raise Unavailable(f"the server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise Unavailable(f"the server did not start within {limit} s")


def wrk(port, seconds, work):
    script = Path(work) / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = '{BODY}'\n"
    )
    out = subprocess.run(
        ["wrk", "-t2", "-c8", f"-d{seconds}s", "--latency", "-s", str(script), f"http://127.0.0.1:{port}/predict"],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)

    def ms(p):
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    return rps, ms(50), ms(99), int(errors.group(1)) if errors else 0


def measure(cmd, port, seconds, work, env, stderr=subprocess.DEVNULL):
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        wait_ready(port, proc)
        wrk(port, 1, work)  # warm-up
        return wrk(port, seconds, work)
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def measure_log_cost(binary, run, seconds, work, env, rounds=3):
    """torchfit serve with its access log on (standard error to a file, as a service
    manager keeps it) and with `--quiet`, in turns, `rounds` times each: the median
    requests/s of each, and how many log lines the logged runs wrote (one per request)."""
    quiet, logged, lines, requests = [], [], 0, 0
    log = Path(work) / "access.log"
    for _ in range(rounds):
        for flags, out in ((["--quiet"], quiet), ([], logged)):
            port = free_port()
            cmd = [binary, "serve", str(run), "--port", str(port)] + flags
            with open(log, "w") as stderr:
                out.append(measure(cmd, port, seconds, work, env, stderr)[0])
            if not flags:
                lines += sum(1 for line in open(log) if '"path":"/predict"' in line)
    return statistics.median(quiet), statistics.median(logged), lines


def section(binary, seconds=5, deps=str(Path.home() / ".cache/torchfit/serve-bench")):
    """The section's Markdown lines. Never fails for want of a tool: a missing wrk, fastapi
    or uvicorn, or a server that does not start, is a line of the section."""
    heading = ["## Serving", ""]
    if shutil.which("wrk") is None:
        return heading + ["Not measured: `wrk` is not installed (`apt-get install wrk`; then `make bench-serve`)."]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), deps]))
    probe = subprocess.run([sys.executable, "-c", "import fastapi, uvicorn"], capture_output=True, env=env)
    have_reference = probe.returncode == 0
    with tempfile.TemporaryDirectory(prefix="torchfit-bench-serve-") as work:
        run = Path(work) / "keras"
        subprocess.run([binary, "train", "--device", "cpu", "--quiet", "--out", str(run)], check=True,
                       stdout=subprocess.DEVNULL)
        servers = {"torchfit serve": lambda port: [binary, "serve", str(run), "--port", str(port), "--quiet"]}
        if have_reference:
            servers["FastAPI + uvicorn"] = lambda port: [
                sys.executable, str(HERE / "reference_serve.py"), str(run / "model.pt"), str(port)]
        results = {}
        for name, cmd in servers.items():
            print(f"serving: {name}", file=sys.stderr)
            port = free_port()
            try:
                results[name] = measure(cmd(port), port, seconds, work, env)
            except (Unavailable, subprocess.CalledProcessError, AttributeError) as e:
                results[name] = str(e).splitlines()[0] if str(e) else type(e).__name__
        print("serving: torchfit serve with its access log and with --quiet, in turns", file=sys.stderr)
        try:
            logged = measure_log_cost(binary, run, seconds, work, env)
        except (Unavailable, subprocess.CalledProcessError, AttributeError) as e:
            logged = str(e).splitlines()[0] if str(e) else type(e).__name__
    lines = heading + [
        f"Single-row `POST /predict` requests to the Keras example's model.pt, `wrk -t2 -c8 -d{seconds}s`",
        "(8 connections), each server alone in turn (bench/serving.py). The reference is FastAPI + uvicorn",
        "(one worker, `torch.set_num_threads(1)`, `torch.jit.load`; bench/reference_serve.py). No access logs.",
        "",
        "| server | requests/s | p50 | p99 | non-2xx |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, result in results.items():
        if isinstance(result, str):
            lines.append(f"| {name} | failed: {result} | - | - | - |")
        else:
            rps, p50, p99, errors = result
            lines.append(f"| {name} | {rps:,.0f} | {p50:.2f} ms | {p99:.2f} ms | {errors} |")
    lines.append("")
    ours, ref = results.get("torchfit serve"), results.get("FastAPI + uvicorn")
    lines += log_lines(logged, seconds)
    if not have_reference:
        lines.append("FastAPI + uvicorn not installed (`make bench-serve-deps`): torchfit serve measured alone.")
    elif isinstance(ours, tuple) and isinstance(ref, tuple):
        rps_x, p99_x = ours[0] / ref[0], ours[2] / ref[2]
        lines.append(f"torchfit serve: **{rps_x:.1f}x** the requests/s (goal >= 10x: {'met' if rps_x >= 10 else 'not met'}), "
                     f"**{p99_x:.3f}x** the p99 (goal <= 0.1x: {'met' if p99_x <= 0.1 else 'not met'}) of the reference.")
    return lines


def log_lines(logged, seconds):
    """The access log's cost: torchfit serve's requests/s with its log on (the default)
    against `--quiet`."""
    if isinstance(logged, str):
        return [f"Access log on: failed: {logged}", ""]
    quiet, rps, lines = logged
    ratio = rps / quiet
    return [
        f"The access log's cost: with it on (the default; standard error to a file) torchfit serve answers "
        f"{rps:,.0f} requests/s against {quiet:,.0f} with `--quiet` (medians of 3 turns each, `wrk -t2 -c8 -d{seconds}s`; "
        f"{lines:,} log lines written): **{ratio:.2f}x** (goal >= 0.8x: {'met' if ratio >= 0.8 else 'not met'}).",
        "",
    ]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--binary", default="target/release/torchfit")
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--deps", default=str(Path.home() / ".cache/torchfit/serve-bench"))
    args = p.parse_args()
    print("\n".join(section(str(Path(args.binary).resolve()), args.seconds, args.deps)))


if __name__ == "__main__":
    main()
