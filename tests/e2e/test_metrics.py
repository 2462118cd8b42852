"""GET /metrics in the Prometheus conventions, read with prometheus_client's own parser."""
import threading

from prometheus_client.parser import text_string_to_metric_families

from conftest import SECRET, visitor_token


def families(d):
    status, text = d.get("/metrics")
    assert status == 200
    # The parser refuses what is not the text format; every family has HELP and TYPE.
    out = {f.name: f for f in text_string_to_metric_families(text)}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name = line.split()[2]
            assert f"# HELP {name} " in text, name
    return out


def value(fams, name, sample, **labels):
    for s in fams[name].samples:
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise KeyError((sample, labels))


def test_histograms_by_tier_gauges_and_counters_by_app(make_daemon):
    d = make_daemon("--simulate", "1x80G", "--visitor-secret", SECRET)
    held, ev = d.acquire({"app": "painter", "visitor_token": visitor_token("ann", "pro"),
                          "duration_s": 30})
    assert ev["event"] == "granted"
    waiting = []

    def wait_for_it():
        c, first = d.acquire({"app": "tts", "visitor_ip": "10.1.1.1", "duration_s": 30})
        waiting.append((c, first))
    t = threading.Thread(target=wait_for_it)
    t.start()
    t.join(5)
    fams = families(d)
    assert fams["zerogpu_grant_latency_seconds"].type == "histogram"
    assert fams["zerogpu_queue_wait_seconds"].type == "histogram"
    assert value(fams, "zerogpu_grant_latency_seconds", "zerogpu_grant_latency_seconds_count",
                 tier="pro") == 1
    assert value(fams, "zerogpu_queue_length", "zerogpu_queue_length") == 1
    assert value(fams, "zerogpu_leases_live", "zerogpu_leases_live") == 1
    assert value(fams, "zerogpu_devices_busy", "zerogpu_devices_busy") == 1
    # The queued one is granted when the first is released, after waiting.
    held.close()
    c, first = waiting[0]
    assert first["event"] == "queued" and c.event()["event"] == "granted"
    fams = families(d)
    waited = value(fams, "zerogpu_queue_wait_seconds", "zerogpu_queue_wait_seconds_sum",
                   tier="anonymous")
    assert waited > 0
    assert value(fams, "zerogpu_queue_wait_seconds", "zerogpu_queue_wait_seconds_count",
                 tier="anonymous") == 1
    # Buckets are cumulative and end at the count.
    for name in ("zerogpu_grant_latency_seconds", "zerogpu_queue_wait_seconds"):
        for tier in ("anonymous", "free", "pro", "enterprise"):
            buckets = [s for s in fams[name].samples
                       if s.name == name + "_bucket" and s.labels["tier"] == tier]
            counts = [s.value for s in buckets]
            assert counts == sorted(counts) and buckets[-1].labels["le"] == "+Inf"
            assert counts[-1] == value(fams, name, name + "_count", tier=tier)
    assert value(fams, "zerogpu_app_grants", "zerogpu_app_grants_total", app="painter") == 1
    assert value(fams, "zerogpu_app_grants", "zerogpu_app_grants_total", app="tts") == 1
    assert value(fams, "zerogpu_app_gpu_seconds", "zerogpu_app_gpu_seconds_total",
                 app="painter") > 0
    c.close()


def test_per_app_series_are_bounded(make_daemon):
    d = make_daemon("--simulate", "4x80G")
    for i in range(70):
        assert d.cli("run", "--app", f"app{i:02d}", "--", "true").returncode == 0
    fams = families(d)
    apps = {s.labels["app"]: s.value for s in fams["zerogpu_app_grants"].samples}
    assert len(apps) == 65 and apps["_other"] == 6
    assert all(apps[f"app{i:02d}"] == 1 for i in range(64))
