"""`make cloud` and `python -m cloud` stop on SIGTERM and SIGINT and leave nothing behind: no process
they started, no run folder (databases, keys, logs), no clouds.yaml."""

from __future__ import annotations

import signal
import time

import pytest

from cloud import handle, paths

pytestmark = pytest.mark.cloud


# make passes SIGTERM on to its recipe, waits for it, then dies of the signal itself (-15).
@pytest.mark.parametrize(
    "argv, sig, exit_code",
    [
        (["make", "--no-print-directory", "cloud"], signal.SIGTERM, -signal.SIGTERM),
        (None, signal.SIGTERM, 0),
        (None, signal.SIGINT, 0),
    ],
    ids=["make-cloud-sigterm", "launcher-sigterm", "launcher-sigint"],
)
def test_a_signal_stops_everything_and_leaves_nothing_behind(argv, sig, exit_code):
    reason = handle.missing()
    if reason:
        pytest.skip(reason)
    cloud = handle.start(argv)
    try:
        started = handle.descendants(cloud.proc.pid)
        run_folder = cloud.run_folder
        # negative control: while it runs, its processes, its folder and its clouds.yaml are there
        assert len(handle.alive(started)) >= 3, started  # keystone and neutron (uwsgi masters + workers)
        assert (run_folder / "keystone.db").is_file() and (run_folder / "neutron.db").is_file()
        assert paths.CLOUDS_YAML.is_file()
    finally:
        rc = handle.stop(cloud, sig)
    assert rc == exit_code, cloud.lines[-20:]
    deadline = time.monotonic() + 10  # uwsgi workers are reaped by their master, just after it
    while handle.alive(started) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert handle.alive(started) == []
    assert not run_folder.exists()
    assert not paths.CLOUDS_YAML.exists() and not paths.ADMIN_YAML.exists()
    assert "cloud stopped" in cloud.lines
