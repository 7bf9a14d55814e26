"""Which CDK synthesizes the app: cdktf (the default, with the prebuilt OpenStack package) or CDK
Terrain, the maintained fork (TOOLCHAIN=cdktn), from the same code.

The code imports `cdktf` and `cdktf_cdktf_provider_openstack` as it always did. Under cdktn an
import hook answers those names with `cdktn` and with the OpenStack bindings `cdktn get` generated
at set-up (`make setup-cdktn`, into .tools/cdktn/bindings, never committed): the classes there have
the same names and the same jsii types, so nothing else changes. `install()` must run before
anything imports either name: stacks/app.py's main and tests/conftest.py call it first.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import os
import sys
from pathlib import Path
from types import ModuleType

TOOLCHAINS = ("cdktf", "cdktn")
# Where `make setup-cdktn` links the bindings for the pinned provider version (imports/openstack).
BINDINGS = Path(__file__).resolve().parent.parent / ".tools" / "cdktn" / "bindings"
# The names the code imports, and what answers them under cdktn.
ALIASES = {"cdktf": "cdktn", "cdktf_cdktf_provider_openstack": "imports.openstack"}


class ToolchainError(Exception):
    """TOOLCHAIN names no toolchain, or cdktn's parts are not set up; the message is one line."""


def toolchain() -> str:
    """The toolchain's name, from TOOLCHAIN (unset or empty: cdktf)."""
    value = os.environ.get("TOOLCHAIN", "") or "cdktf"
    if value not in TOOLCHAINS:
        raise ToolchainError(
            f"TOOLCHAIN: {value!r} is not a toolchain this project runs; one of: {', '.join(TOOLCHAINS)}"
        )
    return value


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers `cdktf...` with `cdktn...` and the prebuilt package's modules with the generated ones."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        for old, new in ALIASES.items():
            if fullname == old or fullname.startswith(old + "."):
                return importlib.machinery.ModuleSpec(fullname, self, origin=new + fullname[len(old) :])
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        assert spec.origin is not None
        return importlib.import_module(spec.origin)

    def exec_module(self, module: ModuleType) -> None:
        """The aliased module has run already, under its own name."""


def install() -> str:
    """Install the hook when TOOLCHAIN says cdktn; returns the toolchain's name."""
    chosen = toolchain()
    if chosen != "cdktn":
        return chosen
    if not (BINDINGS / "imports" / "openstack" / "__init__.py").is_file():
        raise ToolchainError(
            f"TOOLCHAIN: 'cdktn' needs the OpenStack bindings in {BINDINGS}, which are missing; run `make setup-cdktn`"
        )
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.path.insert(0, str(BINDINGS))
        sys.meta_path.insert(0, _Alias())
    return chosen
