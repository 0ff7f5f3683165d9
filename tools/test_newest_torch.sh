#!/usr/bin/env bash
# The whole suite (slow tests included) against the newest torch in constraints-newest.txt, in its own
# virtual environment (.venv-newest/, git-ignored), beside the pinned .venv/ that CI uses.
#   tools/test_newest_torch.sh            # install (first time, ~2 GB download) and run every test
#   tools/test_newest_torch.sh -x -k adam # extra arguments go to pytest
# PIP_CONSTRAINT also overrides a pip configuration that caps torch (pip config list names it).
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_CONSTRAINT="$PWD/constraints-newest.txt"
[ -x .venv-newest/bin/python ] || python3 -m venv .venv-newest
.venv-newest/bin/pip install -q -c constraints-newest.txt -e ".[dev]"
.venv-newest/bin/python -c "import torch; print('torch', torch.__version__)"
.venv-newest/bin/python -m pytest -q --slow "$@"
