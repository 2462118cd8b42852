#!/usr/bin/env bash
# Runs zerogpud under valgrind through a few hundred leases (grants, queueing,
# gangs, an expiry, a client killed with -9, shutdown with leases held) and
# fails on any memory error or leak. As root it gates the (fake) devices too:
# apps launched under the gate, a process parked and let go. Residents: kept,
# handed over warm, evicted. Event streams: one whose client goes away, one ended
# by the shutdown; the dashboard's files.
# Usage: tests/valgrind_daemon.sh BUILD_DIR
set -euo pipefail
build=$(cd "${1:?usage: valgrind_daemon.sh BUILD_DIR}" && pwd)
dir=$(mktemp -d)
trap 'kill -9 ${holder:-} ${events1:-} ${events2:-} 2>/dev/null || true; kill $vg 2>/dev/null || true; rm -rf "$dir"' EXIT
sock=$dir/zerogpud.sock
cli() { "$build/src/cli/zerogpu" --socket "$sock" "$@"; }

gate=(--gate off)
if [ "$(id -u)" = 0 ]; then
	# GPU 0's node has /dev/full's numbers, so that a process can hold it open.
	mknod "$dir/nvidia0" c 1 7 && mknod "$dir/nvidia1" c 195 1
	gate=(--gate cgroup --device-dir "$dir" --cgroup-root "zgpu-valgrind-$$")
fi
valgrind --quiet --leak-check=full --show-leak-kinds=definite,indirect \
	--errors-for-leak-kinds=definite,indirect --error-exitcode=99 \
	"$build/src/daemon/zerogpud" --simulate 2x80G --socket "$sock" --state-dir "$dir/state" \
	--grace 0.5 --log-level warn --spaces-app demo --spaces-ping-interval 0.2 "${gate[@]}" \
	--visitor-secret "a visitor secret for the valgrind run, 32+ bytes" \
	2>"$dir/valgrind.log" &
vg=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done

curl -sN --unix-socket "$sock" http://x/v1/events >"$dir/events1.txt" & events1=$!
curl -sN --unix-socket "$sock" http://x/v1/events >"$dir/events2.txt" & events2=$!
curl -s --unix-socket "$sock" -o "$dir/index.html" http://x/ui/ && grep -q 'src="app.js"' "$dir/index.html"
curl -s --unix-socket "$sock" -o "$dir/app.js" http://x/ui/app.js && grep -q EventSource "$dir/app.js"
for i in $(seq 40); do cli run -q -n $((i % 2 + 1)) -- true; done
kill $events1; wait $events1 2>/dev/null || true
grep -q 'event: lease' "$dir/events1.txt"
jobs=()
for _ in $(seq 6); do cli run -q -- sleep 0.2 & jobs+=($!); done
wait "${jobs[@]}"
cli run -q -d 0.3 -- sleep 10 || [ $? -eq 124 ]
"$build/src/cli/zerogpu" --socket "$sock" run -q -d 60 -- sleep 100 & holder=$!
sleep 0.5; kill -9 $holder; wait $holder 2>/dev/null || true
if [ "$(id -u)" = 0 ]; then
	# A process of app "parker" opens GPU 0 while the app holds both GPUs, keeps it open
	# after the lease ends (parked), and runs again with the app's next lease.
	cli run -q --app parker -n 2 -s xlarge -d 30 -- sleep 2 & lease=$!
	sleep 0.8
	(cd "$dir" && exec "$build/src/cli/zerogpu" --socket "$sock" launch --app parker -- \
		sh -c 'exec 3< nvidia0; echo opened; exec sleep 30') </dev/null >"$dir/holder.txt" &
	holder=$!
	wait $lease
	grep -q opened "$dir/holder.txt"
	curl -s --unix-socket "$sock" http://x/v1/status | grep -q '"parked": *1'
	# Within the app's next lease it runs; after it, it is parked again.
	cli run -q --app parker -n 2 -s xlarge -- sh -c \
		"curl -s --unix-socket '$sock' http://x/v1/status | grep -q '\"parked\": *0'"
	curl -s --unix-socket "$sock" http://x/v1/status | grep -q '"parked": *1'
	kill -9 $holder; wait $holder 2>/dev/null || true
fi

# Residents: a worker kept after its lease, handed over warm to its app's next lease,
# kept again, then evicted by another app's call that needs the memory.
hold_lease() { # app memory_gib file: opens a lease stream into file; prints its id
	curl -sN --unix-socket "$sock" -X POST \
		-d "{\"app\":\"$1\",\"task\":\"f\",\"memory_bytes\":$(($2 << 30))}" \
		http://x/v1/leases >"$3" &
	for _ in $(seq 100); do grep -qs '"lease"' "$3" && break; sleep 0.05; done
	sed -n 's/.*"lease":"\([0-9a-f]*\)".*/\1/p' "$3" | head -1
}
sleep 300 & worker=$!
id=$(hold_lease keeper 60 "$dir/k1")
curl -s --unix-socket "$sock" -X POST -d "{\"pid\":$worker}" "http://x/v1/leases/$id/attach" >/dev/null
curl -s --unix-socket "$sock" -X DELETE "http://x/v1/leases/$id?keep=1" | grep -q '"kept":true'
id=$(hold_lease keeper 60 "$dir/k2")
grep -q '"warm":true' "$dir/k2"
curl -s --unix-socket "$sock" -X DELETE "http://x/v1/leases/$id?keep=1" | grep -q '"kept":true'
curl -s --unix-socket "$sock" http://x/v1/devices | grep -q "\"pid\":$worker"
cli run -q --app evictor -s xlarge -n 2 -- true # both whole GPUs: the worker goes
rc=0; wait $worker 2>/dev/null || rc=$?
[ $rc -eq 137 ] # killed: evicted

# The visitor gateway: a tier, tokens minted for a user and an address (root may, on the
# Unix socket), a bad address refused.
cli visitor tier user:vera pro >/dev/null
for who in "-H X-Auth-Request-User:vera" ""; do
	curl -s --unix-socket "$sock" -H "X-Real-IP: 203.0.113.5" $who \
		http://x/v1/visitor-token | grep -q '"token"'
done
curl -s --unix-socket "$sock" -H "X-Forwarded-For: 1.2.3.4, 5.6.7.8" \
	http://x/v1/visitor-token | grep -q 'several addresses'

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
wait $events2 || true # its stream ended with the daemon
grep -q 'event: snapshot' "$dir/events2.txt" && grep -q '"kind":"ended"' "$dir/events2.txt"
if [ $rc -ne 0 ] || grep -q "ERROR SUMMARY: [1-9]" "$dir/valgrind.log"; then
	cat "$dir/valgrind.log" >&2
	echo "valgrind: zerogpud exited $rc with errors" >&2
	exit 1
fi
echo "valgrind: zerogpud clean (no errors, no leaks)"
