# The two contract commands: `make synth` and `make test`. Each sets up what it needs first.
SHELL := /bin/bash
.DEFAULT_GOAL := synth

export PIPENV_VENV_IN_PROJECT := 1
export PIPENV_NOSPIN := 1
export PIPENV_YES := 1
export CHECKPOINT_DISABLE := 1
export DISABLE_VERSION_CHECK := 1
export CDKTF_DISABLE_PLUGIN_CACHE_ENV := 1
# jsii and the cdktf CLI run on the Node 22 from package.json, not the machine's Node.
export PATH := $(CURDIR)/node_modules/.bin:$(CURDIR)/.venv/bin:$(PATH)
export NODE_OPTIONS := --no-deprecation --max-old-space-size=4096
# An empty Terraform CLI config: the machine's may point at files that do not exist.
export TF_CLI_CONFIG_FILE := $(CURDIR)/.stamps/terraformrc

DEBIAN_PACKAGES := haproxy keepalived cloud-init curl nftables iproute2 openssl procps docker.io tini iputils-ping openssh-server openssh-client sudo
CHECKOV_VERSION := 3.2.505
STAMPS := .stamps

.PHONY: synth test test-fast bench soak lab lab-images diff deploy status roll show-userdata setup setup-python setup-node setup-system setup-checkov clean

# A stale stack never outlives a config that no longer synthesizes.
synth: setup-python setup-node
	rm -rf cdktf.out
	cdktf synth --output cdktf.out
	@ls cdktf.out/stacks/*/cdk.tf.json

test: setup synth lab-images
	python -m pytest

# Everything but the network-namespace lab.
test-fast: setup-python setup-node
	python -m pytest -m "not lab"

bench: setup synth lab-images
	python -m lab.bench
	python -m lab soak --seed 1 --minutes 10

# make soak [SEED=n] [MINUTES=m]: random overlapping faults under load; a failure prints its seed.
SEED ?= 1
MINUTES ?= 10
soak: setup synth lab-images
	python -m lab soak --seed $(SEED) --minutes $(MINUTES)

# Plan and apply against a real cloud: OS_CLOUD names your clouds.yaml entry.
diff: setup-python setup-node
	cdktf diff

deploy: setup-python setup-node
	cdktf deploy

# Operate a deployed cluster over ssh (CONFIG as for synth; ARGS passes options, e.g. ARGS=--json,
# ARGS=--dry-run, ARGS="--ssh-user ubuntu"). Both synthesize first: the nodes are compared with
# the stack the config gives now.
status: setup-python setup-node synth
	python -m ops status $(ARGS)

roll: setup-python setup-node synth
	python -m ops roll $(ARGS)

# make show-userdata NODE=demo-cp-1: that node's cloud-config as its VM receives it, from a fresh
# synth (CONFIG as for synth; ARGS as above, e.g. ARGS="--cluster b"). Only the cloud-config goes to
# stdout, the synth's output to stderr: `make show-userdata NODE=... > node.yaml` keeps it alone.
show-userdata: setup-python setup-node
	@if [ -z "$(NODE)" ]; then echo "error: NODE: not set; e.g. make show-userdata NODE=demo-cp-1" >&2; exit 2; fi
	@$(MAKE) --no-print-directory synth >&2
	@python -m ops userdata $(ARGS) "$(NODE)"

# make lab: build the lab, show the nodes and the VIP holder; make lab DRILL=haproxy-kill: one drill.
lab: setup synth lab-images
	python -m lab $(if $(DRILL),drill $(DRILL),show)

setup: setup-python setup-node setup-system setup-checkov

# The lab's stand-in images (haproxy, osixia/keepalived) from this machine's binaries, built once
# and cached under /var/cache/kha-lab; seconds when missing. Needs root, like the lab.
lab-images: setup-python setup-system synth
	@if [ "$$(id -u)" != 0 ]; then echo "warning: not root, no lab images (the lab tests will skip)"; exit 0; fi; \
	python -m lab images

setup-python: $(STAMPS)/python
setup-node: $(STAMPS)/node

$(STAMPS)/python: Pipfile Pipfile.lock
	@mkdir -p $(STAMPS)
	command -v pipenv >/dev/null || python3 -m pip install --quiet pipenv
	pipenv sync --dev
	@touch $@

$(STAMPS)/node: package.json package-lock.json
	@mkdir -p $(STAMPS) && touch $(STAMPS)/terraformrc
	npm ci --no-audit --no-fund --loglevel=error
	@node --version | grep -q '^v2[2-9]\.' || { echo "error: Node 22+ expected from node_modules"; exit 1; }
	@touch $@

# Debian packages the tests run for real. Installed only where missing, and only as root.
setup-system:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then echo "warning: not root, cannot install:$$missing (their tests will skip)"; exit 0; fi; \
	echo "installing:$$missing"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null

# checkov pins libraries of its own: it lives in its own virtualenv, out of the project's lock.
setup-checkov: $(STAMPS)/checkov
$(STAMPS)/checkov: Makefile
	@mkdir -p $(STAMPS)
	python3 -m venv .tools/checkov
	.tools/checkov/bin/pip install --quiet --disable-pip-version-check checkov==$(CHECKOV_VERSION)
	@touch $@

clean:
	rm -rf cdktf.out $(STAMPS) .tools
