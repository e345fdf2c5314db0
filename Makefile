# Targets named for what a person wants. `make test` is what CI runs (via .ci/run).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint typecheck unit openapi policies synth bench bench-smoke bench-throughput bench-gpu bench-gpu-pack chaos clean

export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20

venv: $(STAMP)

$(STAMP): requirements.txt lambdas/requirements.txt gpu_container/requirements.txt gpu_container/requirements-openai-whisper.txt gpu_container/requirements-nodeps.txt bench/requirements.txt requirements-checkov.txt pyproject.toml package-lock.json
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -r gpu_container/requirements-nodeps.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	npm ci --no-audit --no-fund --silent
	# checkov pins a boto3 of its own: it gets an environment of its own (requirements-checkov.txt)
	test -x .venv-checkov/bin/python || $(PY) -m venv .venv-checkov
	.venv-checkov/bin/python -m pip install -q -r requirements-checkov.txt
	touch $(STAMP)

# Worker images with podman: make image, image-gpu, image-smoke, lint-docker (see image.mk).
include image.mk
image-smoke lint-docker: venv

# The whole pipeline on this machine: local stack, a sample transcribed end to end, stopped.
demo: venv
	$(BIN)/batchscribe demo

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/hadolint gpu_container/Dockerfile

typecheck: venv
	$(BIN)/mypy .

# The suite on up to 4 processes (2 on CI's 2 cores), each test module whole in one of them.
test: lint typecheck
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist loadfile

unit: venv
	$(BIN)/python -m pytest -q tests/unit

openapi: venv
	$(BIN)/python -m scripts.gen_openapi

# The IAM policies the CDK stack synthesizes per component, for the local stack to enforce
# (batchscribe_cli/local/policies.json; a test fails while it is stale).
policies: venv
	$(BIN)/python -m scripts.gen_policies

synth: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" npx cdk synth -q
	$(BIN)/cfn-lint --non-zero-exit-code error cdk.out/*.template.json

# Everything measured, bounded (< 15 min on 2 cores; engines on CUDA where present): engines,
# pipeline overhead on the local stack, cross-job batching, the cost model and the scale
# simulation; then bench/RESULTS.md. Each writes bench/results/*.json with its machine and date.
bench: venv
	$(BIN)/python -m bench.bench_engines --budget-minutes 5
	$(BIN)/python -m bench.bench_pipeline --api-rounds 2 --budget-minutes 4
	$(BIN)/python -m bench.bench_throughput --jobs 16 --repeats 1
	$(BIN)/python -m bench.cost
	$(BIN)/python -m bench.simulate
	$(BIN)/python -m bench.report

# Each benchmark script end to end on tiny sizes (tests/bench, marker bench_smoke: 5-8 min on 2
# cores). `make test` leaves them out; CI runs them once, after it (.ci/run).
bench-smoke: venv
	$(BIN)/python -m pytest -q -m bench_smoke tests/bench

# GPU throughput of the worker's runners and batched path (bench/bench_gpu.py) on a lent GPU
# machine, in one device call: bench-gpu-pack packs the Python 3.12 packages that machine lacks
# (build/gpu/site.tar.xz, ~52 MiB, ~6 min); bench-gpu prints the call (command, carry, timeout).
bench-gpu-pack: venv
	$(BIN)/python -m scripts.pack_gpu_site

bench-gpu: venv
	@$(BIN)/python -m scripts.pack_gpu_site --print-run

# One worker on the local stack, one job at a time against cross-job batching, same 16 jobs.
bench-throughput: venv
	$(BIN)/python -m bench.bench_throughput --jobs 16 --repeats 2

# Faults injected at random while 50 jobs go through the local stack; one table, exit 1 if any
# job is stuck, lost, committed twice or inconsistent (seeded: SEED=2 make chaos).
SEED ?= 1
chaos: venv
	$(BIN)/python -m harness.chaos --jobs 50 --minutes 10 --seed $(SEED) --json bench/results/chaos.json

clean:
	rm -rf $(VENV) node_modules build cdk.out .pytest_cache .mypy_cache .ruff_cache .hypothesis

# The local stack for two hours under a trickle of jobs, memory sampled (bench/results/soak/).
.PHONY: soak
soak: venv
	$(BIN)/python -m scripts.soak --minutes 120 --every 30 --out bench/results/soak
