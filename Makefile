# canaryguard: the two entry points are `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Built kube-apiserver, etcd and kubectl live outside the checkout so a fresh clone reuses them.
export CANARYGUARD_BIN_DIR ?= $(HOME)/.cache/canaryguard/bin
# The test bed installs the project's CRDs, RBAC and examples from this checkout.
export CANARYGUARD_PROJECT_DIR := $(CURDIR)

.PHONY: venv bins prometheus stack-deps lint unit integration test demo e2e-kind reference clean \
	docker-engine images kind kind-images node-bins node-image bench bench-judge chaos

# The operator (with its dev tools) and the test bed, a distribution of its own.
$(VENV)/.installed: pyproject.toml tests/testbed/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]' -e tests/testbed
	touch $@

venv: $(VENV)/.installed

# kube-apiserver, etcd and kubectl from Go modules (hack/), cached by version.
bins:
	bash hack/build-bins.sh

# And what a kind node holds besides: kubelet, kubeadm, kube-proxy, kube-controller-manager,
# kube-scheduler (hack/kube) and CoreDNS (hack/coredns), cached the same way.
node-bins:
	bash hack/build-bins.sh node

# The real Prometheus server from Debian's package, installed only when absent.
prometheus:
	@if ! command -v prometheus >/dev/null 2>&1; then \
	  echo "installing Debian package prometheus"; \
	  bash hack/install-prometheus.sh; \
	fi

stack-deps: bins prometheus

lint: venv
	$(VENV)/bin/ruff check operator tests bench hack
	$(VENV)/bin/ruff format --check operator tests bench hack
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/deptry operator
	$(VENV)/bin/deptry tests bench hack --exclude 'tests/testbed|__pycache__' --ignore DEP002,DEP004
	cd tests/testbed && ../../$(VENV)/bin/deptry .

unit: venv
	$(PY) -m pytest -m 'not integration and not kind' tests

integration: venv stack-deps
	$(PY) -m pytest -m integration tests

# Everything the kind tier needs besides the venv and `bins`: a Docker engine (started here
# when none answers; without one, and none installable, a clear message and exit 1), the
# images, kind and the node image. Built once and cached; about 2 s each when up to date.
KIND_DEPS := docker-engine images kind kind-images node-image

# Lint, the unit and integration tiers, then the kind tier (tests/kind is only collected when
# the marker expression names kind, so it runs as its own session, after the others).
test: venv stack-deps lint $(KIND_DEPS)
	$(PY) -m pytest -m 'not kind' tests
	$(PY) -m pytest -m kind tests/kind

# make demo [SCENARIO=healthy|error-spike|latency|business-drop|drift] [ARGS="--keep --plain"]
demo: venv stack-deps
	$(PY) -m canaryguard_testbed.demo $(if $(SCENARIO),--scenario=$(SCENARIO)) $(ARGS)

# A Docker engine for the kind tier: the one that answers, else Debian's docker.io started here.
docker-engine:
	bash hack/docker-engine.sh start

# Images built without a registry (hack/images/README.md).
images: docker-engine
	bash hack/images/base.sh
	bash hack/images/operator.sh
	bash hack/images/testbed.sh
	bash hack/images/prometheus.sh

# kind from its Go module, cached like the control-plane binaries.
kind:
	bash hack/kind/build.sh

kind-images: docker-engine
	bash hack/images/kind-base.sh
	bash hack/images/pause.sh

# canaryguard/kind-node:<KUBE_VERSION>: kind's `build node-image --type file` from the node
# binaries, on the kind base image (hack/images/kind-node.sh); skipped when up to date.
node-image: node-bins kind kind-images
	bash hack/images/kind-node.sh

# The kind tier alone (tests/kind; `make test` runs it last): a kind cluster from the local node image, the operator
# from its image and `kubectl apply -k tests/kind/manifests/install` (manifests/ with an
# allowlist for the test bed), Prometheus, the PagerDuty receiver and the
# test-bed mesh as Deployments; deleted at the end (KEEP_CLUSTER=1 keeps it). Needs a Docker
# engine (docker-engine, through images); everything else is built here and cached.
e2e-kind: venv bins $(KIND_DEPS)
	$(PY) -m pytest -m kind tests/kind

# docs/reference.md, the CanaryRollout field reference, from crds/canaryrollout.yaml.
reference: venv
	$(PY) hack/gen_reference.py

# The judges simulated (bench/bench_judge.py): false rollbacks, regressions caught and how
# fast, shared degradations (when each rollback came), for plain margins, confidence and a
# Flagger-style threshold, beside an oracle (Wald's test, baseline rate known) and the
# Neyman-Pearson bound on any judge; the engine alone (no Prometheus), about a minute.
# Prints the README's tables, writes JSON.
bench-judge: venv
	$(PY) bench/bench_judge.py --rollouts $${ROLLOUTS_PER_CELL:-200} --json $${JSON:-bench-judge.json}

# Figures, not assertions: the decision path, the real operator with many rollouts, the mesh.
# make bench [ROLLOUTS="1000 5000"] [BENCH_JSON=bench.json] [BENCH_FLAGS="--configs off,on
# --operator-flag=--status-heartbeat=5m"]: the operator before this branch (main), batching
# off and on side by side, and the reaction to 60 rollbacks.
bench: venv stack-deps bench-judge
	$(PY) bench/bench_engine.py 1000 20
	$(PY) bench/bench_operator.py --rollouts $${ROLLOUTS:-1000} --interval 30 --window 120 \
		--rollbacks 60 $(if $(BENCH_JSON),--json $(BENCH_JSON)) $(BENCH_FLAGS)
	$(PY) bench/bench_mesh.py
	$(PY) bench/bench_drift.py 200

# The fault campaign (bench/chaos.py): ROLLOUTS canary rollouts (half breaching) while the
# operator is SIGKILLed and crashes between its writes, kube-apiserver and Prometheus restart
# and PagerDuty answers 429/500; prints the counts (goal 0) and writes the report as JSON.
# About 5 minutes for 50 rollouts; exits 1 if a goal-zero count is not 0.
chaos: venv stack-deps
	$(PY) bench/chaos.py --rollouts $${ROLLOUTS:-50} --seed $${SEED:-1} --json $${JSON:-chaos-report.json}

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
