"""fraud-check: an evhost plugin in Python.

On `AuctionEnded` it counts the winner's wins in the key-value store (`wins:<bidder>`), flags
the auction when the price is above the config value `max_price` or the winner won more than
`max_wins` auctions, remembers the verdict under `checked:<auction_id>` and publishes
`FraudCheckCompleted`. A repeated `AuctionEnded` for a checked auction is acknowledged without
counting it twice. Data that is not usable JSON is rejected (never retried).
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import logging, publisher, wasi_config_store, wasi_keyvalue_store
from wit_world.imports.types import (
    Delivery,
    Event,
    HandleError_Reject,
    HandleError_Retry,
    OutgoingEvent,
    PluginInfo,
    RetryLater,
)

import rules

NAME = "fraud-check"
VERSION = "0.1.0"


def _log(level: logging.Level, message: str) -> None:
    logging.log(level, NAME, message)


def _reject(reason: str) -> Err:
    return Err(HandleError_Reject(reason))


def _retry(reason: str) -> Err:
    return Err(HandleError_Retry(RetryLater(reason, None)))


def _limits() -> rules.Limits:
    try:
        return rules.parse_limits(
            wasi_config_store.get("max_price"), wasi_config_store.get("max_wins")
        )
    except ValueError as err:
        raise _reject(f"invalid max_price or max_wins in the config: {err}") from None
    except Err as err:
        raise _retry(f"cannot read the config: {err.value}") from None


def _check(event: Event) -> None:
    try:
        auction = rules.parse_auction_ended(event.data)
    except rules.BadEvent as err:
        raise _reject(f"event {event.id}: {err}") from None
    limits = _limits()
    store = wasi_keyvalue_store.open("default")
    checked_key = f"checked:{auction.auction_id}"
    if store.exists(checked_key):
        _log(logging.Level.INFO, f"auction {auction.auction_id} already checked; skipped")
        return
    wins_key = f"wins:{auction.bidder_id}"
    previous = store.get(wins_key)
    wins = (int(previous) if previous else 0) + 1
    verdict = rules.check(auction, wins, limits)
    payload = verdict.to_json()
    store.set(wins_key, str(wins).encode())
    store.set(checked_key, payload)
    publisher.publish(OutgoingEvent("FraudCheckCompleted", payload, None, []))
    level = logging.Level.WARN if verdict.suspicious else logging.Level.DEBUG
    _log(level, f"auction {auction.auction_id}: suspicious={verdict.suspicious} {verdict.reasons}")


class Handler(exports.Handler):
    """The `evhost:plugin/handler` export."""

    def describe(self) -> PluginInfo:
        return PluginInfo(NAME, VERSION, ["AuctionEnded"])

    def handle(self, event: Event, delivery: Delivery) -> None:
        try:
            _check(event)
        except Err as err:
            if isinstance(err.value, (HandleError_Reject, HandleError_Retry)):
                raise
            # A host capability (key-value store, publisher) failed: try again later.
            raise _retry(f"host capability failed: {err.value}") from None
