"""The pure fold of chat-completion chunks."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from quartchat.errors import APIError
from quartchat.streaming.completion import Chunk, Completion


def chunks(*objs: dict[str, Any]) -> list[Chunk]:
    return [Chunk(orjson.dumps(o).decode(), o) for o in objs]


def delta(text: str | None = None, *, index: int = 0, **choice: Any) -> dict[str, Any]:
    return {"choices": [{"index": index, "delta": {"content": text}, **choice}]}


def test_text_of_choice_zero_is_folded_and_handed_out_once() -> None:
    completion = Completion("m")
    completion.fold(chunks(delta("Hel"), delta("lo"), delta("x", index=1)))
    assert completion.take_text() == "Hello"
    assert completion.take_text() == ""
    completion.fold(chunks(delta(" you")))
    assert completion.take_text() == " you"
    assert completion.text == "Hello you"


def test_a_choice_without_an_index_is_choice_zero() -> None:
    completion = Completion("m")
    completion.fold(chunks({"choices": [{"delta": {"content": "a"}, "finish_reason": "stop"}]}))
    assert (completion.text, completion.finish_reason) == ("a", "stop")


def test_choice_zero_is_found_wherever_it_sits_in_a_chunk() -> None:
    completion = Completion("m")
    completion.fold(
        chunks(
            {
                "choices": [
                    {"index": 1, "delta": {"content": "other"}},
                    {"index": 0, "delta": {"content": "mine"}},
                ]
            }
        )
    )
    assert completion.text == "mine"


def test_a_refusal_is_the_reply_text() -> None:
    completion = Completion("m")
    completion.fold(
        chunks({"choices": [{"index": 0, "delta": {"content": None, "refusal": "No"}}]})
    )
    assert completion.text == "No"


def test_id_model_created_finish_reason_and_usage_are_kept() -> None:
    completion = Completion("asked")
    completion.fold(
        chunks(
            {"id": "c-1", "model": "served", "created": 7, **delta("a")},
            {"id": "c-2", "model": "other", "created": 9, **delta(None, finish_reason="stop")},
            {
                "choices": [],
                "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3, "x": 9},
            },
        )
    )
    assert (completion.id, completion.model, completion.created) == ("c-1", "served", 7)
    assert completion.finish_reason == "stop"
    assert completion.usage == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}


def test_null_or_empty_usage_does_not_erase_usage_seen_before() -> None:
    completion = Completion("m")
    usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    completion.fold(chunks({"choices": [], "usage": usage}, {"usage": None}, {"usage": {}}))
    assert completion.usage == usage


def test_usage_counters_an_upstream_leaves_out_are_zero() -> None:
    completion = Completion("m")
    completion.fold(chunks({"choices": [], "usage": {"prompt_tokens": 4, "total_tokens": None}}))
    assert completion.usage == {"prompt_tokens": 4, "completion_tokens": 0, "total_tokens": 0}


def test_badly_typed_labels_are_ignored_not_fatal() -> None:
    completion = Completion("asked")
    completion.fold(chunks({"id": 5, "model": 6, "created": "soon", **delta("a")}))
    assert (completion.id, completion.model, completion.created) == ("", "asked", 0)
    assert completion.text == "a"


def test_a_badly_typed_model_beside_a_good_id_is_ignored() -> None:
    completion = Completion("asked")
    completion.fold(chunks({"id": "c-1", "model": 6, **delta("a")}))
    assert (completion.id, completion.model) == ("c-1", "asked")


def test_chunks_without_delta_or_choices_are_accepted() -> None:
    completion = Completion("m")
    completion.fold(
        chunks(
            {"choices": [], "prompt_filter_results": []},
            {"choices": [{"index": 0, "finish_reason": None, "content_filter_offsets": {}}]},
            {"id": "x"},
        )
    )
    assert completion.text == ""


@pytest.mark.parametrize(
    "bad",
    [
        {"choices": [None]},
        {"choices": "x"},
        {"choices": [{"index": 0, "delta": "x"}]},
        {"choices": [{"index": "0", "delta": {}}]},
        {"choices": [{"index": 0, "delta": {"content": ["a"]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": 1}]},
        {"usage": "x"},
        {"usage": {"total_tokens": 1.5}},
    ],
)
def test_a_malformed_chunk_raises_after_folding_the_chunks_before_it(bad: dict[str, Any]) -> None:
    completion = Completion("m")
    with pytest.raises(APIError) as raised:
        completion.fold(chunks(delta("a"), delta("b"), bad, delta("c")))
    assert raised.value.code == "UPSTREAM_ERROR"
    assert completion.folded == 2
    assert completion.take_text() == "ab"


def test_folded_counts_the_whole_batch_when_all_is_well() -> None:
    completion = Completion("m")
    completion.fold(chunks(delta("a"), {"choices": []}, delta("b")))
    assert completion.folded == 3


@pytest.mark.parametrize(
    ("saw_done", "finish", "complete"),
    [(True, None, True), (False, "stop", True), (False, None, False)],
)
def test_a_stream_is_complete_with_done_or_a_finish_reason(
    saw_done: bool, finish: str | None, complete: bool
) -> None:
    completion = Completion("m")
    completion.fold(chunks(delta("a", finish_reason=finish)))
    if complete:
        completion.finish(saw_done)
    else:
        with pytest.raises(APIError, match="ended before the reply was complete"):
            completion.finish(saw_done)


def test_a_whole_completion_folds_as_its_stream_would() -> None:
    whole = Completion("asked")
    whole.fold_whole(
        {
            "id": "c",
            "model": "m",
            "created": 5,
            "choices": [
                {
                    "index": 0,
                    "message": {"content": None, "refusal": "No."},
                    "finish_reason": "stop",
                },
                {"index": 1, "message": {"content": "other"}},
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
        }
    )
    assert (whole.id, whole.model, whole.created, whole.text) == ("c", "m", 5, "No.")
    assert whole.finish_reason == "stop" and whole.usage == {
        "prompt_tokens": 1,
        "completion_tokens": 2,
        "total_tokens": 3,
    }


@pytest.mark.parametrize(
    "body",
    [
        [1],
        {"choices": []},
        {"choices": [{"message": "Hi"}]},
        {"choices": [{"message": {"content": 5}}]},
    ],
)
def test_a_whole_completion_of_the_wrong_shape_is_malformed(body: object) -> None:
    with pytest.raises(APIError):
        Completion("m").fold_whole(body)
