"""kind: icmp. Send ``packets`` echo requests ``packet_interval`` apart and count the replies.

Requests go out on a fixed schedule while replies are read as they come, so a lost packet
does not delay the next one (unlike ping's one-at-a-time loop). Replies are collected until
every request is answered, or ``REPLY_WAIT`` seconds after the last request, or the check's
timeout, whichever comes first; later replies count as lost. A request the kernel refuses to
send (no route, for instance) counts as sent and lost, so loss = 1 - received / sent holds.

Every run adds to probe_icmp_packets_sent_total and probe_icmp_packets_received_total and
observes each reply's round trip in probe_icmp_rtt_seconds; loss and quantiles over any
window come from PromQL. A run succeeds when at least one reply arrived.

The packets are icmplib's: its sockets (raw when ``privileged``, datagram "ping sockets"
otherwise, as exporter.icmp_mode detected), its ICMPRequest, its reply parser and its ICMP
error classes. Two things icmplib does not do are added on top of it here:

- Many checks on one socket. icmplib's ``receive(request)`` drops every packet that is not
  the reply it waits for, so two concurrent receivers on one socket steal each other's
  replies, and a socket per run means every raw socket parses every other run's traffic.
  Here all runs of one event loop share one icmplib socket per address family while any of
  them is running; one reader (a callback for the socket's readiness, draining every queued
  packet through icmplib's parser) hands each reply to the run whose (identifier, sequence)
  it carries.
- A receive buffer big enough for the replies to many runs arriving at once, and on raw
  sockets a kernel (BPF) filter: a raw socket receives every ICMP packet of the host, which
  icmplib would parse one by one in Python; the filter passes only echo replies carrying this
  socket's identifier and ICMP errors.
- ICMP errors on ping sockets. A raw socket receives "destination unreachable" itself and
  icmplib parses it; a ping socket only reports it through the socket's error queue
  (IP_RECVERR), which icmplib never reads. The error queue is read here and each entry
  turned into icmplib's own ICMPReply, so both modes give the same error text.

Failure reasons: dns (the name does not resolve), timeout (the lookup took the whole
timeout), loss (no reply to any request), unreachable (no reply, and the network said so:
no route, or an ICMP destination unreachable), permission (no ICMP socket may be opened).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import random
import socket
import struct
import time

from icmplib import (
    AsyncSocket,
    ICMPError,
    ICMPLibError,
    ICMPReply,
    ICMPRequest,
    ICMPSocketError,
    ICMPv4Socket,
    ICMPv6Socket,
    SocketBroadcastError,
    SocketPermissionError,
)

from exporter import metrics as m
from exporter.checks.base import ProbeContext, Result, Sample, failure
from exporter.checks.net import icmp_mode
from exporter.checks.net.resolve import ResolveError, address_hash, budget, ip_version, resolve
from exporter.config import IcmpCheck

REASONS = ("dns", "timeout", "loss", "unreachable", "permission", "local_resources")
REPLY_WAIT = 2.0  # seconds to wait for replies after the last request
DRAIN = 256  # replies read in one turn of the event loop, at most

# Linux values the socket module does not export (the same on every architecture).
IP_RECVERR, IPV6_RECVERR, MSG_ERRQUEUE, SO_RCVBUFFORCE = 11, 25, 0x2000, 33
RCVBUF = 1 << 20  # bytes: a few thousand replies arriving at once
SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6 = 2, 3
_EXTENDED_ERR = struct.Struct("=IBBBBII")  # struct sock_extended_err
_ID_SEQUENCE = struct.Struct("!HH")
SO_ATTACH_FILTER = 26
# (echo reply, error types) per IP version: destination unreachable and time exceeded.
ECHO_REPLY = {4: 0, 6: 129}
ERROR_TYPES = {4: frozenset({3, 11}), 6: frozenset({1, 3})}


class Run:
    """One probe run's requests: what went out, what came back, who waits."""

    __slots__ = ("all_sent", "errors", "outstanding", "rtts", "sent", "waiter")

    def __init__(self) -> None:
        self.sent = 0
        self.rtts: list[float] = []
        self.errors: list[str] = []
        self.outstanding = 0
        self.all_sent = False
        self.waiter: asyncio.Future[None] | None = None

    def settle(self) -> None:
        """One request is answered (or failed): wake the waiter once none is left."""
        self.outstanding -= 1
        if self.all_sent and self.outstanding <= 0:
            _wake(self.waiter)


