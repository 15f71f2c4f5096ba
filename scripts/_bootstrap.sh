# Sourced by scripts/test and scripts/demo: a venv with the project installed.
# A fresh machine has only Python; everything else is installed here.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PROFILER_VENV:-$ROOT/.venv}"
EXTRAS="${1:-lab}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT[$EXTRAS]"
PY="$VENV/bin/python"
export PATH="$VENV/bin:$PATH"
