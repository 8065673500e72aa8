"""`answer`: a route's JSON is built from the model it documents, or it is not sent."""

from __future__ import annotations

from datetime import date

import orjson
import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from quartchat.blueprints.common import answer


class Span(BaseModel):
    model_config = ConfigDict(extra="forbid")

    from_: date = Field(alias="from")
    count: int
    note: str | None = None


async def test_an_answer_is_sent_as_its_model_says_it() -> None:
    response = answer(Span, {"from": "2026-12-01", "count": 3}, 201)
    assert response.status_code == 201
    # The documented names and types; a field the view did not give stays out.
    assert orjson.loads(await response.get_data()) == {"from": "2026-12-01", "count": 3}


@pytest.mark.parametrize(
    "payload",
    [{"from": "2026-12-01"}, {"from": "2026-12-01", "count": "many"}, {"from": "x", "count": 1}],
)
def test_an_answer_its_model_does_not_describe_is_not_sent(payload: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        answer(Span, payload)


def test_a_field_the_description_does_not_name_is_not_sent() -> None:
    with pytest.raises(ValidationError):
        answer(Span, {"from": "2026-12-01", "count": 1, "secret": "x"})
