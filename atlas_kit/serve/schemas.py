"""The HTTP contract: pydantic models of every request and response, with their bounds.

Field names are the contract other programs rely on (``questions``/``k`` -> ``results``/``index``,
``question`` -> ``answer``/``passages``/``index``, ``ref``); fields may be added, never renamed.
Bounds live here so that a request outside them is refused by validation (HTTP 422, naming the
field) before it reaches the model.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from typing_extensions import Annotated

__all__ = [
    "MAX_K",
    "MAX_QUESTIONS",
    "MAX_QUESTION_CHARS",
    "MAX_CANDIDATES",
    "REF_PATTERN",
    "IndexVersion",
    "Passage",
    "RetrieveRequest",
    "RetrieveResponse",
    "AskRequest",
    "AskResponse",
    "ChatMessage",
    "ChatRequest",
    "ChatResponse",
    "IndexInfo",
    "StoreEntry",
    "StoreListing",
    "RefRequest",
    "PublishRequest",
    "SwapResponse",
    "PublishResponse",
    "Health",
]

MAX_K = 100
MAX_CANDIDATES = 1000
MAX_QUESTIONS = 64
MAX_QUESTION_CHARS = 2000
MAX_MESSAGES = 64
MAX_ANSWER_TOKENS = 256
# NAME@VERSION with the store's name rules: no "/", no leading ".", so never a path
REF_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*@[A-Za-z0-9][A-Za-z0-9._-]*$"

# a question: 1 to MAX_QUESTION_CHARS characters, at least one of them not blank
Question = Annotated[str, StringConstraints(min_length=1, max_length=MAX_QUESTION_CHARS, pattern=r"\S")]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IndexVersion(BaseModel):
    """The one index version a response was computed from."""

    name: str
    version: str
    ref: str | None = Field(None, description="NAME@VERSION in the store, when loaded from it")


class Passage(BaseModel):
    id: str
    title: str
    text: str
    score: float


class RetrieveRequest(_Request):
    questions: list[Question] = Field(min_length=1, max_length=MAX_QUESTIONS,
                                 description=f"1 to {MAX_QUESTIONS} questions, each up to {MAX_QUESTION_CHARS} characters")
    k: int = Field(10, ge=1, le=MAX_K)
    candidates: int | None = Field(None, ge=1, le=MAX_CANDIDATES,
                                   description="hits fetched before reranking (needs a reranker; default 4*k)")


class RetrieveResponse(BaseModel):
    results: list[list[Passage]]
    index: IndexVersion


class AskRequest(_Request):
    question: Question
    k: int = Field(10, ge=1, le=MAX_K)
    candidates: int | None = Field(None, ge=1, le=MAX_CANDIDATES)


class AskResponse(BaseModel):
    question: str
    answer: str
    passages: list[Passage]
    index: IndexVersion


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str = Field(max_length=MAX_QUESTION_CHARS * 4)


class ChatRequest(BaseModel):
    """OpenAI's chat-completions request; the last user message is the question.

    Sampling fields OpenAI clients send (temperature, top_p, ...) are accepted and ignored: the
    reader decodes greedily. ``stream`` must be false (no server-sent events).
    """

    model_config = ConfigDict(extra="ignore")

    model: str = "atlas"
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: Literal[False] = False
    n: Literal[1] = 1
    max_tokens: int | None = Field(None, ge=1, le=MAX_ANSWER_TOKENS)
    k: int = Field(10, ge=1, le=MAX_K, description="passages given to the reader (an atlas_kit extension)")


class ChatChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatChoiceMessage
    finish_reason: Literal["stop"] = "stop"


class ChatUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: ChatUsage
    passages: list[Passage]
    index: IndexVersion


class IndexInfo(BaseModel):
    name: str
    version: str
    ref: str | None = None
    kind: str
    count: int
    manifest_version: int | None = None
    retriever_name: str | None = None
    retriever_fingerprint: str | None = None


class StoreEntry(BaseModel):
    name: str
    version: str
    ref: str
    current: bool
    kind: str | None = None
    count: int | None = None


class StoreListing(BaseModel):
    indexes: list[StoreEntry]


class RefRequest(_Request):
    ref: str = Field(pattern=REF_PATTERN, max_length=200, description="NAME@VERSION in the server's index store")


class PublishRequest(RefRequest):
    swap: bool = Field(False, description="also point the live model at it")


class SwapResponse(BaseModel):
    index: IndexInfo
    previous: IndexVersion | None


class PublishResponse(BaseModel):
    published: str
    swapped: bool
    index: IndexInfo


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    index: IndexInfo
    reader: bool
