# clawbot.stack — developer entry points. Every target creates/uses .venv itself.
# `make demo` and `make test` are the two commands the README starts with.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
VENV := $(ROOT)/.venv
BIN := $(VENV)/bin
PYTHON ?= python3
export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(ROOT)/ansible.cfg
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# Plain output (no ANSI colours) when it goes to a file or a CI log. $(shell) captures stdout but
# not stderr, so this asks whether make's stderr is a terminal.
ifeq ($(shell [ -t 2 ] && echo tty),)
export NO_COLOR := 1
export ANSIBLE_NOCOLOR := 1
export ANSIBLE_FORCE_COLOR := 0
export PY_COLORS := 0
endif

COLLECTION_LINK := $(ROOT)/.collections/ansible_collections/clawbot/stack
SANITY_ROOT := $(ROOT)/build/sanity/ansible_collections/clawbot/stack
HARNESS := $(ROOT)/tests/harness
DEMO_NAME ?= clawbot-demo
IMAGE ?= clawbot/debian-systemd:12
SCENARIOS ?=

step = printf '\n==> %s\n' "$(1)"
fail = { printf '\nFAILED: %s\n' "$(1)" >&2; exit 1; }

.PHONY: help prereqs venv collection lint sanity unit integration molecule test demo demo-destroy bench image docker build clean

help:
	@echo "make demo          deploy the stack onto a local systemd container ($(DEMO_NAME)) and print how to reach the bot"
	@echo "make demo-destroy  remove the demo container"
	@echo "make test          everything below, in this order; every part runs even after a failure,"
	@echo "                   then a time table per part and per Molecule scenario:"
	@bash $(HARNESS)/test-all.sh --list | sed 's/^/                     /'
	@echo "make lint | sanity | unit | integration | molecule   one part (SCENARIOS='a b' for some scenarios)"
	@echo "make bench         wrk against the bot on loopback (ratios in one run)"
	@echo "make prereqs       install the Debian packages make test needs (tests/harness/prereqs.sh list)"
	@echo "make build | clean"

$(VENV)/.installed: requirements-dev.txt $(wildcard bot_app/pyproject.toml)
	@$(call step,virtualenv $(VENV): pip install requirements-dev.txt and bot_app[test] (about a minute))
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || $(call fail,venv: python3 -m venv)
	@$(BIN)/pip install -q --upgrade pip wheel || $(call fail,venv: pip upgrade)
	@$(BIN)/pip install -q -r requirements-dev.txt || $(call fail,venv: pip install -r requirements-dev.txt)
	@if [ -f bot_app/pyproject.toml ]; then \
	  $(BIN)/pip install -q -e './bot_app[test]' || $(call fail,venv: pip install bot_app[test]); fi
	@touch $@

venv: $(VENV)/.installed

# The repo root is the collection root; link it where Ansible looks for collections.
collection: venv
	@mkdir -p $(dir $(COLLECTION_LINK))
	@ln -sfn ../../.. $(COLLECTION_LINK)

# System packages: tests/harness/prereqs.sh is the one place that installs them (only what is missing).
prereqs:
	@bash $(HARNESS)/prereqs.sh test || $(call fail,prereqs: system packages)

prereqs-%:
	@bash $(HARNESS)/prereqs.sh $* || $(call fail,prereqs: system packages for $*)

docker: prereqs-molecule

image: docker
	@bash $(HARNESS)/build-image.sh bookworm >/dev/null || $(call fail,build of $(IMAGE))

lint: prereqs-sanity collection
	@$(call step,lint: yamllint)
	@yamllint --strict . || $(call fail,lint: yamllint)
	@$(call step,lint: ansible-lint (production profile))
	@ansible-lint --offline || $(call fail,lint: ansible-lint)
	@$(call step,lint: ruff)
	@ruff check . || $(call fail,lint: ruff)
	@$(call step,lint: shellcheck (scripts without .sh; ansible-test checks the .sh files))
	@shellcheck .ci/run || $(call fail,lint: shellcheck)
	@$(call step,lint: antsibull-changelog)
	@antsibull-changelog lint || $(call fail,lint: antsibull-changelog lint)

