#!/usr/bin/env bash
# Authenticated REGISTER (401 challenge + REGISTER with MD5 credentials + 200), geosip and
# Kamailio (auth + auth_db) side by side: server CPU per authenticated registration.
#
#   bench/auth.sh                      geosip's subscriber table in the embedded SQLite
#   PG=1 bench/auth.sh                 geosip's subscriber table in PostgreSQL (127.0.0.1:5432)
#   SIDE=1 bench/auth.sh               both servers at the same time, each with its own SIPp,
#                                      so that the machine's drift hits both alike
# Env: USERS (20000) RATE (2000) RUNS (3) OUT (/tmp/geosip-auth-<time>)
#      GEOSIP_SET: more `--set` for geosip, space-separated (e.g. "auth.batch_reads=false")
# Kamailio reads its subscriber table with db_sqlite (package kamailio-sqlite-modules), or with
# db_postgres (kamailio-postgres-modules) when PG=1, one query per authentication, as auth_db
# does: both servers read the same kind of database.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
USERS=${USERS:-20000}; RATE=${RATE:-2000}; RUNS=${RUNS:-3}
OUT=${OUT:-/tmp/geosip-auth-$(date +%Y%m%d-%H%M%S)}; mkdir -p "$OUT"
GPORT=5066; KPORT=5068
command -v sipp >/dev/null && command -v kamailio >/dev/null && command -v sqlite3 >/dev/null \
    || { echo "needs sipp, kamailio (+ kamailio-sqlite-modules) and sqlite3" >&2; exit 1; }
cargo build --release -p geosip --manifest-path "$ROOT/Cargo.toml" >&2
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/geosip"

# Users: uNNNNNNN with password pw-NNNNNNN, domain 127.0.0.1 (the realm SIPp's To gives).
# SIPp does not expand [field] inside [authentication]; the keyword itself is the injected field.
python3 - "$OUT" "$USERS" <<'PY'
import hashlib, sys
d, n = sys.argv[1], int(sys.argv[2])
with open(f"{d}/users.csv", "w") as sipp, open(f"{d}/subscribers.csv", "w") as g, open(f"{d}/kam.sql", "w") as k:
    sipp.write("SEQUENTIAL\n")
    k.write("CREATE TABLE version (table_name VARCHAR(32) NOT NULL, table_version INTEGER DEFAULT 0 NOT NULL);\n")
    k.write("INSERT INTO version VALUES ('subscriber', 7);\n")
    k.write("CREATE TABLE subscriber (id INTEGER PRIMARY KEY, username VARCHAR(64) DEFAULT '' NOT NULL, domain VARCHAR(64) DEFAULT '' NOT NULL, password VARCHAR(64) DEFAULT '' NOT NULL, ha1 VARCHAR(128) DEFAULT '' NOT NULL, ha1b VARCHAR(128) DEFAULT '' NOT NULL);\n")
    k.write("CREATE UNIQUE INDEX account_idx ON subscriber (username, domain);\nBEGIN;\n")
    for i in range(n):
        u, p = f"u{i:07d}", f"pw-{i:07d}"
        sipp.write(f"{u};[authentication username={u} password={p}];\n")
        g.write(f"{u}@127.0.0.1,{p}\n")
        ha1 = hashlib.md5(f"{u}:127.0.0.1:{p}".encode()).hexdigest()
        k.write(f"INSERT INTO subscriber (username, domain, password, ha1, ha1b) VALUES ('{u}', '127.0.0.1', '', '{ha1}', '');\n")
    k.write("COMMIT;\n")
PY
rm -f "$OUT/kam.db"; sqlite3 "$OUT/kam.db" <"$OUT/kam.sql"
KDB="sqlite://$OUT/kam.db"; KDEF=()
if [[ -n "${PG:-}" ]]; then
    KDBNAME="kamailio_bench_auth"
    psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $KDBNAME" -c "CREATE DATABASE $KDBNAME" >/dev/null
    sed 's/id INTEGER PRIMARY KEY/id SERIAL PRIMARY KEY/' "$OUT/kam.sql" | psql -h 127.0.0.1 -U postgres -q "$KDBNAME" >/dev/null
    KDB="postgres://postgres@127.0.0.1:5432/$KDBNAME"; KDEF=(-A KAM_PG)
fi

GARGS=(--set auth.enabled=true --set 'auth.algorithms=["MD5"]' --set usrloc.db_mode=memory
       --set 'pike.whitelist=["127.0.0.1"]' --set log.level=warn)
