"""Terraform's text as a person reads it: the one reader of what Terraform prints (its colours, the
box a diagnostic is drawn in, `Error:` blocks), for tfcheck and for the operator's tool alike."""

from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_BOX = "╷│╵"


def plain_lines(text: str) -> list[str]:
    """Terraform's output as a person reads it: each line without colour codes, the box a coloured
    diagnostic is drawn in, or surrounding blanks (blank lines stay, as empty strings)."""
    return [_ANSI.sub("", line).strip().strip(_BOX).strip() for line in text.splitlines()]


def meaningful_lines(text: str) -> list[str]:
    """Terraform's message without its box drawing: the lines a person reads."""
    return [line for line in plain_lines(text) if line]


def terraform_error(stderr: str) -> str:
    """Terraform's first error as one line: its summary and the detail's first sentence.

    Without colour Terraform prints `Error: <summary>`, a blank line and the detail; a coloured one
    is drawn in a box (and escape codes), stripped here too in case `-no-color` was not honoured.
    """
    lines = plain_lines(stderr)
    for i, line in enumerate(lines):
        if line.startswith("Error:"):
            detail: list[str] = []
            for more in lines[i + 1 :]:
                if more.startswith(("Error:", "Warning:")) or (not more and detail):
                    break
                if more:
                    detail.append(more)
            sentence = re.split(r"(?<=[.!?])\s", " ".join(detail), maxsplit=1)[0]
            return f"{line} — {sentence}" if sentence else line
    text = " ".join(line for line in lines if line)
    return text or "failed"
