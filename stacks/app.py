"""Entry point: load every config first, then synthesize; a bad config synthesizes nothing."""

from __future__ import annotations

import os
import sys

from cluster.config import ConfigError, load_configs
from stacks.toolchain import ToolchainError, install


def main(argv: list[str] | None = None) -> int:
    """`main.py`: synthesize; `main.py --check`: only load the configs (`make synth` runs it first, so
    that a bad config prints each problem once, outside cdktf's wrapping of a failed synth)."""
    try:
        configs = load_configs(os.environ.get("CONFIG"))
        install()  # under TOOLCHAIN=cdktn, `cdktf` below is CDK Terrain
    except (ConfigError, ToolchainError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if (sys.argv[1:] if argv is None else argv) == ["--check"]:
        return 0
    # Imported only now: jsii starts a Node process, which a config error never needs.
    from cdktf import App

    from cluster.plan import make_plan
    from stacks.cluster_stack import ClusterStack

    app = App()
    for cfg in configs:
        plan = make_plan(cfg)
        ClusterStack(app, plan.cluster, plan=plan)
    app.synth()
    return 0
