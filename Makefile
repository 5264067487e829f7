# Two commands a newcomer needs: `make demo` and `make test`. Each builds its own .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint chaos chaos-net bench fmt clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

## demo: run the gateway against the built-in simulator (and the Pub/Sub emulator if gcloud has it) for 30 s
demo: $(STAMP)
	$(BIN)/python -m bessai.cli.demo

## test: lint, type-check actors and bessai (mypy, strict: [tool.mypy] in pyproject.toml), then the
## whole test suite (unit, integration against real peers, chaos, end-to-end; includes the OTP
## conformance suite and the isolated install)
test: $(STAMP)
	bash .ci/system-deps
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

fmt: $(STAMP)
	$(BIN)/ruff check --fix .

## chaos: the chaos scenarios with figures, written to bench/CHAOS.md
chaos: $(STAMP)
	$(BIN)/python -m bench.chaos

## chaos-net: real processes in network namespaces, links cut in the kernel for 5 and 30 minutes
## (root; three lanes side by side, then CPU starvation alone: about 45 minutes; rows merged
## into bench/CHAOS.md). CHAOS_NET_ARGS="--scale 0.1" to try it out.
chaos-net: $(STAMP)
	$(BIN)/python -m bench.chaos_net --lanes 3 $(CHAOS_NET_ARGS)

## bench: every benchmark, results written to bench/RESULTS.md
bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache build *.egg-info actors/build actors/*.egg-info
