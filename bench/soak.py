"""``python -m bench.soak --duration 600``: the real exporter against the simulator cycling
through every scenario, with checks failing in every way, for a bounded time.

Failing in every way: the simulator steps through all its scenarios every few seconds (slow,
malformed, rate-limited, 403 challenge and 500 status pages; overloaded, rate-limited,
unauthorized, cut and erroring API streams), and fixed checks hit a refused port, a port that
accepts and never answers (timeouts), TLS against plain HTTP, and /probe requests that are
allowed, refused, malformed or time out. The config is reloaded (SIGHUP) every few seconds,
alternating between two variants, so check tasks are cancelled and restarted all along.

While it runs it scrapes /metrics every ``--scrape-interval`` seconds and checks that every
counter and histogram series never goes down, and samples the exporter's RSS and open file
descriptors (/proc) and its asyncio task count (``exporter_asyncio_tasks``). At the end it
prints a table and a verdict: flat, or growing. Exit status 0 when flat and monotonic.

All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bench.procs import Procs, free_port, rss_mb, wait_http
from bench.targets import exporter_argv
from exporter.simulator.scenarios import SCENARIOS

KEY_ENV = "SOAK_FAKE_API_KEY"  # the simulator accepts any key; this one is fake


@dataclass
class Sample:
    t: float
    rss_mb: float
    fds: int
    tasks: int
    series: int
    scrape_ms: float


@dataclass
class Report:
    duration: float
    scrapes: int = 0
    probes: int = 0
    reloads: int = 0
    scenarios_seen: int = 0
    samples: list[Sample] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)  # counters that went down
    errors: list[str] = field(default_factory=list)  # scrapes that failed, a dead exporter
    probe_statuses: dict[str, int] = field(default_factory=dict)

    def window(self, first: bool) -> list[Sample]:
        """The samples after warm-up (first fifth, at least one) or the last fifth."""
        n = max(1, len(self.samples) // 5)
        if first:
            return self.samples[n:2 * n] or self.samples[:1]
        return self.samples[-n:]

    def growth(self) -> dict[str, tuple[float, float, float]]:
        """Per resource: (median after warm-up, median at the end, maximum)."""
        out = {}
        for name in ("rss_mb", "fds", "tasks"):
            start = statistics.median(getattr(s, name) for s in self.window(True))
            end = statistics.median(getattr(s, name) for s in self.window(False))
            out[name] = (start, end, max(getattr(s, name) for s in self.samples))
        return out

    def flat(self, rss_tolerance_mb: float = 8.0, fd_tolerance: int = 8,
             task_tolerance: int = 8) -> bool:
        g = self.growth()
        rss_start, rss_end, _ = g["rss_mb"]
        return (rss_end - rss_start <= max(rss_tolerance_mb, 0.1 * rss_start)
                and g["fds"][1] - g["fds"][0] <= fd_tolerance
                and g["tasks"][1] - g["tasks"][0] <= task_tolerance)

    @property
    def ok(self) -> bool:
        return bool(self.samples) and not self.violations and not self.errors and self.flat()


class SilentServer:
    """Accepts connections and never answers: every check against it times out."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.held: deque[socket.socket] = deque()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.held.append(conn)
            while len(self.held) > 400:
                self.held.popleft().close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        for conn in self.held:
            conn.close()
        self.sock.close()


