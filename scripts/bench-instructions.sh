#!/usr/bin/env bash
# Instructions per sip-msg operation on the 1 KB INVITE, measured with callgrind.
# Usage: scripts/bench-instructions.sh [n]   (default n=2000)
# Runs `count <op> 0` and `count <op> n` under callgrind; (I(n) - I(0)) / n is the cost of one
# iteration with process start-up and setup removed.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-2000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --quiet --release -p sip-msg --example count
BIN="$CARGO_TARGET_DIR/release/examples/count"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
total() {
    valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.out" "$BIN" "$1" "$2" >/dev/null 2>"$TMP/err" \
        || { cat "$TMP/err" >&2; exit 1; }
    awk '/^(summary|totals):/ { print $2; exit }' "$TMP/cg.out"
}
printf '%-16s %12s\n' operation instructions
for op in parse_lenient parse routing_lenient routing validate validate_routing routing_again forward frame; do
    base="$(total "$op" 0)"
    full="$(total "$op" "$N")"
    printf '%-16s %12d\n' "$op" $(( (full - base) / N ))
done
