#!/usr/bin/env bash
# The test command (README, .ci/run): set-up if needed, then the whole suite on CPU.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/unit -k projection`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh"
cd "$ROOT"
# style first (seconds): lint and formatting, as pyproject.toml configures them
if ! { ruff check --quiet . && ruff format --check --quiet .; }; then
    echo "[test] ruff: fix the above (ruff check --fix .; ruff format .)" >&2
    exit 1
fi
exec python -m pytest -p no:cacheprovider "${@:-tests}"
