"""Chat sessions in Valkey, shared by every realtime instance.

Per session (all keys share one hash slot, ``rt:{tenant:session}:…``):

- ``meta``  hash: ``user``, ``seq`` (last assigned sequence), ``started`` (request id of the
  answer being produced, so an instance taking over knows it was begun elsewhere);
- ``log``   stream: the session's events, entry id ``<sequence>-0``, serialised without their
  sequence (the id is the sequence); capped at ``max_events`` and expiring ``ttl_s`` after
  the last write, which is what bounds a resume;
- ``queue`` list: user messages waiting for an answer, oldest first; the head is popped in
  the same script that logs its answer's final event, so a crash never loses a message;
- ``req:<request_id>``: marks a message as accepted, so a re-sent one is answered once;
- ``pump``: the lease of the instance producing answers for the session (taken, together
  with reading the next message and marking its answer begun, in one script).

A tenant's open connections are a sorted set ``rt:conns:{tenant}`` of connection ids scored
by expiry, so a crashed instance's connections stop counting once their expiry passes.

Queuing a message also publishes the session on the ``rt:nudge`` channel (in the same
script), so a quiet connection attached to another instance learns of it at once instead
of at its next poll. Pub/sub delivers at most once: polling remains the fallback.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from services.kit import errors
from services.realtime.hub import SessionKey
from supportmesh.common.v1 import errors_pb2
from supportmesh.spec.v1 import message_pb2

NUDGE_CHANNEL = "rt:nudge"

_SUBMIT = """
if redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[2]) == false then
  return {0, tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')}
end
local position = redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return {position, tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')}
"""

_APPEND = """
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], seq .. '-0', 'e', ARGV[1])
if ARGV[2] == '1' then
  redis.call('LPOP', KEYS[3])
  redis.call('HDEL', KEYS[1], 'started')
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return seq
"""

# The answering loop's next step, in one round trip: take the lease (ARGV[3] = '1': unless a
# live instance holds it), read the oldest waiting message and mark its answer begun.
# {0}: another instance holds the lease; {1}: nothing waits; {2, message, taken over?}.
_NEXT = """
if ARGV[3] == '1' and not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {0}
end
local head = redis.call('LINDEX', KEYS[2], 0)
if not head then return {1} end
local request_id = cjson.decode(head)['r']
local before = redis.call('HGET', KEYS[3], 'started')
redis.call('HSET', KEYS[3], 'started', request_id)
return {2, head, before == request_id and 1 or 0}
"""

_RELEASE_IF_IDLE = """
if redis.call('LLEN', KEYS[2]) > 0 then return 0 end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[3]) == false and
   redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""


@dataclass(frozen=True)
class Keys:
    """The Valkey keys of one session."""

    meta: str
    log: str
    queue: str
    pump: str
    prefix: str

    @classmethod
    def of(cls, tenant_id: str, session_id: str) -> Keys:
        """Keys for ``session_id`` of ``tenant_id``."""
        prefix = f"rt:{{{tenant_id}:{session_id}}}"
        return cls(f"{prefix}:meta", f"{prefix}:log", f"{prefix}:queue", f"{prefix}:pump", prefix)

    def request(self, request_id: str) -> str:
        """The marker of an accepted message."""
        return f"{self.prefix}:req:{request_id}"


@dataclass(frozen=True)
class Pending:
    """A user message waiting for its answer."""

    request_id: str
    text: str
    user_id: str
    context: dict[str, Any]

    def dump(self) -> str:
        """JSON for the queue."""
        return json.dumps(
            {"r": self.request_id, "t": self.text, "u": self.user_id, "c": self.context}
        )

    @classmethod
    def load(cls, raw: bytes | str) -> Pending:
        """Parse a queue entry."""
        found = json.loads(raw)
        return cls(found["r"], found["t"], found["u"], found["c"])


def _event(entry_id: bytes | str, fields: dict[bytes, bytes]) -> message_pb2.StreamEvent:
    event = message_pb2.StreamEvent.FromString(fields[b"e"])
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    event.sequence = int(raw.partition("-")[0])
    return event


