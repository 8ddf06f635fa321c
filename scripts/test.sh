#!/usr/bin/env bash
# The README's test command (via `make test`) and CI's: lint (ruff), the import layers (import-linter, contracts in
# pyproject.toml), then pytest. A lint or layer violation fails the script before any test runs.
# pytest exit codes: 0 all passed; 1 failures; 5 no test collected — that means a broken test tree here, so it
# fails too.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
.venv/bin/ruff check . || { echo "test: ruff found problems (see above)" >&2; exit 1; }
.venv/bin/lint-imports || { echo "test: an import breaks the layer contracts of pyproject.toml (see above)" >&2; exit 1; }
# the Slurm tests start a real single-node cluster from Debian packages (root installs them; otherwise they skip)
bash scripts/setup_slurm.sh
# the leaderboard site's tests drive a real headless Chromium (root installs it; otherwise they skip)
bash scripts/setup_browser.sh
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=25 "$@" tests
rc=$?
if [ "$rc" -eq 5 ]; then echo "test: pytest collected no tests" >&2; exit 1; fi
exit "$rc"