def _reply_filter(version: int, ident: int) -> list[tuple[int, int, int, int]]:
    """A classic BPF program for a raw socket: keep echo replies carrying ``ident`` and the
    error types, drop the rest (other programs' pings, our own requests on loopback)."""
    accept, drop = (0x06, 0, 0, 0xFFFF), (0x06, 0, 0, 0)
    if version == 4:  # raw IPv4 sockets see the IP header first
        return [
            (0xB1, 0, 0, 0),          # X = IP header length
            (0x50, 0, 0, 0),          # A = ICMP type
            (0x15, 0, 2, 0),          # echo reply? else to the error types
            (0x48, 0, 0, 4),          # A = identifier
            (0x15, 2, 3, ident),      # ours: accept, else drop
            (0x15, 1, 0, 3),          # destination unreachable: accept
            (0x15, 0, 1, 11),         # time exceeded: accept, else drop
            accept, drop]
    return [  # raw ICMPv6 sockets see the ICMPv6 header first
        (0x30, 0, 0, 0),
        (0x15, 0, 2, 129),
        (0x28, 0, 0, 4),
        (0x15, 2, 3, ident),
        (0x15, 1, 0, 1),
        (0x15, 0, 1, 3),
        accept, drop]


# One ctypes array type for every program: a type made per call would be cyclic garbage.
_FilterCode = ctypes.c_char * 128


def _attach_filter(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    data = b"".join(struct.pack("HBBI", *op) for op in program)
    code = _FilterCode.from_buffer_copy(data.ljust(ctypes.sizeof(_FilterCode), b"\0"))
    # struct sock_fprog points at ``code``, which lives until setsockopt has copied it.
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,
                    struct.pack("HL", len(program), ctypes.addressof(code)))


