"""The operator's tool: `python -m ops status` shows the HA endpoint as the nodes see it, `python -m ops roll`
brings every node to the synthesized userdata one node at a time, without an outage.

It reads the synthesized stack (cdktf.out) and the nodes (over the system's ssh); it imports the
model (cluster/) and userdata's readers, never stacks/ or lab/.
"""


class OpsError(Exception):
    """A problem the operator must fix before the tool can go on; the message is one line."""
