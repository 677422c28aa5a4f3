#!/usr/bin/env bash
# The demo: a private nats-server, a fresh database, two SCIM apps served by
# scim2-server, and all Tenure services in one process. Sample HR records go
# in through the signed webhook; accounts and the audit trail come out. At the
# end one audit question is answered from history, and the wiki is wiped and
# rebuilt from history with `tenure replay app wiki`.
source "$(dirname "$0")/lib.sh"
ensure_nats
ensure_python_peers
cd "$ROOT"

RUN="$ROOT/.run/demo"
rm -rf "$RUN"; mkdir -p "$RUN"
TENURE="$ROOT/target/debug/tenure"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

NATS_PORT=$(free_port); SCIM_PORT=$(free_port); INGEST_PORT=$(free_port); API_PORT=$(free_port)
export TENURE_GENERIC_SECRET="demo-hmac-secret"
export TENURE_APP_TOKEN="demo-scim-token"
export TENURE_IDP_TOKEN="demo-authentik-token"
export TENURE_DATABASE_URL="postgres://postgres@127.0.0.1:5432/tenure_demo"
export TENURE_NATS_URL="nats://127.0.0.1:$NATS_PORT"
export TENURE_CONFIG="$RUN/tenure.toml"

log "starting a private nats-server (JetStream) on port $NATS_PORT"
"$TENURE_NATS_SERVER" -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$RUN/nats" >"$RUN/nats.log" 2>&1 & PIDS+=($!)
log "starting scim2-server on port $SCIM_PORT (tenants /wiki and /git)"
"$TENURE_SCIM2_SERVER" --port "$SCIM_PORT" --bearer-token "$TENURE_APP_TOKEN" --dynamic-tenants >"$RUN/scim.log" 2>&1 & PIDS+=($!)

sed -e "s#127.0.0.1:8090#127.0.0.1:$SCIM_PORT#g" \
    -e "s#127.0.0.1:8080#127.0.0.1:$INGEST_PORT#" \
    -e "s#127.0.0.1:8081#127.0.0.1:$API_PORT#" examples/tenure.toml >"$TENURE_CONFIG"
# The operator API is closed without a token: make one, keep only its hash
# in the config (`tenure api token-hash`), and send it with every call.
TENURE_API_TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
printf '\n[[api.token]]\nname = "demo"\nhash = "%s"\nscopes = ["admin"]\n' \
  "$(printf '%s' "$TENURE_API_TOKEN" | "$TENURE" api token-hash)" >>"$TENURE_CONFIG"
api() { curl -fs -H "Authorization: Bearer $TENURE_API_TOKEN" "http://127.0.0.1:$API_PORT$1"; }

for p in $NATS_PORT $SCIM_PORT; do for _ in $(seq 100); do port_open "$p" && break; sleep 0.1; done; done

log "fresh database tenure_demo"
psql -q -h 127.0.0.1 -U postgres -c 'DROP DATABASE IF EXISTS tenure_demo WITH (FORCE)' postgres
"$TENURE" migrate

log "starting Tenure (ingest, engine, fanout, api) — log in .run/demo/tenure.log"
"$TENURE" up >"$RUN/tenure.log" 2>&1 & PIDS+=($!)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$INGEST_PORT/healthz" >/dev/null && break; sleep 0.1; done

