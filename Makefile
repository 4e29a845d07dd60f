# `make test` and `make demo` work on a fresh machine with only Python 3.11+:
# each creates or refreshes .venv from pyproject.toml, then runs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup test test-deps demo demo-dashboard clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

# System packages the tests need (SLURM for the queue tests, Chromium for browser tests, g++
# for the GPU rehearsal's host-compiled CUDA kernel):
# apt-installed only when missing (CI runs as root with Debian's repositories reachable).
SYSTEM_TEST_COMMANDS := slurmctld slurmd munged chromium g++
test-deps:
	@missing=""; for c in $(SYSTEM_TEST_COMMANDS); do command -v $$c >/dev/null || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing system packages for:$$missing"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo -n"; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq slurm-wlm munge chromium g++ >/dev/null \
			|| echo "WARNING: could not apt-get install slurm-wlm munge chromium g++; the slurm/browser/GPU-rehearsal tests will fail"; \
	fi

test: $(STAMP) test-deps
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -q

# The demo: a fresh demo session (simulated dataset imported as job 1), then in the background
# Extract subtomos (bin 3) -> Reconstruct particle -> 3D auto-refine (mpiexec -n 3) -> re-extract
# at bin 2 with the refined poses -> Reconstruct particle -> 3D auto-refine at bin 2 -> remove
# duplicates -> mask -> post-processing, printing resolutions and map paths as each job ends
# (also in demo_session.log), while the dashboard serves the session.
demo: demo-dashboard

# The dashboard on a demo *session* (DEMO_SESSION/): `tomodash demo` runs the demo pipeline
# (Import -> Extract -> Reconstruct -> 3D auto-refine -> ... -> Post-processing) in the background while the server serves
# the session (Ctrl-C stops the server; the jobs keep their state on disk).
DEMO_SESSION := demo_session
DASH_PORT ?= 5006
DEMO_TOMO := PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/tomodash
demo-dashboard: $(STAMP)
	rm -rf $(DEMO_SESSION) $(DEMO_SESSION).log
	( $(DEMO_TOMO) demo $(DEMO_SESSION) 2>&1 | tee $(DEMO_SESSION).log ) &
	@for i in $$(seq 1 240); do test -f $(DEMO_SESSION)/default_pipeline.star && break; sleep 0.5; done
	@echo
	@echo "Dashboard of the demo session (pipeline running in the background, log: $(DEMO_SESSION).log):"
	@echo "    http://localhost:$(DASH_PORT)/pipeline?session=$(notdir $(DEMO_SESSION))"
	$(DEMO_TOMO) serve $(DEMO_SESSION) --port $(DASH_PORT)

clean:
	rm -rf $(VENV) demo_output demo_session demo_session.log build *.egg-info
