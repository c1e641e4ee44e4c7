"""Reads a CSV file with pandas or polars, the way a user would (defaults), and prints one
JSON line: the seconds `read_csv` took, the peak RSS before it (after the imports), rows and
columns. bench/run.py runs it as a child process to measure its peak RSS.

    python3 bench/reference_load.py pandas FILE
"""
import json
import resource
import sys
import time


def main():
    library, path = sys.argv[1], sys.argv[2]
    if library == "pandas":
        import pandas as pd
        read = pd.read_csv
    elif library == "polars":
        import polars as pl
        read = pl.read_csv
    else:
        sys.exit(f"reference_load.py: unknown library {library!r} (pandas or polars)")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    start = time.perf_counter()
    frame = read(path)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "rss_before": before, "rows": frame.shape[0], "columns": frame.shape[1]}))


if __name__ == "__main__":
    main()
