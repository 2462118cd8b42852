"""API conformance: schemathesis against docs/openapi.yaml on a live daemon, over TCP
with the admin token, the native and the `spaces` routes alike.

It generates requests from the spec (valid ones, and ones that break it), sends them,
and checks every reply: no server error (5xx, and no 501 to a method the spec does not
list: that is a JSON 405), a status the spec documents for the route, a body and headers
that match its schema, the content type it names, and no reply slower than the request
timeout (a hang). Requests that break the spec must be refused with a 4xx. Stateful
runs follow the spec's links (an app made, then used and deleted).

Leases are kept short (--max-duration 2, --grace 0.5) so that a granted lease's stream
ends within the request timeout; eight simulated GPUs keep requests from queueing.
ZEROGPU_SCHEMATHESIS_SEED replays one run; ZEROGPU_SCHEMATHESIS_EXAMPLES sets how many
requests per route (default 15).
"""
import os
import subprocess
import sys
import pathlib

from conftest import ROOT, free_tcp_port

ADMIN = "conformance-admin-token-0123456789abcdef"
CHECKS = ["not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance",
          "negative_data_rejection", "unsupported_method", "ignored_auth"]


def test_openapi_conformance(make_daemon, tmp_path):
    port = free_tcp_port()
    make_daemon("--simulate", "8x80G", "--split", "2", "--gate", "off",
                "--listen", f"127.0.0.1:{port}", "--token", ADMIN,
                "--max-duration", "2", "--grace", "0.5", "--default-max-wait", "1",
                "--visitor-secret", "conformance-visitor-secret-0123456789",
                "--spaces-app", "demo")
    st = pathlib.Path(sys.executable).parent / "st"
    cmd = [str(st), "--no-color", "--config-file", str(ROOT / "tests/e2e/schemathesis.toml"),
           "run", str(ROOT / "docs/openapi.yaml"), "--url", f"http://127.0.0.1:{port}",
           "-H", f"Authorization: Bearer {ADMIN}", "--checks", ",".join(CHECKS),
           "--max-examples", os.environ.get("ZEROGPU_SCHEMATHESIS_EXAMPLES", "15"),
           "--request-timeout", "10", "--workers", "1",
           # The event stream never ends while the daemon runs: test_events.py reads it.
           "--exclude-path", "/v1/events",
           "--report", "junit", "--report-junit-path", str(tmp_path / "schemathesis.xml")]
    if os.environ.get("ZEROGPU_SCHEMATHESIS_SEED"):
        cmd += ["--seed", os.environ["ZEROGPU_SCHEMATHESIS_SEED"]]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    summary = r.stdout[-6000:]
    assert r.returncode == 0, f"schemathesis found failures:\n{summary}\n{r.stderr[-2000:]}"
    assert "27/27" in r.stdout or "Selected:" in r.stdout, summary
