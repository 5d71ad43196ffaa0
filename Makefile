# One command each for the demo, the tests and regenerating the protobuf modules.
# Every target creates (or reuses) the local virtual environment .venv and installs what it needs.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Re-install whenever pyproject.toml changes.
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
GRPC_TOOLS := grpcio-tools==1.85.1
TEST_ARGS ?=

.PHONY: demo test protos clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

demo: $(STAMP)
	@bash examples/demo.sh $(PY)

test: $(STAMP)
	$(PY) -m pytest $(TEST_ARGS)

# Regenerate src/ckpt/format/protos/*_pb2.py from the .proto files beside them.
protos: | $(PY)
	$(PIP) install --quiet $(GRPC_TOOLS)
	cd src && ../$(PY) -m grpc_tools.protoc -I . --python_out=. ckpt/format/protos/*.proto

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .hypothesis

# Reliability runs on demand (`make test` runs short versions of both): `faults` kills and fails every file-system
# step of more save scenarios, plus double faults; `fuzz` runs the property-based fuzzers with many more examples,
# then the coverage-guided atheris fuzzer (findings land in build/ as fuzz-crash-*, fuzz-timeout-*, fuzz-oom-*).
FUZZ_EXAMPLES ?= 5000
FUZZ_SECONDS ?= 300

.PHONY: faults fuzz

faults: $(STAMP)
	CKPT_EXHAUSTIVE=1 $(PY) -m pytest tests/test_faults.py $(TEST_ARGS)

fuzz: $(STAMP)
	CKPT_EXHAUSTIVE=1 CKPT_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest tests/test_fuzz.py $(TEST_ARGS)
	$(PIP) install --quiet atheris
	$(PY) fuzz/fuzz_reader.py --make-corpus build/fuzz-corpus
	$(PY) fuzz/fuzz_reader.py build/fuzz-corpus -artifact_prefix=build/fuzz- -max_total_time=$(FUZZ_SECONDS) \
		-timeout=10 -rss_limit_mb=1024

# Benchmark against raw file I/O and the peers (benchmarks/README.md): make bench SIZE=tiny|small|medium|full
# (default small, a few minutes; full is GPT-2 small with Adam slots + a 3 GiB tensor). Results in benchmarks/results/.
.PHONY: bench

bench: $(STAMP)
	$(PIP) install --quiet -e '.[bench]'
	$(PY) benchmarks/bench.py --size $(or $(SIZE),small)
