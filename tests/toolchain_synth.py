"""`python -m tests.toolchain_synth OUTDIR`: every variant synthesized by the toolchain TOOLCHAIN names,
each by a whole App as `cdktf synth` / `cdktn synth` run it (metadata included), into
OUTDIR/<n>/stacks/<cluster>/cdk.tf.json, n being the variant's position in tests/variants.py.

A process of its own per toolchain: the import hook that makes `cdktf` CDK Terrain is process-wide.
"""

from __future__ import annotations

import sys
from pathlib import Path

import tests.conftest  # noqa: F401  (PATH, and the toolchain's import hook, before cdktf is imported)
from cluster.plan import make_plan
from stacks.cluster_stack import ClusterStack
from tests.variants import VARIANTS, variant_config


def main(outdir: Path) -> None:
    from cdktf import App

    for n, variant in enumerate(VARIANTS.values()):
        config = variant_config(variant)
        app = App(outdir=str(outdir / str(n)))
        ClusterStack(app, config.name, plan=make_plan(config))
        app.synth()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
