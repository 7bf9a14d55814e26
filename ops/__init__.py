"""The operator's tool: `python -m ops status` shows the HA endpoint as the nodes see it, `python -m ops roll`
brings every node to the synthesized userdata one node at a time, without an outage, and `python -m ops
userdata NODE` prints one node's cloud-config from the synthesized stack, and `python -m ops preflight`
checks the cloud has everything the stack needs before anything is created.

It reads the synthesized stack (cdktf.out) and the nodes (over the system's ssh); it imports the
model (cluster/), userdata's readers and tfcheck's (the engine, Terraform's text), never
stacks/ or lab/. Its exit codes and defaults are here.
"""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    """What the tool exits with, for a monitoring check or a CI step to act on: each outcome its own
    value, with its meaning, listed here once (docs/operate.md's "Exit codes" is this table, checked)."""

    meaning: str

    def __new__(cls, value: int, meaning: str) -> Exit:
        member = int.__new__(cls, value)
        member._value_ = value
        member.meaning = meaning
        return member

    OK = 0, "done: healthy (status), rolled or nothing to roll (roll), the cloud has everything (preflight)"
    UNHEALTHY = 1, "status: at least one finding"
    BAD_INPUT = 2, "the tool could not start: config, stack JSON, arguments, Terraform, no ssh (argparse's code too)"
    STOPPED = 3, "roll: refused to start, or stopped at a node (the message says which and why)"
    REFUSED = 4, "preflight: the cloud lacks something the stack needs (one line per problem)"
    CRASHED = 5, "an unexpected error in the tool itself, a bug (its traceback on stderr)"


CONNECT_TIMEOUT_S = 5  # ssh's ConnectTimeout
SSH_TIMEOUT_S = 120.0  # one round trip to a node, its script included
GATE_TIMEOUT_S = 60.0  # roll: how long a changed node may take to be healthy again
HANDOVER_TIMEOUT_S = 15.0  # roll: how long a backup may take to hold the VIP once the holder's keepalived stops
POLL_S = 0.5  # roll: between two reports of a node under its health gate


class OpsError(Exception):
    """A problem the operator must fix before the tool can go on; the message is one line."""