wait_accounts() { # app expected-count
  for _ in $(seq 100); do
    n=$(api "/v1/accounts?app=$1" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
    [ "$n" = "$2" ] && return 0; sleep 0.1
  done
  echo "timed out waiting for $2 accounts in $1" >&2; return 1
}
wait_active() { # app userName expected(true/false/absent)
  for _ in $(seq 100); do
    got=$(curl -fs -H "Authorization: Bearer $TENURE_APP_TOKEN" \
      "http://127.0.0.1:$SCIM_PORT/$1/v2/Users" --get --data-urlencode "filter=userName eq \"$2\"" |
      python3 -c 'import json,sys; r=json.load(sys.stdin)["Resources"]; print("absent" if not r else str(r[0].get("active", True)).lower())')
    [ "$got" = "$3" ] && return 0; sleep 0.1
  done
  echo "timed out: $1/$2 is $got, expected $3" >&2; return 1
}
show_apps() {
  for app in wiki git; do
    echo "--- what the $app app holds (straight from its SCIM server):"
    curl -fs -H "Authorization: Bearer $TENURE_APP_TOKEN" "http://127.0.0.1:$SCIM_PORT/$app/v2/Users" |
      python3 "$ROOT/scripts/show_users.py"
  done
  echo "--- the wiki's groups:"
  curl -fs -H "Authorization: Bearer $TENURE_APP_TOKEN" "http://127.0.0.1:$SCIM_PORT/wiki/v2/Groups" |
    python3 "$ROOT/scripts/show_groups.py"
}
wait_groups() { # expected wiki group names, sorted, comma-separated
  for _ in $(seq 100); do
    got=$(curl -fs -H "Authorization: Bearer $TENURE_APP_TOKEN" "http://127.0.0.1:$SCIM_PORT/wiki/v2/Groups" |
      python3 -c 'import json,sys; print(",".join(sorted(g["displayName"] for g in json.load(sys.stdin).get("Resources", []))))')
    [ "$got" = "$1" ] && return 0; sleep 0.1
  done
  echo "timed out: wiki groups are $got, expected $1" >&2; return 1
}

log "HR: three hires (Ana and Bo in Engineering, Chen in Sales starting 2030)"
"$TENURE" send examples/records/01-hires.json
wait_accounts wiki 2; wait_accounts git 2; wait_groups dept-Engineering
HIRED_AT=$(date -u +%Y-%m-%dT%H:%M:%S.%NZ) # the audit step below asks about this instant
show_apps
"$TENURE" accounts

log "Chen starts in 2030: her start is a durable schedule, due at local midnight in New York"
"$TENURE" schedule list

log "HR: the same file again (a webhook retry): nothing changes"
"$TENURE" send examples/records/01-hires.json

log "HR: Ana moves to Sales, Bo leaves"
"$TENURE" send examples/records/02-changes.json
wait_active wiki bo.berg@example.com false
wait_active git bo.berg absent
wait_active git ana.silva absent
wait_groups dept-Sales
show_apps

log "Authentik pushes Ana and its group wiki-editors over SCIM: the wiki mirrors the group"
scim() { # method path [body]
  curl -fs -X "$1" "http://127.0.0.1:$INGEST_PORT/scim/v2$2" -H "Authorization: Bearer $TENURE_IDP_TOKEN" \
    -H 'content-type: application/scim+json' ${3:+-d "$3"}
}
ANA_IDP=$(scim POST /Users '{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"asilva","displayName":"Ana Silva","active":true,"emails":[{"value":"ana.silva@example.com","primary":true}]}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
scim POST /Groups "{\"schemas\":[\"urn:ietf:params:scim:schemas:core:2.0:Group\"],\"displayName\":\"wiki-editors\",\"members\":[{\"value\":\"$ANA_IDP\"}]}" >/dev/null
wait_groups dept-Sales,wiki-editors
curl -fs -H "Authorization: Bearer $TENURE_APP_TOKEN" "http://127.0.0.1:$SCIM_PORT/wiki/v2/Groups" |
  python3 "$ROOT/scripts/show_groups.py"

log "a forged webhook is refused and quarantined"
curl -s -o "$RUN/forged.json" -w '  HTTP %{http_code}: ' -X POST "http://127.0.0.1:$INGEST_PORT/v1/sources/generic/records" \
  -H 'content-type: application/json' -H "x-tenure-timestamp: $(date +%s)" -H 'x-tenure-signature: v1=00' \
  -d '{"person_id":"E-666","given_name":"Mallory","family_name":"X","work_email":"m@example.com","employment_status":"active","effective_at":"2026-01-01T00:00:00Z"}'
cat "$RUN/forged.json"; echo
"$TENURE" quarantine list

log "Bo's audit timeline: the HR record, the decision and every SCIM call, chained by cause"
"$TENURE" timeline bo.berg@example.com

log "access review of the wiki, as a reviewer gets it (GET /v1/audit/review?app=wiki&format=csv)"
api "/v1/audit/review?app=wiki&format=csv" | cut -d, -f1,2,5,7,9-12

log "audit: who had access to the wiki at $HIRED_AT, just after the hires? (from events: Bo has left since)"
"$TENURE" audit access --app wiki --at "$HIRED_AT" --format csv | cut -d, -f1,5-7,9

WIKI="http://127.0.0.1:$SCIM_PORT/wiki/v2"
tenant() { python3 "$ROOT/scripts/scim_tenant.py" "$1" "$WIKI"; }
log "the wiki is wiped: every user and group in its SCIM tenant deleted"
BEFORE_COUNTS=$(tenant summary); BEFORE_ACCESS=$(tenant access)
echo "  before: $BEFORE_COUNTS"
echo "          $BEFORE_ACCESS"
echo "  $(tenant wipe)"
echo "  now:    $(tenant summary)"

# TENURE_LOG=warn: the plan and the report are the output; the INFO lines are not.
log "tenure replay app wiki --dry-run: the plan from history (reads only, changes nothing)"
TENURE_LOG=warn "$TENURE" replay app wiki --dry-run

log "tenure replay app wiki: the wiki rebuilt"
TENURE_LOG=warn "$TENURE" replay app wiki
AFTER_COUNTS=$(tenant summary); AFTER_ACCESS=$(tenant access)
echo "--- before the wipe: $BEFORE_COUNTS"
echo "                     $BEFORE_ACCESS"
echo "--- after replay:    $AFTER_COUNTS"
echo "                     $AFTER_ACCESS"
if [ "$BEFORE_ACCESS" != "$AFTER_ACCESS" ]; then
  echo "the rebuilt wiki does not grant the same access as before the wipe" >&2; exit 1
fi
echo "  the same active accounts and group members as before the wipe. Bo's switched-off"
echo "  account is not re-created (a leaver whose account is gone stays without one):"
echo "  replay only records that his link is gone, the 'deleted' line above."

log "hash chains of the event store"
"$TENURE" audit verify | python3 -c 'import json,sys; r=json.load(sys.stdin); print("  %d streams, %d events, %d problems" % (r["streams"], r["events"], len(r["problems"])))'
log "demo finished: the API was at http://127.0.0.1:$API_PORT (stopped now); try scripts/demo.sh again any time"
