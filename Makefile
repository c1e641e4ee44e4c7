# Every target goes through scripts/libtorch.sh, which installs libtorch 2.13.0 once (from the
# torch wheel on PyPI, cached in ~/.cache/torchfit) unless LIBTORCH is set, then runs cargo.
WITH_TORCH := scripts/libtorch.sh
BIN := target/release/torchfit

.PHONY: build run test bench bench-keras bench-csv libtorch fmt clean

build:
	$(WITH_TORCH) cargo build --release

## Train the embedded default (the Keras example) and print where the run went.
run: build
	$(BIN) train

## The module structure (no import cycle, no file in src/ over 600 lines), then unit tests
## and end-to-end tests of the real binary, in release mode (shares `build`'s compiled
## dependencies, so libtorch's C++ glue is compiled once).
test:
	python3 scripts/check-structure.py
	$(WITH_TORCH) cargo test --release --no-fail-fast

## Speed and memory side by side with the references; writes docs/benchmarks.md.
bench: build
	$(WITH_TORCH) python3 bench/run.py --binary $(BIN) --output docs/benchmarks.md

## Optional: tensorflow-cpu for bench's Keras reference, cached beside libtorch.
bench-keras:
	python3 -m pip install --quiet --root-user-action=ignore --target $(HOME)/.cache/torchfit/keras tensorflow-cpu==2.21.0

## Optional: pandas and polars for bench's CSV loading references, cached beside libtorch.
bench-csv:
	python3 -m pip install --quiet --root-user-action=ignore --target $(HOME)/.cache/torchfit/bench pandas polars

libtorch:
	$(WITH_TORCH)

fmt:
	cargo fmt

clean:
	cargo clean
