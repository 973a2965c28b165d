# The Practice Intelligence Layer. Targets read like the README:
#   make run     the whole pipeline on the local stack (moto), a scripted scenario, a story
#   make serve   the same stack, left running; writes target/local/stack.env
#   make test    everything CI checks: fmt, clippy, unit + integration tests, template lint
#   make lint    cfn-lint (with the serverless rules) and checkov on template.yaml
#   make sam-build  sam build for arm64 (installs SAM CLI, cargo-lambda, zig, the target)
#   make relay-sam-build  sam build of the Square relay's template (infra/relay/template.yaml) for arm64
#   make browser-tools  Debian's chromium for the browser tests (make test calls it)
#   make bench   bench-guard, criterion benches, bench-scan, bench-first-night, cost, bench-cold, then one table of every figure vs its goal
#   make bench-guard  the PHI guard's accuracy: generated valid ids accepted, PHI-derived refs refused
#   make guard-model  rebuild the guard's name model from its public data (docs/guard.md)
#   make cost    the cost model (docs/cost.md) from counts measured on the local stack
#   make load    60 s local load test: valid, duplicate and refused webhooks (not in make test)
#   make bench-scan  DynamoDB units per scan at 10k vs 100k patients and per inbound event (moto)
#   make bench-first-night  a practice's first night: history import and first scan at scale (moto)
#   make data-inventory  regenerates docs/data-inventory.md from the code (a test checks it is current)
#   make relay-inventory  regenerates docs/square-relay-data-inventory.md (the Square relay's; a test checks it)
#   make bench-cold  size, init time, first invocation and peak RSS of each release bootstrap
#   make mutants  cargo-mutants on the PHI guard (a sample), the merges and the gap rules (not in make test)
# Every tool is installed by the project into a project-local venv on first use.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
LINT_VENV := .venv-lint
SAM_VENV := .venv-sam
MOTO := $(VENV)/bin/moto_server
CFN_LINT := $(LINT_VENV)/bin/cfn-lint
CHECKOV := $(LINT_VENV)/bin/checkov
SAM := $(SAM_VENV)/bin/sam
CARGO ?= cargo

.PHONY: setup run serve test unit fmt-check clippy check-functions lint data-inventory relay-inventory fuzz mutants load cost bench bench-guard guard-model bench-scan bench-first-night bench-cold sam-tools sam-build relay-sam-build browser-tools clean-local

setup: $(MOTO)

$(MOTO): infra/python/requirements-local.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r infra/python/requirements-local.txt
	@touch $(MOTO)

