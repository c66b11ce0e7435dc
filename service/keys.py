"""Typed application keys: everything the handlers find on the app."""

from __future__ import annotations

from aiohttp import web

from outbox.background import BackgroundTask
from outbox.deferred import DeferredWrites
from outbox.enqueue import OutboxWriter
from outbox.relay import Relay
from service.chat.interaction import InteractionRegistry
from service.chat.responder import Responder
from service.config import Config
from service.http.ratelimit import RateLimiter
from service.store.database import Databases

CONFIG = web.AppKey("config", Config)
DATABASES = web.AppKey("databases", Databases)
WRITER = web.AppKey("writer", OutboxWriter)
DEFERRED = web.AppKey("deferred", DeferredWrites)
RELAY = web.AppKey("relay", Relay)
# The LISTEN and purge loops, for /readyz.
SIDE_LOOPS = web.AppKey("side_loops", tuple[BackgroundTask, ...])
RESPONDER = web.AppKey("responder", Responder)
STREAMS = web.AppKey("streams", InteractionRegistry)
RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)
# Optional migrations this process could not apply at start, with why (filled at start, read by /readyz).
NOT_ADDED = web.AppKey("not_added", dict[str, str])
