"""{{name}}: an evhost plugin in Python.

Handles `Ping` events: counts them in the key-value store (key `pings`, an atomic `increment`)
and publishes a `Pong` event with the ping's `message`. Data that is not a JSON object is
rejected.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import atomics, logging, publisher, wasi_keyvalue_store
from wit_world.imports.types import (
    Delivery,
    Event,
    HandleError_Reject,
    HandleError_Retry,
    OutgoingEvent,
    PluginInfo,
    RetryLater,
)

NAME = "{{name}}"
VERSION = "0.1.0"


class Handler(exports.Handler):
    """The `evhost:plugin/handler` export."""

    def describe(self) -> PluginInfo:
        return PluginInfo(NAME, VERSION, ["Ping"])

    def handle(self, event: Event, delivery: Delivery) -> None:
        try:
            ping = json.loads(event.data)
        except ValueError as err:
            raise Err(HandleError_Reject(f"event {event.id}: not JSON: {err}")) from None
        if not isinstance(ping, dict):
            raise Err(HandleError_Reject(f"event {event.id}: data is not a JSON object"))
        try:
            bucket = wasi_keyvalue_store.open("default")
            # Committed with the event's acknowledgement; concurrent increments add up exactly.
            count = atomics.increment(bucket, "pings", 1)
            pong = {"from": NAME, "message": ping.get("message"), "count": count}
            publisher.publish(OutgoingEvent("Pong", json.dumps(pong).encode(), None, []))
        except Err as err:
            # A host capability failed: the host delivers the event again later.
            raise Err(HandleError_Retry(RetryLater(f"host capability: {err.value}", None))) from None
        logging.log(logging.Level.INFO, NAME, f"ping {count} answered")
