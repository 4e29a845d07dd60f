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

# System packages the tests need (SLURM for the queue tests, Chromium for browser tests):
# apt-installed only when missing (CI runs as root with Debian's repositories reachable).
SYSTEM_TEST_COMMANDS := slurmctld slurmd munged chromium
test-deps:
	@missing=""; for c in $(SYSTEM_TEST_COMMANDS); do command -v $$c >/dev/null || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing system packages for:$$missing"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo -n"; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq slurm-wlm munge chromium >/dev/null \
			|| echo "WARNING: could not apt-get install slurm-wlm munge chromium; the slurm/browser tests will fail"; \
	fi

test: $(STAMP) test-deps
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -q

# The demo: simulate a dataset, Extract subtomos at bin 3, Reconstruct particle (C6), run as
# RELION would from the project directory demo_output/ (random half sets assigned as relion_refine
# does, since the simulated picks have none).
DEMO_DIR := demo_output
DEMO_RUN := cd $(DEMO_DIR) && PATH="$(CURDIR)/$(VENV)/bin:$$PATH"
demo: $(STAMP)
	rm -rf $(DEMO_DIR)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/tomodash simulate $(DEMO_DIR) --preset demo
	$(DEMO_RUN) tomodash extract --i optimisation_set.star --o Extract/job002/ --b 64 --crop 48 --bin 3 \
		--float16 --stack2d --j 2
	$(DEMO_RUN) $(CURDIR)/$(PY) -c "from processing.io import ParticleSet; p = ParticleSet.read('Extract/job002/particles.star'); p.assign_random_subsets(1); p.write('Extract/job002/particles_halves.star')"
	$(DEMO_RUN) tomodash reconstruct --p Extract/job002/particles_halves.star --t tomograms.star \
		--o Reconstruct/job003/ --b 64 --crop 48 --bin 3 --sym C6 --j 2 > reconstruct.log 2>&1 \
		|| (cat $(DEMO_DIR)/reconstruct.log; false)
	@cat $(DEMO_DIR)/reconstruct.log
	@echo
	@echo "Demo done. Project directory: $(DEMO_DIR)/"
	@echo "  particles:  $(DEMO_DIR)/Extract/job002/particles.star (2D stacks in Extract/job002/Subtomograms/)"
	@echo "  maps:       $(DEMO_DIR)/Reconstruct/job003/half1.mrc, half2.mrc, merged.mrc"
	@echo "  FSC:        $(DEMO_DIR)/Reconstruct/job003/fsc.star"
	@echo "  truth:      $(DEMO_DIR)/truth_map.mrc (2.7 A pixels)"
	@grep "Half-map resolution" $(DEMO_DIR)/reconstruct.log
	@echo "  (from the initial, perturbed poses: 3D auto-refine is the next step; Nyquist is 16.2 A)"
	@$(MAKE) --no-print-directory demo-dashboard

# The dashboard on a demo *session* (DEMO_SESSION/): `tomodash demo` runs the demo pipeline
# (Import -> Extract -> Reconstruct -> 3D auto-refine) in the background while the server serves
# the session (Ctrl-C stops the server; the jobs keep their state on disk).
DEMO_SESSION := demo_session
DASH_PORT ?= 5006
DEMO_TOMO := PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/tomodash
demo-dashboard: $(STAMP)
	rm -rf $(DEMO_SESSION) $(DEMO_SESSION).log
	$(DEMO_TOMO) demo $(DEMO_SESSION) > $(DEMO_SESSION).log 2>&1 &
	@for i in $$(seq 1 240); do test -f $(DEMO_SESSION)/default_pipeline.star && break; sleep 0.5; done
	@echo
	@echo "Dashboard of the demo session (pipeline running in the background, log: $(DEMO_SESSION).log):"
	@echo "    http://localhost:$(DASH_PORT)/pipeline?session=$(notdir $(DEMO_SESSION))"
	$(DEMO_TOMO) serve $(DEMO_SESSION) --port $(DASH_PORT)

clean:
	rm -rf $(VENV) demo_output demo_session demo_session.log build *.egg-info
