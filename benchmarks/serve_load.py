"""Loopback load test of ``maskdiff serve``: waves of concurrent requests against a tiny model.

    .venv/bin/python benchmarks/serve_load.py                       # 3 waves of 200 concurrent requests (about a minute)
    .venv/bin/python benchmarks/serve_load.py --run runs/demo --requests 50 --waves 1

The real command (``maskdiff serve``) runs in a subprocess on 127.0.0.1; every wave fires all of its
requests at once (a quarter of them as server-sent-event streams, the rest as JSON), each with a time
limit. It checks that every request was answered, with a sample (200) or "busy" (503) and nothing else,
that the server's own counts agree (served + busy = requests, none running or waiting afterwards), and
samples the server's resident memory (VmRSS) every 20 ms to show that it stays bounded wave after wave.
Without ``--run`` a micro model (1 block of width 32, L = 32) is trained first, in seconds.
Exits non-zero when a request is lost or answered otherwise; writes results/serve_load_cpu_<time>.json.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import git_commit, machine_info, write_result

MICRO = ["--steps", "8", "--width", "32", "--depth", "1", "--heads", "2", "--length", "32", "--batch-size", "4",
         "--warmup-steps", "2", "--no-progress"]


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class MemoryWatch:
    """Peak VmRSS of a process, sampled every ``every`` seconds in a thread."""

    def __init__(self, pid: int, every: float = 0.02):
        self.pid, self.every, self.peak, self._stop = pid, every, 0.0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mib(self.pid))
            time.sleep(self.every)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()


async def one_request(client, url: str, body: dict, stream: bool, timeout: float) -> dict:
    start = time.perf_counter()
    try:
        if stream:
            async with client.stream("POST", f"{url}/sample/stream", json=body, timeout=timeout) as r:
                last = None
                async for line in r.aiter_lines():
                    if line.startswith("data: "):
                        last = json.loads(line[6:])["type"]
                status = r.status_code if r.status_code != 200 or last == "done" else f"stream ended with {last}"
        else:
            r = await client.post(f"{url}/sample", json=body, timeout=timeout)
            status = r.status_code
            if status == 503 and not r.json()["error"].startswith("busy"):
                status = "503 without 'busy'"
    except Exception as err:  # a lost request: timeout, reset connection, ...
        status = f"{type(err).__name__}"
    return {"status": status, "seconds": time.perf_counter() - start, "stream": stream}


async def wave(url: str, n: int, body: dict, timeout: float) -> list:
    import httpx

    limits = httpx.Limits(max_connections=n + 8, max_keepalive_connections=n + 8)
    async with httpx.AsyncClient(limits=limits) as client:
        tasks = [one_request(client, url, dict(body, seed=i), stream=i % 4 == 0, timeout=timeout) for i in range(n)]
        return await asyncio.gather(*tasks)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, help="a run directory to serve (default: train a micro model first)")
    p.add_argument("--requests", type=int, default=200, help="concurrent requests per wave (default: 200)")
    p.add_argument("--waves", type=int, default=3, help="waves, one after the other (default: 3)")
    p.add_argument("--max-running", type=int, default=2, help="the server's --max-running (default: 2)")
    p.add_argument("--max-waiting", type=int, default=32, help="the server's --max-waiting (default: 32)")
    p.add_argument("--sampler", default="cached", help="sampler of every request (default: cached)")
    p.add_argument("--steps", type=int, default=32, help="steps of every request (default: 32)")
    p.add_argument("--num", type=int, default=2, help="samples per request (default: 2)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds each request may take before it counts as lost (default: 120)")
    p.add_argument("--out", help="result JSON path (default: results/serve_load_cpu_<time>.json)")
    args = p.parse_args()

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    tmp = tempfile.TemporaryDirectory()
    run = args.run
    if run is None:
        run = Path(tmp.name) / "micro"
        subprocess.run([sys.executable, "-m", "maskdiff.cli", "train", "--run-dir", str(run), *MICRO], check=True, env=env,
                       stdout=subprocess.DEVNULL)
    server = subprocess.Popen([sys.executable, "-m", "maskdiff.cli", "serve", str(run), "--port", "0", "--device", "cpu",
                               "--max-running", str(args.max_running), "--max-waiting", str(args.max_waiting)],
                              stdout=subprocess.PIPE, text=True, env=env)
    rows, failures = [], []
    try:
        line = server.stdout.readline()
        if " at http://" not in line:
            raise SystemExit(f"the server did not start: {line!r}")
        url = line.split(" at ")[1].split()[0].rstrip("/")
        import httpx

        model = httpx.get(f"{url}/model").json()
        body = dict(template="to be or [12] to be" if model["length"] >= 27 else "[8]", sampler=args.sampler,
                    steps=args.steps, num=args.num)
        rss_start = rss_mib(server.pid)
        print(f"serving {run} ({model['description']}); RSS {rss_start:.0f} MiB before the first wave")
        for k in range(args.waves):
            before = httpx.get(f"{url}/status").json()
            t0 = time.perf_counter()
            with MemoryWatch(server.pid) as memory:
                results = asyncio.run(wave(url, args.requests, body, args.timeout))
            seconds = time.perf_counter() - t0
            time.sleep(0.3)
            after = httpx.get(f"{url}/status").json()
            statuses = [r["status"] for r in results]
            served = [r["seconds"] for r in results if r["status"] == 200]
            busy = statuses.count(503)
            other = [s for s in statuses if s not in (200, 503)]
            server_counts = {key: after[key] - before[key] for key in ("served", "busy", "cancelled", "failed")}
            ok = (not other and server_counts["served"] == len(served) and server_counts["busy"] == busy
                  and after["running"] == 0 and after["waiting"] == 0 and server_counts["failed"] == 0)
            if not ok:
                failures.append(k)
            row = dict(wave=k, requests=args.requests, answered=len(served) + busy, served=len(served), busy=busy, other=other,
                       server_counts=server_counts, seconds=seconds, served_per_second=len(served) / seconds,
                       latency_served_median_s=statistics.median(served) if served else None,
                       latency_served_max_s=max(served) if served else None,
                       rss_peak_mib=memory.peak, rss_after_mib=rss_mib(server.pid), ok=ok)
            rows.append(row)
            print(f"wave {k}: {args.requests} requests in {seconds:.1f} s: {len(served)} samples, {busy} busy, {len(other)} other "
                  f"{other[:3] if other else ''}; server counts {server_counts}; median latency "
                  f"{row['latency_served_median_s'] or 0:.2f} s; RSS peak {memory.peak:.0f} MiB, after {row['rss_after_mib']:.0f} MiB"
                  f"{'' if ok else '  <-- FAILED'}")
    finally:
        server.terminate()
        server.wait(timeout=30)
        tmp.cleanup()
    payload = dict(benchmark="serve_load", machine=machine_info("cpu"), commit=git_commit(), model=model,
                   config=dict(vars(args), run=str(args.run) if args.run else "micro (trained here)", body=body, stream_every=4),
                   rss_start_mib=rss_start, waves=rows, ok=not failures)
    for key in ("run", "out"):
        payload["config"][key] = str(payload["config"][key]) if payload["config"][key] is not None else None
    path = write_result("serve_load", "cpu", payload, args.out)
    print(f"wrote {path}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
