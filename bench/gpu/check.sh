#!/usr/bin/env bash
# The GPU checks of issue 5, in one call on a lent GPU machine (see docs/python.md):
#   bench/gpu/check.sh            results in $OUT (default ./gpu-check-out)
# Installs the package into a virtualenv that sees the machine's torch, runs
# bench/gpu/check.py (throughput: pinned peak, plain .cuda() loop, the package's
# path; correctness of the weights and a forward pass), and, when zerogpud builds
# here, starts it on the real GPU and times @zerogpu.GPU calls cold and warm, and
# residency: a kept worker's size as NVML says, an eviction and how long the driver
# took to free the memory (docs/residency.md).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1

echo "== machine"; date -u; nvidia-smi --query-gpu=name,memory.total,driver_version,pcie.link.gen.max,pcie.link.width.max --format=csv || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"

echo "== package"
python3 -m venv --system-site-packages /tmp/zgpu-venv && . /tmp/zgpu-venv/bin/activate
pip install -q --no-build-isolation . 2>&1 | tail -5 || pip install -q . 2>&1 | tail -5
python -c "import zerogpu; print('zerogpu', zerogpu.__version__)" || { echo "package did not install"; exit 1; }

echo "== daemon (optional: needs libevent, jansson, sqlite3, inih, openssl headers)"
sock=""
if meson setup /tmp/zgpu-build -Dtests=false >/tmp/zgpu-setup.log 2>&1 && ninja -C /tmp/zgpu-build >/tmp/zgpu-ninja.log 2>&1; then
	/tmp/zgpu-build/src/daemon/zerogpud --socket /tmp/zgpu.sock --state-dir /tmp/zgpu-state \
		--log-level info >"$OUT/zerogpud.log" 2>&1 &
	daemon=$!
	for _ in $(seq 50); do [ -S /tmp/zgpu.sock ] && break; sleep 0.1; done
	[ -S /tmp/zgpu.sock ] && sock=/tmp/zgpu.sock
	curl -s --unix-socket /tmp/zgpu.sock http://x/v1/devices | tee "$OUT/devices.json"; echo
else
	echo "zerogpud did not build here; call timings skipped"; tail -5 /tmp/zgpu-setup.log /tmp/zgpu-ninja.log
fi

echo "== checks"
python bench/gpu/check.py ${sock:+--socket "$sock" --daemon-log "$OUT/zerogpud.log"} >"$OUT/results.json"
rc=$?
cat "$OUT/results.json"
[ -n "${daemon:-}" ] && kill "$daemon"
exit $rc
