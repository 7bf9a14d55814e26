"""`python -m tfcheck STACK_DIR...` (make validate): Terraform's verdict on each synthesized stack.

Exit codes: 0 every stack is valid and every attribute is in the provider's schema; 1 one is not;
2 the check could not run (Terraform or the provider missing, a folder without cdk.tf.json).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tfcheck.engine import BUILT_FROM, EngineError, engine
from tfcheck.schema import check_schema
from tfcheck.terraform import ROOT, STACK_FILE, TerraformError, Workdir, missing_setup, version

WORK = ROOT / ".stamps" / "validate"


def main(argv: list[str]) -> int:
    if not argv:
        print(
            "usage: python -m tfcheck STACK_DIR... (folders holding cdk.tf.json, e.g. cdktf.out/stacks/*)",
            file=sys.stderr,
        )
        return 2
    try:
        why = missing_setup()
    except EngineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 2
    failed = False
    try:
        print(f"{engine()} {version()['terraform_version']} ({BUILT_FROM[engine()]})")
        for stack_dir in map(Path, argv):
            stack_json = stack_dir / STACK_FILE
            if not stack_json.is_file():
                print(f"error: {stack_json}: no such file; run `make synth` first", file=sys.stderr)
                return 2
            work = Workdir(WORK / stack_dir.name, json.loads(stack_json.read_text()))
            work.init()
            providers = ", ".join(f"{name} {v}" for name, v in sorted(work.provider_versions().items()))
            result = work.validate()
            schema = check_schema(work.doc, work.provider_schemas())
            for diag in (*result.errors, *result.warnings):
                print(f"  {stack_dir.name}: {diag}")
            for problem in schema.problems:
                print(f"  {stack_dir.name}: schema: {problem}")
            verdict = "valid" if result.valid and schema.ok else "INVALID"
            failed |= verdict != "valid"
            print(
                f"{stack_dir.name}: {verdict}: {len(result.errors)} errors, {len(result.warnings)} warnings "
                f"({engine()} validate with {providers}); {schema.checked} attributes and blocks set in "
                f"{schema.resources} resources and data sources, {len(schema.problems)} not in the provider's schema"
            )
    except TerraformError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
