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
