"""A fixed logistic fraud model and a seeded generator of card transactions for it.

The weights are made up but stable, so the score distribution (about 3.5% of transactions above
0.5) is the same in every run; a scenario's `score_shift` moves the logit to stage drift.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass

FEATURES = (
    "amount",
    "hour",
    "merchant_risk",
    "distance_km",
    "txn_last_hour",
    "new_device",
    "card_present",
)

_INTERCEPT = -5.8
_WEIGHTS = {
    "log_amount": 0.55,  # log10(1 + amount)
    "night": 0.9,  # hour before 6
    "merchant_risk": 3.0,
    "log_distance": 0.7,  # log10(1 + distance_km)
    "txn_last_hour": 0.35,
    "new_device": 1.2,
    "card_present": -1.0,
}


class FeatureError(ValueError):
    """A request's features are missing or not numbers."""


@dataclass(frozen=True)
class Transaction:
    """The model's input."""

    amount: float
    hour: float
    merchant_risk: float
    distance_km: float
    txn_last_hour: float
    new_device: float
    card_present: float

    def to_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in FEATURES}

    @classmethod
    def from_mapping(cls, data: object) -> Transaction:
        """Validate a JSON object of features (all of FEATURES, numbers)."""
        if not isinstance(data, Mapping):
            raise FeatureError("features: expected an object")
        values: dict[str, float] = {}
        for name in FEATURES:
            value = data.get(name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise FeatureError(f"features.{name}: expected a number, got {value!r}")
            if not math.isfinite(value):
                raise FeatureError(f"features.{name}: must be finite")
            values[name] = float(value)
        return cls(**values)


def logit(tx: Transaction) -> float:
    """The model's linear score before the sigmoid."""
    w = _WEIGHTS
    return (
        _INTERCEPT
        + w["log_amount"] * math.log10(1.0 + max(tx.amount, 0.0))
        + w["night"] * (1.0 if tx.hour < 6 else 0.0)
        + w["merchant_risk"] * tx.merchant_risk
        + w["log_distance"] * math.log10(1.0 + max(tx.distance_km, 0.0))
        + w["txn_last_hour"] * tx.txn_last_hour
        + w["new_device"] * tx.new_device
        + w["card_present"] * tx.card_present
    )


def fraud_score(tx: Transaction, shift: float = 0.0) -> float:
    """Probability of fraud in [0, 1]; `shift` is added to the logit (drift)."""
    z = logit(tx) + shift
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def random_transaction(rng: random.Random) -> Transaction:
    """A plausible card transaction; most are benign, a few look risky."""
    risky = rng.random() < 0.05
    return Transaction(
        amount=round(rng.lognormvariate(3.6 + (1.0 if risky else 0.0), 1.0), 2),
        hour=float(rng.randrange(24)),
        merchant_risk=round(rng.betavariate(2, 5 if not risky else 1.5), 4),
        distance_km=round(rng.expovariate(1 / (8.0 if not risky else 400.0)), 2),
        txn_last_hour=float(min(int(rng.expovariate(1 / (0.7 if not risky else 5.0))), 50)),
        new_device=1.0 if rng.random() < (0.08 if not risky else 0.6) else 0.0,
        card_present=1.0 if rng.random() < (0.55 if not risky else 0.1) else 0.0,
    )
