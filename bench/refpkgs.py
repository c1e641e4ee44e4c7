"""The reference packages of bench's TabM and FT-Transformer sections (pure Python, they need
only torch), installed on first use with `pip install --no-deps --target` into DIR, outside
the repository: the folder appears whole or not at all, so runs at once can share it."""
import os
import shutil
import subprocess
import sys
import tempfile

DIR = os.path.expanduser("~/.cache/torchfit/bench-tabular")
PACKAGES = ["tabm==0.0.3", "rtdl_num_embeddings==0.0.12", "rtdl_revisiting_models==0.0.2"]
SKIP = 77  # the exit status that tells bench/run.py the reference could not be had


def ensure():
    """Puts DIR on sys.path, installing PACKAGES there first if needed; exits SKIP (with a
    line saying why) when pip cannot install them."""
    if not os.path.isfile(os.path.join(DIR, "tabm.py")):
        os.makedirs(os.path.dirname(DIR), exist_ok=True)
        partial = tempfile.mkdtemp(prefix="bench-tabular.", dir=os.path.dirname(DIR))
        got = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", partial]
                             + PACKAGES, capture_output=True, text=True)
        if got.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            why = (got.stderr.strip().splitlines() or ["pip failed"])[-1]
            print(f"cannot install {' '.join(PACKAGES)}: {why}", file=sys.stderr)
            sys.exit(SKIP)
        try:
            os.rename(partial, DIR)
        except OSError:  # another run installed it meanwhile
            shutil.rmtree(partial, ignore_errors=True)
    sys.path.insert(0, DIR)
