"""Load: wrk at a fixed concurrency against /probe, counting probes that really succeeded, and
a small sampler that runs probes a few at a time and keeps each reported duration."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from bench.common import scrape, value
from bench.procs import cpu_seconds

# Counts the answers whose body says the probe succeeded: a fast "probe_success 0" must not
# count as throughput. Both exporters print "probe_success 1" (ours as "1.0").
WRK_SCRIPT = """\
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) ok = 0; bad = 0 end
function response(status, headers, body)
  if status == 200 and string.find(body, "\\nprobe_success 1", 1, true) then
    ok = ok + 1
  else
    bad = bad + 1
  end
end
function done(summary, latency, requests)
  local o, b = 0, 0
  for _, t in ipairs(threads) do o = o + t:get("ok"); b = b + t:get("bad") end
  io.write(string.format("PROBES ok=%d bad=%d p50_us=%d p99_us=%d\\n", o, b,
                         latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass
class WrkResult:
    ok: int
    bad: int
    seconds: float
    p50_ms: float
    p99_ms: float
    cpu_seconds: float | None  # the exporter's CPU time during the run

    @property
    def probes_per_second(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def cpu_us_per_probe(self) -> float | None:
        if self.cpu_seconds is None or not self.ok:
            return None
        return self.cpu_seconds / self.ok * 1e6


def probe_url(base: str, module: str, target: str) -> str:
    return f"{base}/probe?module={module}&target={quote(target, safe='')}"


def rotating_script(paths: list[str]) -> str:
    """WRK_SCRIPT plus a request() that sends ``paths`` in turn."""
    listed = ", ".join(f'"{p}"' for p in paths)
    return WRK_SCRIPT + f"""\
paths = {{{listed}}}
next_path = 0
function request()
  next_path = next_path % #paths + 1
  return wrk.format(nil, paths[next_path])
end
"""


def wrk(url: str, workdir: Path, seconds: float, connections: int, pids: tuple[int, ...] = (),
        paths: list[str] | None = None) -> WrkResult:
    """``paths``: send these (path and query) in turn instead of ``url``'s own."""
    binary = shutil.which("wrk")
    if binary is None:
        raise RuntimeError("wrk is not installed (scripts/apt-packages.txt)")
    script = workdir / "count-success.lua"
    if paths:
        script = workdir / f"rotate-{len(paths)}.lua"
        script.write_text(rotating_script(paths))
    elif not script.exists():
        script.write_text(WRK_SCRIPT)
    before = sum(cpu_seconds(p) for p in pids) if pids else None
    started = time.perf_counter()
    done = subprocess.run(
        [binary, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
         "-s", str(script), url],
        capture_output=True, text=True, timeout=seconds + 60, check=False)
    elapsed = time.perf_counter() - started
    cpu = sum(cpu_seconds(p) for p in pids) - before if before is not None else None
    out = done.stdout
    found = re.search(r"PROBES ok=(\d+) bad=(\d+) p50_us=(\d+) p99_us=(\d+)", out)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {out}\n{done.stderr}")
    took = re.search(r"requests in ([\d.]+)(m?s)", out)
    seconds_run = elapsed
    if took:
        seconds_run = float(took.group(1)) / (1000 if took.group(2) == "ms" else 1)
    ok, bad, p50, p99 = (int(g) for g in found.groups())
    return WrkResult(ok, bad, seconds_run, p50 / 1000, p99 / 1000, cpu)


def sample_durations(url: str, count: int, concurrency: int = 2) -> list[float]:
    """Run ``count`` probes, ``concurrency`` at a time; return each reported probe_duration."""

    def one(_: int) -> float | None:
        text = scrape(url, timeout=30)
        if value(text, "probe_success") != 1:
            return None
        return value(text, "probe_duration_seconds")

    with ThreadPoolExecutor(concurrency) as pool:
        found = list(pool.map(one, range(count)))
    return [d for d in found if d is not None]
