# Rudder: `make run` starts the control plane (API server on an embedded single-member store),
# `make test` runs every test, `make bench` compares against Debian's etcd. Each installs what is missing.

SHELL := /bin/bash
export CARGO_TARGET_DIR ?= /var/tmp/rudder-target
CARGO ?= cargo
BIN := $(CARGO_TARGET_DIR)/release/rudder
DATA_DIR ?= ./rudder-data

.PHONY: run test bench deps build lint unit e2e loom jepsen jepsen-smoke clean-data

JEPSEN := $(CARGO_TARGET_DIR)/release/rudder-jepsen
JEPSEN_OUT ?= /var/tmp/rudder-jepsen
JEPSEN_DB ?= rudder

deps:
	@bash scripts/install-deps.sh

build: deps
	$(CARGO) build --release --workspace --bins

run: build
	@echo "rudder server: data in $(DATA_DIR); the etcd API on 127.0.0.1:2379, the Kubernetes API on :6443"
	exec $(BIN) server --data-dir $(DATA_DIR)

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

# Unit, property and end-to-end tests (the e2e tests drive Debian's etcdctl against the real binary).
unit: build
	$(CARGO) test --release --workspace --no-fail-fast

# The loom model of the watch hub, in its own target dir (different cfg, so different artifacts).
loom: deps
	RUSTFLAGS="--cfg rudder_loom" CARGO_TARGET_DIR=$(CARGO_TARGET_DIR)-loom LOOM_MAX_PREEMPTIONS=3 \
		$(CARGO) test --release -p rudder-store --lib watch::loom_tests

# The Jepsen smoke matrix: six short fault scenarios on three Rudder nodes in network namespaces, the
# backup/restore scenario, and three runs with injected bugs that must be caught (about 10 minutes).
jepsen-smoke: build
	$(JEPSEN) cleanup
	rm -rf $(JEPSEN_OUT)/smoke
	$(JEPSEN) matrix --preset smoke --out $(JEPSEN_OUT)/smoke

# The full matrix (every workload x nemesis x 3 seeds; hours). JEPSEN_DB=etcd runs it on Debian's etcd.
jepsen: build
	$(JEPSEN) cleanup
	$(JEPSEN) matrix --db $(JEPSEN_DB) --seeds 1,2,3 --out $(JEPSEN_OUT)/full-$(JEPSEN_DB) --doc docs/jepsen.md

test: build lint unit loom jepsen-smoke

bench: build
	$(CARGO) build --release -p rudder-bench
	$(CARGO_TARGET_DIR)/release/rudder-bench --rudder $(BIN) --members 1,3 --out docs/benchmarks.md
	$(CARGO_TARGET_DIR)/release/rudder-bench-apiserver --rudder $(BIN) --out docs/benchmarks.md

clean-data:
	rm -rf $(DATA_DIR)
