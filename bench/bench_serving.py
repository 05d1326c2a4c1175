"""Where users wait: a prediction looked up by key, in-process, over HTTP and from the command line.

The shipped repository is applied in a temporary folder and a day of ``flight_delay`` predictions (x1: 1,000
keys, x10: 10,000) written to its wide SQLite online store, scored an hour ago (served, not expired). Then:

- **in-process lookup**: ``PredictionReader.lookup`` (the direct read ``predict`` and ``serve`` use: the answer
  judged against the view's TTL) against a raw ``sqlite3`` point read of the same row on the same file (the
  statement prepared once, ``fetchone``), the same ``LOOKUPS`` random known keys, each call timed; p50 and p99,
  median of ``RUNS`` runs (platform and raw alternating). Target: p99 <= 3x raw. Answers checked equal to the raw
  rows. Feast's ``get_online_features`` on the same store (``serving.lookup``) is shown for reference;
- **HTTP, one key**: ``batch-platform serve`` in a process of its own on a free loopback port, GET requests for
  random known keys sent open-loop at ``RATE`` per second for ``HTTP_SECONDS`` by an asyncio client over
  HTTP/1.1 keep-alive connections, ``RUNS`` times; latency from the request written to the response read.
  Target: the median run's p99 <= 5 ms (the runs' p99s give the spread).
  The server's peak RSS; the answers checked equal to the in-process ones. The batch POST of 100 keys is shown
  for reference (sequential requests);
- **``batch-platform predict KEY``**: wall time of the command in a fresh process, median of ``PREDICT_RUNS``,
  its peak RSS, against a fresh ``python -c`` doing the raw point read (the interpreter's floor, for reference).
  Target: <= 1 s.

    python -m bench.bench_serving        (or: python -m bench --only serving)
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench import online_env
from bench.measure import figure, median, percentile, run_child, vm_hwm_kib

SIZES = {"x1": 1_000, "x10": 10_000}
LOOKUPS, RUNS = 5_000, 3
FEAST_LOOKUPS = 300
RATE, HTTP_SECONDS, BATCH_KEYS, BATCH_REQUESTS = 200, 10, 100, 100
PREDICT_RUNS = 5
LOOKUP_TARGET, HTTP_P99_MS, PREDICT_S = 3.0, 5.0, 1.0
BIN = Path(sys.executable).parent


def _quick() -> None:
    global LOOKUPS, FEAST_LOOKUPS, HTTP_SECONDS, BATCH_REQUESTS, PREDICT_RUNS
    LOOKUPS, FEAST_LOOKUPS, HTTP_SECONDS, BATCH_REQUESTS, PREDICT_RUNS = 1_000, 50, 3, 20, 3


# ----------------------------------------------------------------------------------------------------------------
# In-process
# ----------------------------------------------------------------------------------------------------------------
def _raw_reader(path: Path, table: str, fields: tuple[str, ...]):
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    sql = f"SELECT {', '.join(fields)} FROM \"{table}\" WHERE entity_key = ?"
    return con, lambda key: con.execute(sql, (key,)).fetchone()


def _latencies(fn, keys) -> list[float]:
    out = []
    clock = time.perf_counter
    for k in keys:
        t0 = clock()
        fn(k)
        out.append(clock() - t0)
    return out


def _same_answer(answer, raw_row: tuple) -> bool:
    """The reader's answer against the raw row (FIELDS order: score, decision, model_version, model_sha256, alias,
    run_id, partition_date, fallback_reason, scored_at)."""
    score, decision, version, sha, alias, run_id, day, fallback, scored_at = raw_row
    return (answer.found and answer.score == score and answer.decision == (None if decision is None else bool(decision))
            and answer.model_version == version and answer.model_sha256 == sha and answer.alias == alias
            and answer.run_id == run_id and answer.partition_date == day and (answer.fallback_reason or "") == fallback
            and int(answer.scored_at.timestamp()) == scored_at)


def in_process(scale: str, n: int, reader, client, spec, path: Path, table: str, keys: list[str],
               rng: np.random.Generator) -> list[dict]:
    from batch_platform.lib import serving

    con, raw = _raw_reader(path, table, serving.FIELDS)
    try:
        sample = [keys[i] for i in rng.integers(0, len(keys), LOOKUPS)]
        _latencies(lambda k: reader.lookup(spec.name, k), sample[:200])  # warm: statements prepared, pages cached
        _latencies(raw, sample[:200])
        p50, p99, r50, r99 = [], [], [], []
        for _ in range(RUNS):
            ours = _latencies(lambda k: reader.lookup(spec.name, k), sample)
            theirs = _latencies(raw, sample)
            p50.append(percentile(ours, 50) * 1e3)
            p99.append(percentile(ours, 99) * 1e3)
            r50.append(percentile(theirs, 50) * 1e3)
            r99.append(percentile(theirs, 99) * 1e3)
        same = all(_same_answer(reader.lookup(spec.name, k), raw(k)) for k in dict.fromkeys(sample))
        same &= not reader.lookup(spec.name, "2013-01-08_XX_0000_JFK").found and raw("2013-01-08_XX_0000_JFK") is None
    finally:
        con.close()
    now = pd.Timestamp.now(tz="UTC").to_pydatetime()
    feast_keys = sample[:FEAST_LOOKUPS]
    serving.lookup(client, spec, feast_keys[0])  # warm: the registry read, the store opened
    feast = _latencies(lambda k: serving.lookup(client, spec, k, now=now), feast_keys)
    feast_same = all(serving.lookup(client, spec, k, now=now).to_dict()
                     == reader.lookup(spec.name, k, now=now).to_dict() for k in feast_keys[:50])
    label = f"{scale} ({n:,} keys, {LOOKUPS:,} lookups)"
    return [
        figure(f"lookup p99, in-process, {label}", "ms", median(p99), median(r99),
               target=f"<= {LOOKUP_TARGET:g}x raw", meets=lambda r: r <= LOOKUP_TARGET, identical=same,
               platform_runs=p99, raw_runs=r99,
               note="PredictionReader.lookup vs sqlite3 prepared point read, same file, same keys"),
        figure(f"lookup p50, in-process, {label}", "ms", median(p50), median(r50), target=None, meets=None,
               identical=same, platform_runs=p50, raw_runs=r50),
        figure(f"lookup p99, Feast get_online_features, {scale} ({len(feast_keys)} lookups)", "ms",
               percentile(feast, 99) * 1e3, median(r99), target=None, meets=None, identical=feast_same,
               note=f"reference (serving.lookup through Feast); p50 {percentile(feast, 50) * 1e3:.3f} ms; raw: the "
                    "in-process raw p99 above"),
    ]


# ----------------------------------------------------------------------------------------------------------------
# HTTP
# ----------------------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Client:
    """HTTP/1.1 keep-alive requests on loopback, a connection per request in flight (reused when idle)."""

    def __init__(self, port: int):
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[float, int, bytes]:
        head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        while self.idle:  # an idle connection the server closed (its keep-alive timeout): as a client does, another
            r, w = self.idle.pop()
            t0 = time.perf_counter()
            w.write(head + body)
            try:
                raw = await r.readuntil(b"\r\n\r\n")
                break
            except (asyncio.IncompleteReadError, ConnectionError):
                w.close()
        else:
            r, w = await asyncio.open_connection("127.0.0.1", self.port)
            t0 = time.perf_counter()
            w.write(head + body)
            raw = await r.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"content-length: *(\d+)", raw, re.I).group(1))
        payload = await r.readexactly(length)
        seconds = time.perf_counter() - t0
        self.idle.append((r, w))
        return seconds, int(raw.split(b" ", 2)[1]), payload

    async def close(self) -> None:
        for _, w in self.idle:
            w.close()


async def _open_loop(port: int, paths: list[str], rate: float) -> tuple[list[tuple[float, int, bytes]], float]:
    """GET ``paths`` at ``rate`` per second (each sent at its time, whether or not earlier ones answered); the
    results and the rate achieved."""
    client = _Client(port)
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = []
    for i, path in enumerate(paths):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(client.request("GET", path)))
    results = await asyncio.gather(*tasks)
    achieved = len(paths) / (loop.time() - start)
    await client.close()
    return results, achieved


async def _sequential(port: int, path: str, bodies: list[bytes]) -> list[tuple[float, int, bytes]]:
    client = _Client(port)
    out = [await client.request("POST", path, b) for b in bodies]
    await client.close()
    return out


def _without_age(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != "age_seconds"}


def _plain(answer) -> dict:
    return _without_age(json.loads(json.dumps(answer.to_dict(), default=str)))


def http(scale: str, n: int, env: dict, reader, spec, keys: list[str], rng: np.random.Generator) -> list[dict]:
    port = _free_port()
    server = subprocess.Popen([str(BIN / "batch-platform"), "serve", "--port", str(port)],
                              env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"serve did not start: {server.stderr.read().decode()[-2000:]}") from None
                time.sleep(0.2)
        sample = [keys[i] for i in rng.integers(0, len(keys), RATE * HTTP_SECONDS)]
        paths = [f"/predictions/{spec.name}/{k}" for k in sample]
        asyncio.run(_open_loop(port, paths[:100], RATE))  # warm: the store opened, the statement prepared
        p99s, rates = [], []
        for _ in range(RUNS):  # the figure: the median run's p99 (one run's tail is one hiccup away)
            results, achieved = asyncio.run(_open_loop(port, paths, RATE))
            p99s.append(percentile([r[0] * 1e3 for r in results], 99))
            rates.append(achieved)
        achieved = min(rates)
        ms = [r[0] * 1e3 for r in results]
        same = all(status == 200 for _, status, _ in results)
        checked = list(dict.fromkeys(sample))[:200]
        same &= all(_without_age(json.loads(body)) == _plain(reader.lookup(spec.name, k))
                    for k, (_, _, body) in zip(sample, results) if k in checked)
        bodies = [json.dumps({"keys": [keys[i] for i in rng.integers(0, len(keys), BATCH_KEYS)]}).encode()
                  for _ in range(BATCH_REQUESTS)]
        batch = asyncio.run(_sequential(port, f"/predictions/{spec.name}", bodies))
        batch_ms = [r[0] * 1e3 for r in batch]
        first = json.loads(bodies[0])["keys"]
        batch_same = batch[0][1] == 200 and [_without_age(a) for a in json.loads(batch[0][2])["predictions"]] == \
            [_plain(a) for a in reader.lookup_many(spec.name, first)]
        rss = vm_hwm_kib(server.pid)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    rss_mib = None if rss is None else {"platform": round(rss / 1024, 1)}
    note = (f"median of {RUNS} runs' p99; last run's p50 {percentile(ms, 50):.2f} ms; {len(ms):,} requests a run, "
            f"{achieved:.0f} req/s achieved at least")
    if achieved < 0.95 * RATE:
        note += " (the client fell behind: a loaded machine)"
    return [
        figure(f"HTTP GET one key p99 at {RATE} req/s, {scale} ({n:,} keys, {HTTP_SECONDS} s)", "ms",
               median(p99s), None, target=f"<= {HTTP_P99_MS:g} ms", meets=lambda v: v <= HTTP_P99_MS,
               identical=same, platform_runs=p99s, peak_rss_mib=rss_mib, note=note + "; peak RSS: the server"),
        figure(f"HTTP POST {BATCH_KEYS} keys p99, {scale} ({BATCH_REQUESTS} sequential requests)", "ms",
               percentile(batch_ms, 99), None, target=None, meets=None, identical=batch_same, peak_rss_mib=rss_mib,
               note=f"reference; p50 {percentile(batch_ms, 50):.2f} ms; peak RSS: the server (both HTTP figures)"),
    ]


# ----------------------------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------------------------
def predict(scale: str, n: int, env: dict, spec, path: Path, table: str, keys: list[str]) -> list[dict]:
    from batch_platform.lib import serving

    key = keys[len(keys) // 2]
    child_env = {**os.environ, **env}
    ours, ours_rss, codes = [], [], []
    raw_code = (f"import sqlite3; con = sqlite3.connect('file:{path}?mode=ro', uri=True); "
                f"print(con.execute('SELECT {', '.join(serving.FIELDS)} FROM \"{table}\" WHERE entity_key = ?', "
                f"({key!r},)).fetchone())")
    theirs, theirs_rss = [], []
    for _ in range(PREDICT_RUNS):
        s, code, rss = run_child([str(BIN / "batch-platform"), "predict", key, "--model", spec.name],
                                 env=child_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ours.append(s)
        ours_rss.append(rss)
        codes.append(code)
        s, code, rss = run_child([sys.executable, "-c", raw_code], env=child_env, stdout=subprocess.DEVNULL)
        theirs.append(s)
        theirs_rss.append(rss)
        codes.append(code)
    found = subprocess.run([str(BIN / "batch-platform"), "predict", key, "--model", spec.name, "--json"],
                           env=child_env, capture_output=True, text=True)
    same = all(c == 0 for c in codes) and json.loads(found.stdout)[0]["found"]
    return [figure(f"batch-platform predict KEY, wall time, {scale} ({n:,} keys)", "s", median(ours),
                   median(theirs), target=f"<= {PREDICT_S:g} s", meets=lambda v: v <= PREDICT_S, absolute=True,
                   identical=same, platform_runs=ours, raw_runs=theirs,
                   peak_rss_mib={"platform": round(median(ours_rss) / 1024, 1),
                                 "raw": round(median(theirs_rss) / 1024, 1)},
                   note="raw: a fresh python -c doing the point read (reference; the target is absolute)")]


def run(quick: bool = False) -> list[dict]:
    if quick:
        _quick()
    from batch_platform.lib import serving, wide_store
    from batch_platform.lib.feature_store import FeatureStoreClient
    from batch_platform.lib.specs import load_specs

    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        env = online_env.apply_in(Path(tmp))
        client = FeatureStoreClient()
        specs = load_specs()
        spec = specs[online_env.SPEC]
        view = serving.view_name(spec)
        path = client.online_store_path
        table = wide_store.table_name(client.store.project, view)
        scored = pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta(hours=1)
        for scale, n in SIZES.items():
            keys = online_env.keys(n)
            client.write_online(view, [serving.push_frame(spec, online_env.prediction_rows(keys, scored))])
            reader = serving.PredictionReader(specs)
            rng = np.random.default_rng(n)
            try:
                figures += in_process(scale, n, reader, client, spec, path, table, keys, rng)
                figures += http(scale, n, env, reader, spec, keys, rng)
                figures += predict(scale, n, env, spec, path, table, keys)
            finally:
                reader.close()
    return figures


def main(quick: bool = False) -> list[dict]:
    from bench.report import print_table

    figures = run(quick)
    print_table("serving: lookups by key (in-process, HTTP, the command)", figures)
    return figures


if __name__ == "__main__":
    sys.exit(0 if all(f["ok"] is not False for f in main("--quick" in sys.argv)) else 1)
