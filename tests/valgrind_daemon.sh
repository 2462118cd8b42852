#!/usr/bin/env bash
# Runs zerogpud under valgrind through a few hundred leases (grants, queueing,
# gangs, an expiry, a client killed with -9, shutdown with leases held) and
# fails on any memory error or leak.
# Usage: tests/valgrind_daemon.sh BUILD_DIR
set -euo pipefail
build=${1:?usage: valgrind_daemon.sh BUILD_DIR}
dir=$(mktemp -d)
trap 'kill $vg 2>/dev/null || true; rm -rf "$dir"' EXIT
sock=$dir/zerogpud.sock
cli() { "$build/src/cli/zerogpu" --socket "$sock" "$@"; }

valgrind --quiet --leak-check=full --show-leak-kinds=definite,indirect \
	--errors-for-leak-kinds=definite,indirect --error-exitcode=99 \
	"$build/src/daemon/zerogpud" --simulate 2x80G --socket "$sock" --state-dir "$dir/state" \
	--grace 0.5 --log-level warn --spaces-app demo --spaces-ping-interval 0.2 \
	2>"$dir/valgrind.log" &
vg=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done

for i in $(seq 40); do cli run -q -n $((i % 2 + 1)) -- true; done
jobs=()
for _ in $(seq 6); do cli run -q -- sleep 0.2 & jobs+=($!); done
wait "${jobs[@]}"
cli run -q -d 0.3 -- sleep 10 || [ $? -eq 124 ]
"$build/src/cli/zerogpu" --socket "$sock" run -q -d 60 -- sleep 100 & holder=$!
sleep 0.5; kill -9 $holder; wait $holder 2>/dev/null || true
"$build/src/cli/zerogpu" --socket "$sock" run -q -d 60 -- sleep 100 & held=$!
sleep 0.5
curl -s --unix-socket "$sock" http://x/metrics >/dev/null
curl -s --unix-socket "$sock" -X POST -d '{bad' http://x/v1/leases >/dev/null

# The spaces API with one GPU left: a grant, a queued caller who gives up, a queued
# caller who is granted when the first is released (its lease is held at shutdown).
spaces() { curl -s --unix-socket "$sock" -X POST "${@:2}" "http://x/$1"; }
allow_token() { sed -n 's/.*"allowToken":"\([0-9a-f]*\)".*/\1/p'; }
first=$(spaces 'schedule?durationSeconds=20' | allow_token)
spaces 'schedule?durationSeconds=5' -m 0.5 >/dev/null || true
spaces 'schedule?durationSeconds=5' >"$dir/queued.txt" & queued=$!
sleep 0.5
spaces "release?allowToken=$first" >/dev/null
wait $queued
grep -q 'event: succeeded' "$dir/queued.txt"
spaces 'schedule?gpuSize=huge' >/dev/null

kill -TERM $vg
rc=0; wait $vg || rc=$?
wait $held 2>/dev/null || true
if [ $rc -ne 0 ] || grep -q "ERROR SUMMARY: [1-9]" "$dir/valgrind.log"; then
	cat "$dir/valgrind.log" >&2
	echo "valgrind: zerogpud exited $rc with errors" >&2
	exit 1
fi
echo "valgrind: zerogpud clean (no errors, no leaks)"
