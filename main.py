#!/usr/bin/env python
"""Synthesize one Terraform stack per cluster config named by CONFIG (default: config/example.yaml)."""

from stacks.app import main

if __name__ == "__main__":
    raise SystemExit(main())
