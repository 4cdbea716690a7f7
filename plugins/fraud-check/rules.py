"""The fraud rules of the fraud-check plugin, free of any WebAssembly binding.

Kept apart from `app.py` so that they can be read and unit-tested with a plain Python
(`python3 -m unittest test_rules.py`).
"""

from dataclasses import dataclass, field
import json

DEFAULT_MAX_PRICE = 5000.0
"""Prices above this are suspicious when the config value `max_price` is not set."""

DEFAULT_MAX_WINS = 3
"""A bidder winning more auctions than this is suspicious when `max_wins` is not set."""


class BadEvent(ValueError):
    """The event's data can never be checked (not JSON, a missing or empty field)."""


@dataclass
class AuctionEnded:
    """The data of an `AuctionEnded` event."""

    auction_id: str
    bidder_id: str
    price: float


@dataclass
class Limits:
    """Thresholds from the plugin's configuration."""

    max_price: float = DEFAULT_MAX_PRICE
    max_wins: int = DEFAULT_MAX_WINS


@dataclass
class Verdict:
    """The outcome of the check, published as `FraudCheckCompleted`."""

    auction_id: str
    bidder_id: str
    price: float
    bidder_wins: int
    reasons: list = field(default_factory=list)

    @property
    def suspicious(self) -> bool:
        """Whether any rule fired."""
        return bool(self.reasons)

    def to_json(self) -> bytes:
        """The `FraudCheckCompleted` payload, UTF-8 JSON."""
        return json.dumps(
            {
                "auction_id": self.auction_id,
                "bidder_id": self.bidder_id,
                "price": self.price,
                "bidder_wins": self.bidder_wins,
                "suspicious": self.suspicious,
                "reasons": self.reasons,
            },
            separators=(",", ":"),
        ).encode()


def _id(data: dict, name: str) -> str:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BadEvent(f"{name} must be a string or an integer")
    text = str(value).strip()
    if not text:
        raise BadEvent(f"{name} is empty")
    return text


def parse_auction_ended(data: bytes) -> AuctionEnded:
    """Parses `{"auction_id", "winning_bidder_id", "winning_price"}`; raises `BadEvent`."""
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise BadEvent(f"data is not JSON: {err}") from None
    if not isinstance(value, dict):
        raise BadEvent("data is not a JSON object")
    price = value.get("winning_price")
    if isinstance(price, bool) or not isinstance(price, (int, float)):
        raise BadEvent("winning_price must be a number")
    return AuctionEnded(
        auction_id=_id(value, "auction_id"),
        bidder_id=_id(value, "winning_bidder_id"),
        price=float(price),
    )


def parse_limits(max_price, max_wins) -> Limits:
    """Limits from the optional config strings; raises `ValueError` on a malformed value."""
    limits = Limits()
    if max_price is not None:
        limits.max_price = float(max_price)
    if max_wins is not None:
        limits.max_wins = int(max_wins)
    return limits


def check(auction: AuctionEnded, bidder_wins: int, limits: Limits) -> Verdict:
    """Applies the rules; `bidder_wins` counts this auction too."""
    verdict = Verdict(auction.auction_id, auction.bidder_id, auction.price, bidder_wins)
    if auction.price > limits.max_price:
        verdict.reasons.append(f"price {auction.price:g} above {limits.max_price:g}")
    if bidder_wins > limits.max_wins:
        verdict.reasons.append(
            f"bidder {auction.bidder_id} won {bidder_wins} auctions (more than {limits.max_wins})"
        )
    return verdict
