"""``python -m bench.configload [CHECKS ...]``: time to load a config of CHECKS checks.

The config mixes the seven check kinds (http, tcp, tls, icmp, dns, anthropic, openai) over
10 upstreams, each with nested settings (tls_config, headers, matchers, DNS validators), and
is loaded with ``exporter.config.load_text`` as a reload would. Prints the median of 5 loads,
the time per check, and the peak memory the load allocated (tracemalloc). Run it from a
checkout: it imports the ``exporter`` package found on ``sys.path``, so running it from
another checkout's folder compares two versions of the loader on the same machine.
"""

from __future__ import annotations

import statistics
import sys
import time
import tracemalloc

from exporter.config import load_text

ENTRIES = [
    "{{name: h{i}, kind: http, url: 'https://h{i}.test/health', method: GET, "
    "headers: {{X-Team: sre}}, valid_status_codes: [200, 204], "
    "fail_if_body_not_matches_regexp: [ok], tls_config: {{min_version: TLS12}}}}",
    "{{name: t{i}, kind: tcp, target: 'h{i}.test:443', ip_protocol: ip4}}",
    "{{name: s{i}, kind: tls, target: 'h{i}.test:443', tls_config: {{server_name: h{i}.test}}}}",
    "{{name: p{i}, kind: icmp, target: h{i}.test, packets: 3, packet_interval: 200ms}}",
    "{{name: d{i}, kind: dns, target: h{i}.test, record_type: a, valid_rcodes: [NOERROR], "
    "validate_answer_rrs: {{fail_if_not_matches_regexp: ['.*']}}}}",
    "{{name: a{i}, kind: anthropic, mode: keyless}}",
    "{{name: o{i}, kind: openai, mode: keyless, interval: 1m}}",
]


def config_text(checks: int, upstreams: int = 10) -> str:
    lines = ["defaults: {interval: 30s, timeout: 5s}", "upstreams:"]
    per = max(1, checks // upstreams)
    made = 0
    for u in range(upstreams):
        lines += [f"  up{u}:", "    checks:"]
        for _ in range(per):
            if made == checks:
                break
            lines.append("      - " + ENTRIES[made % len(ENTRIES)].format(i=made))
            made += 1
    return "\n".join(lines) + "\n"


def measure(checks: int) -> str:
    text = config_text(checks)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        config = load_text(text, "bench.yml")
        times.append(time.perf_counter() - start)
    loaded = sum(len(u.checks) for u in config.upstreams)
    tracemalloc.start()
    load_text(text, "bench.yml")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    median = statistics.median(times)
    return (f"{loaded:>6} checks ({len(text) / 1024:,.0f} KiB): median {median * 1000:,.0f} ms, "
            f"{median / loaded * 1e6:,.0f} µs per check, peak {peak / 2**20:,.1f} MiB")


def main() -> None:
    for arg in sys.argv[1:] or ["100", "1000", "10000"]:
        print(measure(int(arg)), flush=True)


if __name__ == "__main__":
    main()