def soak_config(sim: str, silent: int, closed: int, variant: int) -> str:
    """Every kind of check, at a high rate; ``variant`` changes one interval so a reload
    restarts some check tasks."""
    host = sim.removeprefix("http://")
    return f"""\
defaults: {{interval: 1s, timeout: 800ms}}
upstreams:
  claude:
    statuspage: {{url: "{sim}/status", interval: 1s, timeout: 800ms}}
    verdict: {{outage_after: 2, recover_after: 1, window: 5}}
    checks:
      - {{name: keyless, kind: anthropic, url: "{sim}/anthropic", mode: keyless, component: k8w3r06qmzrp}}
      - {{name: messages, kind: anthropic, url: "{sim}/anthropic", mode: messages,
          model: claude-haiku-4-5, api_key_env: {KEY_ENV}, max_tokens: 8,
          interval: {1 + variant}s, timeout: 900ms}}
      - {{name: count-tokens, kind: anthropic, url: "{sim}/anthropic", mode: count_tokens,
          model: claude-haiku-4-5, api_key_env: {KEY_ENV}}}
      - {{name: models, kind: anthropic, url: "{sim}/anthropic", mode: models, api_key_env: {KEY_ENV}}}
      - {{name: dns-refused, kind: dns, target: api.example.test, resolver: "127.0.0.1:{closed}"}}
      - {{name: tcp, kind: tcp, target: "{host}"}}
  openai-compatible:
    statuspage: {{url: "{sim}/incidentio", interval: 1s, timeout: 800ms}}
    checks:
      - {{name: keyless, kind: openai, url: "{sim}/openai", mode: keyless}}
      - {{name: chat, kind: openai, url: "{sim}/openai", mode: chat, model: gpt-4o-mini, api_key_env: {KEY_ENV}}}
  broken:
    statuspage: {{url: "http://127.0.0.1:{closed}/", interval: 1s, timeout: 800ms}}
    checks:
      - {{name: api-refused, kind: anthropic, url: "http://127.0.0.1:{closed}", mode: keyless}}
      - {{name: http-refused, kind: http, url: "http://127.0.0.1:{closed}/"}}
      - {{name: http-timeout, kind: http, url: "http://127.0.0.1:{silent}/"}}
      - {{name: http-regex, kind: http, url: "{sim}/_sim/scenario", body_regex: "no such text"}}
      - {{name: http-json, kind: http, url: "{sim}/status/api/v2/summary.json", json_path: page.id}}
      - {{name: tcp-refused, kind: tcp, target: "127.0.0.1:{closed}"}}
      - {{name: tcp-silent, kind: tcp, target: "127.0.0.1:{silent}"}}
      - {{name: tls-plain, kind: tls, target: "{host}"}}
      - {{name: tls-silent, kind: tls, target: "127.0.0.1:{silent}"}}
  slow:
    statuspage: {{url: "http://127.0.0.1:{silent}/", interval: 2s, timeout: {1 + variant}s}}
control:
  - {{name: loopback, kind: tcp, target: "{host}"}}
  - {{name: loopback-http, kind: http, url: "{sim}/_sim/scenario"}}
modules:
  http_2xx: {{kind: http, timeout: 2s, allowed_targets: ["http://127.0.0.1:*"]}}
  tcp_connect: {{kind: tcp, timeout: 1s, allowed_targets: ["127.0.0.1:*"]}}
"""


def probe_urls(url: str, sim: str, silent: int, closed: int) -> list[str]:
    return [
        f"{url}/probe?module=http_2xx&target={sim}/_sim/scenario",
        f"{url}/probe?module=http_2xx&target=http://127.0.0.1:{closed}/&debug=true",
        f"{url}/probe?module=http_2xx&target=http://127.0.0.1:{silent}/",
        f"{url}/probe?module=tcp_connect&target=127.0.0.1:{silent}",
        f"{url}/probe?module=http_2xx&target=http://198.18.0.1/",  # refused: 403
        f"{url}/probe?module=nope&target=x",  # 400
        f"{url}/probe?module=tcp_connect&target=%ff%00",  # 400
    ]


class Prober:
    """One thread per /probe URL, each asking again as soon as it has its answer."""

    def __init__(self, urls: list[str], report: Report) -> None:
        self.report = report
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(u,), daemon=True) for u in urls]
        for thread in self.threads:
            thread.start()

    def _run(self, url: str) -> None:
        while not self.stop.is_set():
            try:
                status, _ = fetch(url, timeout=15)
            except OSError as exc:
                with self.lock:
                    self.report.errors.append(f"/probe failed: {exc}: {url}")
                self.stop.wait(0.5)
                continue
            with self.lock:
                key = str(status)
                self.report.probe_statuses[key] = self.report.probe_statuses.get(key, 0) + 1
                self.report.probes += 1
                if status >= 500:
                    self.report.errors.append(f"/probe answered {status}: {url}")
            self.stop.wait(0.05)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(20)


