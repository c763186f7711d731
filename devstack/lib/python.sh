# The project's virtualenv (.venv) with the exact versions of constraints.txt.
# Reinstalled only when pyproject.toml, constraints.txt or the C source that the
# install compiles (producer/_speedups.c) change (hash stamp).
# python_lowest_install (scripts/test-lowest, not run by devstack/up) builds the
# second one, .venv-lowest, with the lowest versions the ranges allow.

VENV="$ROOT/.venv"
LOWEST_VENV="$ROOT/.venv-lowest"

# The interpreter for both venvs: python3.11 when present (constraints.txt and
# constraints-lowest.txt were resolved and tested on it), else python3 if it is 3.11
# or newer (pyproject's requires-python; the unit tests also passed on 3.12 and 3.13).
python_pick() {
  local py
  py=$(command -v python3.11 || command -v python3) || die "python 3.11 or newer is required"
  "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "python 3.11 or newer is required, found $("$py" --version)"
  echo "$py"
}

python_install() {
  local want have py
  py=$(python_pick)
  want=$(cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" "$ROOT/producer/_speedups.c" | sha256sum | cut -c1-16)
  have=$(cat "$VENV/.stamp" 2>/dev/null || true)
  [ "$want" = "$have" ] && [ -x "$VENV/bin/python" ] && return 0
  log "installing Python dependencies into $VENV"
  [ -x "$VENV/bin/python" ] || "$py" -m venv "$VENV" || die "could not create $VENV"
  "$VENV/bin/pip" install -q -c "$ROOT/constraints.txt" -e "$ROOT[dev]" || die "pip install failed"
  echo "$want" > "$VENV/.stamp"
}

# python_lowest_install: .venv-lowest with constraints-lowest.txt's versions (made
# anew only when pyproject.toml or constraints-lowest.txt change: hash stamp), and the project itself installed, not editable, from a copy
# of the work tree in .venv-lowest/checkout/ (every run: it is the code under test).
# The copy's searchsync/__init__.py is removed after the install: a folder without
# one is only a namespace-package candidate, so the installed package, found later
# on sys.path, wins and tests run from the copy import it (the folder and its links
# stay for the tests that look at the tree); the copy's .venv is a link
# to .venv-lowest, so tests that start `.venv/bin/python -m searchsync…` start the
# lowest venv's, and its .devstack a link to the devstack's state (addresses).
# An editable install is avoided on purpose: it would build the C extension into
# producer/, over the main venv's.
python_lowest_install() {
  local want have py checkout="$LOWEST_VENV/checkout"
  py=$(python_pick)
  want=$(cat "$ROOT/pyproject.toml" "$ROOT/constraints-lowest.txt" | sha256sum | cut -c1-16)
  have=$(cat "$LOWEST_VENV/.stamp" 2>/dev/null || true)
  if [ "$want" != "$have" ]; then
    # a new venv, so no version installed for older pins stays behind
    rm -rf "$LOWEST_VENV"
  fi
  rm -rf "$checkout"
  mkdir -p "$checkout"
  (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard) \
    | (cd "$ROOT" && tar --null --files-from=- --ignore-failed-read -cf -) \
    | tar -xf - -C "$checkout" || die "could not copy the work tree to $checkout"
  if [ "$want" != "$have" ] || [ ! -x "$LOWEST_VENV/bin/python" ]; then
    log "installing the lowest dependency versions into $LOWEST_VENV"
    [ -x "$LOWEST_VENV/bin/python" ] || "$py" -m venv "$LOWEST_VENV" || die "could not create $LOWEST_VENV"
    "$LOWEST_VENV/bin/pip" install -q -c "$ROOT/constraints-lowest.txt" "$checkout[dev]" \
      || die "pip install into $LOWEST_VENV failed"
    echo "$want" > "$LOWEST_VENV/.stamp"
  else
    "$LOWEST_VENV/bin/pip" install -q --no-deps --force-reinstall "$checkout" \
      || die "pip install of the work tree into $LOWEST_VENV failed"
  fi
  rm -rf "$checkout/searchsync/__init__.py" "$checkout/build"
  ln -sfn .. "$checkout/.venv"
  ln -sfn "$STATE" "$checkout/.devstack"
}
