# Tenure's tasks. Newcomers: `scripts/demo.sh` and `scripts/test.sh` install
# `just` first and then run `just demo` / `just test`.

set shell := ["bash", "-euo", "pipefail", "-c"]

default:
    @just --list

# Install or start what the demo and tests need (PostgreSQL, nats-server, scim2-server).
setup:
    source scripts/lib.sh && ensure_postgres && ensure_nats && ensure_python_peers && ensure_nextest

# Build the tenure binary.
build:
    cargo build -p tenure

# End to end: HR webhooks -> JetStream -> engine -> event store -> SCIM apps, then the audit trail.
demo: setup build
    bash scripts/run-demo.sh

# The whole test suite on real PostgreSQL, NATS JetStream and scim2-server.
test: setup
    source scripts/lib.sh && ensure_nats && ensure_python_peers && cargo build -p tenure && cargo nextest run --workspace --no-fail-fast

# Formatting and lints as CI wants them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Benchmarks (release build; not part of `just test`). Figures go to docs/benchmarks.md.
bench: setup
    cargo build --release -p tenure
    source scripts/lib.sh && ensure_nats && ensure_python_peers && TENURE_BIN="$PWD/target/release/tenure" cargo run --release -q -p tenure-e2e --bin bench-termination
    source scripts/lib.sh && ensure_nats && ensure_python_peers && TENURE_BIN="$PWD/target/release/tenure" cargo run --release -q -p tenure-e2e --bin bench-schedule
    source scripts/lib.sh && ensure_nats && ensure_python_peers && TENURE_BIN="$PWD/target/release/tenure" cargo run --release -q -p tenure-e2e --bin bench-fanout
    source scripts/lib.sh && ensure_nats && ensure_python_peers && TENURE_BIN="$PWD/target/release/tenure" cargo run --release -q -p tenure-e2e --bin bench-apply
    # Generates ~10M events with COPY (several minutes); BENCH_PERSONS / BENCH_EVENTS scale it down.
    cargo run --release -q -p tenure-e2e --bin bench-audit
