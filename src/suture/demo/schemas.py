"""The API's shapes: the bodies the routes take, and the bodies they answer (documented).

The request bodies are validated here, once: :class:`RespondBody` refuses
text a database column cannot hold (a NUL character, a lone surrogate) with
a ``422`` naming the field, and :class:`ChaosBody` takes strict types and no
unknown key. The answer shapes (:class:`MessagesPage`, :class:`Moved`, ...)
document the ``200`` bodies in the OpenAPI document, so the fuzzer checks
every answer against them; the routes still return plain dicts.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from suture.demo.db import DB
from suture.demo.models import MessageStatus, TaskStatus

__all__ = [
    "MAX_RESPONSE",
    "RESPONSE_PATTERN",
    "AssistanceList",
    "CaptureResult",
    "ChaosBody",
    "Message",
    "MessagesPage",
    "Moved",
    "RespondBody",
    "Responded",
    "Stale",
    "Task",
    "Text",
]

#: The longest manager response, in characters.
MAX_RESPONSE = 4000


def _storable(value: object) -> object:
    """Refuse what a database text column cannot hold: NUL, and lone surrogates."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("must not contain the NUL character")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must not contain a lone surrogate") from None
    return value


def _not_blank(value: object) -> object:
    if isinstance(value, str) and value and value.isspace():
        raise ValueError("must contain a character besides white space")
    return value


#: Text a database column can hold (no NUL, no lone surrogate), refused with a 422 naming it.
Text = Annotated[str, BeforeValidator(_storable)]

#: What the document promises about a response (Python's ``re``, as ``str.strip`` reads
#: white space): a character besides white space, and no NUL anywhere. Linear to check.
RESPONSE_PATTERN = r"^\s*[^\s\x00][^\x00]*$"


class RespondBody(BaseModel):
    """``{"response": "..."}``: 1 to 4000 characters, not only white space, no NUL."""

    # The pattern is checked by Python's re, as the fuzzer and str.strip() read it.
    model_config = ConfigDict(extra="forbid", regex_engine="python-re")

    response: Annotated[
        str,
        StringConstraints(min_length=1, max_length=MAX_RESPONSE, pattern=RESPONSE_PATTERN),
        BeforeValidator(_not_blank),
        BeforeValidator(_storable),
        Field(examples=["Approved."]),
    ]


class ChaosBody(BaseModel):
    """The chaos admin's settings: strict types (``"0.5"`` is not a number), no unknown keys.

    Bounds are the injector's (a ``400 bad_chaos_config`` names them): ``errorRate``
    0..1, ``latency`` 0..60 s, ``hold`` 0..pool size, ``traffic`` 0..200 per second.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    target: Text = DB
    error_rate: float | None = Field(default=None, alias="errorRate", allow_inf_nan=False)
    latency: float | None = Field(default=None, allow_inf_nan=False)
    statement_latency: float | None = Field(
        default=None, alias="statementLatency", allow_inf_nan=False
    )
    hold: int | None = None
    clear: bool = False
    traffic: float | None = Field(default=None, allow_inf_nan=False)


# --- what the routes answer (documentation: the fuzzer checks every 200 against it) --


class Task(BaseModel):
    id: int
    title: str
    type: str
    status: TaskStatus
    assignee: str | None
    assistanceNotes: str | None
    managerResponse: str | None
    requestedAt: str | None
    respondedAt: str | None
    createdAt: str | None


class Message(BaseModel):
    id: int
    brand: str
    text: str
    status: MessageStatus
    #: The patterns that caught it (only those it was not released from before).
    matchedPatterns: list[str]
    #: The patterns a reviewer released it from: capture respects them.
    releasedPatterns: list[str]
    createdAt: str | None


class Stale(BaseModel):
    """How old a list served from memory is, and why (``stale-if-error``)."""

    age: int
    reason: str
    error: str


class AssistanceList(BaseModel):
    success: Literal[True]
    requests: list[Task]
    count: int
    #: Only on a list served from memory during an outage (``stale-if-error``).
    stale: Stale | None = None


class Responded(BaseModel):
    success: Literal[True]
    task: Task


class MessagesPage(BaseModel):
    success: Literal[True]
    messages: list[Message]
    total: int


class Moved(BaseModel):
    success: Literal[True]
    message: Message


class CaptureResult(BaseModel):
    success: Literal[True]
    updatedCount: int
    totalInQueue: int
    remainingInQueue: int
    processed: int
