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
CLOUD = "kha-test"
ADMIN_CLOUD = "kha-test-admin"
READY = "cloud ready"
