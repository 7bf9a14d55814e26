"""The Go probe (kha-probe) against a real etcd and kube-apiserver on loopback, and the checker that
reads its log (lab/world/probe.py).

The certificates and the kubeconfig come from the real kubeadm's own phases, written where
`certificatesDir` and --kubeconfig-dir say rather than under --rootfs: no root and no namespace.
kubeadm refuses a loopback advertiseAddress but only writes it into certificates, so a
documentation address no interface carries (192.0.2.10) does; controlPlaneEndpoint and certSANs
put 127.0.0.1 in the kubeconfig and the serving certificate. super-admin.conf is system:masters,
which needs no RBAC binding. kube-apiserver runs with a short set of flags of our own and etcd
speaks plain HTTP on loopback: kubeadm's manifests and TLS between the two are the lab's to run.
"""

from __future__ import annotations

import base64
import json
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster.kubernetes import KUBERNETES_VERSION
from lab.world.probe import ProbeLog, final_state, parse, problems
from tests.kubeadm import require_tool

NAMESPACE = "kha-probe-test"
PROBE_SECONDS = 5
RATE = 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kubeadm_config(port: int, pki: Path) -> str:
    return f"""\
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: 192.0.2.10
  bindPort: {port}
nodeRegistration:
  name: kha-probe-test
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: v{KUBERNETES_VERSION}
certificatesDir: {pki}
controlPlaneEndpoint: 127.0.0.1:{port}
apiServer:
  certSANs: [127.0.0.1]
"""


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class ControlPlane:
    """etcd and kube-apiserver from .tools/bin on free loopback ports, set up by kubeadm's phases."""

    def __init__(self, work: Path, tools: dict[str, Path]) -> None:
        self.work, self.tools = work, tools
        self.kubeconfig = work / "super-admin.conf"
        pki = work / "pki"
        etcd_port, peer_port, port = _free_port(), _free_port(), _free_port()
        (work / "kubeadm.yaml").write_text(_kubeadm_config(port, pki))
        super_admin = ["kubeconfig", "super-admin", "--kubeconfig-dir", str(work)]
        for phase in (["certs", "ca"], ["certs", "apiserver"], ["certs", "sa"], super_admin):
            argv = [str(tools["kubeadm"]), "init", "phase", *phase, "--config", str(work / "kubeadm.yaml")]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
        self.etcd_url, peer_url = f"http://127.0.0.1:{etcd_port}", f"http://127.0.0.1:{peer_port}"
        self.etcd_argv = [str(tools["etcd"]), "--name", "t", "--data-dir", str(work / "etcd")]
        self.etcd_argv += ["--listen-client-urls", self.etcd_url, "--advertise-client-urls", self.etcd_url]
        self.etcd_argv += ["--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url]
        self.etcd_argv += ["--initial-cluster", f"t={peer_url}"]
        argv = [str(tools["kube-apiserver"]), f"--etcd-servers={self.etcd_url}", "--bind-address=127.0.0.1"]
        argv += [f"--secure-port={port}", "--advertise-address=192.0.2.10", f"--cert-dir={work}"]
        argv += [f"--tls-cert-file={pki}/apiserver.crt", f"--tls-private-key-file={pki}/apiserver.key"]
        argv += [f"--client-ca-file={pki}/ca.crt", "--authorization-mode=RBAC"]
        argv += ["--service-account-issuer=https://kubernetes.default.svc.cluster.local"]
        argv += [f"--service-account-key-file={pki}/sa.pub", f"--service-account-signing-key-file={pki}/sa.key"]
        self.apiserver_argv = [*argv, "--service-cluster-ip-range=10.96.0.0/12"]
        self.etcd: subprocess.Popen[bytes] | None = None
        self.apiserver: subprocess.Popen[bytes] | None = None

    def _start(self, argv: list[str], log: str) -> subprocess.Popen[bytes]:
        with open(self.work / log, "ab") as out:
            return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)

    def start(self) -> None:
        self.etcd = self._start(self.etcd_argv, "etcd.log")
        self.start_apiserver()

    def start_apiserver(self) -> None:
        """kube-apiserver started, and back once /readyz answers 200."""
        self.apiserver = proc = self._start(self.apiserver_argv, "apiserver.log")
        deadline = time.monotonic() + 40
        while self.kubectl("get", "--raw", "/readyz", check=False).returncode != 0:
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail(f"kube-apiserver not ready: {(self.work / 'apiserver.log').read_text()[-2000:]}")
            time.sleep(0.2)

    def kill_apiserver(self) -> None:
        assert self.apiserver is not None
        self.apiserver.kill()
        self.apiserver.wait()

    def stop(self) -> None:
        for proc in (self.apiserver, self.etcd):  # the apiserver first: without etcd it hangs on its way out
            if proc is not None:
                _stop(proc)

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(self.tools["kubectl"]), "--kubeconfig", str(self.kubeconfig), *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0 or not check, done.stderr
        return done

    def configmaps(self) -> dict[str, int]:
        """The probe's ConfigMaps as they are now: name → data.seq (-1 without one)."""
        done = self.kubectl("get", "configmaps", "-n", NAMESPACE, "-l", "kha-probe=1", "-o", "json")
        return final_state(json.loads(done.stdout)["items"])

    def compact_etcd(self) -> None:
        """Two writes outside Kubernetes' keys, then etcd compacted up to them (its JSON gateway):
        a watch from any resourceVersion before them is now answered 410."""

        def call(path: str, body: dict[str, object]) -> dict[str, Any]:
            request = urllib.request.Request(f"{self.etcd_url}/v3/kv/{path}", data=json.dumps(body).encode())
            with urllib.request.urlopen(request, timeout=10) as response:
                return dict(json.load(response))

        key = base64.b64encode(b"/kha-probe-test/compaction").decode()
        for _ in range(2):
            revision = call("put", {"key": key, "value": key})["header"]["revision"]
        call("compaction", {"revision": revision, "physical": True})

    def probe(self, *args: str) -> list[str]:
        return [str(self.tools["kha-probe"]), "--kubeconfig", str(self.kubeconfig), "--namespace", NAMESPACE, *args]


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory) -> Iterator[ControlPlane]:
    """A control plane with /readyz answering 200, for the module."""
    tools = {name: require_tool(name) for name in ("etcd", "kube-apiserver", "kubeadm", "kubectl", "kha-probe")}
    plane = ControlPlane(tmp_path_factory.mktemp("kube"), tools)
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="module")
def probe_run(control_plane) -> tuple[ProbeLog, dict[str, int]]:
    """The probe run for PROBE_SECONDS, and its ConfigMaps read back afterwards with kubectl."""
    argv = control_plane.probe("--rate", str(RATE), "--duration", f"{PROBE_SECONDS}s")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_SECONDS + 30)
    assert done.returncode == 0, done.stderr
    return parse(done.stdout.splitlines()), control_plane.configmaps()


