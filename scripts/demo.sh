#!/usr/bin/env bash
# Entry point of the quick start: installs `just`, then runs `just demo`.
source "$(dirname "$0")/lib.sh"
ensure_just
cd "$ROOT"
exec just demo "$@"
