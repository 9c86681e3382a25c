"""Which arm answers each listing of a price request (or each digits request) during a
rollout, and the answers.

Canary routing is deterministic: a listing's bucket is hash(stable key, salt) mod 10,000 and
the canary answers the buckets below share x 10,000. The stable key is the listing's identity
(street, city, state, zip code) when it has one, else the request id and the item, so the same
listing reaches the same arm for the whole step. The salt is the model and challenger version:
a new challenger gets a fresh sample of listings, and since the buckets stay put while the share
grows, a listing that reached the canary at 5% stays on it at 25%. A digits image has no
identity: its request id is the key.

A canary that fails answers nothing wrong: its listings are answered by production and the
failure is logged as the canary's (realty.model.rollout's error-rate guardrail counts it).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from realty.model.price_model import PricedRows
from realty.model.rollout import CANARY
from serving.batcher import PriceBatcher
from serving.model_holder import LoadedModel, RolloutArm

BUCKETS = 10_000
IDENTITY = ("street", "city", "state", "zip_code")

log = logging.getLogger(__name__)


def listing_key(listing: dict, request_id: str, item: int) -> str:
    identity = [listing.get(field) for field in IDENTITY]
    if all(value is None for value in identity):
        return f"request:{request_id}:{item}"
    return "|".join("" if value is None else str(value) for value in identity)


def bucket(key: str, salt: str) -> int:
    digest = hashlib.blake2b(f"{salt}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def on_canary(arm: RolloutArm | None, key: str) -> bool:
    """Whether the canary answers ``key`` (never outside a canary step)."""
    if arm is None or arm.stage != CANARY:
        return False
    salt = f"{arm.challenger.name}:{arm.challenger.version}"
    return bucket(key, salt) < arm.share * BUCKETS


def canary_items(arm: RolloutArm | None, listings: list[dict], request_id: str) -> list[int]:
    """The items of a price request the canary answers."""
    return [
        item
        for item, listing in enumerate(listings)
        if on_canary(arm, listing_key(listing, request_id, item))
    ]


@dataclass(frozen=True)
class Answer:
    """One arm's prices for some items of a request (``priced`` None: the arm failed)."""

    loaded: LoadedModel
    role: str  # production | canary
    items: list[int]
    priced: PricedRows | None = None
    error: str | None = None


async def price_listings(
    batcher: PriceBatcher,
    production: LoadedModel,
    arm: RolloutArm | None,
    listings: list[dict],
    request_id: str,
) -> list[Answer]:
    """Every item priced once, by the canary where it is routed there, else by production.
    Raises only if production fails."""
    canary = canary_items(arm, listings, request_id)
    answers: list[Answer] = []
    if canary:
        try:
            priced = await batcher.predict(arm.challenger, [listings[i] for i in canary])
            answers.append(Answer(arm.challenger, CANARY, canary, priced))
        except Exception as error:  # the canary's failure is logged; production answers
            log.warning("canary v%s failed; production answers: %s", arm.challenger.version, error)
            answers.append(Answer(arm.challenger, CANARY, canary, error=str(error)[:500]))
            canary = []
    taken = set(canary)
    rest = [item for item in range(len(listings)) if item not in taken]
    if rest:
        priced = await batcher.predict(production, [listings[i] for i in rest])
        answers.append(Answer(production, "production", rest, priced))
    return answers


def shadow_of(
    production: LoadedModel, arm: RolloutArm | None, answers: list[Answer]
) -> tuple[LoadedModel, list[int]] | None:
    """What scores which items unseen: in shadow the challenger scores everything production
    answered; in canary production scores what the canary answered, so every answered
    challenger price has production's beside it (the divergence guardrail)."""
    if arm is None:
        return None
    if arm.stage == CANARY:
        items = [i for a in answers if a.role == CANARY and a.priced is not None for i in a.items]
        return (production, items) if items else None
    return arm.challenger, [i for answer in answers for i in answer.items]