$(CFN_LINT) $(CHECKOV) &: infra/python/requirements-lint.txt
	$(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/pip install -q --disable-pip-version-check -r infra/python/requirements-lint.txt
	@touch $(CFN_LINT) $(CHECKOV)

run: $(MOTO)
	$(CARGO) run -q -p pil-local --bin pil-local -- run

serve: $(MOTO)
	$(CARGO) run -q -p pil-local --bin pil-local -- serve

test: $(MOTO) browser-tools fmt-check clippy check-functions unit lint
	@echo "make test: all checks passed"

# Each function as SAM builds it: alone, with only its own crate's features (the workspace
# build unifies features, so a function missing one of its own would pass there).
FUNCTIONS := webhook-receiver scheduler-scan approval-check approval-page trigger-emitter square-relay square-relay-jobs
check-functions:
	@for f in $(FUNCTIONS); do echo "cargo check -p $$f"; $(CARGO) check -q -p $$f || exit 1; done

# --all-targets also builds the benches (in test mode, each runs once), so they keep compiling.
unit: $(MOTO)
	$(CARGO) test --workspace --all-targets

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -q -- -D warnings

# Every stored attribute, message field and log field with its purpose and retention, derived
# from the item types (infra/pil-local/src/inventory.rs); infra/pil-local/tests/data_inventory.rs fails when stale.
data-inventory:
	$(CARGO) run -q -p pil-bench --bin data-inventory > docs/data-inventory.md.tmp
	mv docs/data-inventory.md.tmp docs/data-inventory.md

# The layer's template and the Square relay's (infra/relay/template.yaml, deployed by a practice).
TEMPLATES := template.yaml infra/relay/template.yaml
lint: $(CFN_LINT) $(CHECKOV)
	@for t in $(TEMPLATES); do \
	  echo "cfn-lint $$t" && $(CFN_LINT) $$t && \
	  $(CFN_LINT) --append-rules cfn_lint_serverless.rules -- $$t && \
	  $(CHECKOV) -f $$t --framework cloudformation --quiet --compact --skip-download || exit 1; done

relay-inventory:
	$(CARGO) run -q -p pil-bench --bin data-inventory -- --relay > docs/square-relay-data-inventory.md.tmp
	mv docs/square-relay-data-inventory.md.tmp docs/square-relay-data-inventory.md

# The guard's accuracy runs first; when it misses a goal the other benches still run and
# make bench fails at the end.
bench: $(MOTO)
	@guard=0; $(MAKE) --no-print-directory bench-guard || guard=$$?; \
	$(CARGO) bench -p shared --bench inbound && \
	$(MAKE) --no-print-directory bench-scan && \
	$(MAKE) --no-print-directory bench-first-night && \
	$(MAKE) --no-print-directory cost && \
	$(MAKE) --no-print-directory bench-cold && \
	$(CARGO) run -q -p pil-bench --bin bench-report && \
	if [ $$guard -ne 0 ]; then echo "make bench: the PHI guard missed a goal (make bench-guard)"; exit $$guard; fi

# The PHI guard's accuracy (docs/guard.md, "How it is measured"): 10,000 ids from each of the
# valid-id generators, none of which may be refused, and refs derived from synthetic people in
# named spellings, of which at least 99.5 % must be refused; fails when a goal is missed.
# Figures in target/bench/guard.json. Extra flags: make bench-guard ARGS="--seed 7
# --show-misses 3". A release build: it also times the guard per ref (about a minute).
bench-guard:
	$(CARGO) run -q --release -p pil-bench --bin guard-bench -- $(ARGS)

# Rebuilds the guard's model (shared/data/guard-model.bin, committed) from its public data:
# the census name lists (`names`), mimesis' person data, gender-guesser's name dictionary
# (pinned in infra/python/requirements-guard.txt, own venv) and Debian's wamerican word list.
GUARD_VENV := .venv-guard
guard-model:
	@test -f /usr/share/dict/american-english || { echo "guard-model: needs Debian's wamerican (apt-get install wamerican)"; exit 1; }
	@test -x $(GUARD_VENV)/bin/python || $(PYTHON) -m venv $(GUARD_VENV)
	$(GUARD_VENV)/bin/pip install -q --disable-pip-version-check -r infra/python/requirements-guard.txt
	sp=$$($(GUARD_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	$(GUARD_VENV)/bin/python infra/python/guard_model.py $$sp/names /usr/share/dict/american-english \
	  $$sp/mimesis/datasets $$sp/gender_guesser/data/nam_dict.txt shared/data/guard-model.bin

# The scan's reads must not grow with patients: 10,000 then 100,000 patients with the same due
# gaps, read units and items per scan compared (fails over ×1.2), then units per inbound event
# (docs/units.md). Extra flags: make bench-scan ARGS="--due 200". The dev build is enough: the
# units counted do not depend on it and the wall time is the emulator's.
bench-scan: $(MOTO)
	$(CARGO) run -q -p pil-bench --bin scan-bench -- $(ARGS)

# A practice's first night (docs/performance.md, "First night"): three years of history for
# 1,000 and 10,000 patients imported in signed 100-event batches through the receiver's
# handler, then the first scan in parts; requests and units metered, a modelled DynamoDB time
# beside moto's wall time; 100,000 extrapolated from the 10,000 run's per-patient figures.
# Figures in target/bench/first-night.json (make cost prices the onboarding from them).
# Extra flags: make bench-first-night ARGS="--patients 2000 --latency-ms 8".
bench-first-night: $(MOTO)
	$(CARGO) run -q -p pil-bench --bin first-night -- $(ARGS)

# Local load test (loopback only, bounded): LOAD_RATE requests/s for LOAD_SECONDS with valid,
# duplicate and refused webhooks; fails unless every valid event took effect exactly once and
# nothing refused was stored. Figures in target/bench/load.json. The dev build, like
# bench-scan: the latency is dominated by the emulator (moto), not by the receiver's code.
LOAD_RATE ?= 15
LOAD_SECONDS ?= 60
load: $(MOTO)
	$(CARGO) run -q -p pil-bench --bin load -- --rate $(LOAD_RATE) --seconds $(LOAD_SECONDS)

# The cost model: measures each operation's use on the local stack and prices it
# (docs/cost.md; figures in target/bench/cost.json).
cost: $(MOTO)
	$(CARGO) run -q -p pil-bench --bin cost-model -- --out docs/cost.md

# Cold start and memory (docs/performance.md): each handler's release bootstrap for the host and
# a hello-world lambda_runtime baseline, built one package at a time (a package's own cargo
# features only, as sam build does per function), then run under a local Lambda Runtime API
# emulator against moto. Table on stdout, target/bench/cold-start.json. Extra flags:
# make bench-cold ARGS="--runs 50 --compare-warm --enforce".
# Built as Lambda gets them: an explicit --target (so the flags below reach the bootstraps
# and not the host's build scripts and proc macros) and non-PIE, as .cargo/config.toml sets
# for the arm64 builds sam build makes.
BOOTSTRAPS := webhook-receiver scheduler-scan approval-check approval-page trigger-emitter hello-lambda
HOST_TRIPLE := x86_64-unknown-linux-gnu
bench-cold: $(MOTO)
	@for p in $(BOOTSTRAPS); do \
	  CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C relocation-model=static" \
	  $(CARGO) build -q --release --target $(HOST_TRIPLE) -p $$p || exit 1; done
	$(CARGO) run -q -p pil-bench --bin cold-start -- --bin-dir $(CURDIR)/target/$(HOST_TRIPLE)/release $(ARGS)

# sam build: SAM CLI, cargo-lambda and zig from PyPI (pinned; the venv is rebuilt when the
# pins change); the arm64 Rust target from rustup. sam build reads infra/samconfig.toml
# (beta features on for rust-cargolambda, one function at a time). CARGO_TARGET_DIR gives the
# cross build its own target directory, so it never waits on cargo's lock on target/ (the
# build workflow and its copy step both read it); SAM_CLI_TELEMETRY=0: no metrics calls.
SAM_TARGET_DIR := $(CURDIR)/target/sam

sam-tools:
	@cmp -s infra/python/requirements-sam.txt $(SAM_VENV)/requirements-sam.txt || { \
	  rm -rf $(SAM_VENV) && $(PYTHON) -m venv $(SAM_VENV) && \
	  $(SAM_VENV)/bin/pip install -q --disable-pip-version-check -r infra/python/requirements-sam.txt && \
	  cp infra/python/requirements-sam.txt $(SAM_VENV)/requirements-sam.txt; }
	rustup target add aarch64-unknown-linux-gnu

sam-build: sam-tools
	PATH="$(CURDIR)/$(SAM_VENV)/bin:$$PATH" CARGO_TARGET_DIR="$(SAM_TARGET_DIR)" SAM_CLI_TELEMETRY=0 \
	  $(SAM) build --config-file infra/samconfig.toml

# The Square relay, a practice's own deployment: its template and its two functions.
relay-sam-build: sam-tools
	PATH="$(CURDIR)/$(SAM_VENV)/bin:$$PATH" CARGO_TARGET_DIR="$(SAM_TARGET_DIR)" SAM_CLI_TELEMETRY=0 \
	  $(SAM) build -t infra/relay/template.yaml --beta-features --build-in-source --build-dir target/sam-relay-build

clean-local:
	rm -rf target/local

# The browser tests (tests/tests/integration/browser.rs) drive Debian's headless chromium; make test installs
# it when missing. Without it they are skipped with a message, or fail when CI is set.
browser-tools:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  { $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; } \
	  || echo "WARNING: could not install chromium; the browser tests will be skipped (or fail, with CI set)"; }

# Coverage-guided fuzzing of the inbound parser and PHI guard (cargo fuzz, libFuzzer, nightly;
# not part of make test). FUZZ_RUNS executions (default 10 million); new inputs that reach new
# code are added to fuzz/corpus/inbound, which is kept in git. A crash leaves its input in
# fuzz/artifacts and fails the target.
FUZZ_RUNS ?= 10000000
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
	rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
	cd fuzz && cargo +nightly fuzz run inbound corpus/inbound -- -runs=$(FUZZ_RUNS) -max_len=4096 -print_final_stats=1

# Mutation testing (docs/reliability.md, "Mutation testing"; not part of make test): cargo-mutants,
# one job, with shared's own tests. The merges and the gap rules in full (~1 hour here), then
# one shard in GUARD_SHARD of the PHI guard's ~1,170 mutants, round-robin (1/25: ~47; all of
# them would take ~8 hours). Its own target directory, without debug info. Reports in
# mutants.out-merges-rules/ and mutants.out-guard/ (missed.txt, caught.txt...); mutants that
# survive are compared by hand with the list in docs/reliability.md, so missed mutants and
# timeouts (exits 2 and 3) do not fail the target, any other error does. Extra flags: make mutants MUTANTS_ARGS="--re forget".
GUARD_SHARD ?= 1/25
MUTANTS_ARGS ?=
MUTANTS := CARGO_TARGET_DIR=$(CURDIR)/target/mutants CARGO_INCREMENTAL=0 CARGO_PROFILE_DEV_DEBUG=0 \
  $(CARGO) mutants -j 1 --package shared --timeout 60
mutants:
	@command -v cargo-mutants >/dev/null 2>&1 || $(CARGO) install cargo-mutants --version 27.1.0 --locked
	$(MUTANTS) -f shared/src/state.rs -f shared/src/tombstone.rs -f shared/src/rules.rs \
	  -o mutants.out-merges-rules $(MUTANTS_ARGS) || { rc=$$?; test $$rc -eq 2 -o $$rc -eq 3; }
	$(MUTANTS) -f 'shared/src/guard/*.rs' --shard $(GUARD_SHARD) --sharding round-robin \
	  -o mutants.out-guard $(MUTANTS_ARGS) || { rc=$$?; test $$rc -eq 2 -o $$rc -eq 3; }
	@for d in mutants.out-merges-rules mutants.out-guard; do \
	  test -f $$d/mutants.out/missed.txt || continue; \
	  echo "$$d: $$(wc -l < $$d/mutants.out/caught.txt) caught, $$(wc -l < $$d/mutants.out/missed.txt) missed," \
	    "$$(wc -l < $$d/mutants.out/unviable.txt) unviable, $$(wc -l < $$d/mutants.out/timeout.txt) timeouts"; \
	  cat $$d/mutants.out/missed.txt; done
