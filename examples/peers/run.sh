#!/usr/bin/env bash
# Peers in one run: idem next to DBOS Transact (Python), durare (Rust, DBOS-compatible) and
# Powertools for AWS Lambda's idempotency (Python, Redis), on this machine's PostgreSQL and
# Redis, in alternating rounds; prints a markdown table (ranges over rounds).
#
#   examples/peers/run.sh                      # CI-size: 200 calls per case, 3 rounds
#   PEERS_CALLS=5000 examples/peers/run.sh     # the size docs/performance.md reports
#
# THE WORKLOADS (the same for every side)
#   key       a string unique to the run and the call number i: "<run uuid>-<i>"
#   body      returns {"title": "draft <i>", "tokens": 512}, and counts its executions
#   miss      N calls, each on a new key: the framework claims/starts the key, runs the body
#             and records its result durably (as durably as the side records anything: see
#             below), then returns it
#   replay    the same N keys again, each already completed: the framework returns the
#             recorded result without running the body (every side checks executions = 0 and
#             the result's value)
#   warm-up   W = clamp(N/10, 10, 500) keys, run as a miss and then as a replay before the
#             measured calls, unmeasured (the idem bench uses the same W)
#   callers   1 caller: p50 and p99 latency of one call (from the call to its result, in the
#             caller) and calls/s; 16 callers: calls/s (N calls shared by 16 concurrent
#             callers pulling the next key; tokio tasks in Rust, threads in Python)
#   state     every side starts each run from an empty store: idem's PostgreSQL schema is
#             emptied (--fresh on), DBOS's and durare's databases are dropped and created
#             (their migrations run at launch, before the clock starts), the Redis keys of
#             idem's and Powertools' prefixes are deleted
#
# THE SIDES
#   idem        examples/src/bin/bench.rs (`--mode miss`, `--mode hit`, `--rounds 1
#               --baseline off`): an idempotent call with the key (blake3 of the op and key).
#               Replays with the snapshot cache off (the store is asked) and, as extra rows,
#               on. PostgreSQL: schema idem_peers of database test; a miss is two
#               synchronous commits (the claim, then the fenced completion). Redis: db 4,
#               prefix idem-peers:; a miss is two scripts (claim, completion).
#   dbos        examples/peers/peer.py --peer dbos: DBOS Transact, a workflow of one step
#               (`@DBOS.step`) run with SetWorkflowID(key); replay = the same workflow id
#               again, which DBOS answers from its recorded output. Database dbos_bench.
#   durare      examples/peers/durare (its own cargo project, outside idem's workspace): a
#               `#[durare::workflow]` of one `#[durare::step]`, started with
#               WorkflowOptions::with_id(key) and awaited; replay = the same id again (durare
#               returns a handle on the stored result). Database durare_bench, schema dbos.
#   powertools  examples/peers/peer.py --peer powertools: `@idempotent_function` with the
#               Redis persistence layer (`CachePersistenceLayer`, formerly
#               `RedisCachePersistenceLayer`), idempotency key = JMESPath `key` of the
#               request; db 5, key prefix peers-powertools. Replays with its local cache off
#               and, as an extra row, on (`use_local_cache`).
#
# DURABILITY: PostgreSQL here commits synchronously (synchronous_commit=on, fsync=on), so
# every PostgreSQL side's record survives a crash of the server once the call returns. The
# Redis server here has no persistence (appendonly no, no save points): idem's Redis store and
# Powertools both lose their records if the server restarts.
#
# Environment: PEERS_CALLS (N, default 200), PEERS_ROUNDS (3), PEERS_CONCURRENCY ("1 16"),
# PEERS_SIDES ("idem-postgres idem-redis dbos durare powertools"), PEERS_DIR (venv, durare's
# target dir and results; default target/peers), PEERS_PG (server URL without database,
# default postgres://postgres@127.0.0.1:5432), PEERS_REDIS (default redis://127.0.0.1:6379),
# PEERS_PYTHON (the interpreter that makes the venv, default python3), CARGO_TARGET_DIR (where
# the idem bench is built). Needs psql, redis-cli, cargo and Python 3.9+ with venv.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
here="$root/examples/peers"
calls=${PEERS_CALLS:-200}
rounds=${PEERS_ROUNDS:-3}
concurrencies=${PEERS_CONCURRENCY:-"1 16"}
sides=${PEERS_SIDES:-"idem-postgres idem-redis dbos durare powertools"}
dir=${PEERS_DIR:-$root/target/peers}
pg=${PEERS_PG:-postgres://postgres@127.0.0.1:5432}
redis=${PEERS_REDIS:-redis://127.0.0.1:6379}
python=${PEERS_PYTHON:-python3}
warm=$((calls / 10))
((warm < 10)) && warm=10
((warm > 500)) && warm=500

mkdir -p "$dir"
results="$dir/results-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
log="$dir/run.log"
: >"$log"
say() { echo "peers: $*" >&2; }

redis_host_port=${redis#redis://}
redis_host=${redis_host_port%%:*}
redis_port=${redis_host_port##*:}
rcli() { redis-cli -h "$redis_host" -p "$redis_port" "$@"; }
pg_admin() { psql "$pg/postgres?sslmode=disable" -qAtX -v ON_ERROR_STOP=1 -c "$1" >/dev/null; }
fresh_db() { pg_admin "DROP DATABASE IF EXISTS $1 WITH (FORCE)" && pg_admin "CREATE DATABASE $1"; }
unlink_keys() { # db, pattern
    rcli -n "$1" --scan --pattern "$2" | xargs -r -n 1000 redis-cli -h "$redis_host" -p "$redis_port" -n "$1" unlink >/dev/null
}

# --- setup ------------------------------------------------------------------------------------
want() { [[ " $sides " == *" $1 "* ]]; }

venv="$dir/venv"
if want dbos || want powertools; then
    stamp="$venv/.requirements"
    if ! cmp -s "$here/requirements.txt" "$stamp" 2>/dev/null; then
        say "setting up the Python venv in $venv"
        "$python" -m venv "$venv"
        "$venv/bin/pip" install -q -r "$here/requirements.txt"
        cp "$here/requirements.txt" "$stamp"
    fi
fi

bench="${CARGO_TARGET_DIR:-$root/target}/release/bench"
if want idem-postgres || want idem-redis; then
    say "building the idem bench (release)"
    (cd "$root" && cargo build -q --release -p idem-examples --bin bench)
fi

durare_bin="$dir/durare-target/release/peers-durare"
if want durare; then
    say "building the durare program (release, its own target dir)"
    if ! CARGO_TARGET_DIR="$dir/durare-target" cargo build -q --release --locked \
        --manifest-path "$here/durare/Cargo.toml" 2>"$dir/durare-build.err"; then
        say "durare did not build (see $dir/durare-build.err); leaving it out"
        sides=${sides/durare/}
    fi
fi

# --- one run of one side -------------------------------------------------------------------
# Each prints JSON lines {side, store, mode, calls, concurrency, calls_per_s, p50_us, p99_us,
# executions}; the rounds loop below adds the round and appends them to $results.
idem_json() { # the bench's last line -> the common fields
    tail -n 1 | "$python" -c '
import json, sys
j = json.loads(sys.stdin.read())
side, store, mode = sys.argv[1:4]
print(json.dumps({"side": side, "store": store, "mode": mode, "calls": j["calls"],
  "concurrency": j["concurrency"], "seconds": j["seconds"], "calls_per_s": j["calls_per_s"],
  "p50_us": j["p50_us"], "p99_us": j["p99_us"], "executions": j["executions"]}))' "$@"
}

idem_run() { # store url, store name, concurrency
    local url=$1 store=$2 c=$3 fresh=()
    [[ $store == postgres ]] && fresh=(--fresh on)
    [[ $store == redis ]] && unlink_keys 4 'idem-peers:*'
    local common=(--store "$url" --calls "$calls" --concurrency "$c" --rounds 1 --baseline off)
    "$bench" "${common[@]}" "${fresh[@]}" --mode miss --cache off 2>>"$log" | idem_json idem "$store" miss
    "$bench" "${common[@]}" "${fresh[@]}" --mode hit --cache off 2>>"$log" | idem_json idem "$store" replay
    "$bench" "${common[@]}" "${fresh[@]}" --mode hit --cache on 2>>"$log" | idem_json idem-cache "$store" replay
}

side_run() { # side, concurrency
    local c=$2
    case $1 in
    idem-postgres) idem_run "$pg/test?sslmode=disable&idem_schema=idem_peers" postgres "$c" ;;
    idem-redis) idem_run "$redis/4?idem_prefix=idem-peers:" redis "$c" ;;
    dbos)
        fresh_db dbos_bench
        "$venv/bin/python" "$here/peer.py" --peer dbos --calls "$calls" --warm "$warm" \
            --concurrency "$c" --url "${pg/postgres:/postgresql:}/dbos_bench?sslmode=disable" 2>>"$log"
        ;;
    durare)
        fresh_db durare_bench
        "$durare_bin" --calls "$calls" --warm "$warm" --concurrency "$c" \
            --url "$pg/durare_bench?sslmode=disable" 2>>"$log"
        ;;
    powertools)
        for cache in off on; do
            unlink_keys 5 'peers-powertools*'
            "$venv/bin/python" "$here/peer.py" --peer powertools --calls "$calls" --warm "$warm" \
                --concurrency "$c" --cache "$cache" --url "$redis/5" 2>>"$log"
        done
        ;;
    esac
}

