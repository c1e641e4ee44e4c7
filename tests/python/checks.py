"""What the Python scripts the Rust tests run share: counting checks, and the closing line the
Rust side looks for ("N passed, 0 failed"). `require` stops the script at the first failure
(for checks that later ones build on); `check` records a failure, names it at the end, and goes
on (for independent checks)."""
import sys

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
