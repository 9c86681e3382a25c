"""Canary routing without a server: deterministic, salted by the challenger, monotone in the
share, and keyed by the listing's identity."""

from __future__ import annotations

from datetime import UTC, datetime

from serving.model_holder import LoadedModel, RolloutArm
from serving.routing import canary_items, listing_key
from serving.schemas import EXAMPLE_LISTING

LISTINGS = [{**EXAMPLE_LISTING, "street": i} for i in range(20_000)]


def arm(version: str, share: float, stage: str = "canary") -> RolloutArm:
    challenger = LoadedModel("m", version, "challenger", datetime.now(UTC), None, model=None)
    return RolloutArm(challenger, stage, share)


def test_a_growing_share_keeps_the_listings_it_had() -> None:
    small = set(canary_items(arm("2", 0.05), LISTINGS, "r"))
    large = set(canary_items(arm("2", 0.25), LISTINGS, "r"))
    assert small < large
    assert abs(len(small) / len(LISTINGS) - 0.05) < 0.007
    assert abs(len(large) / len(LISTINGS) - 0.25) < 0.015


def test_each_challenger_gets_its_own_sample_and_shadow_none() -> None:
    assert set(canary_items(arm("2", 0.05), LISTINGS, "r")) != set(
        canary_items(arm("3", 0.05), LISTINGS, "r")
    )
    assert canary_items(arm("2", 0.05, stage="shadow"), LISTINGS, "r") == []
    assert canary_items(None, LISTINGS, "r") == []


def test_the_key_is_the_identity_else_the_request() -> None:
    moved = {**EXAMPLE_LISTING, "bed": 9}  # same place, other fields: same listing
    assert listing_key(moved, "a", 0) == listing_key(EXAMPLE_LISTING, "b", 5)
    anonymous = {"bed": 3}
    assert listing_key(anonymous, "a", 0) != listing_key(anonymous, "a", 1)
    assert listing_key(anonymous, "a", 0) != listing_key(anonymous, "b", 0)