# --- rounds: every side once per round and concurrency, the order rotated each round --------
read -ra order <<<"$sides"
say "N=$calls, warm-up $warm, rounds $rounds, callers: $concurrencies, sides: ${order[*]}"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
say "load average before: $load_before"
for ((r = 1; r <= rounds; r++)); do
    for c in $concurrencies; do
        for ((k = 0; k < ${#order[@]}; k++)); do
            side=${order[$(((k + r - 1) % ${#order[@]}))]}
            say "round $r/$rounds, $c caller(s): $side (load $(cut -d' ' -f1 /proc/loadavg))"
            side_run "$side" "$c" | "$python" -c '
import json, sys
for line in sys.stdin:
    if line.startswith("{"):
        j = json.loads(line); j["round"] = int(sys.argv[1]); print(json.dumps(j), flush=True)
' "$r" >>"$results"
        done
    done
done
unlink_keys 4 'idem-peers:*'
unlink_keys 5 'peers-powertools*'
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
say "load average after: $load_after"
say "results: $results"

"$python" "$here/table.py" "$results"

echo
echo "Load average (1, 5, 15 min): before $load_before, after $load_after; $(nproc) CPUs."
echo "Versions: idem $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?'), $(rustc --version)"
if [[ -x "$venv/bin/python" ]]; then
    echo "Python $("$venv/bin/python" -c 'import platform; print(platform.python_version())'):" \
        "$("$venv/bin/pip" list 2>/dev/null | awk 'tolower($1) ~ /^(dbos|aws[-_]lambda[-_]powertools|redis|boto3|sqlalchemy|psycopg)$/ {printf "%s%s %s", sep, $1, $2; sep = ", "}')"
fi
want durare && echo "durare $(awk '/^name = "durare"$/ {getline; print $3}' "$here/durare/Cargo.lock" | tr -d '"')"
echo "PostgreSQL $(psql "$pg/postgres?sslmode=disable" -qAtX -c 'show server_version'), synchronous_commit" \
    "$(psql "$pg/postgres?sslmode=disable" -qAtX -c 'show synchronous_commit');" \
    "Redis $(rcli info server | awk -F: '/^redis_version/ {print $2}' | tr -d '\r'), appendonly" \
    "$(rcli config get appendonly | tail -n 1), save '$(rcli config get save | tail -n 1)'"
