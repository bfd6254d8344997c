"""kind: icmp. Send ``packets`` echo requests ``packet_interval`` apart and count the replies.

Requests go out on a fixed schedule while replies are read as they come, so a lost packet
does not delay the next one (unlike ping's one-at-a-time loop). Replies are collected until
every request is answered, or ``REPLY_WAIT`` seconds after the last request, or the check's
timeout, whichever comes first; later replies count as lost. A request the kernel refuses to
send (no route, for instance) counts as sent and lost, so loss = 1 - received / sent holds.

Every run adds to probe_icmp_packets_sent_total and probe_icmp_packets_received_total and
observes each reply's round trip in probe_icmp_rtt_seconds; loss and quantiles over any
window come from PromQL. A run succeeds when at least one reply arrived.

The socket kind (raw or unprivileged datagram) is the one exporter.icmp_mode detected.

Failure reasons: dns (the name does not resolve), timeout (the lookup took the whole
timeout), loss (no reply to any request), unreachable (no reply, and the network said so:
no route, or an ICMP destination unreachable), permission (no ICMP socket may be opened).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from icmplib import (
    AsyncSocket,
    ICMPLibError,
    ICMPRequest,
    ICMPv4Socket,
    ICMPv6Socket,
    SocketPermissionError,
)
from icmplib.utils import unique_identifier

from exporter import icmp_mode
from exporter import metrics as m
from exporter.checks import ProbeContext, Result, Sample, failure
from exporter.checks.resolve import ResolveError, address_hash, budget, ip_version, resolve
from exporter.config import CheckConfig

REASONS = ("dns", "timeout", "loss", "unreachable", "permission")
REPLY_WAIT = 2.0  # seconds to wait for replies after the last request
ECHO_REPLY = {4: 0, 6: 129}
UNREACHABLE = {4: (3, 11), 6: (1, 3)}  # destination unreachable, time exceeded


class Ping:
    """One run's bookkeeping: which requests are out, what came back."""

    def __init__(self) -> None:
        self.ident: int | None = None
        self.sent = 0
        self.sent_at: dict[int, float] = {}
        self.rtts: list[float] = []
        self.errors: list[str] = []
        self.all_sent = False
        self.done = asyncio.Event()

    def check_done(self) -> None:
        if self.all_sent and not self.sent_at:
            self.done.set()


async def _receive(sock: AsyncSocket, version: int, ping: Ping) -> None:
    task = asyncio.current_task()
    while True:
        try:
            reply = await sock.receive(None, timeout=3600)
        except ICMPLibError as exc:  # a socket error (e.g. ECONNREFUSED on a datagram socket)
            ping.errors.append(str(exc))
            await asyncio.sleep(0.01)
            continue
        if task is not None and task.cancelling():
            # Python 3.11's wait_for (inside icmplib) hands back a packet that raced with our
            # cancel instead of raising; without this the run would hang until its timeout.
            raise asyncio.CancelledError
        if reply.id != ping.ident or reply.sequence not in ping.sent_at:
            continue  # another pinger's packet, a duplicate, or our own request (loopback)
        if reply.type == ECHO_REPLY[version]:
            ping.rtts.append(max(0.0, reply.time - ping.sent_at.pop(reply.sequence)))
        elif reply.type in UNREACHABLE[version]:
            ping.sent_at.pop(reply.sequence)
            ping.errors.append(f"ICMP type {reply.type} code {reply.code} for request "
                               f"{reply.sequence}")
        ping.check_done()


