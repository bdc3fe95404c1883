#!/usr/bin/env bash
# The whole test suite, as the README's second command and CI (.ci/run) run it.
# First every test but the cluster ones, two at a time (pytest-xdist); then the cluster tests
# alone: they start a real two-node Ray cluster, and beside other tests' Rays their job
# submissions fail. `.venv/bin/pytest -m unit` alone is the layer without Ray (under a minute).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/pytest "$@" && .venv/bin/pytest -n 0 -m cluster "$@"
