# Sourced by scripts/*: make sure .venv exists and holds the project with its test and
# metrics extras (the metrics tests scrape a real endpoint).
# Re-installs only when setup.cfg or pyproject.toml changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV" >&2
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.installed"
want="$(cat "$ROOT/setup.cfg" "$ROOT/pyproject.toml" | cksum)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "installing raft-actors[test,metrics] into $VENV" >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -U pip >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT[test,metrics]" >&2
  echo "$want" >"$stamp"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
