"""What the Python scripts the Rust tests run share: counting checks, and the closing line the
Rust side looks for ("N passed, 0 failed"). `require` stops the script at the first failure
(for checks that later ones build on); `check` records a failure, names it at the end, and goes
on (for independent checks). `pip_install_once` installs a script's reference packages.
"""
import os
import shutil
import subprocess
import sys
import tempfile

# The exit status that tells the Rust side to skip, saying why (a package pip cannot install).
SKIP = 77

passed = 0
failed = []


def require(condition, message):
    global passed
    if not condition:
        raise AssertionError(message)
    passed += 1


def check(name, condition, detail=""):
    global passed
    if condition:
        passed += 1
    else:
        failed.append(f"{name}: {detail}")


def finish(prefix=""):
    """Names each failure, prints 'N passed, M failed' and exits 1 if any check failed."""
    for failure in failed:
        print("FAILED", failure)
    print(f"{prefix}{passed} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)


def pip_install_once(target, marker, packages, what, no_deps=True):
    """`target`, a folder holding `packages` as pip installs them (`--target`), on first use:
    `target/marker` (a module or package the install brings) says it is there. Tests run at
    once share the folder, which appears whole or not at all. When pip cannot install them,
    prints why (naming `what`) and exits SKIP."""
    if os.path.exists(os.path.join(target, marker)):
        return target
    os.makedirs(os.path.dirname(target), exist_ok=True)
    partial = tempfile.mkdtemp(prefix=os.path.basename(target) + ".", dir=os.path.dirname(target))
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--target", partial]
    got = subprocess.run(command + (["--no-deps"] if no_deps else []) + list(packages), capture_output=True,
                         text=True)
    if got.returncode != 0 or not os.path.exists(os.path.join(partial, marker)):
        shutil.rmtree(partial, ignore_errors=True)
        why = (got.stderr.strip().splitlines() or ["pip failed"])[-1]
        print(f"skipping: cannot install {what}: {why}")
        sys.exit(SKIP)
    try:
        os.rename(partial, target)
    except OSError:  # another test installed it meanwhile
        shutil.rmtree(partial, ignore_errors=True)
    return target
