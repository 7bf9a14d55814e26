"""What the lab plays on its world (`lab.world`), each scenario listed once in `registry`.

- drills: one fault on a steady lab, the figures of what the client saw
- controls: negative controls, each on a lab of its own built from an edited JSON
- variants: those edited JSONs, and the variants a lab runs (ours, the seed's)
- seed: the seed design's keepalived settings, for comparison
- operate: the operator's tool (`python -m ops` roll and status) from the admin network
- soak: a seeded random sequence of faults and the invariants over what was recorded
- registry: every drill, control and operator drill with its name, title and goal
"""
