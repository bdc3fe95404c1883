#!/usr/bin/env bash
# The whole test suite, as the README's second command and CI (.ci/run) run it.
# First every test but the cluster ones, two at a time (pytest-xdist); then the cluster tests
# alone: they start a real two-node Ray cluster, and beside other tests' Rays their job
# submissions fail. `.venv/bin/pytest -m unit` alone is the layer without Ray (under a minute).
# Those layers test the CPU path and hide any GPU from themselves (tests/conftest.py), so where torch
# sees a GPU the gpu layer runs in a pytest of its own between them; elsewhere the first run lists its
# tests as skipped, with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/pytest "$@"
if .venv/bin/python -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
  .venv/bin/pytest -n 0 -m gpu "$@"
fi
.venv/bin/pytest -n 0 -m cluster "$@"
