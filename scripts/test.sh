#!/usr/bin/env bash
# Entry point of the test suite: installs `just`, then runs `just test`.
source "$(dirname "$0")/lib.sh"
ensure_just
cd "$ROOT"
exec just test "$@"
