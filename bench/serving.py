"""The serving section of docs/benchmarks.md: `torchfit serve` next to FastAPI + uvicorn
(bench/reference_serve.py) on the Keras example's model.pt, single-row POST /predict
requests from `wrk` (8 connections, 2 threads, a few seconds), each server alone on the
machine in turn. Both run without access logs.

    PYTHONPATH=<torch> python3 bench/serving.py --binary target/release/torchfit [--seconds 5]

Needs wrk (apt-get install wrk) and fastapi + uvicorn in ~/.cache/torchfit/serve-bench
(`make bench-serve-deps`). Prints a Markdown section.
"""
import argparse
import os
import re
import socket
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


def wait_ready(port, proc, limit=60):
    deadline = time.time() + limit
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"bench: the server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit("bench: the server did not start")


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


def measure(cmd, port, seconds, work, env):
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(port, proc)
        wrk(port, 1, work)  # warm-up
        return wrk(port, seconds, work)
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--binary", default="target/release/torchfit")
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--deps", default=str(Path.home() / ".cache/torchfit/serve-bench"))
    args = p.parse_args()
    work = tempfile.mkdtemp()
    run = Path(work) / "keras"
    subprocess.run([args.binary, "train", "--device", "cpu", "--quiet", "--out", str(run)], check=True,
                   stdout=subprocess.DEVNULL)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), args.deps]))
    results = {}
    port = free_port()
    results["torchfit serve"] = measure(
        [args.binary, "serve", str(run), "--port", str(port), "--quiet"], port, args.seconds, work, env)
    port = free_port()
    results["FastAPI + uvicorn"] = measure(
        [sys.executable, str(HERE / "reference_serve.py"), str(run / "model.pt"), str(port)], port, args.seconds, work, env)
    ours, ref = results["torchfit serve"], results["FastAPI + uvicorn"]
    lines = [
        "## Serving",
        "",
        f"Single-row `POST /predict` requests to the Keras example's model.pt, `wrk -t2 -c8 -d{args.seconds}s`",
        "(8 connections), each server alone in turn (bench/serving.py). The reference is FastAPI + uvicorn",
        "(one worker, `torch.set_num_threads(1)`, `torch.jit.load`; bench/reference_serve.py). No access logs.",
        "",
        "| server | requests/s | p50 | p99 | non-2xx |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, (rps, p50, p99, errors) in results.items():
        lines.append(f"| {name} | {rps:,.0f} | {p50:.2f} ms | {p99:.2f} ms | {errors} |")
    lines += ["", f"torchfit serve: {ours[0] / ref[0]:.1f}x the requests/s, {ours[2] / ref[2]:.3f}x the p99 of the reference."]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
