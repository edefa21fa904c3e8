#!/usr/bin/env bash
# Two geosip builds side by side under the same authenticated-REGISTER load, so that the
# machine's drift hits both: server CPU per authenticated REGISTER of each, and B/A.
#
#   cp "$CARGO_TARGET_DIR/release/geosip" /tmp/geosip-A    # before the change
#   ... change, cargo build --release -p geosip ...
#   bench/ab.sh /tmp/geosip-A "$CARGO_TARGET_DIR/release/geosip"
#
# Env: OUT (a bench/auth.sh output directory: its users, subscriber data and geosip arguments,
#      so a `PG=1 bench/auth.sh` run makes both builds read PostgreSQL; default the newest
#      /tmp/geosip-auth-*), RATE (1500 per instance), N (20000), ROUNDS (3),
#      GSET (more `--set key=value` for both, space-separated).
# Run the same binary as A and B once first: B/A then shows the noise (about ±3 % here).
set -euo pipefail
A=${1:?usage: bench/ab.sh BINARY_A BINARY_B}; B=${2:?usage: bench/ab.sh BINARY_A BINARY_B}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT=${OUT:-$(ls -d /tmp/geosip-auth-* 2>/dev/null | tail -1)}
[[ -f "$OUT/users.csv" && -d "$OUT/gdata" && -f "$OUT/geosip.args" ]] \
    || { echo "run bench/auth.sh first (or set OUT)" >&2; exit 1; }
RATE=${RATE:-1500}; N=${N:-20000}; ROUNDS=${ROUNDS:-3}
mapfile -t SETS <"$OUT/geosip.args"
for kv in ${GSET:-}; do SETS+=(--set "$kv"); done
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
for r in $(seq "$ROUNDS"); do
    P=()
    for i in 0 1; do
        bin=$A; [[ $i == 1 ]] && bin=$B
        rm -rf "$OUT/ab-$i"; cp -r "$OUT/gdata" "$OUT/ab-$i"
        "$bin" run --listen "udp:127.0.0.1:$((5066 + 10 * i))" --admin "127.0.0.1:$((5086 + 10 * i))" \
            --data-dir "$OUT/ab-$i" "${SETS[@]}" >"$OUT/ab-$i.log" 2>&1 &
        P+=($!)
    done
    sleep 1
    a0=$(cpu "${P[0]}"); b0=$(cpu "${P[1]}")
    S=()
    for i in 0 1; do
        sipp "127.0.0.1:$((5066 + 10 * i))" -sf "$ROOT/bench/scenarios/register_auth.xml" -inf "$OUT/users.csv" \
            -r "$RATE" -m "$N" -i 127.0.0.1 -p "$((6100 + 100 * i))" -nostdin -timeout 120s >/dev/null 2>&1 &
        S+=($!)
    done
    wait "${S[0]}" || true; wait "${S[1]}" || true
    a1=$(cpu "${P[0]}"); b1=$(cpu "${P[1]}")
    kill "${P[0]}" "${P[1]}"; wait "${P[0]}" "${P[1]}" 2>/dev/null || true
    python3 -c "import sys; a0,a1,b0,b1,n=map(float,sys.argv[1:]); a=(a1-a0)/n*1e6; b=(b1-b0)/n*1e6; print(f'A {a:.1f} us  B {b:.1f} us  B/A {b/a:.3f}')" \
        "$a0" "$a1" "$b0" "$b1" "$N"
done