# ansible-test needs the collection at .../ansible_collections/clawbot/stack: copy the files
# git would ship (tracked and new, not ignored) there. The copy gets its own git index, otherwise
# ansible-test sees it as ignored content of this repo (build/) and skips every target.
$(SANITY_ROOT): FORCE
	@rm -rf $(ROOT)/build/sanity && mkdir -p $(SANITY_ROOT)
	@git ls-files -z --cached --others --exclude-standard | grep -zv '^molecule/\|^bot_app/' \
	  | xargs -0 -I{} cp --parents -P {} $(SANITY_ROOT)/ 2>/dev/null || true
	@test -f $(SANITY_ROOT)/galaxy.yml || $(call fail,collection copy for ansible-test)
	@cd $(SANITY_ROOT) && git init -q && git add -A

FORCE:

# sanity_guard.py fails the part when ansible-test skipped a test (a missing shellcheck, say).
sanity: prereqs-sanity venv $(SANITY_ROOT)
	@$(call step,sanity: ansible-test sanity (every test must run; skips fail))
	@cd $(SANITY_ROOT) && python $(HARNESS)/sanity_guard.py $(HARNESS)/ansible-test.sh sanity --venv \
	  --requirements --python 3.11 --color no || $(call fail,sanity: ansible-test sanity)

unit: prereqs-unit venv $(SANITY_ROOT)
	@$(call step,unit: ansible-test units)
	@cd $(SANITY_ROOT) && $(HARNESS)/ansible-test.sh units --venv --requirements --python 3.11 --color no \
	  || $(call fail,unit: ansible-test units)
	@$(call step,unit: harness self-tests)
	@pytest -q -p no:cacheprovider -p no:asyncio tests/harness || $(call fail,unit: harness self-tests)
	@$(call step,unit: alert rules (rendered by Ansible, promtool check rules and test rules))
	@pytest -q -p no:cacheprovider -p no:asyncio tests/monitoring || $(call fail,unit: alert rules)
	@$(call step,unit: backup tool (real restic, mariadbd and redis-server on private sockets))
	@pytest -q -p no:cacheprovider -p no:asyncio tests/backup || $(call fail,unit: backup tool)
	@if [ -d bot_app/tests ]; then \
	  $(call step,unit: bot_app pytest (real redis-server and mariadbd on private sockets; two workers, one file each; about a minute)); \
	  cd bot_app && pytest -q -p no:cacheprovider -n 2 --dist loadfile || $(call fail,unit: bot_app pytest); fi

# Playbooks end to end on loopback: the real bot service, fake IM/model providers that speak the
# real wire protocols, ansible-playbook against localhost.
integration: collection
	@$(call step,integration: playbooks on loopback)
	@pytest -q -p no:cacheprovider -p no:asyncio tests/playbooks || $(call fail,integration)

MOLECULE_JOBS ?= 2
molecule: collection image
	@$(call step,molecule: $(if $(SCENARIOS),$(SCENARIOS),all scenarios), $(MOLECULE_JOBS) at a time)
	@python $(HARNESS)/run_molecule.py --jobs $(MOLECULE_JOBS) --summary $(ROOT)/.cache/molecule-summary.txt \
	  $(SCENARIOS) || $(call fail,molecule)

test:
	@bash $(HARNESS)/test-all.sh

demo: prereqs-demo collection image
	@bash $(HARNESS)/demo.sh up "$(DEMO_NAME)" "$(IMAGE)" || $(call fail,demo)

demo-destroy:
	@bash $(HARNESS)/demo.sh destroy "$(DEMO_NAME)" "$(IMAGE)"

bench: prereqs-bench venv
	@test -f bot_app/bench/run_bench.py || $(call fail,bench: bot_app/bench/run_bench.py missing)
	@python bot_app/bench/run_bench.py || $(call fail,bench)

build: venv
	@mkdir -p dist && ansible-galaxy collection build --force --output-path dist . \
	  || $(call fail,ansible-galaxy collection build)

clean:
	rm -rf build dist .cache .collections
