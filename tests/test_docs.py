"""The docs hold together: every relative link (file and #anchor) resolves, and the configuration
reference is the table the model generates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cluster import reference
from cluster.config import ClusterConfig
from ops import Exit

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "kube" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN = re.compile(r"`[^`]*`")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lowercase, punctuation dropped, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor, with GitHub's -1, -2 ... for repeated ones."""
    seen: dict[str, int] = {}
    out = set()
    for line in _prose_lines(text):
        match = _HEADING.match(line)
        if not match:
            continue
        base = slug(match[2])
        n = seen.get(base, 0)
        out.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return out


def broken_links(text: str, where: Path) -> list[str]:
    """Each relative link in `text` (a file at `where`) whose file or #anchor does not exist."""
    problems = []
    for line in _prose_lines(text):
        for target in _LINK.findall(_CODE_SPAN.sub("", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
                continue
            path, _, anchor = target.partition("#")
            file = (where.parent / path).resolve() if path else where
            if path and not file.exists():
                problems.append(f"{where.name}: ({target}): no such file {path}")
            elif anchor and file.suffix == ".md":
                page = file.read_text(encoding="utf-8") if path else text
                if anchor not in anchors(page):
                    problems.append(f"{where.name}: ({target}): no heading with anchor #{anchor} in {file.name}")
    return problems


def test_slugs_follow_githubs_rules():
    assert slug("Day 2: what a config change does") == "day-2-what-a-config-change-does"
    assert slug("Stand-in images, and how they differ") == "stand-in-images-and-how-they-differ"
    assert slug("`allow_destroy` and `make validate`") == "allow_destroy-and-make-validate"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n### A\n") == {"a", "a-1", "a-2"}


def test_the_checker_finds_a_broken_file_and_a_broken_anchor(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Here\n", encoding="utf-8")
    text = (
        "# Top\n[ok](#top) [ok](page.md#here) [gone](missing.md) [bad anchor](page.md#there) "
        "[bad own](#nowhere) [web](https://example.org/#x) `[code](nope.md)`\n```\n[fenced](nope.md)\n```\n"
    )
    assert broken_links(text, tmp_path / "doc.md") == [
        "doc.md: (missing.md): no such file missing.md",
        "doc.md: (page.md#there): no heading with anchor #there in page.md",
        "doc.md: (#nowhere): no heading with anchor #nowhere in doc.md",
    ]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc):
    assert broken_links(doc.read_text(encoding="utf-8"), doc) == []


def test_the_docs_exist_and_the_readme_stays_short():
    names = {p.name for p in DOCS}
    pages = ("configuration", "design", "operate", "remote-state", "security", "lab", "development")
    assert {f"{page}.md" for page in pages} <= names
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 200


def test_the_configuration_reference_is_the_table_the_model_generates():
    documented = reference.documented_table(reference.DOC.read_text(encoding="utf-8"))
    assert documented is not None, f"docs/configuration.md has no generated table; run `{reference.REGENERATE}`"
    assert documented == reference.config_table(), (
        "docs/configuration.md's table differs from cluster/config.py's model; "
        f"regenerate it with `{reference.REGENERATE}`"
    )


def test_the_table_has_a_row_for_every_field_and_rules_only_for_real_fields():
    paths = [r.path for r in reference.rows()]

    def walk(model, prefix=""):
        for name, field in model.model_fields.items():
            yield f"{prefix}{name}"
            nested = reference._model_of(field.annotation)
            if nested is not None:
                yield from walk(nested, f"{prefix}{name}[]." if name == "members" else f"{prefix}{name}.")

    assert paths == list(walk(ClusterConfig))
    assert set(reference.RULES) <= set(paths)
    assert set(reference.REQUIRED_WHEN) <= set(paths)
    required = {r.path for r in reference.rows() if r.required == "yes"}
    assert {"name", "vip.address", "nodes.image", "access.client_cidrs", "containers.haproxy"} <= required
    assert "ports.frontend" not in required and "allow_destroy" not in required


def test_a_stale_table_fails_with_the_command_that_regenerates_it(tmp_path, monkeypatch):
    doc = tmp_path / "configuration.md"
    stale = reference.config_table().replace("`9443`", "`9000`")
    doc.write_text(f"# Configuration\n{reference.BEGIN}\n{stale}{reference.END}\n", encoding="utf-8")
    monkeypatch.setattr(reference, "DOC", doc)
    with pytest.raises(AssertionError, match=re.escape(f"regenerate it with `{reference.REGENERATE}`")):
        test_the_configuration_reference_is_the_table_the_model_generates()
    reference.write(doc)
    test_the_configuration_reference_is_the_table_the_model_generates()
    assert doc.read_text(encoding="utf-8").startswith("# Configuration\n")


_EXIT_ROW = re.compile(r"^\| (\d+) \| `([A-Z_]+)` \| (.+) \|$")


def documented_exit_codes(text: str) -> list[tuple[int, str, str]]:
    """The rows of the table under docs/operate.md's "Exit codes" heading."""
    section = text.split("\n### Exit codes\n", 1)[1].split("\n#", 1)[0]
    return [(int(m[1]), m[2], m[3]) for line in section.splitlines() if (m := _EXIT_ROW.match(line))]


def test_docs_operate_lists_every_exit_code_once_as_ops_exit_says():
    documented = documented_exit_codes((ROOT / "docs" / "operate.md").read_text(encoding="utf-8"))
    assert documented == [(int(e), e.name, e.meaning) for e in Exit]


def test_an_exit_code_table_that_differs_from_the_tools_is_caught():
    text = (ROOT / "docs" / "operate.md").read_text(encoding="utf-8")
    for stale in (
        text.replace("| 3 | `STOPPED` |", "| 1 | `STOPPED` |"),
        text.replace("| 5 | `CRASHED` |", "| 5 | `BUG` |"),
    ):
        assert documented_exit_codes(stale) != [(int(e), e.name, e.meaning) for e in Exit]
