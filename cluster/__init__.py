"""The cluster's model: the validated config and the plan derived from it.

Imported by stacks/ (cdktf), userdata/ (rendering), ops/ (the operator's tool) and lab/; it
imports none of them, so no two packages depend on each other in a cycle.
"""
