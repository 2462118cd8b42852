"""deploy/kubernetes: the manifests against Kubernetes' own schemas (offline, from the
pinned kubernetes-validate package), and against each other and zerogpud: the config
they carry is one zerogpud accepts, and every path one side names the other mounts."""
import configparser
import pathlib
import subprocess

import kubernetes_validate
import yaml

from conftest import ROOT, Daemon

DEPLOY = ROOT / "deploy" / "kubernetes"
KUBERNETES = "1.31.0"  # what the manifests are written for; docs/cluster.md says so


def documents():
    out = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path.name, doc))
    return out


def find(kind, name=None):
    return [d for _, d in documents() if d["kind"] == kind
            and (name is None or d["metadata"]["name"] == name)]


def test_every_manifest_is_valid_against_the_kubernetes_schemas():
    docs = documents()
    kinds = sorted({d["kind"] for _, d in docs})
    assert kinds == ["ConfigMap", "DaemonSet", "Deployment", "Namespace", "Secret", "Service"]
    for name, doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)
        except kubernetes_validate.ValidationError as e:
            raise AssertionError(f"{name}: {doc['kind']} {doc['metadata']['name']}: {e}")


def test_the_validator_refuses_a_broken_manifest():
    ds = find("DaemonSet", "zerogpud")[0]
    broken = dict(ds, spec=dict(ds["spec"], selectr=ds["spec"]["selector"]))
    try:
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)
    except kubernetes_validate.ValidationError:
        return
    raise AssertionError("an unknown field passed strict validation")


def zerogpud_conf():
    return find("ConfigMap", "zerogpud-config")[0]["data"]["zerogpud.conf"]


def test_the_config_map_is_a_config_zerogpud_takes(tmp_path):
    conf = tmp_path / "zerogpud.conf"
    conf.write_text(zerogpud_conf())
    # The node's own paths, PostgreSQL and the gate are the cluster's; the rest is checked
    # as zerogpud reads it.
    d = Daemon(tmp_path, "--config", str(conf), "--simulate", "1x80G", "--ledger", "sqlite",
               "--gate", "off")
    d.start()
    assert d.stop() == 0


def test_the_daemon_set_and_the_app_meet_at_the_socket():
    ini = configparser.ConfigParser()
    ini.read_string(zerogpud_conf())
    socket = ini["server"]["socket"]
    assert ini["ledger"]["url"] == "postgresql"  # the Secret's PG* say where
    ds = find("DaemonSet", "zerogpud")[0]["spec"]["template"]["spec"]
    daemon = ds["containers"][0]
    mounts = {m["mountPath"]: m["name"] for m in daemon["volumeMounts"]}
    host = {v["name"]: v.get("hostPath", {}).get("path") for v in ds["volumes"]}
    socket_dir = str(pathlib.PurePosixPath(socket).parent)
    assert host[mounts[socket_dir]] == "/run/zerogpu"
    assert host[mounts[ini["server"]["state_dir"]]] == "/var/lib/zerogpu"
    assert "--node=$(NODE_NAME)" in daemon["args"]
    assert daemon["envFrom"] == [{"secretRef": {"name": "zerogpu-postgresql"}}]
    assert ds["hostPID"] is True
    assert daemon["securityContext"]["privileged"] is False
    # No GPU is requested: zerogpud lends them.
    for spec in (ds, find("Deployment", "demo")[0]["spec"]["template"]["spec"]):
        for c in spec["containers"]:
            assert "nvidia.com/gpu" not in str(c.get("resources", {}))
    app = find("Deployment", "demo")[0]["spec"]["template"]["spec"]
    c = app["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["ZEROGPU_SOCKET"] == socket
    app_mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    app_host = {v["name"]: v["hostPath"]["path"] for v in app["volumes"]}
    assert app_host[app_mounts[socket_dir]] == "/run/zerogpu"
    # The app's uid acts for its app on the socket.
    assert str(c["securityContext"]["runAsUser"]) in ini["apps"]["demo users"].split(",")
    assert c["command"][:4] == ["zerogpu", "launch", "--app", "demo"]
    # The Secret carries libpq's variables.
    secret = find("Secret", "zerogpu-postgresql")[0]["stringData"]
    assert {"PGHOST", "PGDATABASE", "PGUSER", "PGPASSWORD"} <= set(secret)