class Sessions:
    """Session state for all realtime instances."""

    def __init__(
        self,
        redis: Redis,
        *,
        ttl_s: int = 3600,
        max_events: int = 5000,
        lease_ms: int = 5000,
        owner: str = "",
    ) -> None:
        """Keep sessions ``ttl_s`` after their last event, at most ``max_events`` each."""
        # redis-py's annotations do not know decode_responses=False: replies are bytes.
        self.redis: Any = redis
        self.ttl_s = ttl_s
        self.max_events = max_events
        self.lease_ms = lease_ms
        self.owner = owner or uuid.uuid4().hex
        self._submit = redis.register_script(_SUBMIT)
        self._append = redis.register_script(_APPEND)
        self._next = redis.register_script(_NEXT)
        self._release = redis.register_script(_RELEASE_IF_IDLE)
        self._renew = redis.register_script(_RENEW)
        self._slot = redis.register_script(_SLOT)

    async def open(self, tenant_id: str, user_id: str, session_id: str) -> str:
        """Start a session for ``user_id`` or check that ``session_id`` is theirs to resume."""
        if not session_id:
            session_id = uuid.uuid4().hex
            keys = Keys.of(tenant_id, session_id)
            await self.redis.hset(keys.meta, mapping={"user": user_id, "seq": 0})
            await self.redis.expire(keys.meta, self.ttl_s)
            return session_id
        if len(session_id) > 64 or not session_id.replace("-", "").isalnum():
            raise errors.InvalidArgument("session_id is not valid", field="session_id")
        owner = await self.redis.hget(Keys.of(tenant_id, session_id).meta, "user")
        # Another tenant's or user's session looks exactly like one that never existed.
        if owner is None or owner.decode() != user_id:
            raise errors.NotFound(
                f"session {session_id} not found or expired",
                metadata={"session_id": session_id},
            )
        return session_id

    async def submit(self, tenant_id: str, session_id: str, item: Pending) -> tuple[int, int]:
        """Queue a message: (its 1-based place in the queue, or 0 if already accepted; seq now)."""
        keys = Keys.of(tenant_id, session_id)
        found = await self._submit(
            keys=[keys.meta, keys.queue, keys.request(item.request_id)],
            args=[item.dump(), self.ttl_s, NUDGE_CHANNEL, json.dumps([tenant_id, session_id])],
        )
        return int(found[0]), int(found[1])

    async def nudges(self) -> AsyncIterator[SessionKey]:
        """Sessions that have just queued a message, on any instance, from now on."""
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(NUDGE_CHANNEL)
            async for message in pubsub.listen():
                try:
                    tenant_id, session_id = json.loads(message["data"])
                except (ValueError, TypeError):
                    continue  # not ours (only the queuing script publishes here): skip it
                yield str(tenant_id), str(session_id)
        finally:
            await pubsub.aclose()

    async def append(
        self, tenant_id: str, session_id: str, event: message_pb2.StreamEvent, *, terminal: bool
    ) -> int:
        """Log ``event`` (a terminal one also pops the answered message); its sequence."""
        keys = Keys.of(tenant_id, session_id)
        event.sequence = 0
        seq = await self._append(
            keys=[keys.meta, keys.log, keys.queue],
            args=[event.SerializeToString(), "1" if terminal else "0", self.max_events,
                  self.ttl_s],
        )  # fmt: skip
        event.sequence = int(seq)
        return int(seq)

    async def replay(
        self, tenant_id: str, session_id: str, after: int, upto: int | None = None
    ) -> list[message_pb2.StreamEvent]:
        """Logged events with ``after`` < sequence (≤ ``upto``), oldest first."""
        keys = Keys.of(tenant_id, session_id)
        end = f"{upto}-0" if upto is not None else "+"
        entries = await self.redis.xrange(keys.log, f"({after}-0", end)
        return [_event(entry_id, fields) for entry_id, fields in entries]

    async def tail(
        self, tenant_id: str, session_id: str, after: int, block_ms: int
    ) -> list[message_pb2.StreamEvent]:
        """Events after ``after``, waiting up to ``block_ms`` for the first one."""
        keys = Keys.of(tenant_id, session_id)
        found = await self.redis.xread({keys.log: f"{after}-0"}, block=block_ms, count=256)
        return [_event(entry_id, fields) for _, entries in found for entry_id, fields in entries]

    async def last_sequence(self, tenant_id: str, session_id: str) -> int:
        """The sequence of the session's latest event (0 before the first)."""
        found = await self.redis.hget(Keys.of(tenant_id, session_id).meta, "seq")
        return int(found or 0)

    async def next_answer(
        self, tenant_id: str, session_id: str, *, acquire: bool
    ) -> tuple[bool, Pending | None, bool]:
        """The next message to answer, its answer marked begun, in one round trip.

        Returns (lease held, message or None, its answer was begun before: taken over).
        ``acquire``: take the lease first, unless a live instance holds it (then: not held).
        """
        keys = Keys.of(tenant_id, session_id)
        found = await self._next(
            keys=[keys.pump, keys.queue, keys.meta],
            args=[self.owner, self.lease_ms, "1" if acquire else "0"],
        )
        if int(found[0]) == 0:
            return False, None, False
        if int(found[0]) == 1:
            return True, None, False
        return True, Pending.load(found[1]), bool(int(found[2]))

    async def waiting(self, tenant_id: str, session_id: str) -> int:
        """How many messages wait for an answer."""
        return int(await self.redis.llen(Keys.of(tenant_id, session_id).queue))

    async def renew(self, tenant_id: str, session_id: str) -> bool:
        """Extend our lease; False when it was lost."""
        pump = Keys.of(tenant_id, session_id).pump
        return bool(await self._renew(keys=[pump], args=[self.owner, self.lease_ms]))

    async def release_if_idle(self, tenant_id: str, session_id: str) -> bool:
        """Give the lease up if no message waits (atomically); False: answer the next one."""
        keys = Keys.of(tenant_id, session_id)
        return bool(await self._release(keys=[keys.pump, keys.queue], args=[self.owner]))

    async def take_slot(self, tenant_id: str, connection_id: str, limit: int, ttl_ms: int) -> None:
        """Count a connection against the tenant's limit (or refresh it); refuse one too many."""
        now = int(time.time() * 1000)
        ok = await self._slot(
            keys=[f"rt:conns:{{{tenant_id}}}"],
            args=[now, now + ttl_ms, connection_id, limit, ttl_ms],
        )
        if not ok:
            raise errors.ResourceExhausted(
                f"the tenant already has {limit} open chat connections",
                reason=errors_pb2.ERROR_REASON_CONNECTION_LIMIT,
                metadata={"limit": str(limit)},
                retry_after_s=5.0,
            )

    async def free_slot(self, tenant_id: str, connection_id: str) -> None:
        """Stop counting a closed connection."""
        await self.redis.zrem(f"rt:conns:{{{tenant_id}}}", connection_id)
