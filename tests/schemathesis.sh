#!/usr/bin/env bash
# API fuzzing: Schemathesis against a running `toolgate serve` on loopback,
# driven by the service's own OpenAPI document. Every check, positive and
# negative data, a bounded number of examples per operation; run once as the
# agent and once as the approver, so both kinds of route are exercised with
# a principal allowed to use them. Fails on any failure or server error.
#
#   TOOLGATE=target/debug/toolgate bash tests/schemathesis.sh
#
# Needs `st` (pip install schemathesis); PYTHONPATH may point at where it is.
# Options: PORT (default 17879), EXAMPLES per operation (default 100).
set -euo pipefail
TOOLGATE=$(realpath "${TOOLGATE:-target/debug/toolgate}")
PORT=${PORT:-17879}
EXAMPLES=${EXAMPLES:-100}
ST=${ST:-st}
here=$(cd "$(dirname "$0")" && pwd)

work=$(mktemp -d /tmp/toolgate-schemathesis.XXXXXX)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# A workspace the generated calls may read and write: the calls run for real
# (in the sandboxes the default policy routes them to).
mkdir -p "$work/ws/src" "$work/state"
echo 'print("hello")' > "$work/ws/src/main.py"
echo 'notes' > "$work/ws/README.md"
echo 'API_KEY=not-a-real-key' > "$work/ws/.env"

export TOOLGATE_TOKEN="agent-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export TOOLGATE_APPROVER_TOKEN="approver-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
# Rates high enough that the examples are judged, not throttled (429 is
# documented and would pass, but would also hide the handlers).
XDG_STATE_HOME="$work/state" "$TOOLGATE" serve \
  --listen "127.0.0.1:$PORT" --workspace "$work/ws" --audit "$work/audit.jsonl" \
  --max-wait 1 --rate-per-minute 100000 --rate-per-hour 1000000 \
  --confirmation-ttl 60 >"$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 1 200); do
  curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/serve.log"; exit 1; }
  sleep 0.1
done

status=0
for who in agent approver; do
  if [ "$who" = agent ]; then token=$TOOLGATE_TOKEN; else token=$TOOLGATE_APPROVER_TOKEN; fi
  cp "$here/schemathesis.toml" "$work/st.toml"
  if [ "$who" = approver ]; then
    # The agent's run left calls waiting for a human: half the generated
    # answers name one of them (approve, reject, then 409), half any id.
    curl -sf -H "Authorization: Bearer $token" "http://127.0.0.1:$PORT/v1/confirmations" |
      python3 -c 'import json, sys
ids = [c["id"] for c in json.load(sys.stdin)]
if ids:
    print("[dictionaries.pending]\nvalues = %s\n" % json.dumps(ids))
    print("[[operations]]\ninclude-name = \"POST /v1/confirmations/{id}\"")
    print("parameters = { \"path.id\" = { dictionary = \"pending\", probability = 0.5 } }")
print("pending confirmations offered to the approver: %d" % len(ids), file=sys.stderr)' >>"$work/st.toml"
  fi
  echo "== schemathesis as the $who"
  curl -sf -H "Authorization: Bearer $token" "http://127.0.0.1:$PORT/openapi.json" >"$work/openapi.json"
  # From the scratch directory: st keeps a cache in its working directory.
  (cd "$work" && "$ST" --config-file "$work/st.toml" run "$work/openapi.json" \
    --url "http://127.0.0.1:$PORT" \
    --header "Authorization: Bearer $token" \
    --checks all \
    --mode all \
    --max-examples "$EXAMPLES" \
    --seed 1 \
    --request-timeout 60 \
    --generation-database none \
    --report-dir "$work/report" \
    --no-color) || status=$?
done
if ! kill -0 "$pid" 2>/dev/null; then
  echo "the service died during the run:"; tail -20 "$work/serve.log"; exit 1
fi
"$TOOLGATE" audit verify "$work/audit.jsonl"
# What the requests did (so a run that only met 400s is seen as such).
python3 - "$work/audit.jsonl" <<'PY'
import collections, json, sys
seen = collections.Counter()
for line in open(sys.argv[1]):
    e = json.loads(line)
    if e.get("kind") == "call":
        seen["call %s, %s" % (e.get("decision"), (e.get("outcome") or {}).get("status"))] += 1
    elif e.get("kind") == "request":
        seen["HTTP %s" % e.get("status")] += 1
    else:
        seen[str(e.get("kind"))] += 1
print("audit:", ", ".join("%s: %d" % kv for kv in sorted(seen.items())))
PY
exit $status
