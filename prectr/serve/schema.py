"""What ``POST /rank`` accepts and answers, and how a refused body is reported.

A body's rules (the paragraph below is also the OpenAPI description of the service):

Ids are JSON integers or strings (`true` is neither). Numbers are finite (`NaN` and
`Infinity` are refused) and in range: a price in [0, 1e9], a relevance floor in [0, 1].
A request holds at most the service's `max_candidates` candidates, and each item once: ids
compare as the log reads them (`12` and `"12"` are one item), and a repeated one is refused,
naming the index of each copy and of the first. A body over the service's `max_body_bytes`
gets a 413; any other refused body a 422 whose `detail` lists each problem's location (such
as `["body", "candidates", 3, "price"]`), message and type, at most 20 of them (`errors`
counts all), and never the input. A request without `timestamp` is scored as of its arrival
(UTC; a timestamp without an offset is UTC), one without `query_category` with the category the
history log most often gave its query; the response names both. A logged request sent with
both and its candidates as the log has them gets the scores `prectr evaluate` gives it.
"""

from datetime import datetime
from typing import Annotated

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StrictFloat, StrictInt, StrictStr, field_validator
from pydantic_core import PydanticCustomError

MAX_PRICE = 1e9  # the largest price taken (finite, far above any real one; in RULES)
MAX_ERRORS = 20  # problems listed in one 422: bad candidates could give thousands (in RULES)
MAX_DUPLICATES = 5  # repeated ids named in one message

Id = StrictInt | StrictStr  # a JSON integer or string: not true, not 1.5
Price = Annotated[StrictFloat, Field(ge=0, le=MAX_PRICE, allow_inf_nan=False)]
Floor = Annotated[StrictFloat, Field(ge=0, le=1, allow_inf_nan=False)]

RULES = (__doc__ or "").split("\n\n")[2]  # the OpenAPI description


class CandidateIn(BaseModel):
    item_id: Id
    title: str
    category: str
    brand: str | None = None
    price: Price | None = None


class RankedOut(BaseModel):
    item_id: int | str
    score: float = Field(description="P(click), what the ranking sorts by")
    grades: list[float] | None = Field(default=None, description="P(grade = 0..3)")
    relevant: float | None = Field(default=None, description="P(grade >= 2)")
    incentive: float | None = Field(default=None, description="personalised incentive (logit)")


class RankOut(BaseModel):
    ranking: list[RankedOut]
    dropped: int = Field(description="candidates below the relevance floor")
    model: str
    timestamp: datetime = Field(
        description="when the histories were read (UTC, to the millisecond): the request's "
        "timestamp, or the time it arrived when it sent none"
    )
    query_category: str | None = Field(
        description="the query category the model read: the one sent, else the one the "
        "history log most often gave the query; null when unknown or the model reads none"
    )


def rank_in(max_candidates: int) -> type[BaseModel]:
    """The request body of ``POST /rank`` with at most ``max_candidates`` candidates."""

    class RankIn(BaseModel):
        __doc__ = RULES

        user_id: Id
        query: str
        query_category: str | None = None
        timestamp: datetime | None = None
        candidates: Annotated[list[CandidateIn], Field(max_length=max_candidates)]
        relevance_floor: Floor | None = None

        @field_validator("candidates")
        @classmethod
        def each_item_once(cls, candidates: list[CandidateIn]) -> list[CandidateIn]:
            first: dict[str, int] = {}
            repeats = []
            for i, c in enumerate(candidates):
                j = first.setdefault(str(c.item_id), i)
                if j != i:
                    repeats.append(f"{i} repeats {j}")
            if repeats:
                more = len(repeats) - MAX_DUPLICATES
                named = ", ".join(repeats[:MAX_DUPLICATES])
                named += f" and {more} more" if more > 0 else ""
                raise PydanticCustomError(
                    "duplicate_item_id",
                    "each item may appear once; the item_id of candidate {named}",
                    {"named": named},
                )
            return candidates

    return RankIn


def problem(loc: list | tuple, msg: str, kind: str) -> dict:
    """One entry of a 4xx body's ``detail``."""
    return {"loc": list(loc), "msg": msg, "type": kind}


def refused(status: int, problems: list[dict]) -> JSONResponse:
    """A 4xx naming at most ``MAX_ERRORS`` problems; ``errors`` counts them all."""
    return JSONResponse({"detail": problems[:MAX_ERRORS], "errors": len(problems)}, status)


async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    """The 422 for a body the schema refuses: where and what, never the input (nor ``ctx``,
    which can hold values JSON cannot write, such as NaN)."""
    return refused(422, [problem(e["loc"], e["msg"], e["type"]) for e in exc.errors()])
