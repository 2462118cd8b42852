#!/usr/bin/env python3
"""GPU checks of the zerogpu package on a real card (bench/gpu/check.sh runs this).

Measures host-to-device throughput three ways on the same weights:
  peak     one pinned buffer, one copy: what the card and bus can do
  loop     a plain `p.data = p.data.cuda()` loop over pageable parameters
  zerogpu  the package's path: the model placed "on cuda" in the app process (shared
           arena), then moved by a forked worker before its first call
and checks that the weights on the GPU equal the originals and a forward pass
matches the CPU's. With --socket (a running zerogpud on this GPU) it also times
@zerogpu.GPU calls, cold (fork + weights) and warm (nothing copied).
Prints one JSON object.
"""
import argparse
import json
import os
import sys
import time
import traceback


def model_of(torch, gib, dtype):
    """Linear layers of 4096x4096 adding up to about gib GiB, seeded."""
    torch.manual_seed(0)
    per = 4096 * 4096 * torch.finfo(dtype).bits // 8
    layers = max(1, int(gib * (1 << 30) // per))
    return torch.nn.Sequential(*[torch.nn.Linear(4096, 4096, bias=False) for _ in range(layers)]).to(dtype)


def nbytes(model):
    return sum(p.numel() * p.element_size() for p in model.parameters())


def checksums(model):
    return [float(p.double().sum()) for p in model.parameters()]


def peak(torch, size):
    host = torch.empty(size, dtype=torch.uint8, pin_memory=True)
    dev = torch.empty(size, dtype=torch.uint8, device="cuda")
    dev.copy_(host, non_blocking=True)  # warm-up
    torch.cuda.synchronize()
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        dev.copy_(host, non_blocking=True)
        torch.cuda.synchronize()
        best = max(best, size / (time.perf_counter() - t0))
    return best


def plain_loop(torch, gib, dtype):
    model = model_of(torch, gib, dtype)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for p in model.parameters():
        p.data = p.data.cuda()
    torch.cuda.synchronize()
    return nbytes(model) / (time.perf_counter() - t0)


def read_all(fd):
    data = b""
    while chunk := os.read(fd, 1 << 16):
        data += chunk
    os.close(fd)
    return data


def package_path(gib, dtype_name):
    """In a fresh process: zerogpu places the model, a forked 'worker' moves it."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            os.environ["ZEROGPU"] = "1"
            import torch
            import zerogpu  # noqa: F401 - patches torch: placement instead of CUDA
            from zerogpu import _torch
            model = model_of(torch, gib, getattr(torch, dtype_name))
            model.to("cuda")
            reference = checksums(model)
            x = torch.randn(8, 4096, dtype=getattr(torch, dtype_name))
            rr, ww = os.pipe()
            child = os.fork()
            if child == 0:  # the worker: what _worker._child does before a call
                os.close(rr)
                _torch.worker_started(simulated=False)
                _torch.worker_before_call()
                stats = _torch.transfer_stats()
                on_gpu = all(p.device.type == "cuda" for p in model.parameters())
                same = checksums(model) == reference
                with torch.no_grad():
                    y = model(x.cuda()).float().cpu()
                os.write(ww, json.dumps({"stats": stats, "on_gpu": on_gpu, "same": same,
                                         "y": y.flatten()[:64].tolist()}).encode())
                os._exit(0)
            os.close(ww)
            out = json.loads(read_all(rr))
            os.waitpid(child, 0)
            with torch.no_grad():  # the same forward on the CPU, in float32
                y_ref = torch.nn.Sequential(*[torch.nn.Linear(4096, 4096, bias=False) for _ in model])
                for a, b in zip(y_ref.parameters(), model.parameters()):
                    a.data = b.detach().float()
                ref = y_ref(x.float()).flatten()[:64]
            err = max(abs(a - b) / (abs(b) + 1e-3) for a, b in zip(out.pop("y"), ref.tolist()))
            out["max_rel_err_vs_cpu"] = err
            out["bytes"] = nbytes(model)
            os.write(w, json.dumps(out).encode())
        except BaseException:
            os.write(w, json.dumps({"error": traceback.format_exc()}).encode())
        os._exit(0)
    os.close(w)
    result = json.loads(read_all(r))
    os.waitpid(pid, 0)
    return result


def calls(socket_path, gib, dtype_name, n):
    """@zerogpu.GPU against a running zerogpud, in a fresh process."""
    import subprocess
    code = f"""
import json, sys, time, torch, zerogpu
from zerogpu import _torch
sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
from check import model_of
model = model_of(torch, {gib}, torch.{dtype_name})
model.to("cuda")

@zerogpu.GPU(duration=120)
def step():
    with torch.no_grad():
        model(torch.ones(1, 4096, dtype=torch.{dtype_name}, device="cuda"))
    return _torch.transfer_stats(), next(model.parameters()).device.type

t0 = time.monotonic(); first = step(); cold = time.monotonic() - t0
warm = []
for _ in range({n}):
    t0 = time.monotonic(); step(); warm.append(time.monotonic() - t0)
warm.sort()

@zerogpu.GPU(duration=60)
def returns_cuda():
    return {{"t": torch.arange(4.0, device="cuda") * 2}}

back = returns_cuda()["t"]  # a CUDA tensor in the worker: on the CPU here

small = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 16))
small.to("cuda")
x = torch.randn(8, 256)

