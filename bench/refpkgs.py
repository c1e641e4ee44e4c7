"""The reference packages of bench's TabM and FT-Transformer sections (pure Python, they need
only torch), and of its tokenising section (`tokenizers`, a wheel with no Python dependency
for Tokenizer.from_file), installed on first use with `pip install --no-deps --target` into a
folder of ~/.cache/torchfit, outside the repository: the folder appears whole or not at all, so
runs at once can share it."""
import os
import shutil
import subprocess
import sys
import tempfile

DIR = os.path.expanduser("~/.cache/torchfit/bench-tabular")
PACKAGES = ["tabm==0.0.3", "rtdl_num_embeddings==0.0.12", "rtdl_revisiting_models==0.0.2"]
TOKENIZERS_DIR = os.path.expanduser("~/.cache/torchfit/tokenizers")
TOKENIZERS = "tokenizers==0.23.3"  # the version of the Rust crate torchfit builds on
SKIP = 77  # the exit status that tells bench/run.py the reference could not be had


def ensure():
    """Puts DIR on sys.path, installing PACKAGES there first if needed; exits SKIP (with a
    line saying why) when pip cannot install them."""
    install(DIR, PACKAGES, "tabm.py")


def tokenizers():
    """The `tokenizers` package from TOKENIZERS_DIR, installed there first if needed (exits
    SKIP when pip cannot)."""
    install(TOKENIZERS_DIR, [TOKENIZERS], "tokenizers")
    import tokenizers as package
    return package


def install(folder, packages, marker):
    """Puts folder on sys.path, pip-installing packages into it first unless it has marker."""
    if not os.path.exists(os.path.join(folder, marker)):
        os.makedirs(os.path.dirname(folder), exist_ok=True)
        partial = tempfile.mkdtemp(prefix=os.path.basename(folder) + ".", dir=os.path.dirname(folder))
        got = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", partial]
                             + packages, capture_output=True, text=True)
        if got.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            why = (got.stderr.strip().splitlines() or ["pip failed"])[-1]
            print(f"cannot install {' '.join(packages)}: {why}", file=sys.stderr)
            sys.exit(SKIP)
        try:
            os.rename(partial, folder)
        except OSError:  # another run installed it meanwhile
            shutil.rmtree(partial, ignore_errors=True)
    sys.path.insert(0, folder)