@pytest.mark.kube
def test_probe_requests_all_succeed_at_the_rate_asked(probe_run):
    log, _ = probe_run
    assert log.ready is not None and log.done is not None
    assert [r for r in log.requests if not r.ok] == []
    assert {r.op for r in log.requests} == {"get", "create", "update"}
    # An open loop from "ready" to the end: the setup before it counts against the duration.
    assert len(log.requests) >= RATE * (PROBE_SECONDS - 1)
    assert (log.done["requests"], log.done["all_finished"], log.done["watchers_caught_up"]) == (
        len(log.requests),
        True,
        True,
    )


@pytest.mark.kube
def test_every_acknowledged_write_is_stored_and_seen_by_both_watchers_in_order(probe_run):
    log, stored = probe_run
    assert problems(log, stored) == []
    writes = {(r.key, r.rv) for r in log.requests if r.op in ("create", "update")}
    for watcher in ("raw", "informer"):
        assert writes <= {(e.name, e.rv) for e in log.events if e.watcher == watcher}


@pytest.mark.kube
def test_the_checker_finds_an_acknowledged_create_missing_from_the_store(probe_run):
    log, stored = probe_run
    create = next(r for r in log.requests if r.op == "create")
    without = {name: seq for name, seq in stored.items() if name != create.key}
    assert problems(log, without) == [f"acknowledged write lost: create {create.key} (seq {create.seq})"]


