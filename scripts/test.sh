#!/usr/bin/env bash
# The test command (README, .ci/run): set-up if needed, then the whole suite on CPU.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/unit -k projection`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec python -m pytest -p no:cacheprovider "${@:-tests}"