def fetch(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Monotonic:
    """Remembers every counter and histogram series; reports any that goes down."""

    def __init__(self) -> None:
        self.last: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def check(self, text: str) -> tuple[int, list[str], dict[str, float]]:
        problems = []
        gauges: dict[str, float] = {}
        count = 0
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                count += 1
                if family.type == "gauge" and not s.labels:
                    gauges[s.name] = s.value
                if family.type not in ("counter", "histogram") or s.name.endswith("_created"):
                    continue
                key = (s.name, tuple(sorted(s.labels.items())))
                before = self.last.get(key)
                if before is not None and s.value < before:
                    problems.append(f"{s.name}{dict(key[1])}: {before} -> {s.value}")
                self.last[key] = s.value
        return count, problems, gauges


def run_soak(duration: float, workdir: Path, cycle_seconds: float = 2.0,
             scrape_interval: float = 1.0, reload_every: float = 5.0,
             progress: bool = False) -> Report:
    report = Report(duration)
    silent = SilentServer()
    closed = free_port()  # bound once and released: nothing listens there
    try:
        with Procs(workdir) as procs:
            sim_port = free_port()
            names = ",".join(SCENARIOS)
            sim_proc = procs.start("simulator", [
                sys.executable, "-m", "exporter.simulator", f"--listen=127.0.0.1:{sim_port}",
                f"--cycle={names}", f"--cycle-seconds={cycle_seconds:g}", "--slow-seconds=2",
                "--retry-after=1"])
            sim = f"http://127.0.0.1:{sim_port}"
            wait_http(sim + "/_sim/scenario", sim_proc)
            config = workdir / "soak.yml"
            config.write_text(soak_config(sim, silent.port, closed, 0))
            port = free_port()
            exporter = procs.start("exporter", [
                *exporter_argv(), f"--config.file={config}",
                f"--web.listen-address=127.0.0.1:{port}", "--log.level=info"],
                env={KEY_ENV: "sk-soak-fake-key"})
            url = f"http://127.0.0.1:{port}"
            wait_http(url + "/-/healthy", exporter)
            monotonic = Monotonic()
            prober = Prober(probe_urls(url, sim, silent.port, closed), report)
            seen: set[str] = set()
            started = time.monotonic()
            next_reload = started + reload_every
            variant = 0
            while (now := time.monotonic()) - started < duration:
                if not exporter.alive():
                    report.errors.append(f"exporter exited with {exporter.popen.returncode}: "
                                         f"{exporter.tail()}")
                    break
                if now >= next_reload:
                    variant ^= 1
                    config.write_text(soak_config(sim, silent.port, closed, variant))
                    os.kill(exporter.pid, signal.SIGHUP)
                    report.reloads += 1
                    next_reload = now + reload_every
                t0 = time.perf_counter()
                try:
                    status, body = fetch(url + "/metrics")
                except OSError as exc:
                    report.errors.append(f"scrape failed: {exc}")
                    continue
                scrape_ms = (time.perf_counter() - t0) * 1000
                if status != 200:
                    report.errors.append(f"scrape answered {status}")
                    continue
                series, problems, gauges = monotonic.check(body.decode())
                report.violations.extend(problems)
                report.scrapes += 1
                _, scenario = fetch(sim + "/_sim/scenario")
                seen.add(json.loads(scenario)["scenario"])
                sample = Sample(round(now - started, 1), round(rss_mb(exporter.pid), 2),
                                open_fds(exporter.pid), int(gauges.get("exporter_asyncio_tasks", -1)),
                                series, round(scrape_ms, 1))
                report.samples.append(sample)
                if progress and len(report.samples) % 30 == 1:
                    print(format_row(sample), flush=True)
                time.sleep(max(0.0, scrape_interval - (time.monotonic() - now)))
            prober.close()
            report.scenarios_seen = len(seen)
            if "Traceback" in exporter.tail(10**7):
                report.errors.append("the exporter logged a traceback (see exporter.log)")
    finally:
        silent.close()
    return report


HEADER = f"{'t (s)':>8} {'RSS MiB':>8} {'fds':>5} {'tasks':>6} {'series':>7} {'scrape ms':>10}"


def format_row(s: Sample) -> str:
    return f"{s.t:>8.0f} {s.rss_mb:>8.1f} {s.fds:>5} {s.tasks:>6} {s.series:>7} {s.scrape_ms:>10.1f}"


def format_report(report: Report, rows: int = 12) -> str:
    lines = [HEADER]
    step = max(1, len(report.samples) // rows)
    picked = report.samples[::step]
    if report.samples and picked[-1] is not report.samples[-1]:
        picked.append(report.samples[-1])
    lines.extend(format_row(s) for s in picked)
    if report.samples:
        g = report.growth()
        lines.append("")
        lines.append(f"{'':>8} {'after warm-up':>14} {'end':>8} {'max':>8}")
        for name, (start, end, peak) in g.items():
            lines.append(f"{name:>8} {start:>14.1f} {end:>8.1f} {peak:>8.1f}")
    lines.append("")
    lines.append(f"scrapes {report.scrapes}, /probe requests {report.probes} "
                 f"{dict(sorted(report.probe_statuses.items()))}, reloads {report.reloads}, "
                 f"scenarios seen {report.scenarios_seen}/{len(SCENARIOS)}")
    lines.append(f"counters that went down: {len(report.violations)}; errors: {len(report.errors)}")
    for problem in (report.violations + report.errors)[:10]:
        lines.append(f"  {problem}")
    verdict = "flat" if report.samples and report.flat() else "GROWING"
    lines.append(f"verdict: {verdict}, {'monotonic' if not report.violations else 'NOT monotonic'}"
                 f"{'' if not report.errors else ', with errors'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    parser.add_argument("--cycle-seconds", type=float, default=2.0,
                        help="seconds per simulator scenario (default 2)")
    parser.add_argument("--scrape-interval", type=float, default=1.0)
    parser.add_argument("--reload-every", type=float, default=5.0)
    parser.add_argument("--json", metavar="PATH", help="also write the samples as JSON")
    parser.add_argument("--workdir", metavar="DIR", help="keep logs here (default: a temp dir)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        print(f"soak: {args.duration:g}s, {len(SCENARIOS)} scenarios every "
              f"{args.cycle_seconds:g}s each, logs in {workdir}", flush=True)
        print(HEADER, flush=True)
        report = run_soak(args.duration, workdir, args.cycle_seconds, args.scrape_interval,
                          args.reload_every, progress=True)
        print()
        print(format_report(report))
        if args.json:
            Path(args.json).write_text(json.dumps(asdict(report), indent=1))
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