@pytest.mark.kube
def test_probe_stops_on_sigterm_with_done_as_its_last_line(control_plane):
    proc = subprocess.Popen(control_plane.probe(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if json.loads(line)["kind"] == "ready":
            time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            break
    out, _ = proc.communicate(timeout=10)
    log = parse(lines + out.splitlines())
    assert proc.returncode == 0
    assert json.loads(out.splitlines()[-1])["kind"] == "done"
    assert log.requests and all(r.ok for r in log.requests)
    assert problems(log, control_plane.configmaps()) == []


@pytest.mark.kube
def test_raw_watch_relists_after_410_and_sees_the_writes_that_follow(control_plane):
    """The apiserver killed, etcd compacted past the watch's resourceVersion, the apiserver back:
    the raw watch's reconnect is answered 410, it lists, and watches on from the list."""
    proc = subprocess.Popen(
        control_plane.probe("--no-requests", "--no-informer"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    try:
        while not any('"ready"' in line for line in lines):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        control_plane.kill_apiserver()
        control_plane.compact_etcd()
        control_plane.start_apiserver()
        control_plane.kubectl("create", "configmap", "probe-after-relist", "-n", NAMESPACE, "--from-literal=seq=0")
        control_plane.kubectl("label", "configmap", "probe-after-relist", "-n", NAMESPACE, "kha-probe=1")
        deadline = time.monotonic() + 15
        while not any("probe-after-relist" in line for line in lines) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        reader.join(timeout=10)
    log = parse(lines)
    first_rv = log.watch_states[0]["rv"]
    errors = [s["err"] for s in log.watch_states if s["state"] == "error"]
    assert any(e.startswith(f"too old resource version: {first_rv} (") for e in errors), errors
    assert [s["state"] for s in log.watch_states][-2:] == ["relist", "open"]
    assert [e.name for e in log.events] == ["probe-after-relist"]


def test_probe_refuses_to_start_without_a_kubeconfig():
    probe = require_tool("kha-probe")
    done = subprocess.run([str(probe)], capture_output=True, text=True, timeout=10)
    assert (done.returncode, done.stderr) == (2, "kha-probe: --kubeconfig: required\n")


# The checker on logs written by hand: each invariant it holds, broken once.


def _request(op: str, seq: int, key: str, rv: str, ok: bool = True) -> str:
    return json.dumps(
        {"t": 1.0, "kind": "request", "op": op, "seq": seq, "s": 0.9, "e": 1.0, "ok": ok, "code": 201}
        | {"err": None, "rv": rv, "key": key}
    )


def _event(watcher: str, name: str, seq: int, rv: str, kind: str = "MODIFIED") -> str:
    return json.dumps({"t": 1.0, "kind": "event", "watcher": watcher, "type": kind, "name": name, "seq": seq, "rv": rv})


def _both(name: str, seq: int, rv: str) -> list[str]:
    return [_event("raw", name, seq, rv), _event("informer", name, seq, rv)]


def test_checker_passes_a_log_where_every_write_is_stored_and_seen():
    lines = [_request("create", 1, "probe-seq-1", "11"), *_both("probe-seq-1", 1, "11")]
    lines += [_request("update", 2, "probe-key-2", "12"), *_both("probe-key-2", 2, "12")]
    assert problems(parse(lines), {"probe-seq-1": 1, "probe-key-2": 2}) == []


def test_checker_does_not_count_a_failed_create_as_lost():
    lines = [_request("create", 1, "probe-seq-1", "", ok=False)]
    assert problems(parse(lines), {}) == []


def test_checker_reports_a_watcher_that_missed_a_write():
    lines = [_request("create", 1, "probe-seq-1", "11"), _event("informer", "probe-seq-1", 1, "11")]
    assert problems(parse(lines), {"probe-seq-1": 1}) == [
        "raw: no event for create probe-seq-1 (seq 1, resourceVersion 11)"
    ]


def test_checker_excuses_the_raw_watch_the_writes_a_relist_skipped():
    relist = json.dumps({"t": 1.0, "kind": "watch", "watcher": "raw", "state": "relist", "rv": "20", "err": None})
    lines = [_request("create", 1, "probe-seq-1", "11"), _event("informer", "probe-seq-1", 1, "11"), relist]
    assert problems(parse(lines), {"probe-seq-1": 1}) == []


def test_checker_reports_a_key_whose_seq_goes_back():
    lines = [*_both("probe-key-1", 9, "11"), _event("informer", "probe-key-1", 1, "12")]
    assert problems(parse(lines), {}) == ["informer: probe-key-1 went from seq 9 back to 1"]


def test_checker_reports_the_raw_watch_going_back_in_resource_version():
    lines = [_event("raw", "probe-key-1", 1, "12"), _event("raw", "probe-key-2", 2, "11")]
    assert problems(parse(lines), {}, watchers=["raw"]) == [
        "raw: resourceVersion went from 12 back to 11 (probe-key-2)"
    ]


def test_checker_allows_an_informer_relist_to_replay_objects_in_name_order():
    lines = [_event("informer", "probe-key-1", 1, "12"), _event("informer", "probe-key-2", 2, "11")]
    assert problems(parse(lines), {}, watchers=["informer"]) == []
