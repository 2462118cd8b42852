#!/usr/bin/env bash
# The instructions zerogpud executes per full lease cycle (acquire, grant, release),
# counted by callgrind: unlike wall-clock time, the count repeats on a noisy machine.
# Two runs of bench/lease_cycle of different lengths; the difference divided by the
# difference in cycles leaves out start-up and shutdown.
#
#	bench/cycle_instructions.sh [--follow] [DAEMON...]	(default: build/src/daemon/zerogpud)
#
# --follow: a client of GET /v1/events (curl) follows each daemon throughout, so the
# count includes rendering and sending every lease's events.
#
# Prints one line per daemon binary. Needs valgrind. Not a test.
set -euo pipefail
cd "$(dirname "$0")/.."
bench=build/bench/lease_cycle
[ -x "$bench" ] || { echo "cycle_instructions: build first (make build)" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "cycle_instructions: needs valgrind" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
follow=0
if [ "${1:-}" = --follow ]; then
	follow=1
	shift
	command -v curl >/dev/null || { echo "cycle_instructions: --follow needs curl" >&2; exit 1; }
fi
cat >"$tmp/daemon" <<'EOF'
#!/bin/bash
if [ "$CG_FOLLOW" = 1 ]; then
	# The daemon's socket is the argument after --socket; follow its event stream.
	prev=
	for a in "$@"; do [ "$prev" = --socket ] && sock=$a; prev=$a; done
	(for _ in $(seq 400); do [ -S "$sock" ] && break; sleep 0.05; done
	 exec curl -sN --unix-socket "$sock" http://x/v1/events >/dev/null) &
fi
exec valgrind --tool=callgrind --callgrind-out-file="$CG_DIR/callgrind.out.%p" "$CG_DAEMON" "$@"
EOF
chmod +x "$tmp/daemon"

# run DAEMON CYCLES -> "cycles instructions"
run() {
	rm -f "$tmp"/callgrind.out.*
	local out
	out=$(CG_DIR=$tmp CG_DAEMON=$1 CG_FOLLOW=$follow "$bench" --daemon "$tmp/daemon" --cycles "$2" --clients 1 \
		--seconds 0.05 2>&1) || { echo "$out" >&2; return 1; }
	local cycles ir
	cycles=$(echo "$out" | sed -n 's/^cycles: \([0-9]*\) single-client, \([0-9]*\) contended.*/\1+\2/p')
	ir=$(callgrind_annotate "$tmp"/callgrind.out.* | sed -n 's/^\([0-9,]*\) (100.0%).*PROGRAM TOTALS/\1/p' | tr -d ,)
	echo "$((cycles)) $ir"
}

[ $# -gt 0 ] || set -- build/src/daemon/zerogpud
for daemon in "$@"; do
	read -r c1 i1 < <(run "$daemon" 2000)
	read -r c2 i2 < <(run "$daemon" 6000)
	echo "$daemon: $(( (i2 - i1) / (c2 - c1) )) instructions per lease cycle ($c1 and $c2 cycles)"
done
