#!/usr/bin/env bash
# The main job on the embedded tiny default (README's first command). Set-up if needed, then run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec python -m distgem.demo "$@"
