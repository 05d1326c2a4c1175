"""A read-only HTTP server for the artefacts folder, so the links in asset metadata (Evidently drift reports, model
plots) open from the Dagster UI: a browser refuses ``file://`` links from an ``http://`` page.

A drift report not rendered yet (the daily check saves only its inputs, see :mod:`batch_platform.lib.drift_report`)
is rendered on its first request, written beside its inputs, then served like any file.

Serves only files under one directory: no path outside it (``..`` in any encoding, symlinks leading out), GET and
HEAD only, bound to 127.0.0.1 by default. Run in the foreground with
``python -m batch_platform.lib.report_server --port 3001 --directory <artifacts dir>``.
"""

from __future__ import annotations

import argparse
import functools
import os
import threading
import urllib.parse
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".png": "image/png",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
    ".csv": "text/csv; charset=utf-8",
}


class ReportRequestHandler(SimpleHTTPRequestHandler):
    """``SimpleHTTPRequestHandler`` confined to its directory (``directory=`` is bound by :func:`make_server`)."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, **CONTENT_TYPES}
    server_version = "batch-platform-reports"

    def _escapes(self) -> bool:
        """True when the request path leaves the served directory: a ``..`` segment (after percent-decoding,
        with either slash) or a resolved path (symlinks followed) outside the directory."""
        raw = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        if ".." in raw.replace("\\", "/").split("/"):
            return True
        root = os.path.realpath(self.directory)
        target = os.path.realpath(self.translate_path(self.path))
        return os.path.commonpath([root, target]) != root

    def send_head(self):
        if self._escapes():
            self.send_error(HTTPStatus.FORBIDDEN, "Path outside the served directory")
            return None
        target = self.translate_path(self.path)
        if target.endswith(".html") and not os.path.exists(target) and not self._render(target):
            return None
        return super().send_head()

    def _render(self, target: str) -> bool:
        """Render a pending drift report (once, whatever the concurrent requests); False after sending an
        error."""
        from batch_platform.lib import drift_report
        from batch_platform.lib.drift_reference import DriftReferenceError

        with _render_lock(target):
            if not drift_report.renderable(target):
                return True  # nothing to render: served (or 404) as any file
            try:
                drift_report.render(target)
            except (drift_report.DriftReportError, DriftReferenceError) as e:
                self.send_error(HTTPStatus.INTERNAL_SERVER_ERROR, "Drift report not rendered", str(e))
                return False
        return True

    def end_headers(self) -> None:
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()


_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _render_lock(path: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(path, threading.Lock())


def make_server(directory: Path | str, host: str = DEFAULT_HOST, port: int = 0) -> ThreadingHTTPServer:
    """A server for ``directory`` (created if missing) on ``host:port``; port 0 picks a free one
    (``server.server_address[1]``). Call ``serve_forever()`` on it, ``shutdown()`` from another thread."""
    root = Path(directory).resolve()
    root.mkdir(parents=True, exist_ok=True)
    handler = functools.partial(ReportRequestHandler, directory=str(root))
    return ThreadingHTTPServer((host, port), handler)


def serve(directory: Path | str, host: str = DEFAULT_HOST, port: int = 3001) -> None:
    """Serve ``directory`` in the foreground until interrupted."""
    server = make_server(directory, host, port)
    # Evidently takes seconds to import: import it now, so the first report link opened waits only for its render
    threading.Thread(target=_import_renderer, daemon=True).start()
    bound_host, bound_port = server.server_address[:2]
    print(f"Serving {Path(directory).resolve()} at http://{bound_host}:{bound_port}/ (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _import_renderer() -> None:
    from batch_platform.lib import drift_report

    drift_report.import_evidently()


def _default_port(base_url: str) -> int:
    parsed = urllib.parse.urlsplit(base_url)
    return parsed.port or (443 if parsed.scheme == "https" else 80)


def main(argv: list[str] | None = None) -> None:
    from batch_platform import settings

    parser = argparse.ArgumentParser(prog="python -m batch_platform.lib.report_server",
                                     description="Serve the artefacts folder (drift reports, model plots) read-only.")
    parser.add_argument("--directory", type=Path, default=None,
                        help=f"folder to serve (default: the artefacts dir, env {settings.ARTIFACTS_VAR})")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=None,
                        help=f"port (default: the port of env {settings.REPORTS_URL_VAR}, "
                        f"{settings.DEFAULT_REPORTS_URL})")
    args = parser.parse_args(argv)
    import signal

    # stop on SIGTERM even when started by a process that ignores it (an ignored signal is inherited across exec)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    serve(args.directory or settings.artifacts_dir(), args.host,
          args.port if args.port is not None else _default_port(settings.reports_base_url()))


if __name__ == "__main__":
    main()