@functools.lru_cache(maxsize=64)
def _payload(size: int) -> bytes:
    """A fixed payload of ``size`` bytes: icmplib's default draws a random one per request
    (random.choices), which costs more than building the packet; a pattern serves as
    well, as ping's does."""
    pattern = b"claude-status-exporter "
    return (pattern * (size // len(pattern) + 1))[:size]


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class Channel:
    """One icmplib socket shared by the runs of one event loop and IP version."""

    def __init__(self, version: int, privileged: bool) -> None:
        self.version = version
        self.privileged = privileged
        kind = ICMPv6Socket if version == 6 else ICMPv4Socket
        # Raises SocketPermissionError, or ICMPSocketError for any other refusal.
        self.sock = AsyncSocket(kind(privileged=privileged))
        # Raw sockets carry our identifier; a ping socket's is its port, set by the kernel.
        self.ident = random.getrandbits(16)
        try:
            self._tune(self.sock.sock)
        except BaseException:
            self.sock.close()
            raise
        self.sequence = random.getrandbits(16)
        self.pending: dict[int, tuple[Run, ICMPRequest]] = {}
        self.users = 0
        self.closed = False
        # Replies are read when the loop says the socket is readable, as many as are
        # queued, instead of a receive() per packet: icmplib's async receive wraps every
        # read in asyncio.wait_for, a task and a timer per reply.
        self.loop = asyncio.get_running_loop()
        try:
            self.loop.add_reader(self.sock.sock.fileno(), self._readable)
        except BaseException:
            self.sock.close()
            raise

    def _tune(self, raw: socket.socket) -> None:
        """What icmplib's socket lacks here: buffer room, a filter, ICMP error reporting."""
        try:  # room for a burst of replies to many runs; needs CAP_NET_ADMIN ...
            raw.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
        except OSError:  # ... else the plain option, capped by net.core.rmem_max
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        if self.privileged:
            _attach_filter(raw, _reply_filter(self.version, self.ident))
        elif self.version == 6:
            raw.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
        else:
            raw.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)

    # -- sending -------------------------------------------------------------------------------

    def _next_sequence(self) -> int:
        if len(self.pending) >= 65536:
            raise ICMPSocketError("65536 ICMP echo requests already in flight")
        sequence = (self.sequence + 1) & 0xFFFF
        while sequence in self.pending:  # never reuse a number still waiting for its reply
            sequence = (sequence + 1) & 0xFFFF
        self.sequence = sequence
        return sequence

    def send(self, run: Run, address: str, payload_size: int) -> None:
        """Send one request of ``run``; raises ICMPSocketError when the kernel refuses it."""
        request = ICMPRequest(destination=address, id=self.ident,
                              sequence=self._next_sequence(), payload=_payload(payload_size))
        try:
            self.sock.send(request)
        except SocketBroadcastError:
            raise
        except ICMPSocketError:
            # A ping socket may report an earlier request's ICMP error on this send (and
            # then not on a receive): deliver what the error queue holds and send again.
            if self.privileged or not self._read_error_queue():
                raise
            self.sock.send(request)
        self.pending[request.sequence] = (run, request)
        run.outstanding += 1

    def forget(self, run: Run) -> None:
        """Drop ``run``'s unanswered requests; their sequence numbers may be reused."""
        for sequence in [s for s, (owner, _) in self.pending.items() if owner is run]:
            del self.pending[sequence]

    # -- receiving -----------------------------------------------------------------------------

    def _readable(self) -> None:
        """Take every queued packet (at most ``DRAIN`` a turn, so other callbacks run) and
        hand icmplib's parse of each to its run: what icmplib's AsyncSocket.receive does
        with each packet it reads, less its wait_for."""
        raw = self.sock.sock
        for _ in range(DRAIN):
            if self.closed:
                return
            try:
                packet = raw.recv(1024)
            except BlockingIOError:
                return
            except OSError as exc:
                # A ping socket reports each ICMP error as a failed receive; the details
                # wait in its error queue. Anything else means the socket is unusable.
                if not self.privileged and self._read_error_queue():
                    continue
                self.fail(str(exc) or exc.__class__.__name__)
                return
            reply = self.sock._parse_reply(packet=packet, source=None, current_time=time.time())
            if reply is not None:
                self.deliver(reply)

    def deliver(self, reply: ICMPReply) -> None:
        """Hand a reply (or an ICMP error about one of our requests) to its run."""
        kind = reply.type
        if kind != ECHO_REPLY[self.version] and kind not in ERROR_TYPES[self.version]:
            return  # e.g. our own echo requests, which a raw socket sees on loopback
        entry = self.pending.get(reply.sequence)
        if entry is None or entry[1].id != reply.id:
            return  # another process's ping, or a reply to a request already given up
        run, request = entry
        del self.pending[reply.sequence]
        try:
            reply.raise_for_status()
        except ICMPError as exc:
            run.errors.append(f"{exc} (ICMP type {kind} code {reply.code})")
        else:
            run.rtts.append(max(0.0, reply.time - request.time))
        run.settle()

    def _read_error_queue(self) -> bool:
        """Deliver the ICMP errors queued on a ping socket; False if there were none."""
        raw = self.sock.sock
        found = False
        while True:
            try:
                data, ancdata, _flags, _address = raw.recvmsg(512, 512, MSG_ERRQUEUE)
            except OSError:  # BlockingIOError: the queue is empty
                return found
            found = True
            for level, kind, value in ancdata:
                if (level, kind) not in ((socket.IPPROTO_IP, IP_RECVERR),
                                         (socket.IPPROTO_IPV6, IPV6_RECVERR)):
                    continue
                if len(value) < _EXTENDED_ERR.size or len(data) < 8:
                    continue
                _errno, origin, icmp_type, icmp_code, _pad, _info, _data = \
                    _EXTENDED_ERR.unpack_from(value)
                if origin not in (SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6):
                    continue
                # The queued data is our request's ICMP message, identifier and sequence
                # included: the same facts icmplib reads from a raw socket's error packet.
                ident, sequence = _ID_SEQUENCE.unpack_from(data, 4)
                self.deliver(ICMPReply(source=None, family=self.version, id=ident,
                                       sequence=sequence, type=icmp_type, code=icmp_code,
                                       bytes_received=0, time=time.time()))

    def fail(self, message: str) -> None:
        """The socket is unusable: fail every request in flight on it and close it."""
        pending, self.pending = self.pending, {}
        for run, _request in pending.values():
            run.errors.append(message)
            run.settle()
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(ICMPLibError, OSError, ValueError, RuntimeError):
            # ValueError: the socket is already gone; RuntimeError: its loop has closed.
            self.loop.remove_reader(self.sock.sock.fileno())
        with contextlib.suppress(ICMPLibError, OSError):
            self.sock.close()


class Channels:
    """The open channels, by event loop, IP version and mode. A channel lives while a run
    uses it, so an idle exporter holds no ICMP socket and a closed loop leaves none behind.
    """

    def __init__(self) -> None:
        self.open: dict[tuple[asyncio.AbstractEventLoop, int, bool], Channel] = {}

    def acquire(self, version: int, privileged: bool) -> Channel:
        key = (asyncio.get_running_loop(), version, privileged)
        channel = self.open.get(key)
        if channel is None or channel.closed:
            channel = self.open[key] = Channel(version, privileged)
        channel.users += 1
        return channel

    def release(self, channel: Channel, run: Run) -> None:
        channel.forget(run)
        channel.users -= 1
        if channel.users <= 0:
            channel.close()
        if channel.closed:
            for key, held in list(self.open.items()):
                if held is channel:
                    del self.open[key]


# Sockets are a per-process resource shared by every icmp check, and the prober signature
# has no place to carry them: this one registry is the process's.
CHANNELS = Channels()


async def ping(address: str, count: int, interval: float, payload_size: int,
               privileged: bool, deadline: float) -> Run:
    """Run the echo exchange on the shared socket; ``deadline`` is on the loop clock.
    Raises ICMPSocketError (SocketPermissionError when not allowed) only when no socket can
    be opened."""
    loop = asyncio.get_running_loop()
    version = ip_version(address)
    channel = CHANNELS.acquire(version, privileged)
    held = True
    run = Run()
    try:
        first = loop.time()
        for index in range(count):
            send_at = first + index * interval
            if send_at > deadline:
                break
            if send_at > loop.time():
                await asyncio.sleep(send_at - loop.time())
                if channel.closed:  # failed while we slept: carry on with a new one
                    CHANNELS.release(channel, run)
                    held = False
                    try:
                        channel = CHANNELS.acquire(version, privileged)
                        held = True
                    except ICMPSocketError as exc:
                        run.errors.append(f"cannot reopen the ICMP socket: {exc}")
                        break
            run.sent += 1
            try:
                channel.send(run, address, payload_size)
            except SocketBroadcastError:
                run.errors.append("the kernel refused to send (a broadcast address, or a "
                                  "firewall rule)")
            except ICMPSocketError as exc:
                run.errors.append(str(exc) or exc.__class__.__name__)
        run.all_sent = True
        if run.outstanding > 0:
            waiter = run.waiter = loop.create_future()
            timer = loop.call_at(min(deadline, loop.time() + REPLY_WAIT), _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
    finally:
        if held:
            CHANNELS.release(channel, run)
    return run


async def probe(check: IcmpCheck, ctx: ProbeContext) -> Result:
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
    except ICMPSocketError as exc:
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
