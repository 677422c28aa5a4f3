# Shared helpers for the demo and test entry points: find or start the
# peers Tenure needs, and install the tools the recipes use.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCIM2_SERVER_VERSION="0.8.3"
# An independent SCIM client that checks Tenure's inbound SCIM endpoint.
SCIM2_TESTER_VERSION="0.5.2"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root for: $*" >&2; return 1; fi
}

apt_install() {
  log "installing $* from Debian packages"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

ensure_cargo() {
  if ! command -v cargo >/dev/null; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null || { echo "Rust (cargo) is required: see README.md" >&2; exit 1; }
}

ensure_just() {
  ensure_cargo
  export PATH="$HOME/.cargo/bin:$PATH"
  if ! command -v just >/dev/null; then
    log "installing just with cargo"
    cargo install --locked just >/dev/null
  fi
}

ensure_nextest() {
  if ! cargo nextest --version >/dev/null 2>&1; then
    log "installing cargo-nextest with cargo"
    cargo install --locked cargo-nextest >/dev/null
  fi
}

ensure_postgres() {
  if port_open 5432; then return; fi
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then apt_install postgresql; fi
  local v; v="$(ls /etc/postgresql | sort -V | tail -n1)"
  log "starting PostgreSQL $v"
  as_root pg_ctlcluster --skip-systemctl-redirect "$v" main start || true
  for _ in $(seq 50); do port_open 5432 && break; sleep 0.2; done
  port_open 5432 || { echo "PostgreSQL did not start on 127.0.0.1:5432" >&2; exit 1; }
  # Tenure's defaults log in as postgres without a password over TCP.
  if ! psql -h 127.0.0.1 -U postgres -c 'select 1' >/dev/null 2>&1; then
    local hba; hba="$(ls /etc/postgresql/"$v"/main/pg_hba.conf)"
    log "allowing trust auth for local TCP connections in $hba"
    as_root sed -i -E 's/^(host\s+all\s+all\s+127\.0\.0\.1\/32\s+)\S+/\1trust/' "$hba"
    as_root pg_ctlcluster --skip-systemctl-redirect "$v" main reload
  fi
}

nats_server_bin() {
  if [ -x /usr/sbin/nats-server ]; then echo /usr/sbin/nats-server; return; fi
  if command -v nats-server >/dev/null; then command -v nats-server; return; fi
  apt_install nats-server
  echo /usr/sbin/nats-server
}

ensure_nats() {
  # Tests start private servers, but they need the binary.
  export TENURE_NATS_SERVER="${TENURE_NATS_SERVER:-$(nats_server_bin)}"
}

ensure_python_peers() {
  local venv="$ROOT/.venv"
  if [ ! -x "$venv/bin/scim2-server" ]; then
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
      apt_install python3-venv
    fi
    log "installing scim2-server $SCIM2_SERVER_VERSION into .venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "scim2-server==$SCIM2_SERVER_VERSION"
  fi
  if ! "$venv/bin/python" -c 'import scim2_tester' 2>/dev/null; then
    log "installing scim2-tester $SCIM2_TESTER_VERSION into .venv"
    "$venv/bin/pip" install -q "scim2-tester[httpx2]==$SCIM2_TESTER_VERSION"
  fi
  export TENURE_SCIM2_SERVER="$venv/bin/scim2-server"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