for kv in ${GEOSIP_SET:-}; do GARGS+=(--set "$kv"); done
if [[ -n "${PG:-}" ]]; then
    DB="geosip_bench_auth"
    psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null
    GARGS+=(--set "auth.db_url=postgres://postgres@127.0.0.1:5432/$DB")
fi
# bench/ab.sh runs its two builds with the same arguments.
printf '%s\n' "${GARGS[@]}" >"$OUT/geosip.args"
rm -rf "$OUT/gdata"
"$BIN" subscriber import --data-dir "$OUT/gdata" "${GARGS[@]}" "$OUT/subscribers.csv" >&2

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
measure() { # name target pids...
    local name=$1 target=$2; shift 2
    local c0 c1 t0 t1
    c0=$(cpu "$@"); t0=$(date +%s.%N)
    sipp "$target" -sf "$ROOT/bench/scenarios/register_auth.xml" -inf "$OUT/users.csv" -r "$RATE" -m "$USERS" \
        -i 127.0.0.1 -p "${SPORT:-5060}" -nostdin -timeout 120s -timeout_error -trace_stat -stf "$OUT/$name-stat.csv" >/dev/null 2>&1 || true
    c1=$(cpu "$@"); t1=$(date +%s.%N)
    python3 - "$OUT/$name-stat.csv" "$name" "$c0" "$c1" "$t0" "$t1" "$USERS" <<'PY' | tee -a "$OUT/results.txt"
import sys
f, name, c0, c1, t0, t1, n = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:7]), int(sys.argv[7])
rows = [l.rstrip("\n").split(";") for l in open(f)]
h, v = rows[0], rows[-1]
g = lambda k: int(v[h.index(k)]) if k in h else 0
ok, fail = g("SuccessfulCall(C)"), g("FailedCall(C)")
us = (c1 - c0) / max(ok, 1) * 1e6
print(f"{name:10} {ok}/{n} ok, {fail} failed, server CPU {c1 - c0:.2f} s over {t1 - t0:.1f} s: "
      f"{us:.1f} us per authenticated REGISTER")
open(f.replace("-stat.csv", ".us"), "w").write(f"{us}\n")
PY
}
ratio() {
    python3 -c "import sys; g, k = (float(open(f).read()) for f in sys.argv[1:]); print(f'ratio      {g / k:.2f}')" \
        "$OUT/geosip.us" "$OUT/kamailio.us" | tee -a "$OUT/results.txt"
}
start_kamailio() {
    kamailio -DD -E -f "$ROOT/bench/kamailio-auth.cfg" -m 1024 -M 64 -A "KAM_PORT=$KPORT" -A 'KAM_CHILDREN=4' \
        -A "KAM_CTL=\"unix:$OUT/kam.sock\"" -A "KAM_DB=\"$KDB\"" "${KDEF[@]}" >"$OUT/kamailio.log" 2>&1 &
    KPID=$!
}

for i in $(seq "$RUNS"); do
    if [[ -n "${SIDE:-}" ]]; then
        "$BIN" run --listen "udp:127.0.0.1:$GPORT" --admin 127.0.0.1:5086 --data-dir "$OUT/gdata" "${GARGS[@]}" >"$OUT/geosip.log" 2>&1 &
        GPID=$!; start_kamailio; sleep 2
        SPORT=6100 measure geosip "127.0.0.1:$GPORT" "$GPID" &
        M1=$!
        SPORT=6200 measure kamailio "127.0.0.1:$KPORT" "$KPID" $(ps -o pid= --ppid "$KPID") &
        M2=$!
        wait "$M1" "$M2"
        kill "$GPID" "$KPID"; wait "$GPID" "$KPID" 2>/dev/null || true; sleep 1
        ratio
        continue
    fi
    "$BIN" run --listen "udp:127.0.0.1:$GPORT" --admin 127.0.0.1:5086 --data-dir "$OUT/gdata" "${GARGS[@]}" >"$OUT/geosip.log" 2>&1 &
    GPID=$!; sleep 1
    measure geosip "127.0.0.1:$GPORT" "$GPID"
    kill "$GPID"; wait "$GPID" 2>/dev/null || true
    start_kamailio; sleep 2
    measure kamailio "127.0.0.1:$KPORT" "$KPID" $(ps -o pid= --ppid "$KPID")
    kill "$KPID"; wait "$KPID" 2>/dev/null || true; sleep 1
    ratio
done
echo "results in $OUT/results.txt"
