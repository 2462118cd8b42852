"""Every bad input gets a JSON error with the right status and a precise message, and changes nothing."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from nobody import public_dir  # noqa: F401 (a fixture)

BAD_LEASE_REQUESTS = [
    (b"{", 400, "request body is not valid JSON"),
    (b"[]", 400, "request body must be a JSON object, not an array"),
    (b'{"gpus": "2"}', 400, "field 'gpus' must be an integer, not a string"),
    (b'{"duration_s": true}', 400, "field 'duration_s' must be a number of seconds, not a boolean"),
    (b'{"duration_s": 0}', 400, "duration_s must be greater than 0 (got 0)"),
    (b'{"duration_s": -3}', 400, "duration_s must be greater than 0 (got -3)"),
    (b'{"duration_s": 1e-9}', 400, "field 'duration_s' must be at least 0.001 s (a millisecond), not 1e-09"),
    (b'{"duration_s": 900}', 400, "duration 900 s is above this server's maximum of 300 s"),
    (b'{"gpus": 5}', 400, "gpus 5 is more than the 4 GPUs this machine has"),
    (b'{"gpus": 0}', 400, "gpus must be at least 1 (got 0)"),
    (b'{"size": "medium"}', 400, "unknown size 'medium': use 'large' (half a GPU) or 'xlarge' (a whole GPU)"),
    (b'{"colour": "red"}', 400, "unknown field 'colour'"),
    (b'{"app": "no spaces"}', 400, "app name 'no spaces' is not valid"),
    (b'{"max_wait_s": 99999}', 400, "max_wait_s must be between 0 and 3600 s (got 99999)"),
]


@pytest.mark.parametrize("body,status,message", BAD_LEASE_REQUESTS)
def test_bad_lease_requests(daemon4, body, status, message):
    got, reply = daemon4.call("POST", "/v1/leases", body)
    assert got == status
    assert reply["error"]["code"] == "bad_request"
    assert message in reply["error"]["message"]
    # Refused requests change nothing.
    _, st = daemon4.get("/v1/status")
    assert st["leases"] == [] and st["queue"] == []


def test_body_over_64_kib_is_413(daemon4):
    # Refused by the HTTP layer on the declared length, before the body is read: no
    # connection buffers more than 64 KiB of body.
    body = b'{"task": "' + b"x" * (64 * 1024) + b'"}'
    c = daemon4.http()
    try:
        c.send("POST", "/v1/leases", body)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the daemon may answer and close before the body is all written
    status, _ = c.read_head()
    c.close()
    assert status == 413
    ok = b'{"task": "' + b"x" * (64 * 1024 - 13) + b'"}'
    assert len(ok) == 64 * 1024 - 1
    status, reply = daemon4.call("POST", "/v1/leases", ok)
    assert status == 400 and "task" in reply["error"]["message"]  # read, parsed, refused
    _, st = daemon4.get("/v1/status")
    assert st["leases"] == [] and st["queue"] == []


def test_huge_body_is_refused_too(daemon4):
    # Refused on the declared length alone, before the body is read.
    c = daemon4.http()
    c.sock.sendall(b"POST /v1/leases HTTP/1.1\r\nHost: x\r\nContent-Length: 2097152\r\n\r\n")
    status, _ = c.read_head()
    assert status == 413
    c.close()


@pytest.mark.parametrize("method,path,status,code", [
    ("GET", "/v1/leases/0123456789abcdef0123456789abcdef", 404, "no_such_lease"),
    ("DELETE", "/v1/leases/nope", 404, "no_such_lease"),
    ("POST", "/v1/leases/nope/attach", 404, "no_such_lease"),
    ("GET", "/v2/anything", 404, "not_found"),
    ("PUT", "/v1/devices", 405, "method_not_allowed"),
    ("DELETE", "/v1/leases", 405, "method_not_allowed"),
])
def test_unknown_things(daemon4, method, path, status, code):
    got, reply = daemon4.call(method, path, {"pid": 1} if method == "POST" else None)
    assert got == status
    assert reply["error"]["code"] == code
    assert reply["error"]["message"]


def test_bad_release_flag(daemon4):
    c, ev = daemon4.acquire({})
    status, reply = daemon4.call("DELETE", f"/v1/leases/{ev['lease']}?fail=maybe")
    assert status == 400
    assert reply["error"]["message"] == "query parameter fail must be 1, 0, true or false (got 'maybe')"
    assert daemon4.busy_devices() != []
    c.close()


@pytest.mark.parametrize("body,message", [
    (b"{}", "field 'pid' is required"),
    (b'{"pid": "12"}', "field 'pid' must be an integer, not a string"),
    (b'{"pid": 0}', "pid must be a positive process id (got 0)"),
    (b'{"pid": 999999999}', "process 999999999 does not exist"),
])
def test_bad_attach(daemon4, body, message):
    c, ev = daemon4.acquire({})
    status, reply = daemon4.call("POST", f"/v1/leases/{ev['lease']}/attach", body)
    assert status == 400
    assert reply["error"]["message"] == message
    c.close()


def test_attach_of_a_queued_lease_is_409(daemon1):
    a, _ = daemon1.acquire({})
    b, ev = daemon1.acquire({})
    status, reply = daemon1.call("POST", f"/v1/leases/{ev['lease']}/attach", {"pid": os.getpid()})
    assert status == 409
    assert "still queued" in reply["error"]["message"]
    a.close()
    b.close()


# Runs as another uid: asks for a lease, then tries to attach a process it does not own.
AS_OTHER_USER = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, sys.argv[2])
    from conftest import UnixHTTP
    os.setgid(65534); os.setuid(65534)
    c = UnixHTTP(sys.argv[1])
    c.send("POST", "/v1/leases", {})
    c.read_head()
    lease = c.event()["lease"]
    other = UnixHTTP(sys.argv[1])
    print(json.dumps(other.request("POST", f"/v1/leases/{lease}/attach", {"pid": int(sys.argv[3])})))
    print(json.dumps(other.request("DELETE", f"/v1/leases/{sys.argv[4]}")))
""")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as a second uid")
def test_uid_checks_on_the_unix_socket(make_daemon, public_dir):
    # The socket must be reachable for uid 65534: a world-searchable directory.
    daemon4 = make_daemon("--simulate", "4x80G", socket_dir=public_dir)
    mine, ev = daemon4.acquire({})
    owned_by_root = subprocess.Popen(["sleep", "30"])
    try:
        out = subprocess.run(
            [sys.executable, "-c", AS_OTHER_USER, str(daemon4.socket),
             os.path.dirname(__file__), str(owned_by_root.pid), ev["lease"]],
            capture_output=True, text=True, timeout=20, check=True).stdout.splitlines()
    finally:
        owned_by_root.kill()
        owned_by_root.wait()
    status, reply = json.loads(out[0])
    assert status == 403
    assert reply["error"]["message"] == (
        f"process {owned_by_root.pid} belongs to uid 0, not to the caller (uid 65534)")
    status, reply = json.loads(out[1])
    assert status == 403
    assert "belongs to another client" in reply["error"]["message"]
    # Root's lease is untouched.
    assert ev["devices"][0]["index"] in daemon4.busy_devices()
    mine.close()


