# neopain — the two commands of the README: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SNAKEMAKE := $(VENV)/bin/snakemake
CORES ?= all

.PHONY: venv demo demo-data mesh-weights report test test-fast test-workflow test-cluster \
	bench-plan bench-study bench-actions lint clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements.lock requirements-nodeps.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c requirements.lock -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# The mediapipe tracker backend's separate interpreter (mediapipe 0.10.21 needs numpy<2).
VENV_MP ?= .venv-mediapipe
venv-mediapipe: $(VENV_MP)/.installed

$(VENV_MP)/.installed: envs/mediapipe.yaml
	test -x $(VENV_MP)/bin/python || $(PYTHON) -m venv $(VENV_MP)
	$(VENV_MP)/bin/python -m pip install --quiet mediapipe==0.10.21 numpy==1.26.4 protobuf==4.25.9 \
		opencv-contrib-python==4.11.0.86 jax==0.7.1 jaxlib==0.7.1
	$(VENV_MP)/bin/python -c "import mediapipe; assert mediapipe.__version__ == '0.10.21'"
	touch $@

demo-data: venv
	$(PY) -m neopain.core.demo resources/demo

# The tracker's default 468-point face mesh (and BlazeFace): face_landmark.tflite etc. taken
# from the pinned mediapipe==0.10.21 wheel (pip download, sha256-verified), never committed.
mesh-weights: venv
	$(PY) -m neopain.faces.mpmodels resources/weights

demo: venv demo-data mesh-weights
	$(SNAKEMAKE) --cores $(CORES)
	$(SNAKEMAKE) --report results/report.html
	@echo
	@cat results/report/summary.txt

# The HTML report of the last run (opens on the landing page; see docs/report.md).
report: venv
	$(SNAKEMAKE) --report results/report.html
	@cat results/report/summary.txt

lint: venv
	$(SNAKEMAKE) --lint

test: venv mesh-weights
	$(PY) -m pytest -q -rs --durations=20

# The unit half: library tests, no Snakemake (tests/unit; a few minutes).
test-fast: venv mesh-weights
	$(PY) -m pytest -q -rs tests/unit

# The workflow half: every test that runs Snakemake (tests/workflow, marked `workflow`):
# planning, dry runs and lint, and the whole-DAG runs (also marked `slow`).
test-workflow: venv mesh-weights
	$(PY) -m pytest -q -rs --durations=20 tests/workflow

# A real single-node SLURM (Debian slurmctld/slurmd/munge, root) runs the tiny DAG through
# `snakemake --executor slurm --workflow-profile profiles/slurm`; the daemons are stopped by
# PID and the /etc/slurm links removed afterwards, whatever the outcome (with the plugin
# installed, a stale /etc/slurm/slurm.conf would cost every snakemake call ~10 s).
SLURM_PLUGINS := snakemake-executor-plugin-slurm==2.8.0 snakemake-executor-plugin-slurm-jobstep==0.6.1
test-cluster: venv mesh-weights
	$(PY) -c "import snakemake_executor_plugin_slurm" 2>/dev/null || $(PY) -m pip install --quiet $(SLURM_PLUGINS)
	bash tests/cluster/slurm_local.sh clean
	bash tests/cluster/slurm_local.sh install
	bash tests/cluster/slurm_local.sh config
	set +e; bash tests/cluster/slurm_local.sh start && \
	  NEOPAIN_SLURM_TEST=1 $(PY) -m pytest -q -rs -p no:cacheprovider tests/workflow/test_cluster.py; \
	  rc=$$?; bash tests/cluster/slurm_local.sh clean; exit $$rc

bench-plan: venv
	$(PY) bench/bench_plan.py

# An N-clip study through the DAG vs one process, and adding a clip (docs/scale.md)
bench-study: venv mesh-weights
	$(PY) bench/bench_study.py --clips 40

bench-track: venv mesh-weights
	$(PY) bench/track_fps.py

bench-actions: venv mesh-weights
	$(PY) bench/bench_actions.py

clean:
	rm -rf results logs .snakemake
