from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from quartchat.streaming.sse import SSEEvent, SSEParser, encode

from ..conftest import FIXTURES


def parse(*chunks: bytes) -> list[SSEEvent]:
    parser = SSEParser()
    events = [e for chunk in chunks for e in parser.feed(chunk)]
    return events + parser.close()


def test_data_lines_of_one_event_are_joined_with_newlines() -> None:
    assert parse(b"data: a\ndata:b\ndata:  c\n\n") == [SSEEvent("", "a\nb\n c")]


def test_crlf_and_lone_cr_end_lines_like_lf() -> None:
    assert parse(b"data: a\r\n\r\ndata: b\r\rdata: c\n\n") == [
        SSEEvent("", "a"),
        SSEEvent("", "b"),
        SSEEvent("", "c"),
    ]


def test_cr_at_the_end_of_a_read_waits_for_the_next_byte() -> None:
    # "\r" then "\n" in the next read is one line ending, not an empty line between two.
    assert parse(b"data: a\r", b"\ndata: b\r\n\r\n") == [SSEEvent("", "a\nb")]


def test_comments_are_skipped() -> None:
    assert parse(b": OPENROUTER PROCESSING\n\ndata: x\n\n") == [SSEEvent("", "x")]


def test_a_bare_colon_line_is_an_empty_comment() -> None:
    assert parse(b":\n\ndata: x\n\n") == [SSEEvent("", "x")]


def test_events_are_dispatched_as_they_complete_whatever_the_line_endings() -> None:
    for ending in (b"\n", b"\r\n", b"\r"):
        parser = SSEParser()
        # (the next event begun: a CR at the end of a read waits for the byte after it)
        assert parser.feed(b"data: a" + ending + ending + b"data: b") == [SSEEvent("", "a")]


def test_invalid_utf8_from_the_upstream_becomes_replacement_characters() -> None:
    assert parse(b"data: a\xffb\n\n") == [SSEEvent("", "a\ufffdb")]


def test_event_field_names_the_event_and_resets_after_dispatch() -> None:
    assert parse(b"event: ping\ndata: 1\n\ndata: 2\n\n") == [
        SSEEvent("ping", "1"),
        SSEEvent("", "2"),
    ]


def test_u2028_and_u0085_inside_data_do_not_split_lines() -> None:
    assert parse("data: a\u2028b\u0085c\n\n".encode()) == [SSEEvent("", "a\u2028b\u0085c")]


def test_utf8_split_across_reads_is_reassembled() -> None:
    raw = "data: 😀é\n\n".encode()
    assert parse(*[raw[i : i + 1] for i in range(len(raw))]) == [SSEEvent("", "😀é")]


def test_leading_bom_is_dropped() -> None:
    assert parse(b"\xef\xbb\xbfdata: x\n\n") == [SSEEvent("", "x")]


def test_only_a_bom_at_the_very_start_of_the_stream_is_dropped() -> None:
    # Later, a BOM is part of its line: here it makes the field name "\ufeffdata", ignored.
    assert parse(b"data: a\n", "\ufeffdata: b\n\n".encode()) == [SSEEvent("", "a")]


def test_end_of_input_dispatches_an_unterminated_event() -> None:
    assert parse(b"data: [DONE]") == [SSEEvent("", "[DONE]")]
    assert parse(b"data: [DONE]\n") == [SSEEvent("", "[DONE]")]


def test_a_lone_cr_at_the_very_end_of_input_ends_the_line() -> None:
    assert parse(b"data: [DONE]\r") == [SSEEvent("", "[DONE]")]


def test_a_character_cut_off_by_the_end_of_input_becomes_a_replacement_character() -> None:
    assert parse(b"data: a\xe2\x82") == [SSEEvent("", "a\ufffd")]


def test_legacy_error_field_becomes_an_error_event() -> None:
    assert parse(b'error: {"code": 500}\n\ndata: [DONE]\n\n') == [
        SSEEvent("error", '{"code": 500}'),
        SSEEvent("", "[DONE]"),
    ]


def test_unknown_fields_and_lines_without_colon_are_ignored() -> None:
    assert parse(b"id: 7\nretry: 10\nfoo\ndata: x\n\n") == [SSEEvent("", "x")]


def test_encoded_event_is_one_data_line() -> None:
    out = encode("chunk", {"delta": "a\nb\u2028"})
    assert out.count(b"\n") == 3  # "event:" line, "data:" line, blank line
    assert out.startswith(b"event: chunk\ndata: ")
    assert json.loads(out.split(b"data: ", 1)[1]) == {"delta": "a\nb\u2028"}


def _vector_chunks(name: str) -> list[bytes]:
    data = json.loads((FIXTURES / f"{name}.sse.chunks.json").read_text())
    return [bytes.fromhex(h) for h in data["chunks_hex"]]


def test_openai_vector_multiline_data() -> None:
    events = parse(*_vector_chunks("openai_testvector_multiline_data"))
    assert events == [SSEEvent("ping", '{\n"foo":\n\n\ntrue}')]


def test_openai_vector_u2028_in_data() -> None:
    events = parse(*_vector_chunks("openai_testvector_u2028_in_data"))
    assert [json.loads(e.data) for e in events] == [
        json.loads(e.data)
        for e in parse((FIXTURES / "openai_testvector_u2028_in_data.sse").read_bytes())
    ]
    assert any("\u2028" in e.data for e in events)


def test_openai_vector_utf8_split_across_chunks() -> None:
    whole = parse((FIXTURES / "openai_testvector_utf8_split_across_chunks.sse").read_bytes())
    assert parse(*_vector_chunks("openai_testvector_utf8_split_across_chunks")) == whole
    assert "\ufffd" not in "".join(e.data for e in whole)


# --- property: any way of cutting and line-ending a stream yields the same events ---

TEXT = st.text(
    alphabet=st.sampled_from([*list('ab :{}"\\'), "\u2028", "\x85", "😀", "é", "\x00", "\r"]),
    max_size=12,
)
NAMES = st.sampled_from(["", "message", "ping", "error-x"])
EVENTS = st.lists(
    st.tuples(NAMES, st.lists(TEXT.map(lambda s: s.replace("\r", "")), min_size=1, max_size=3)),
    max_size=6,
)


def _serialise(events: list[tuple[str, list[str]]], endings: list[str], comment: bool) -> bytes:
    out: list[str] = []
    k = 0
    previous = ""

    def eol() -> str:
        # A lone CR followed by an LF ending would be one CRLF on the wire: write CRLF then.
        nonlocal k, previous
        k += 1
        ending = endings[k % len(endings)]
        if previous == "\r" and ending == "\n":
            ending = "\r\n"
        previous = ending
        return ending

    for name, lines in events:
        if comment:
            out.append(": keep-alive" + eol())
        if name:
            out.append(f"event: {name}" + eol())
        out.extend(f"data: {line}" + eol() for line in lines)
        out.append(eol())
    return "".join(out).encode()


@settings(max_examples=300, deadline=None)
@given(
    events=EVENTS,
    endings=st.lists(st.sampled_from(["\n", "\r\n", "\r"]), min_size=1, max_size=4),
    comment=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
)
def test_any_chunking_and_line_endings_give_the_same_events(
    events: list[tuple[str, list[str]]], endings: list[str], comment: bool, cuts: list[int]
) -> None:
    raw = _serialise(events, endings, comment)
    points = sorted({c % (len(raw) + 1) for c in cuts})
    pieces = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]
    expected = [SSEEvent(name, "\n".join(lines)) for name, lines in events]
    assert parse(*pieces) == expected
