# The project's virtualenv (.venv) with the exact versions of constraints.txt.
# Reinstalled only when pyproject.toml, constraints.txt or the C source that the
# install compiles (producer/_speedups.c) change (hash stamp).

VENV="$ROOT/.venv"

python_install() {
  local want have py
  py=$(command -v python3.11 || command -v python3) || die "python3.11 is required"
  "$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || die "python 3.11 is required, found $("$py" --version)"
  want=$(cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" "$ROOT/producer/_speedups.c" | sha256sum | cut -c1-16)
  have=$(cat "$VENV/.stamp" 2>/dev/null || true)
  [ "$want" = "$have" ] && [ -x "$VENV/bin/python" ] && return 0
  log "installing Python dependencies into $VENV"
  [ -x "$VENV/bin/python" ] || "$py" -m venv "$VENV" || die "could not create $VENV"
  "$VENV/bin/pip" install -q -c "$ROOT/constraints.txt" -e "$ROOT[dev]" || die "pip install failed"
  echo "$want" > "$VENV/.stamp"
}
