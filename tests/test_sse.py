"""The incremental SSE parser: line endings, chunk boundaries, comments, fields, limits."""

from __future__ import annotations

import json

import pytest

from exporter.checks.net.sse import Event, SSEError, SSEParser

# A stream as the Anthropic API sends it (recorded framing: pings, padded data lines).
ANTHROPIC_STREAM = (
    b'event: message_start\n'
    b'data: {"type":"message_start","message":{"usage":{"input_tokens":16}}           }\n\n'
    b'event: ping\ndata: {"type": "ping"}\n\n'
    b'event: content_block_delta\n'
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta",'
    b'"text":"Ol\xc3\xa1! "}           }\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"        }\n\n'
)
ANTHROPIC_EVENTS = ["message_start", "ping", "content_block_delta", "message_stop"]


def feed_all(parser: SSEParser, chunks: list[bytes]) -> list[Event]:
    events: list[Event] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events


@pytest.mark.parametrize(("name", "stream", "expected"), [
    ("lf", b"event: a\ndata: 1\n\n", [Event("a", "1")]),
    ("crlf", b"event: a\r\ndata: 1\r\n\r\n", [Event("a", "1")]),
    ("cr", b"event: a\rdata: 1\r\r", [Event("a", "1")]),
    ("mixed endings", b"data: 1\r\n\ndata: 2\r\r\n",
     [Event("message", "1"), Event("message", "2")]),
    ("no event name", b"data: x\n\n", [Event("message", "x")]),
    ("multi-line data", b"data: a\ndata: b\ndata:\n\n", [Event("message", "a\nb\n")]),
    ("comments skipped", b": keep-alive\n:\ndata: x\n: inside\n\n", [Event("message", "x")]),
    ("only one space stripped", b"data:  two\n\n", [Event("message", " two")]),
    ("no space after colon", b"data:x\n\n", [Event("message", "x")]),
    ("field without colon", b"data\n\n", [Event("message", "")]),
    ("unknown field ignored", b"retry: 10\nfoo: bar\ndata: x\n\n", [Event("message", "x")]),
    ("id kept for later events", b"id: 7\ndata: a\n\ndata: b\n\n",
     [Event("message", "a", "7"), Event("message", "b", "7")]),
    ("event without data not dispatched", b"event: a\n\ndata: x\n\n", [Event("message", "x")]),
    ("bom stripped", b"\xef\xbb\xbfdata: x\n\n", [Event("message", "x")]),
    ("incomplete final event dropped", b"data: x\n\ndata: y\n", [Event("message", "x")]),
    ("openai done marker", b"data: {\"a\":1}\n\ndata: [DONE]\n\n",
     [Event("message", '{"a":1}'), Event("message", "[DONE]")]),
])
def test_parses(name: str, stream: bytes, expected: list[Event]) -> None:
    assert SSEParser().feed(stream) == expected


@pytest.mark.parametrize("stream", [
    ANTHROPIC_STREAM,
    ANTHROPIC_STREAM.replace(b"\n", b"\r\n"),
    ANTHROPIC_STREAM.replace(b"\n", b"\r"),
])
def test_every_split_point_gives_the_same_events(stream: bytes) -> None:
    whole = SSEParser().feed(stream)
    assert [e.event for e in whole] == ANTHROPIC_EVENTS
    for cut in range(len(stream) + 1):
        assert feed_all(SSEParser(), [stream[:cut], stream[cut:]]) == whole, cut


def test_byte_by_byte_gives_the_same_events() -> None:
    events = feed_all(SSEParser(), [bytes([b]) for b in ANTHROPIC_STREAM])
    assert [e.event for e in events] == ANTHROPIC_EVENTS
    assert json.loads(events[2].data)["delta"]["text"] == "Olá! "  # UTF-8 split across chunks


def test_padded_data_lines_are_valid_json() -> None:
    events = SSEParser().feed(ANTHROPIC_STREAM)
    assert [json.loads(e.data)["type"] for e in events] == ANTHROPIC_EVENTS


def test_crlf_split_between_chunks_is_one_line_end() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\n") == []  # the LF completes the CR, it is not a blank line
    assert parser.feed(b"\r\n") == [Event("message", "a")]


def test_empty_chunk_keeps_a_pending_cr() -> None:
    parser = SSEParser()
    parser.feed(b"data: a\r")
    assert parser.feed(b"") == []
    assert parser.feed(b"\n\n") == [Event("message", "a")]


@pytest.mark.parametrize(("chunks", "pending"), [
    ([b"data: a\n\n"], False),
    ([b"data: a\n"], True),  # an event started and never ended: a cut stream
    ([b"data: a"], True),  # a line without its end
    ([b": comment only\n"], False),
])
def test_pending_tells_a_cut_stream(chunks: list[bytes], pending: bool) -> None:
    parser = SSEParser()
    feed_all(parser, chunks)
    assert parser.pending is pending


def test_overlong_line_is_an_error() -> None:
    parser = SSEParser(max_line=64)
    parser.feed(b"data: " + b"x" * 50)
    with pytest.raises(SSEError):
        parser.feed(b"x" * 50)


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    assert SSEParser().feed(b"data: \xff\n\n") == [Event("message", "\ufffd")]
