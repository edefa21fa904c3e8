#!/usr/bin/env bash
# geosip and Kamailio side by side, measured the same way with ../shared/bench (SIPp):
# server CPU per REGISTER and per call at fixed rates, and the highest rates at zero failures.
# Both run in the same window, one after the other, so the ratios are comparable; absolute
# figures move with whatever else the two shared cores are doing.
#
#   bench/compare.sh                  fixed-rate runs (about 3 minutes)
#   MAX=1 bench/compare.sh            also max-rate searches (about 20 minutes)
#   GEOSIP_ARGS="--set usrloc.db_mode=write-back" bench/compare.sh
#
# Env: REG_RATE (5000) CALL_RATE (500) DUR (15) RUNS (3) MODES ("register call")
#      OUT (/tmp/geosip-compare-<time>)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="${SHARED:-$ROOT/../shared/bench}"
[ -x "$SHARED/sipbench.py" ] || { echo "need $SHARED (the shared SIPp harness)" >&2; exit 1; }
REG_RATE=${REG_RATE:-5000}; CALL_RATE=${CALL_RATE:-500}; DUR=${DUR:-15}; RUNS=${RUNS:-3}
OUT=${OUT:-/tmp/geosip-compare-$(date +%Y%m%d-%H%M%S)}; mkdir -p "$OUT"
GPORT=5062; KPORT=5064; ADMIN=127.0.0.1:5082
export OUTDIR="$OUT/kamailio" KAM_PORT=$KPORT
mkdir -p "$OUTDIR"

BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/geosip"

g_start() {
    rm -rf "$OUT/gdata"
    # shellcheck disable=SC2086
    "$BIN" run --listen "udp:127.0.0.1:$GPORT" --admin "$ADMIN" --data-dir "$OUT/gdata" \
        --set usrloc.db_mode=memory --set 'pike.whitelist=["127.0.0.1"]' --set log.level=warn \
        ${GEOSIP_ARGS:-} >"$OUT/geosip.log" 2>&1 &
    echo $! >"$OUT/geosip.pid"
    for _ in $(seq 50); do grep -q "geosip ready" "$OUT/geosip.log" 2>/dev/null && return 0; sleep 0.1; done
    echo "geosip did not start; see $OUT/geosip.log" >&2; return 1
}
g_stop() { [ -s "$OUT/geosip.pid" ] && kill "$(cat "$OUT/geosip.pid")" 2>/dev/null; sleep 0.5; rm -f "$OUT/geosip.pid"; }
case "${1:-}" in
    g-start) g_start; exit ;; g-stop) g_stop; exit ;; g-restart) g_stop; g_start; exit ;;
    g-pids) [ -s "$OUT/geosip.pid" ] && cat "$OUT/geosip.pid"; exit ;;
esac

for p in sipp kamailio; do command -v $p >/dev/null || { echo "install $p (sip-tester, kamailio)" >&2; exit 1; }; done
cargo build --release -p geosip --manifest-path "$ROOT/Cargo.toml" >&2
KAM="$SHARED/run-kamailio-baseline.sh"
SB() { python3 "$SHARED/sipbench.py" --workdir "$OUT/runs" --log "$OUT/results.jsonl" --quiet-wait 10 --quiet-max-busy 40 "$@"; }
trap 'g_stop; "$KAM" kam-stop >/dev/null 2>&1 || true' EXIT

run_pair() { # mode rate
    local mode=$1 rate=$2 i
    for i in $(seq "$RUNS"); do
        OUT="$OUT" "$0" g-restart
        SB "$mode" --target "127.0.0.1:$GPORT" --uas-port 5070 --rate "$rate" --duration "$DUR" \
            --server-pids-cmd "OUT=$OUT $0 g-pids" | tail -1 | sed 's/^{/{"server":"geosip",/' >>"$OUT/pairs.jsonl"
        "$KAM" kam-restart >/dev/null
        SB "$mode" --target "127.0.0.1:$KPORT" --uas-port 5072 --rate "$rate" --duration "$DUR" \
            --server-pids-cmd "$KAM kam-pids" | tail -1 | sed 's/^{/{"server":"kamailio",/' >>"$OUT/pairs.jsonl"
        "$KAM" kam-stop >/dev/null
    done
    g_stop
}

