"""Terraform's own checks on the synthesized stacks: the real provider's validation and schema.

Nothing here talks to a cloud: `terraform init -backend=false` installs the provider from the
project's mirror, `terraform validate` runs the provider's own checks, and the provider's schema
says whether every attribute the JSON sets exists.
"""
