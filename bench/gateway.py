#!/usr/bin/env python3
"""What the visitor gateway costs (docs/gateway.md), measured side by side in one run:

1. minting: GET /v1/visitor-token against GET /healthz, alternating on one kept-alive
   TCP connection to zerogpud (what nginx's auth_request asks for every request);
2. a Gradio API call of examples/spaces-app (`gradio_client`, 0 s of work) through nginx
   with deploy/nginx/zerogpu.conf against the same call straight to Gradio, alternating.

    .venv/bin/python bench/gateway.py [--build build] [--mints N] [--calls N]

Needs nginx (scripts/install-deps) and the test venv (gradio, gradio_client, spaces).
"""
import argparse
import http.client
import os
import pathlib
import signal
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def line(name, xs):
    print(f"  {name:<34} p50 {pct(xs, .5) * 1e6:9.0f} us   p99 {pct(xs, .99) * 1e6:9.0f} us")


def mints(port, gateway, n):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    auth = {"Authorization": f"Bearer {gateway}", "X-Real-IP": "203.0.113.1"}
    mint, health = [], []
    for i in range(n):
        for path, headers, out in (("/v1/visitor-token", auth, mint), ("/healthz", {}, health)):
            t0 = time.perf_counter()
            conn.request("GET", path, headers=headers)
            r = conn.getresponse()
            r.read()
            out.append(time.perf_counter() - t0)
            assert r.status == 200, (path, r.status)
    conn.close()
    return mint, health


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default=str(ROOT / "build"))
    p.add_argument("--mints", type=int, default=5000)
    p.add_argument("--calls", type=int, default=40)
    a = p.parse_args()
    os.environ["ZEROGPU_BUILD"] = str(pathlib.Path(a.build).resolve())
    from conftest import SECRET, Daemon, free_tcp_port, start_gradio_app  # noqa: E402
    from gradio_client import Client  # noqa: E402
    from test_gateway import ADMIN, GATEWAY, nginx_config, wait_for_port  # noqa: E402
    import subprocess  # noqa: E402

    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        api, app_port, proxy = free_tcp_port(), free_tcp_port(), free_tcp_port()
        d = Daemon(tmp, "--simulate", "1x80G", "--listen", f"127.0.0.1:{api}", "--token",
                   ADMIN, "--gateway-token", GATEWAY, "--visitor-secret", SECRET,
                   "--spaces-app", "demo", "--log-level", "warn").start()
        app = nginx = None
        try:
            mint, health = mints(api, GATEWAY, a.mints)
            print(f"zerogpud, {a.mints} requests each, alternating on one connection:")
            line("GET /v1/visitor-token", mint)
            line("GET /healthz", health)
            print(f"  minting adds {(pct(mint, .5) - pct(health, .5)) * 1e6:.0f} us at the p50")

            env = dict(os.environ, SPACES_ZERO_GPU="true",
                       SPACES_ZERO_DEVICE_API_URL=f"http://127.0.0.1:{api}",
                       PORT=str(app_port), GRADIO_ANALYTICS_ENABLED="False")
            spaces_app = ROOT / "examples" / "spaces-app" / "app.py"
            app = start_gradio_app(spaces_app, env, tmp / "app.log", app_port,
                                   cwd=spaces_app.parent)
            conf = nginx_config(tmp, proxy, app_port, api)
            nginx = subprocess.Popen(["nginx", "-p", str(tmp), "-c", str(conf), "-g",
                                      f"daemon off; pid {tmp}/nginx.pid; "
                                      f"error_log {tmp}/nginx-error.log;"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            wait_for_port(proxy, nginx)
            through = Client(f"http://127.0.0.1:{proxy}/",
                             headers={"X-Forwarded-For": "203.0.113.2"}, verbose=False)
            direct = Client(f"http://127.0.0.1:{app_port}/", verbose=False)
            via, straight = [], []
            for i in range(a.calls + 2):
                for client, out in ((through, via), (direct, straight)):
                    t0 = time.perf_counter()
                    client.predict("x", 0, api_name="/generate")
                    if i >= 2:  # the first calls fork the workers
                        out.append(time.perf_counter() - t0)
            print(f"examples/spaces-app /generate (0 s of work), {a.calls} calls each, "
                  "alternating:")
            line("through nginx + auth_request", via)
            line("straight to Gradio", straight)
            print(f"  the gateway adds {(statistics.median(via) - statistics.median(straight)) * 1e3:.1f} ms "
                  "at the median")
        finally:
            if nginx:
                nginx.terminate()
                nginx.wait()
            if app:
                os.killpg(app.pid, signal.SIGTERM)
                app.wait(20)
            d.stop()


if __name__ == "__main__":
    main()
