"""The artefacts report server: serves files under its directory over HTTP, nothing outside it; settings map
artefact paths to its URLs."""

from __future__ import annotations

import http.client
import os
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from batch_platform import settings
from batch_platform.lib import report_server


@pytest.fixture
def served(tmp_path):
    """A server on a free port for ``tmp_path/artifacts``, beside a secret file it must never serve."""
    root = tmp_path / "artifacts"
    report = root / "drift_reports" / "flight_delay" / "2013-01-05" / "run 1.html"
    report.parent.mkdir(parents=True)
    report.write_bytes(b"<html><body>drift \xe2\x9c\x93</body></html>")
    (root / "plot.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    (root / "gate_report.json").write_text('{"passed": true}')
    (tmp_path / "secret.txt").write_text("outside the artefacts dir")
    os.symlink(tmp_path / "secret.txt", root / "link_out.txt")
    server = report_server.make_server(root, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"root": root, "report": report, "port": server.server_address[1],
               "base": f"http://127.0.0.1:{server.server_address[1]}"}
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def raw_get(port: int, path: str) -> tuple[int, bytes]:
    """GET with the path sent byte for byte (urllib would not normalize it, but a client might)."""
    con = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        con.putrequest("GET", path, skip_accept_encoding=True)
        con.endheaders()
        resp = con.getresponse()
        return resp.status, resp.read()
    finally:
        con.close()


def test_serves_a_report_with_its_bytes_and_content_type(served, monkeypatch):
    monkeypatch.setenv(settings.ARTIFACTS_VAR, str(served["root"]))
    monkeypatch.setenv(settings.REPORTS_URL_VAR, served["base"])
    url = settings.report_url(served["report"])  # the URL the drift check puts in its metadata
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/html")
        assert resp.read() == served["report"].read_bytes()
    for name, content_type in (("plot.png", "image/png"), ("gate_report.json", "application/json")):
        with urllib.request.urlopen(f"{served['base']}/{name}", timeout=10) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"] == content_type
            assert resp.read() == (served["root"] / name).read_bytes()


@pytest.mark.parametrize("path", [
    "/../secret.txt",
    "/drift_reports/../../secret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E%2Fsecret.txt",
    "/drift_reports/%2e%2e%2f%2e%2e%2fsecret.txt",
    "/..%5csecret.txt",
    "/%252e%252e/secret.txt",
    "/link_out.txt",  # a symlink pointing outside
])
def test_paths_escaping_the_directory_are_refused(served, path):
    status, body = raw_get(served["port"], path)
    assert status in (403, 404), (path, status)
    assert b"outside the artefacts dir" not in body


def test_read_only(served):
    con = http.client.HTTPConnection("127.0.0.1", served["port"], timeout=10)
    try:
        con.request("PUT", "/new.html", body=b"x")
        assert con.getresponse().status == 501
    finally:
        con.close()
    assert not (served["root"] / "new.html").exists()
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{served['base']}/missing.html", timeout=10)
    assert err.value.code == 404


def test_report_url_maps_artifact_paths(tmp_path, monkeypatch):
    root = tmp_path / "arte facts"
    monkeypatch.setenv(settings.ARTIFACTS_VAR, str(root))
    monkeypatch.delenv(settings.REPORTS_URL_VAR, raising=False)
    assert settings.reports_base_url() == "http://127.0.0.1:3001"
    assert settings.report_url(root / "drift_reports" / "m" / "2013-01-05" / "a b#1.html") == (
        "http://127.0.0.1:3001/drift_reports/m/2013-01-05/a%20b%231.html")
    monkeypatch.setenv(settings.REPORTS_URL_VAR, "http://reports.internal:8080/batch/")
    assert settings.report_url(str(root / "models" / "m" / "v1" / "roc.png")) == (
        "http://reports.internal:8080/batch/models/m/v1/roc.png")
    with pytest.raises(ValueError):
        settings.report_url(tmp_path / "elsewhere" / "x.html")
    with pytest.raises(ValueError):
        settings.report_url(root / ".." / "x.html")


def test_module_entry_point_serves_the_directory(tmp_path):
    import socket
    import subprocess
    import sys
    import time

    (tmp_path / "r.html").write_text("<p>hello</p>")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import signal

    # started the way a parent that ignores SIGTERM starts it (an ignored signal is inherited): it still stops on it
    proc = subprocess.Popen([sys.executable, "-m", "batch_platform.lib.report_server", "--port", str(port),
                             "--directory", str(tmp_path)], cwd=Path(__file__).resolve().parent.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN))
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/r.html", timeout=2) as resp:
                    assert resp.status == 200 and resp.read() == b"<p>hello</p>"
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline, "report server did not start"
                time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _start_server(directory: Path):
    """``python -m batch_platform.lib.report_server`` on a free port, as ``make ui`` starts it; (process, base)."""
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "batch_platform.lib.report_server", "--port", str(port),
                             "--directory", str(directory)], cwd=Path(__file__).resolve().parent.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):
                return proc, f"http://127.0.0.1:{port}"
        except urllib.error.HTTPError:
            return proc, f"http://127.0.0.1:{port}"
        except (urllib.error.URLError, ConnectionError):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "report server did not start"
            time.sleep(0.2)


def test_a_drift_report_not_rendered_yet_is_rendered_on_first_request(tmp_path, monkeypatch):
    """The drift check saves only its report's inputs; the server renders Evidently's report when the link is first
    opened (what the UI shows: "Drift in column"), keeps it, and names what is wrong when it cannot."""
    import numpy as np
    import pandas as pd

    from batch_platform.lib import drift, drift_report

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"distance": rng.normal(1000, 200, 4000), "carrier": rng.choice(["AA", "B6"], 4000),
                          "day": np.repeat(np.arange(8), 500)})
    scores = rng.random(4000)
    reference = drift.build_reference(frame, ["distance", "carrier"], ["carrier"], scores, batch_column="day")
    root = tmp_path / "artifacts"
    ref_path, sha = drift.save_reference(reference, root / "drift_references")
    html = root / "drift_reports" / "m" / "2013-01-05" / "run 1.html"
    day = frame.iloc[:900].assign(distance=lambda f: f["distance"] + 300)
    drift_report.save_inputs(html, reference, ref_path, sha, day, scores[:900], drift.DriftThresholds())
    broken = html.with_name("run 2.html")
    drift_report.save_inputs(broken, reference, ref_path, "0" * 64, day, scores[:900], drift.DriftThresholds())
    assert not html.exists()
    monkeypatch.setenv(settings.ARTIFACTS_VAR, str(root))
    proc, base = _start_server(root)
    monkeypatch.setenv(settings.REPORTS_URL_VAR, base)
    try:
        with urllib.request.urlopen(settings.report_url(html), timeout=120) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/html")
            body = resp.read()
        assert b"Drift in column" in body and body == html.read_bytes()
        stamp = html.stat().st_mtime_ns
        with urllib.request.urlopen(settings.report_url(html), timeout=10) as resp:
            assert resp.read() == body and html.stat().st_mtime_ns == stamp  # served from the saved file
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(settings.report_url(broken), timeout=60)
        assert err.value.code == 500 and b"was altered" in err.value.read()
        assert not broken.exists()
        with pytest.raises(urllib.error.HTTPError) as err:  # no inputs: an ordinary missing file
            urllib.request.urlopen(settings.report_url(html.with_name("run 3.html")), timeout=10)
        assert err.value.code == 404
    finally:
        proc.terminate()
        proc.wait(timeout=10)
