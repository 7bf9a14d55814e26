"""The Go probe (kha-probe) against a real etcd and kube-apiserver on loopback, and the checker that
reads its log (lab/world/kubeprobe.py).

The certificates and the kubeconfig come from the real kubeadm's own phases, with --cert-dir and
--kubeconfig-dir rather than --rootfs: no root and no namespace. kubeadm refuses a loopback
advertiseAddress but only writes it into certificates, so a documentation address no interface
carries (192.0.2.10) does; controlPlaneEndpoint and certSANs put 127.0.0.1 in the kubeconfig and
the serving certificate. super-admin.conf is system:masters, which needs no RBAC binding. etcd
speaks plain HTTP on loopback: kubeadm's TLS between the two is for the lab to set up.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cluster.kubernetes import KUBERNETES_VERSION
from lab.world.kubeprobe import ProbeLog, parse, problems
from tests.tools import require_built

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


@dataclass(frozen=True)
class ControlPlane:
    kubeconfig: Path
    kubectl: Path
    probe: Path

    def configmaps(self) -> dict[str, int]:
        """The probe's ConfigMaps as they are now: name → data.seq (-1 without one)."""
        argv = [str(self.kubectl), "--kubeconfig", str(self.kubeconfig), "get", "configmaps", "-n", NAMESPACE]
        done = subprocess.run([*argv, "-l", "kha-probe=1", "-o", "json"], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        items = json.loads(done.stdout)["items"]
        return {i["metadata"]["name"]: int((i.get("data") or {}).get("seq", -1)) for i in items}


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory) -> Iterator[ControlPlane]:
    """etcd and kube-apiserver from .tools/bin on free loopback ports, /readyz answering 200."""
    tools = require_built("etcd", "kube-apiserver", "kubeadm", "kubectl", "kha-probe")
    work = tmp_path_factory.mktemp("kube")
    pki = work / "pki"
    etcd_port, peer_port, port = _free_port(), _free_port(), _free_port()
    (work / "kubeadm.yaml").write_text(_kubeadm_config(port, pki))
    kubeadm = [str(tools["kubeadm"]), "init", "phase"]
    super_admin = ["kubeconfig", "super-admin", "--kubeconfig-dir", str(work)]
    for phase in (["certs", "ca"], ["certs", "apiserver"], ["certs", "sa"], super_admin):
        argv = [*kubeadm, *phase, "--config", str(work / "kubeadm.yaml")]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    etcd_url, peer_url = f"http://127.0.0.1:{etcd_port}", f"http://127.0.0.1:{peer_port}"
    etcd = [str(tools["etcd"]), "--name", "t", "--data-dir", str(work / "etcd")]
    etcd += ["--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url]
    etcd += [
        "--listen-peer-urls",
        peer_url,
        "--initial-advertise-peer-urls",
        peer_url,
        "--initial-cluster",
        f"t={peer_url}",
    ]
    apiserver = [str(tools["kube-apiserver"]), f"--etcd-servers={etcd_url}", "--bind-address=127.0.0.1"]
    apiserver += [f"--secure-port={port}", "--advertise-address=192.0.2.10", f"--cert-dir={work}"]
    apiserver += [f"--tls-cert-file={pki}/apiserver.crt", f"--tls-private-key-file={pki}/apiserver.key"]
    apiserver += [f"--client-ca-file={pki}/ca.crt", "--authorization-mode=RBAC"]
    apiserver += ["--service-account-issuer=https://kubernetes.default.svc.cluster.local"]
    apiserver += [f"--service-account-key-file={pki}/sa.pub", f"--service-account-signing-key-file={pki}/sa.key"]
    apiserver += ["--service-cluster-ip-range=10.96.0.0/12"]
    kubeconfig = work / "super-admin.conf"
    readyz = [str(tools["kubectl"]), "--kubeconfig", str(kubeconfig), "get", "--raw", "/readyz"]
    with open(work / "etcd.log", "wb") as etcd_log, open(work / "apiserver.log", "wb") as apiserver_log:
        procs = [subprocess.Popen(etcd, stdout=etcd_log, stderr=subprocess.STDOUT)]
        try:
            procs.append(subprocess.Popen(apiserver, stdout=apiserver_log, stderr=subprocess.STDOUT))
            deadline = time.monotonic() + 40
            while subprocess.run(readyz, capture_output=True, timeout=10).returncode != 0:
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    pytest.fail(f"kube-apiserver not ready: {(work / 'apiserver.log').read_text()[-2000:]}")
                time.sleep(0.2)
            yield ControlPlane(kubeconfig, tools["kubectl"], tools["kha-probe"])
        finally:
            for proc in reversed(procs):  # the apiserver first: without etcd it hangs on its way out
                _stop(proc)


@pytest.fixture(scope="module")
def probe_run(control_plane) -> tuple[ProbeLog, dict[str, int]]:
    """The probe run for PROBE_SECONDS, and its ConfigMaps read back afterwards with kubectl."""
    argv = [str(control_plane.probe), "--kubeconfig", str(control_plane.kubeconfig), "--namespace", NAMESPACE]
    argv += ["--rate", str(RATE), "--duration", f"{PROBE_SECONDS}s"]
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
    assert problems(log, without) == [f"acknowledged create {create.key} (seq {create.seq}) lost: missing afterwards"]


@pytest.mark.kube
def test_probe_stops_on_sigterm_with_done_as_its_last_line(control_plane):
    argv = [str(control_plane.probe), "--kubeconfig", str(control_plane.kubeconfig), "--namespace", NAMESPACE]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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


def test_probe_refuses_to_start_without_a_kubeconfig():
    probe = require_built("kha-probe")["kha-probe"]
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
    assert problems(parse(lines), {"probe-seq-1": 1}) == ["raw watch: no event for create probe-seq-1 seq 1 (rv 11)"]


def test_checker_excuses_the_raw_watch_the_writes_a_relist_skipped():
    relist = json.dumps({"t": 1.0, "kind": "watch", "watcher": "raw", "state": "relist", "rv": "20", "err": None})
    lines = [_request("create", 1, "probe-seq-1", "11"), _event("informer", "probe-seq-1", 1, "11"), relist]
    assert problems(parse(lines), {"probe-seq-1": 1}) == []


def test_checker_reports_a_key_whose_seq_goes_back():
    lines = [*_both("probe-key-1", 9, "11"), _event("informer", "probe-key-1", 1, "12")]
    assert problems(parse(lines), {}) == ["informer watch: probe-key-1 seq went back from 9 to 1"]


def test_checker_reports_the_raw_watch_going_back_in_resource_version():
    lines = [_event("raw", "probe-key-1", 1, "12"), _event("raw", "probe-key-2", 2, "11")]
    assert problems(parse(lines), {}, watchers=["raw"]) == [
        "raw watch: resourceVersion went back from 12 to 11 (probe-key-2)"
    ]


def test_checker_allows_an_informer_relist_to_replay_objects_in_name_order():
    lines = [_event("informer", "probe-key-1", 1, "12"), _event("informer", "probe-key-2", 2, "11")]
    assert problems(parse(lines), {}, watchers=["informer"]) == []