{ echo "date: $(date -Is)"; echo "nproc: $(nproc)"; echo "geosip: $("$BIN" --version)"; echo "kamailio: $(kamailio -v | head -1)"; echo "GEOSIP_ARGS: ${GEOSIP_ARGS:-}"; } | tee "$OUT/machine.txt"
MODES=${MODES:-register call}
if [[ " $MODES " == *" register "* ]]; then
    echo "== REGISTER at $REG_RATE/s, $DUR s, $RUNS runs each"
    run_pair register "$REG_RATE"
fi
if [[ " $MODES " == *" call "* ]]; then
    echo "== calls at $CALL_RATE/s, $DUR s, $RUNS runs each"
    run_pair call "$CALL_RATE"
fi

if [[ -n "${MAX:-}" ]]; then
    echo "== max rates"
    g_start
    SB max --mode register --target "127.0.0.1:$GPORT" --start 5000 --probe-dur 5 --confirm-dur 10 --runs 2 \
        --server-pids-cmd "OUT=$OUT $0 g-pids" --reset-cmd "OUT=$OUT $0 g-restart" | tail -1 | sed 's/^{/{"server":"geosip",/' >>"$OUT/max.jsonl"
    SB max --mode call --target "127.0.0.1:$GPORT" --uas-port 5070 --start 1000 --probe-dur 5 --confirm-dur 10 --runs 2 \
        --server-pids-cmd "OUT=$OUT $0 g-pids" --reset-cmd "OUT=$OUT $0 g-restart" | tail -1 | sed 's/^{/{"server":"geosip",/' >>"$OUT/max.jsonl"
    g_stop
    "$KAM" kam-start >/dev/null
    SB max --mode register --target "127.0.0.1:$KPORT" --start 2000 --probe-dur 5 --confirm-dur 10 --runs 2 \
        --server-pids-cmd "$KAM kam-pids" --reset-cmd "$KAM kam-restart" | tail -1 | sed 's/^{/{"server":"kamailio",/' >>"$OUT/max.jsonl"
    SB max --mode call --target "127.0.0.1:$KPORT" --uas-port 5072 --start 500 --probe-dur 5 --confirm-dur 10 --runs 2 \
        --server-pids-cmd "$KAM kam-pids" --reset-cmd "$KAM kam-restart" | tail -1 | sed 's/^{/{"server":"kamailio",/' >>"$OUT/max.jsonl"
    "$KAM" kam-stop >/dev/null
fi

python3 - "$OUT" <<'PY'
import json, os, statistics, sys
d = sys.argv[1]
rows = [json.loads(l) for l in open(os.path.join(d, "pairs.jsonl")) if l.strip()]
def per_op(r):
    if not r.get("server_cpu_pct") or not r.get("achieved_rate"):
        return None
    return r["server_cpu_pct"] / 100 / r["achieved_rate"] * 1e6
print(f"\n=== geosip vs Kamailio ({d}) ===")
print(open(os.path.join(d, "machine.txt")).read().strip())
for mode in ("register", "call"):
    res = {}
    for srv in ("geosip", "kamailio"):
        rs = [r for r in rows if r.get("server") == srv and r.get("mode") == mode]
        us = [per_op(r) for r in rs if per_op(r)]
        res[srv] = (statistics.median(us) if us else None, rs)
        if rs:
            print(f"{mode:8} {srv:8}: server CPU per {'REGISTER' if mode == 'register' else 'call'} "
                  f"median {res[srv][0]:.1f} us (runs {[round(u,1) for u in us]}), rate {rs[0]['target_rate']}/s, "
                  f"pass {[r['pass'] for r in rs]}, failed {[r['failed'] for r in rs]}, other load {[r['other_cpu_pct'] for r in rs]}%")
    g, k = res["geosip"][0], res["kamailio"][0]
    if g and k:
        print(f"{mode:8} ratio geosip/kamailio = {g / k:.2f}")
p = os.path.join(d, "max.jsonl")
if os.path.exists(p):
    for l in open(p):
        r = json.loads(l)
        print(f"max {r['summary']:8} {r['server']:8}: {r['max_rate']}/s at zero failures (server CPU {r.get('server_cpu_pct_median')}%)")
PY