# Found by schemathesis (test_conformance.py): each a regression test.

def test_a_method_no_route_serves_is_a_json_405_that_closes(daemon4):
    """TRACE, OPTIONS, ...: a JSON 405 naming the methods the route serves, not libevent's
    HTML 501; and the connection closes, since evhttp reads no body after TRACE or HEAD
    and a body sent anyway must not be taken for the next request."""
    for method in ("TRACE", "OPTIONS", "HEAD", "PUT"):
        c = daemon4.http()
        try:
            c.send(method, "/v1/leases", b'{"pid": 1}')
            status, headers = c.read_head()
            assert status == 405, method
            assert headers["allow"] == "GET, POST"
            assert headers["connection"] == "close"
            if method != "HEAD":
                body = json.loads(c.read_body())
                assert body["error"]["code"] == "method_not_allowed"
                assert "it accepts GET, POST" in body["error"]["message"]
            with pytest.raises(EOFError):
                c.read_head()
        finally:
            c.close()


def test_path_segments_are_percent_decoded(daemon4):
    status, reply = daemon4.call("PUT", "/v1/visitors/user%3Aal%69ce/tier", {"tier": "pro"})
    assert (status, reply) == (200, {"visitor": "user:alice", "tier": "pro"})
    assert daemon4.get("/v1/visitors/user:alice/tier") == (200, reply)
    # %00 stays as it is (no name has a NUL), and so does a stray '%': refused by name.
    for seg in ("user%00x", "user%2"):
        status, reply = daemon4.get(f"/v1/visitors/{seg}/tier")
        assert status == 400 and f"'{seg}' is not a signed-in visitor" in reply["error"]["message"]


def test_an_overlong_path_segment_is_refused_by_the_route(daemon4):
    """Not a 404 'no such endpoint' for a path that exists: the route says what is wrong."""
    status, reply = daemon4.call("POST", "/v1/apps/" + "a" * 300 + "/join", {"pid": os.getpid()})
    assert status == 400, reply
    assert "app name" in reply["error"]["message"]


def test_error_messages_stay_json_whatever_bytes_they_quote(daemon4):
    """A message quoting bytes that are not UTF-8 (or cut mid-character) once came out as
    {}: jansson refuses such a string. They become '?'."""
    status, reply = daemon4.call("POST", "/allow?allowToken=%CE%A9%E2%89&pid=2")
    assert status == 400
    assert reply["error"]["code"] == "bad_request"
    assert "allowToken '\u03a9??'" in reply["error"]["message"]
