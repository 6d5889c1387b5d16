# Two commands matter (see README.md):
#   make demo   - create .venv, install everything, open napari with the sample cine, the dock
#                 widget and the model's result (headless: CLI outputs + a screenshot in demo_output/)
#   make test   - the whole test suite, headless under Xvfb
SHELL := /bin/bash

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
VPY    := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_OUT := demo_output
XVFB_RUN := xvfb-run -a -s "-screen 0 1280x1024x24"
PYTEST_ARGS ?=
# Debian/Ubuntu packages the headless tests and the demo screenshot need (.ci/run installs them).
SYSTEM_PKGS := xvfb xauth libgl1-mesa-dri libegl1 libgl1 libxkbcommon-x11-0 libxcb-icccm4 \
	libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 \
	libxcb-xinput0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libdbus-1-3 libfontconfig1 \
	libglib2.0-0

.PHONY: venv demo test clean distclean

venv: $(STAMP)

$(VPY):
	@test -n "$(PYTHON)" || { echo "error: no python3.11 or python3 on PATH" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Re-installs only when the dependency files change; a no-op otherwise.
$(STAMP): $(VPY) setup.cfg requirements-dev.txt $(wildcard pyproject.toml setup.py)
	$(VPY) -m pip install --progress-bar off --upgrade pip
	$(VPY) -m pip install --progress-bar off -r requirements-dev.txt
	$(VPY) -m pip install --progress-bar off -e . --no-deps
	@touch $@

demo: venv
	@if [ -n "$$DISPLAY" ]; then \
		$(VPY) -m napari_cardiac_motion.demo; \
	else \
		echo "No display (\$$DISPLAY unset): running the demo headless into $(DEMO_OUT)/"; \
		sample="$$($(VPY) -c 'from napari_cardiac_motion._sample_data import sample_cine_path; print(sample_cine_path())')" || exit 1; \
		$(VENV)/bin/napari-cardiac-motion predict "$$sample" --out $(DEMO_OUT)/ || exit 1; \
		if ! command -v xvfb-run >/dev/null 2>&1; then \
			echo "xvfb-run not found; for the viewer screenshot install: apt-get install $(SYSTEM_PKGS)" >&2; \
			exit 1; \
		fi; \
		$(XVFB_RUN) $(VPY) -m napari_cardiac_motion.demo --screenshot $(DEMO_OUT)/screenshot.png || exit 1; \
		echo "Wrote $(DEMO_OUT)/labels.nii.gz, $(DEMO_OUT)/flow.nii.gz, $(DEMO_OUT)/result.json, $(DEMO_OUT)/screenshot.png"; \
	fi

test: venv
	@command -v xvfb-run >/dev/null 2>&1 || { \
		echo "xvfb-run not found. Install the system packages the GUI tests need:" >&2; \
		echo "  apt-get install $(SYSTEM_PKGS)" >&2; \
		echo "(or run 'bash .ci/run' as root, which installs them)" >&2; \
		exit 1; }
	$(XVFB_RUN) $(VPY) -m pytest -q tests $(PYTEST_ARGS)

clean:
	rm -rf $(DEMO_OUT) build dist .pytest_cache .tox *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

# Also removes the virtual environment.
distclean: clean
	rm -rf $(VENV)
