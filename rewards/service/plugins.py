"""Calls to registered remote plugins, bounded in every dimension an attacker controls.

``PluginCaller.score(name, url, deadline_s, items)`` posts the items to
``{url}/v1/rewards/{name}/score`` and returns one ``Score`` per item. Each call:

* resolves the host through ``EgressPolicy`` (public addresses only, unless allow-listed) and
  connects to the address it checked (``Host`` header and TLS SNI keep the name), so DNS cannot
  rebind between the check and the connection; redirects are not followed;
* has one total deadline covering the wait for a slot, connecting, sending and reading the
  whole answer (a plugin trickling one byte a second is cut off at the deadline, not per read);
* reads at most ``max_response_bytes`` (a stream beyond it is aborted);
* runs in a concurrency pool of its own (an ``asyncio.Semaphore``, no threads), so built-in
  rewards never wait behind plugins;
* carries the ``x-rlsys-hop`` header, so a plugin URL that leads back to an rlsys service is
  answered 508 there instead of looping;
* retries once, inside the deadline, on a refused connection or a 429/5xx.

A failure becomes the same short error for every item, naming the plugin and the status
(``plugin 'x' failed: HTTP 500``); the plugin's body, and any per-item error text beyond
``ITEM_ERROR_CHARS``, is logged here, never sent to the client. Scores are not cached.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import Sequence
from urllib.parse import urlsplit

import httpx

from rewards.base import RewardItem, Score
from rewards.remote import RemoteRewardError, parse_scores
from rewards.service.egress import EgressPolicy, EgressRefused

log = logging.getLogger("rlsys.service.plugins")
HOP_HEADER = "x-rlsys-hop"
ITEM_ERROR_CHARS = 200
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_LOG_CHARS = 500


class PluginFailed(Exception):
    """One call failed; ``str(exc)`` is the short message the client sees."""


class PluginCaller:
    """Shared HTTP client, egress policy and concurrency pool of one app's plugin calls."""

    def __init__(self, policy: EgressPolicy, concurrency: int, max_response_bytes: int,
                 batch_size: int) -> None:
        self.policy, self.max_response_bytes, self.batch_size = (policy, max_response_bytes,
                                                                 batch_size)
        self._slots = asyncio.Semaphore(concurrency)
        self._client: httpx.AsyncClient | None = None

    async def close(self) -> None:
        """Close the pooled connections."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def check_url(self, url: str) -> None:
        """``EgressRefused`` unless ``url``'s host is an allowed destination (registration)."""
        parts = urlsplit(url)
        await self.policy.resolve(parts.hostname or "", _port(parts))

    async def score(self, name: str, url: str, deadline_s: float,
                    items: Sequence[RewardItem]) -> list[Score]:
        """One ``Score`` per item; every failure is a short per-item error."""
        out: list[Score] = []
        for start in range(0, len(items), self.batch_size):
            batch = items[start:start + self.batch_size]
            try:
                out.extend(await asyncio.wait_for(self._slot_call(name, url, batch),
                                                  deadline_s))
            except asyncio.TimeoutError:
                log.warning("plugin %r at %s: no complete answer within %.1f s", name, url,
                            deadline_s)
                out.extend(_failed(batch, f"plugin {name!r} timed out after {deadline_s:g} s"))
            except PluginFailed as exc:
                out.extend(_failed(batch, str(exc)))
        return out

    async def _slot_call(self, name: str, url: str,
                         batch: Sequence[RewardItem]) -> list[Score]:
        async with self._slots:
            return await self._call(name, url, batch)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            # No client-side timeout: the caller's asyncio deadline bounds the whole call.
            self._client = httpx.AsyncClient(timeout=None, follow_redirects=False,
                                             trust_env=False,
                                             limits=httpx.Limits(max_keepalive_connections=16))
        return self._client

    async def _call(self, name: str, url: str, batch: Sequence[RewardItem]) -> list[Score]:
        payload = json.dumps({"items": [{"prompt": it.prompt, "response": it.response,
                                         "reference": it.reference} for it in batch]})
        for attempt in (0, 1):
            try:
                status, body = await self._post(name, url, payload.encode())
            except (httpx.ConnectError, httpx.RemoteProtocolError) as exc:
                if attempt == 0:
                    await asyncio.sleep(0.1)
                    continue
                log.warning("plugin %r at %s unreachable: %s: %s", name, url,
                            type(exc).__name__, exc)
                raise PluginFailed(f"plugin {name!r} unreachable "
                                   f"({type(exc).__name__})") from None
            except httpx.HTTPError as exc:
                log.warning("plugin %r at %s: %s: %s", name, url, type(exc).__name__, exc)
                raise PluginFailed(f"plugin {name!r} failed ({type(exc).__name__})") from None
            if status in _RETRY_STATUS and attempt == 0:
                await asyncio.sleep(0.1)
                continue
            if status != 200:
                log.warning("plugin %r at %s answered HTTP %d: %r", name, url, status,
                            body[:_LOG_CHARS])
                raise PluginFailed(f"plugin {name!r} failed: HTTP {status}")
            return self._parse(name, url, body, len(batch))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _post(self, name: str, url: str, payload: bytes) -> tuple[int, bytes]:
        """POST to an address the policy allows now; the answer's status and capped body."""
        parts = urlsplit(url)
        port = _port(parts)
        try:
            addresses = await self.policy.resolve(parts.hostname or "", port)
        except EgressRefused as exc:
            log.warning("plugin %r refused at call time: %s", name, exc)
            raise PluginFailed(f"plugin {name!r} refused: its host is not an allowed "
                               "destination") from None
        address = addresses[0]
        shown = f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
        target = f"{parts.scheme}://{shown}:{port}{parts.path}/v1/rewards/{name}/score"
        # identity: a compressed answer could expand far beyond max_response_bytes
        headers = {"host": parts.netloc, "content-type": "application/json",
                   "accept-encoding": "identity", HOP_HEADER: "1"}
        request = self._http().build_request(
            "POST", target, content=payload, headers=headers,
            extensions={"sni_hostname": parts.hostname} if parts.scheme == "https" else {})
        response = await self._http().send(request, stream=True)
        try:
            chunks, size = [], 0
            async for chunk in response.aiter_raw():
                size += len(chunk)
                if size > self.max_response_bytes:
                    log.warning("plugin %r at %s: answer exceeds %d bytes; cut off", name, url,
                                self.max_response_bytes)
                    raise PluginFailed(f"plugin {name!r} failed: answer larger than "
                                       f"{self.max_response_bytes} bytes")
                chunks.append(chunk)
        finally:
            await response.aclose()
        return response.status_code, b"".join(chunks)

    def _parse(self, name: str, url: str, body: bytes, n: int) -> list[Score]:
        try:
            scores = parse_scores(json.loads(body), n, f"plugin {name!r}")
        except (RemoteRewardError, ValueError) as exc:
            log.warning("plugin %r at %s: %s", name, url, str(exc)[:_LOG_CHARS])
            raise PluginFailed(f"plugin {name!r} returned an invalid body") from None
        for score in scores:
            if score.error is not None and len(score.error) > ITEM_ERROR_CHARS:
                log.info("plugin %r item error cut to %d chars: %r", name, ITEM_ERROR_CHARS,
                         score.error[:_LOG_CHARS])
                score.error = score.error[:ITEM_ERROR_CHARS - 3] + "..."
        return scores


def _port(parts) -> int:  # noqa: ANN001 - a urllib SplitResult
    return parts.port or (443 if parts.scheme == "https" else 80)


def _failed(batch: Sequence[RewardItem], message: str) -> list[Score]:
    return [Score(None, error=message) for _ in batch]