async def ping(address: str, count: int, interval: float, payload_size: int,
               privileged: bool, deadline: float) -> Ping:
    """Run the echo exchange; ``deadline`` is on the loop clock. Raises SocketPermissionError
    or ICMPLibError only when the socket cannot be opened."""
    loop = asyncio.get_running_loop()
    version = ip_version(address)
    socket_class = ICMPv6Socket if version == 6 else ICMPv4Socket
    state = Ping()
    with AsyncSocket(socket_class(privileged=privileged)) as sock:
        receiver = asyncio.create_task(_receive(sock, version, state))
        try:
            ident = unique_identifier()
            first = loop.time()
            for sequence in range(count):
                send_at = first + sequence * interval
                if send_at > deadline:
                    break
                if send_at > loop.time():
                    await asyncio.sleep(send_at - loop.time())
                request = ICMPRequest(address, ident, sequence, payload_size=payload_size)
                state.sent += 1
                try:
                    sock.send(request)
                except ICMPLibError as exc:
                    state.errors.append(str(exc) or exc.__class__.__name__)
                    continue
                state.ident = request.id  # unprivileged sockets get the kernel's id
                state.sent_at[sequence] = request.time
            state.all_sent = True
            state.check_done()
            wait = min(deadline, loop.time() + REPLY_WAIT) - loop.time()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, wait)):
                    await state.done.wait()
        finally:
            receiver.cancel()
            try:
                await receiver
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # our own caller's timeout, not just the receiver's end
    return state


async def probe(check: CheckConfig, ctx: ProbeContext) -> Result:
    start = time.perf_counter()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget(check)
    zero = (Sample(m.PROBE_ICMP_SENT, 0.0), Sample(m.PROBE_ICMP_RECEIVED, 0.0))
    mode = icmp_mode.detect()
    if mode == "none":
        message = icmp_mode.message()
        ctx.log(message)
        return failure(start, "permission", message, counters=zero)
    assert check.target is not None, "the config requires a target"
    try:
        async with asyncio.timeout(max(0.0, deadline - loop.time())):
            resolved = await resolve(check.target, check.ip_protocol)
    except ResolveError as exc:
        ctx.log(str(exc))
        return failure(start, "dns", str(exc), counters=zero)
    except TimeoutError:
        message = f"DNS lookup of {check.target} timed out"
        ctx.log(message)
        return failure(start, "timeout", message, counters=zero)
    address = resolved.addresses[0]
    gauges = (Sample(m.PROBE_DNS_LOOKUP_TIME, resolved.seconds),
              Sample(m.PROBE_IP_ADDR_HASH, address_hash(resolved.addresses)),
              Sample(m.PROBE_IP_PROTOCOL, float(ip_version(address))))
    ctx.log(f"pinging {check.target} ({address}) with {check.packets} packets "
            f"{check.packet_interval:g}s apart, {mode} socket")
    try:
        result = await ping(address, check.packets, check.packet_interval, check.payload_size,
                            mode == "privileged", deadline)
    except SocketPermissionError:
        message = (f"not allowed to open a {mode} ICMPv{ip_version(address)} socket; "
                   + icmp_mode.message())
        ctx.log(message)
        return failure(start, "permission", message, gauges=gauges, counters=zero)
    except ICMPLibError as exc:
        message = f"cannot open an ICMP socket: {exc}"
        ctx.log(message)
        return failure(start, "unreachable", message, gauges=gauges, counters=zero)

    received = len(result.rtts)
    counters = (Sample(m.PROBE_ICMP_SENT, float(result.sent)),
                Sample(m.PROBE_ICMP_RECEIVED, float(received)))
    observations = tuple(Sample(m.PROBE_ICMP_RTT, rtt) for rtt in result.rtts)
    details = {"address": address, "packets_sent": result.sent, "packets_received": received,
               "mode": mode}
    summary = f"{received} of {result.sent} replies from {address}"
    if result.rtts:
        summary += (f", rtt min/avg/max {min(result.rtts) * 1000:.3f}/"
                    f"{sum(result.rtts) / received * 1000:.3f}/{max(result.rtts) * 1000:.3f} ms")
    if result.sent < check.packets:
        summary += f"; the timeout left time for only {result.sent} of {check.packets} requests"
    ctx.log(summary)
    for error in dict.fromkeys(result.errors):
        ctx.log(f"error: {error}")
    if received:
        return Result(True, time.perf_counter() - start, gauges=gauges, counters=counters,
                      observations=observations, details=details)
    reason = "unreachable" if result.errors else "loss"
    error = f"no reply to {result.sent} echo requests to {address}"
    if result.errors:
        error += f": {result.errors[0]}"
    return failure(start, reason, error, gauges=gauges, counters=counters, details=details)
