"""State shared by replicas through Redis: recently stored event ids and rate-limit buckets.

``RedisSeen`` has ``SeenIds``'s interface: an id is written with ``SET NX EX
ttl`` after its commit and looked up with ``MGET`` before a write, so a batch
that reaches two replicas is found to be a repeat by the second without
touching the database. ``RedisRateLimiter`` keeps each key's token bucket in
Redis, updated by one Lua script (atomic, on Redis's clock), so a key's rate
holds across replicas.

While Redis cannot be reached, both fall back to their in-process twin (the
store's unique keys still make storage idempotent) and try Redis again every
few seconds; they use it again as soon as it answers. Every call blocks on
the network: callers run them in a worker thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import redis

from tracerelay.server.dedup import SeenIds
from tracerelay.server.ratelimit import RateLimiter

__all__ = ["RedisRateLimiter", "RedisSeen", "connect"]

logger = logging.getLogger("tracerelay.server")
_RETRY_S = 2.0
_TIMEOUT_S = 0.5


def connect(url: str) -> redis.Redis:
    """A client for ``url`` that gives up quickly, so a dead Redis costs little."""
    return redis.Redis.from_url(url, socket_timeout=_TIMEOUT_S, socket_connect_timeout=_TIMEOUT_S)


class _Fallback:
    """When Redis failed last, and whether to try it again yet."""

    def __init__(self) -> None:
        self.down_since: float | None = None

    def usable(self) -> bool:
        return self.down_since is None or time.monotonic() - self.down_since > _RETRY_S

    def failed(self, exc: Exception) -> None:
        if self.down_since is None:
            logger.warning("tracerelay: Redis unreachable (%s); using in-process state", exc)
        self.down_since = time.monotonic()

    def worked(self) -> None:
        if self.down_since is not None:
            logger.warning("tracerelay: Redis answers again; shared state resumed")
        self.down_since = None


class RedisSeen:
    """Recently stored event ids in Redis, with an in-process fallback."""

    blocking = True

    def __init__(self, client: redis.Redis, *, ttl: float, local: SeenIds) -> None:
        self.client = client
        self.ttl = max(1, int(ttl))
        self.local = local
        self._state = _Fallback()
        self.hits = 0

    @staticmethod
    def _key(project_id: str, event_id: str) -> str:
        return f"tr:seen:{project_id}:{event_id}"

    def seen(self, project_id: str, event_ids: Iterable[str]) -> set[str]:
        """The ids stored within the TTL, by any replica."""
        ids = list(event_ids)
        if self._state.usable():
            try:
                found = self.client.mget([self._key(project_id, i) for i in ids])
            except redis.RedisError as exc:
                self._state.failed(exc)
            else:
                self._state.worked()
                hits = {i for i, value in zip(ids, found, strict=True) if value is not None}
                self.hits += len(hits)
                return hits
        return self.local.seen(project_id, ids)

    def remember(self, project_id: str, event_ids: Iterable[str]) -> None:
        """Note ids just committed (in Redis, and here for the times Redis is away)."""
        ids = list(event_ids)
        self.local.remember(project_id, ids)
        if not ids or not self._state.usable():
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            for event_id in ids:
                pipe.set(self._key(project_id, event_id), 1, nx=True, ex=self.ttl)
            pipe.execute()
        except redis.RedisError as exc:
            self._state.failed(exc)
        else:
            self._state.worked()


_TAKE = """
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local v = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(v[1]) or burst
local at = tonumber(v[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= cost then tokens = tokens - cost else wait = (cost - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return tostring(wait)
"""


class RedisRateLimiter(RateLimiter):
    """``RateLimiter`` whose buckets live in Redis, shared by every replica."""

    blocking = True

    def __init__(self, client: redis.Redis, rate: float, burst: float) -> None:
        super().__init__(rate, burst)
        self.client = client
        self._script = client.register_script(_TAKE)
        self._state = _Fallback()

    def admit(self, key_id: str, cost: int) -> float:
        """0.0 if admitted (tokens taken in Redis), else the seconds to wait."""
        need = min(float(cost), self.burst)
        if self._state.usable():
            try:
                wait = float(self._script(keys=[f"tr:rate:{key_id}"],
                                          args=[self.rate, self.burst, need]))  # fmt: skip
            except (redis.RedisError, ValueError) as exc:
                self._state.failed(exc if isinstance(exc, Exception) else Exception(exc))
            else:
                self._state.worked()
                return wait
        return super().admit(key_id, cost)
