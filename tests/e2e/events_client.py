"""A reader of GET /v1/events (server-sent events) for the tests, over the Unix socket
or TCP, that checks every event against its schema in docs/openapi.yaml."""
import json
import socket
import time

import jsonschema
import yaml

from conftest import ROOT, UnixHTTP

SPEC = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
SCHEMAS = {"snapshot": "StreamSnapshot", "lease": "StreamLease", "quota": "StreamQuota",
           "resident": "StreamResident", "gate": "StreamGate"}


def validator(name):
    return jsonschema.Draft202012Validator({**SPEC, "$ref": f"#/components/schemas/{name}"})


VALIDATORS = {event: validator(name) for event, name in SCHEMAS.items()}


class TCPHTTP(UnixHTTP):
    """UnixHTTP's reader over a TCP connection."""

    def __init__(self, port, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""


class EventStream:
    """GET /v1/events: the head on opening, then events one by one, each validated."""

    def __init__(self, conn, headers=None):
        self.conn = conn
        self.conn.send("GET", "/v1/events", headers=headers)
        self.status, self.headers = conn.read_head()
        self.text = b""
        self.ids = []

    def close(self):
        self.conn.close()

    def next(self, timeout=5.0):
        """The next event as (name, data); comments and `retry:` are skipped."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\n\n" in self.text:
                frame, self.text = self.text.split(b"\n\n", 1)
                fields = {}
                for line in frame.decode().split("\n"):
                    if line.startswith(":"):
                        continue
                    k, _, v = line.partition(": ")
                    fields[k] = v
                if "event" not in fields:
                    continue
                data = json.loads(fields["data"])
                VALIDATORS[fields["event"]].validate(data)
                self.ids.append(int(fields["id"]))
                return fields["event"], data
            left = deadline - time.monotonic()
            assert left > 0, "no event in time"
            self.conn.sock.settimeout(left)
            chunk = self.conn.read_chunk()
            assert chunk is not None, "the event stream ended"
            self.text += chunk

    def until(self, match, timeout=5.0):
        """Reads events until match(name, data) holds; returns that one and those before."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            name, data = self.next(max(0.01, deadline - time.monotonic()))
            seen.append((name, data))
            if match(name, data):
                return (name, data), seen


def lease_event(kind, lease_id=None):
    return lambda name, data: (name == "lease" and data["kind"] == kind and
                               (lease_id is None or data["lease"]["id"] == lease_id))
