# Two commands do all set-up on a fresh Linux machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Without an NVIDIA GPU, pin torch 2.13.0 first: on this project's CI machines that is a CPU build
# kept on disk; elsewhere PyPI's default Linux wheel (CUDA-enabled, it runs on CPUs too). With a GPU,
# requirements.txt's range picks the platform's CUDA build.
TORCH  ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "" || echo "torch==2.13.0")
export GRADIO_ANALYTICS_ENABLED := False
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: run test install install-test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(if $(TORCH),$(BIN)/python -m pip install "$(TORCH)")
	$(BIN)/python -m pip install -r requirements.txt
	touch $@

$(VENV)/.test-installed: requirements-test.txt $(VENV)/.installed
	$(BIN)/python -m pip install -r requirements-test.txt
	command -v chromium >/dev/null 2>&1 || ($(SUDO) apt-get update && $(SUDO) apt-get install -y chromium)
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.test-installed

run: $(VENV)/.installed
	$(BIN)/python app.py $(ARGS)

test: $(VENV)/.test-installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.test-installed
	$(BIN)/python -m ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .cache
