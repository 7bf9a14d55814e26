"""Run the real kubeadm and kube-apiserver that `make setup` builds (kube/); skip, saying why, where missing."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from cluster.plan import JOIN_SECRETS
from tests.conftest import ROOT

BIN = ROOT / ".tools" / "bin"
# Join secrets in kubeadm's own forms, as a join supplies them (none of them real).
EXAMPLE_SECRETS = {
    "token": "abcdef.0123456789abcdef",
    "caCertHash": "sha256:" + "ab" * 32,
    "certificateKey": "cd" * 32,
}


def require_tool(name: str) -> Path:
    path = BIN / name
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing under CI: `make setup` builds it (kube/README.md)")
        pytest.skip(f"no {path}: `make setup` builds it from the Go module proxy (kube/README.md)")
    return path


def with_join_secrets(text: str, secrets: dict[str, str] = EXAMPLE_SECRETS) -> str:
    """A joining node's kubeadm.yaml as join.sh hands it to kubeadm: the placeholders filled in."""
    for field, (placeholder, _variable) in JOIN_SECRETS.items():
        text = text.replace(placeholder, secrets[field])
    return text


def kubeadm_validate(text: str, fill_secrets: bool = True) -> subprocess.CompletedProcess[str]:
    """`kubeadm config validate` on the text, as written to a file (join secrets filled in unless told not to)."""
    kubeadm = require_tool("kubeadm")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kubeadm.yaml"
        path.write_text(with_join_secrets(text) if fill_secrets else text)
        return subprocess.run(
            [str(kubeadm), "config", "validate", "--config", str(path)], capture_output=True, text=True, timeout=120
        )
