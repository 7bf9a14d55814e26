"""Where the cloud's virtualenv, its clouds.yaml and its run folder live (both virtualenvs import this)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".tools" / "cloud"
PYTHON = VENV / "bin" / "python"
STAMP = ROOT / ".stamps" / "cloud-venv"
OUT = ROOT / ".stamps" / "cloud"
CLOUDS_YAML = OUT / "clouds.yaml"  # the member's cloud, `kha-test`: what `cdktf deploy` uses
ADMIN_YAML = OUT / "clouds-admin.yaml"  # `kha-test-admin`, for tests that change the cloud itself
CLOUD_JSON = OUT / "cloud.json"  # clouds_yaml, cloud, client_netns, admin_netns, ssh_key
SSH_KEY = OUT / "id_ed25519"  # the private key of the seeded key pair demo-admin
KNOWN_HOSTS = OUT / "known_hosts"  # each running node's host key, by address (while servers run)
CLOUD = "kha-test"
ADMIN_CLOUD = "kha-test-admin"
READY = "cloud ready"
NOT_RUNNING = "booted servers will not run"  # the line's start when the cloud cannot run them
# The project's virtualenv: the hypervisor (`python -m lab.hypervisor`) runs there, as root.
PROJECT_PYTHON = ROOT / ".venv" / "bin" / "python"
# Held by the one cloud on this machine whose servers run (its hypervisor's namespaces are named khc-*).
HYPERVISOR_LOCK = Path("/run/khc-hypervisor.lock")
