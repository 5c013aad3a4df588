#!/usr/bin/env bash
# CI hook: make the PostgreSQL server binaries available for the `postgres` tests.
# Idempotent: installs the Debian package only when initdb/pg_ctl are missing. The test
# fixture (tests/pg_fixture.py) starts its own throwaway cluster on 127.0.0.1; this script
# only installs and checks that one can start (as the `postgres` user when run as root).
set -euo pipefail

find_bin() {
  command -v "$1" 2>/dev/null || ls -1 /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -n 1
}

if [[ -z "$(find_bin initdb)" || -z "$(find_bin pg_ctl)" ]]; then
  SUDO=""
  [[ "$(id -u)" -ne 0 ]] && SUDO="sudo"
  echo "ci_postgres: installing postgresql (apt-get)" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
fi

INITDB="$(find_bin initdb)"
PG_CTL="$(find_bin pg_ctl)"
[[ -n "$INITDB" && -n "$PG_CTL" ]] || { echo "ci_postgres: initdb/pg_ctl still missing after install" >&2; exit 1; }

# Smoke test: a throwaway cluster on a free port, started and stopped.
RUN=()
if [[ "$(id -u)" -eq 0 ]]; then RUN=(runuser -u postgres --); fi
TMP="$(mktemp -d -t ci-pg-XXXXXX)"
trap '"${RUN[@]}" "$PG_CTL" -D "$TMP/data" -m fast stop >/dev/null 2>&1 || true; rm -rf "$TMP"' EXIT
[[ "$(id -u)" -eq 0 ]] && chown postgres: "$TMP"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"${RUN[@]}" "$INITDB" -D "$TMP/data" -A trust -U postgres --no-sync >/dev/null
"${RUN[@]}" "$PG_CTL" -D "$TMP/data" -o "-h 127.0.0.1 -p $PORT -k $TMP -F" -l "$TMP/log" -w start >/dev/null
echo "ci_postgres: OK ($("$PG_CTL" --version))"
