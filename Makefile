# One command each for the demo, the tests, the old-stack compatibility check and regenerating the protobuf modules.
# demo and test create (or reuse) the local virtual environment .venv: demo installs only the core and the CPU
# PyTorch wheel; test installs everything (TensorFlow, JAX, ...). Separate stamps, so `make demo` after `make test`
# installs nothing and `make test` after `make demo` adds the rest.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Re-install whenever pyproject.toml changes.
SUM := $(shell cksum pyproject.toml | cut -d' ' -f1)
DEMO_STAMP := $(VENV)/.demo-$(SUM)
TEST_STAMP := $(VENV)/.test-$(SUM)
TEST_ARGS ?=

.PHONY: demo test compat protos clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Everything the demo needs is in the test install too.
$(DEMO_STAMP): pyproject.toml | $(PY)
	@if [ ! -f $(TEST_STAMP) ]; then echo "installing ckpt + torch (CPU) into $(VENV)"; \
	  $(PIP) install --quiet --disable-pip-version-check --no-compile -e '.[demo]'; fi
	rm -f $(VENV)/.demo-*
	touch $@

$(TEST_STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[test]'
	rm -f $(VENV)/.test-* $(VENV)/.installed-*
	touch $@

demo: $(DEMO_STAMP)
	@bash examples/demo.sh $(PY)

test: $(TEST_STAMP)
	$(PY) -m pytest $(TEST_ARGS)

# ckpt next to an old stack in its own venv: TensorFlow 2.15 (protobuf 4.x, ml_dtypes 0.3) and NumPy 1.x. ckpt goes
# in with --no-deps so nothing of that stack is upgraded; tests/compat proves files move both ways bit for bit.
COMPAT_VENV ?= .venv-compat
COMPAT_PY := $(COMPAT_VENV)/bin/python
COMPAT_STACK := tensorflow-cpu==2.15.1 'numpy<2' crc32c pytest
COMPAT_STAMP := $(COMPAT_VENV)/.installed-$(SUM)

$(COMPAT_STAMP): pyproject.toml
	test -x $(COMPAT_PY) || $(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_PY) -m pip install --quiet --disable-pip-version-check $(COMPAT_STACK)
	$(COMPAT_PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	$(COMPAT_PY) -m pip check
	rm -f $(COMPAT_VENV)/.installed-*
	touch $@

compat: $(COMPAT_STAMP)
	$(COMPAT_PY) -m pytest -p no:cacheprovider -o addopts="-ra --strict-markers" tests/compat $(TEST_ARGS)

# Regenerate src/ckpt/tf/protos/*_pb2.py from the .proto files beside them. protoc 21.x (grpcio-tools 1.51)
# writes modules without a runtime version check, which every protobuf runtime from 4.21.6 to 7.x loads; newer
# protoc releases pin the runtime to their own major version. Its own venv keeps its protobuf out of .venv.
PROTOC_VENV ?= .venv-protoc
GRPC_TOOLS := grpcio-tools==1.51.3

protos:
	test -x $(PROTOC_VENV)/bin/python || $(PYTHON) -m venv $(PROTOC_VENV)
	$(PROTOC_VENV)/bin/python -m pip install --quiet --disable-pip-version-check $(GRPC_TOOLS)
	cd src && ../$(PROTOC_VENV)/bin/python -m grpc_tools.protoc -I . --python_out=. ckpt/tf/protos/*.proto

clean:
	rm -rf $(VENV) $(COMPAT_VENV) $(PROTOC_VENV) build dist src/*.egg-info .pytest_cache .hypothesis

# Reliability runs on demand (`make test` runs short versions of both): `faults` kills and fails every file-system
# step of more save scenarios, plus double faults; `fuzz` runs the property-based fuzzers with many more examples,
# then the coverage-guided atheris fuzzer (findings land in build/ as fuzz-crash-*, fuzz-timeout-*, fuzz-oom-*).
FUZZ_EXAMPLES ?= 5000
FUZZ_SECONDS ?= 300

.PHONY: faults fuzz

faults: $(TEST_STAMP)
	CKPT_EXHAUSTIVE=1 $(PY) -m pytest tests/test_faults.py $(TEST_ARGS)

fuzz: $(TEST_STAMP)
	CKPT_EXHAUSTIVE=1 CKPT_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest tests/test_fuzz.py $(TEST_ARGS)
	$(PIP) install --quiet atheris
	$(PY) fuzz/fuzz_reader.py --make-corpus build/fuzz-corpus
	$(PY) fuzz/fuzz_reader.py build/fuzz-corpus -artifact_prefix=build/fuzz- -max_total_time=$(FUZZ_SECONDS) \
		-timeout=10 -rss_limit_mb=1024

# Benchmark against raw file I/O and the peers (benchmarks/README.md): make bench SIZE=tiny|small|medium|full
# (default small, a few minutes; full is GPT-2 small with Adam slots + a 3 GiB tensor). Results in benchmarks/results/.
.PHONY: bench

bench: $(TEST_STAMP)
	$(PIP) install --quiet -e '.[bench]'
	$(PY) benchmarks/bench.py --size $(or $(SIZE),small)