@zerogpu.GPU(duration=60)
def run_small():
    with torch.no_grad():
        return small(x.to("cuda")), repr(small.forward)

@zerogpu.GPU(duration=300)
def compile_small():
    with zerogpu.aoti_capture(small) as call:
        small(x.to("cuda"))
    return zerogpu.aoti_compile(torch.export.export(small, args=call.args))

eager, _ = run_small()
t0 = time.monotonic(); compiled = compile_small(); compile_s = time.monotonic() - t0
zerogpu.aoti_apply(compiled, small)
aot, runs = run_small()
print(json.dumps({{"cold_s": cold, "first": first, "warm_p50_ms": warm[len(warm)//2] * 1e3,
                  "warm_p99_ms": warm[int(len(warm) * 0.99)] * 1e3,
                  "returned_tensor": [back.device.type, back.tolist()],
                  "aot": {{"device": compiled.device, "compile_s": compile_s, "runs": runs,
                          "max_abs_diff": float((aot - eager).abs().max())}}}}))
"""
    env = dict(os.environ, ZEROGPU_SOCKET=socket_path)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    if out.returncode:
        return {"error": out.stderr[-4000:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def residency(socket_path, log_path, gib, dtype_name):
    """Residency on the real GPU (docs/residency.md): app A's worker kept with its weights
    (the size NVML reports for it, against what its call asked for), its next call warm;
    then app B asks for all but half of it, so A's worker is evicted, and the daemon's
    log says how long the driver took to free its memory; A's next call is cold."""
    import subprocess

    def devices():
        out = subprocess.run(["curl", "-s", "--unix-socket", socket_path, "http://x/v1/devices"],
                             capture_output=True, text=True, timeout=10)
        return json.loads(out.stdout)["devices"]

    app_a = f"""
import json, sys, time, torch, zerogpu
sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
from check import model_of
model = model_of(torch, {gib}, torch.{dtype_name})
model.to("cuda")

@zerogpu.GPU(duration=60)
def step():
    with torch.no_grad():
        model(torch.ones(1, 4096, dtype=torch.{dtype_name}, device="cuda"))
    return __import__("os").getpid()

times = []
for _ in range(2):
    t0 = time.monotonic(); pid = step(); times.append(time.monotonic() - t0)
print(json.dumps({{"pid": pid, "cold_s": times[0], "warm_s": times[1],
                  "asked": zerogpu._decorator._memory_need()}}), flush=True)
sys.stdin.readline()  # wait while B evicts our worker, then call again: cold
t0 = time.monotonic(); again = step()
print(json.dumps({{"pid": again, "after_eviction_s": time.monotonic() - t0}}), flush=True)
"""
    env = dict(os.environ, ZEROGPU_SOCKET=socket_path, ZEROGPU_APP="resident-a")
    a = subprocess.Popen([sys.executable, "-c", app_a], env=env, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    first = json.loads(a.stdout.readline())
    kept = [r for d in devices() for r in d["residents"] if r["pid"] == first["pid"]]
    total = devices()[0]["memory_bytes"]
    app_b = """
import zerogpu
@zerogpu.GPU(duration=30)
def big():
    return 1
big()
"""
    # B needs all but half of what A's worker holds: A's worker must go.
    need = total - (kept[0]["bytes"] // 2 if kept else total // 20)
    env_b = dict(os.environ, ZEROGPU_SOCKET=socket_path, ZEROGPU_APP="resident-b",
                 ZEROGPU_MEMORY_BYTES=str(need))
    t0 = time.monotonic()
    b = subprocess.run([sys.executable, "-c", app_b], env=env_b, capture_output=True, text=True,
                       timeout=120)
    b_s = time.monotonic() - t0
    a.stdin.write("\n")
    a.stdin.flush()
    second = json.loads(a.stdout.readline())
    a.wait(60)
    freed = [line for line in open(log_path) if "evicted" in line]
    return {"first": first, "resident": kept, "b_call_s": b_s, "b_rc": b.returncode,
            "b_err": b.stderr[-2000:], "second": second, "evicted_lines": freed[-3:]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=4.0, help="weights to move (default 4 GiB)")
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--socket", help="a running zerogpud on this GPU, for the call timings")
    ap.add_argument("--daemon-log", help="its log (info level), for the residency check")
    args = ap.parse_args()
    results = {}

    def section(name, fn, *a):
        try:
            results[name] = fn(*a)
        except BaseException:  # noqa: BLE001 - record and go on to the next section
            results[name] = {"error": traceback.format_exc()}
        print(f"{name}: {results[name]}", file=sys.stderr, flush=True)

    import torch
    results["torch"] = torch.__version__
    results["device"] = torch.cuda.get_device_name(0)
    section("peak_pinned_GBps", lambda: peak(torch, 1 << 30) / 1e9)
    section("plain_loop_GBps", lambda: plain_loop(torch, args.gib, getattr(torch, args.dtype)) / 1e9)
    torch.cuda.empty_cache()
    section("zerogpu_path", package_path, args.gib, args.dtype)
    p = results.get("zerogpu_path", {})
    if isinstance(p, dict) and p.get("stats"):
        p["GBps"] = p["stats"]["bytes"] / p["stats"]["seconds"] / 1e9
    if args.socket:
        section("calls", calls, args.socket, min(args.gib, 2.0), args.dtype, 200)
    if args.socket and args.daemon_log:
        section("residency", residency, args.socket, args.daemon_log, min(args.gib, 2.0),
                args.dtype)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
