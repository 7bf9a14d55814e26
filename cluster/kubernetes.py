"""The Kubernetes release the project builds, validates against and writes kubeadm's files for.

Pinned once here: the Makefile reads these lines to build the tools (kube/), the config's
`kubernetes.version` defaults to KUBERNETES_VERSION, and a test holds kube/*/go.mod to them.
"""

from __future__ import annotations

KUBERNETES_VERSION = "1.37.2"
# The etcd kubeadm 1.37 deploys (cmd/kubeadm/app/constants: DefaultEtcdVersion "3.7.0-0"), as the
# Go module proxy serves it (go.etcd.io/etcd/server/v3 v3.7.0).
ETCD_VERSION = "3.7.0"
