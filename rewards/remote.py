"""HTTP client reward: scores items on any server speaking the rlsys REST contract.

``POST {url}/v1/rewards/{name}/score`` with ``{"items": [{"prompt", "response", "reference"}]}``
and expects ``{"scores": [float | null, ...], "errors": [str | null, ...]}`` (``errors``
optional). Items are sent in batches of ``batch_size``. Connection errors, HTTP 5xx and 429 are
retried (at most ``retries`` times, exponential backoff from ``backoff_s``, honouring a 429's
``Retry-After``); other 4xx answers and read timeouts are not retried. A batch that still fails,
or an answer that does not follow the contract, turns into per-item errors naming the URL and
the status: never a silent zero. Each request has one total deadline (``timeout_s``) and reads
at most ``max_response_bytes``. ``parse_scores`` checks an answer against the contract (the
service's async plugin caller uses it too). This module does not serve anything (see
``rewards.service``) and applies no address policy: the caller chose the URL.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from rewards.base import RewardItem, Score

_RETRY_STATUS = {429, 500, 502, 503, 504}
#: transport failures worth another try: the request (most likely) never reached the handler.
_RETRY_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError,
                 httpx.ReadError, httpx.WriteError, httpx.PoolTimeout)
_MAX_RETRY_AFTER_S = 30.0


class RemoteRewardError(RuntimeError):
    """A batch could not be scored remotely; the message names the URL and the cause."""


class RemoteReward:
    """Score through a remote reward server.

    Args:
        url: server base URL (``http(s)://host:port``); with ``name=None`` it is the full score
            endpoint and is posted to as is.
        name: reward name on the server.
        timeout_s: total deadline of one request in seconds: connecting, sending and reading
            the whole answer (checked between received chunks, so a server trickling bytes
            is cut off at most one read timeout after it).
        retries: extra attempts after the first one for retryable failures.
        backoff_s: first backoff; attempt ``k`` waits ``backoff_s * 2**k``.
        batch_size: items per request.
        token: bearer token sent as ``Authorization: Bearer <token>``.
        max_response_bytes: longest answer read; a longer one is cut off and is an error.
    """

    def __init__(self, url: str, name: str | None = None, timeout_s: float = 30.0,
                 retries: int = 3, backoff_s: float = 0.5, batch_size: int = 64,
                 token: str | None = None,
                 max_response_bytes: int = 64 * 1024 * 1024) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"RemoteReward: url must start with http:// or https://, got {url!r}")
        if batch_size < 1 or retries < 0 or timeout_s <= 0 or backoff_s < 0:
            raise ValueError("RemoteReward: need batch_size >= 1, retries >= 0, timeout_s > 0, "
                             f"backoff_s >= 0; got {batch_size}, {retries}, {timeout_s}, "
                             f"{backoff_s}")
        self.endpoint = f"{url.rstrip('/')}/v1/rewards/{name}/score" if name else url
        self.name = name or "remote"
        self.version = f"remote:{self.endpoint}"
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self.batch_size, self.max_response_bytes = batch_size, max_response_bytes
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def score(self, items: Sequence[RewardItem]) -> list[Score]:
        """Score all items, batch by batch; a failed batch gives per-item errors."""
        out: list[Score] = []
        for start in range(0, len(items), self.batch_size):
            batch = items[start:start + self.batch_size]
            try:
                out.extend(self._score_batch(batch))
            except RemoteRewardError as exc:
                out.extend(Score(None, error=str(exc)) for _ in batch)
        return out

    def close(self) -> None:
        """Close the pooled HTTP connections."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(timeout=self.timeout_s, headers=self._headers)
            return self._client

    def _score_batch(self, batch: Sequence[RewardItem]) -> list[Score]:
        payload = {"items": [{"prompt": it.prompt, "response": it.response,
                              "reference": it.reference} for it in batch]}
        response = self._post_with_retries(payload)
        try:
            body = json.loads(response.content)
        except ValueError as exc:
            raise RemoteRewardError(f"POST {self.endpoint} returned an invalid body: "
                                    "not JSON") from exc
        return parse_scores(body, len(batch), f"POST {self.endpoint}")

    def _post_once(self, payload: dict[str, Any]) -> _Answer:
        deadline = time.monotonic() + self.timeout_s
        with self._http().stream("POST", self.endpoint, json=payload) as response:
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > self.max_response_bytes:
                    raise RemoteRewardError(f"POST {self.endpoint} answer exceeds "
                                            f"{self.max_response_bytes} bytes")
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout("total deadline passed while reading")
                chunks.append(chunk)
            return _Answer(response.status_code, response.headers.get("retry-after"),
                           b"".join(chunks))

    def _post_with_retries(self, payload: dict[str, Any]) -> _Answer:
        where = f"POST {self.endpoint}"
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self._post_once(payload)
            except httpx.TimeoutException as exc:
                if isinstance(exc, _RETRY_ERRORS) and not last:
                    self._sleep(attempt, None)
                    continue
                raise RemoteRewardError(f"{where} timed out after {self.timeout_s}s "
                                        f"({type(exc).__name__})") from exc
            except _RETRY_ERRORS as exc:
                if not last:
                    self._sleep(attempt, None)
                    continue
                raise RemoteRewardError(f"{where} failed after {attempt + 1} attempts: "
                                        f"{type(exc).__name__}: {exc}") from exc
            except httpx.HTTPError as exc:
                raise RemoteRewardError(f"{where} failed: {type(exc).__name__}: {exc}") from exc
            if response.status_code in _RETRY_STATUS and not last:
                self._sleep(attempt, response.retry_after)
                continue
            if response.status_code != 200:
                tries = f" after {attempt + 1} attempts" if attempt else ""
                raise RemoteRewardError(f"{where} returned HTTP {response.status_code}{tries}: "
                                        f"{_snippet(response)}")
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _sleep(self, attempt: int, retry_after: str | None) -> None:
        delay = self.backoff_s * 2**attempt
        if retry_after is not None:
            try:
                delay = max(delay, min(float(retry_after), _MAX_RETRY_AFTER_S))
            except ValueError:
                pass  # an HTTP-date Retry-After: keep our own backoff
        time.sleep(delay)


@dataclass(frozen=True)
class _Answer:
    status_code: int
    retry_after: str | None
    content: bytes


def _snippet(response: _Answer, limit: int = 300) -> str:
    """The server's ``detail`` (or the start of the body) for an error message."""
    try:
        body = json.loads(response.content)
        text = str(body.get("detail", body)) if isinstance(body, dict) else str(body)
    except ValueError:
        text = response.content[:limit * 4].decode("utf-8", "replace")
    return text[:limit] + ("..." if len(text) > limit else "")


def parse_scores(body: Any, n: int, where: str) -> list[Score]:
    """Check a decoded answer follows the contract (``where`` names the server in messages);
    raise ``RemoteRewardError`` when the answer as a whole does not."""
    bad = f"{where} returned an invalid body"
    scores = body.get("scores") if isinstance(body, dict) else None
    if not isinstance(scores, list) or len(scores) != n:
        raise RemoteRewardError(f"{bad}: expected 'scores' as a list of {n}, got "
                                f"{_describe(scores)}")
    errors = body.get("errors") or [None] * n
    if not isinstance(errors, list) or len(errors) != n:
        raise RemoteRewardError(f"{bad}: expected 'errors' as a list of {n}, got "
                                f"{_describe(errors)}")
    out: list[Score] = []
    for value, error in zip(scores, errors, strict=True):
        if error is not None:
            out.append(Score(None, error=f"{where}: {error}"))
        elif isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            out.append(Score(None, error=f"{bad}: score {value!r:.40} is not a finite number"))
        else:
            out.append(Score(float(value)))
    return out


def _describe(value: Any) -> str:
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return type(value).__name__ if value is not None else "nothing"
