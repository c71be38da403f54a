"""Request/response bodies of the reward service (they make up its OpenAPI schema).

Validation failures become 422 with the field path; the batch-size limit is checked in the
handler (413) because it is a resource limit, not a malformed body. Every string must be valid
Unicode (JSON's ``"\ud800"`` escape makes a lone surrogate, which cannot be encoded: 422), and a
plugin URL may hold no control or non-ASCII characters.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


def check_unicode(value: Any) -> Any:
    """``value`` unchanged when every string in it (dict keys too) is encodable as UTF-8."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"string is not valid Unicode: {exc.reason} at position "
                             f"{exc.start}") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            check_unicode(key)
            check_unicode(item)
    elif isinstance(value, list):
        for item in value:
            check_unicode(item)
    return value


class Item(BaseModel):
    """One item to score."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description="The prompt the response answers.")
    response: str = Field(description="The model's response.")
    reference: Any = Field(None, description="Reward-specific reference (e.g. the gold answer "
                                             "for math, test code for code).")

    @field_validator("prompt", "response", "reference")
    @classmethod
    def _valid_unicode(cls, value: Any) -> Any:
        return check_unicode(value)


class ScoreRequest(BaseModel):
    """A batch of items for one reward."""

    model_config = ConfigDict(extra="forbid")

    items: list[Item] = Field(description="Items to score (at most max_batch).")


class ScoreResponse(BaseModel):
    """One score and one error slot per item, in order; a failed item has a null score."""

    scores: list[float | None]
    errors: list[str | None]


class PluginSpec(BaseModel):
    """A remote reward plugin: a server speaking this same REST contract."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="Reward name, also its name on the "
                                                        "plugin server.")
    url: str = Field(max_length=2048, pattern=r"^https?://[^\s/?#@]+(/[^\s?#]*)?$",
                     description="Base URL, http(s)://host[:port][/prefix]; no credentials, "
                                 "query or fragment.")
    timeout_s: float | None = Field(None, gt=0, le=600,
                                    description="Total deadline of one call in seconds; defaults "
                                                "to, and is capped at, the service's "
                                                "plugin_timeout_s.")

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        if not url.isascii() or any(unicodedata.category(c) == "Cc" for c in url):
            raise ValueError("url must be printable ASCII: no control characters (encode a "
                             "non-ASCII host name as punycode)")
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise ValueError(f"url is not a valid URL: {exc}") from None
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"url scheme must be http or https, got {parts.scheme!r}")
        if not parts.hostname:
            raise ValueError("url must name a host")
        if parts.username is not None or parts.password is not None:
            raise ValueError("url must not contain credentials (user:password@)")
        if parts.query or parts.fragment or re.search(r"\s", url):
            raise ValueError("url must not contain a query, fragment or whitespace")
        return url.rstrip("/")


class RewardInfo(BaseModel):
    """A reward the service can score."""

    name: str
    kind: Literal["builtin", "plugin"]
    url: str | None = None
    input_schema: dict[str, Any]


class RewardList(BaseModel):
    """Built-ins plus registered plugins; ``plugins_available`` is False when Redis is down."""

    rewards: list[RewardInfo]
    plugins_available: bool


class Health(BaseModel):
    """Liveness; ``redis`` says whether the shared store is reachable."""

    status: Literal["ok"]
    redis: Literal["ok", "down"]
