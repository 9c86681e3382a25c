"""Request and response bodies of the price, digits and ops routes (OpenAPI at /docs)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from realty.ingest.cleaning import CleaningRules

_RULES = CleaningRules()  # the ranges CLEAN accepts are the ranges a listing may have here

EXAMPLE_LISTING = {
    "brokered_by": 22611,
    "status": "for_sale",
    "bed": 3,
    "bath": 2,
    "acre_lot": 0.25,
    "street": 1758218,
    "city": "Boston",
    "state": "Massachusetts",
    "zip_code": "02134",
    "house_size": 1500,
    "prev_sold_date": "2015-06-01",
}

Rooms = Annotated[float | None, Field(ge=0, le=_RULES.max_rooms)]


def storable_text(text: str) -> str:
    """``text`` if PostgreSQL can store it (the inference log does) and JSON can send it back."""
    if "\x00" in text:
        raise ValueError("NUL characters (\\u0000) are not allowed in text")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError("lone surrogates (\\ud800-\\udfff) are not valid text") from error
    return text


def text(max_length: int) -> Any:
    """A free-text field: at most ``max_length`` characters, no NUL, valid Unicode."""
    return Annotated[str, StringConstraints(max_length=max_length), AfterValidator(storable_text)]


class RequestBody(BaseModel):
    """A request body: NaN and Infinity (which Python's JSON parser accepts) are refused in
    every number, as no listing or image has them."""

    model_config = ConfigDict(allow_inf_nan=False)


class Listing(RequestBody):
    """A listing's fields as the data API delivers them (the price is what is predicted).

    ``status`` must be one of the known values; every other field may be null or left out.
    A state or city the model has never seen is allowed: it falls back to coarser places."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE_LISTING]})

    brokered_by: float | None = Field(None, ge=0, description="Broker id")
    status: Literal["for_sale", "sold", "ready_to_build"]
    bed: Rooms = None
    bath: Rooms = None
    acre_lot: float | None = Field(None, ge=0, le=_RULES.max_acre_lot)
    street: float | None = Field(None, ge=0, description="Street id (anonymised)")
    city: text(100) | None = None
    state: text(60) | None = Field(None, description="Full name, e.g. New York")
    zip_code: text(20) | float | None = Field(
        None, description="5-digit zip code (or ZIP+4); a number (601.0) counts as 00601"
    )
    house_size: float | None = Field(None, ge=0, le=_RULES.max_house_size, description="sq ft")
    prev_sold_date: date | None = Field(None, ge=_RULES.min_sold_date)
    price: float | None = Field(
        None, ge=0, description="Ignored (a delivered row may carry it); it is what is predicted"
    )

    def fields(self) -> dict[str, Any]:
        """The listing as the model and the inference log take it (dates as YYYY-MM-DD)."""
        values = self.model_dump(exclude={"price"})
        if self.prev_sold_date is not None:
            values["prev_sold_date"] = self.prev_sold_date.isoformat()
        return values


# A base64 image: the body limit (REALTY_SERVING_MAX_BODY_BYTES) is the real bound; this one
# keeps the schema honest when the body limit is raised.
IMAGE_MAX_CHARS = 20_000_000


class ModelRef(BaseModel):
    name: str = Field(examples=["realty-price"])
    version: str = Field(
        examples=["3"], description="The version that answered; during a canary step 3,4"
    )
    arm: str = Field(
        "production", examples=["production"], description="production, canary, or both"
    )


class PriceRequest(RequestBody):
    model_config = ConfigDict(json_schema_extra={"examples": [{"listings": [EXAMPLE_LISTING]}]})

    listings: list[Listing] = Field(min_length=1, max_length=1000)


class PriceInterval(BaseModel):
    """Where the price lies with probability ``level`` (split conformal, calibrated per state on
    the version's evaluation split; docs/training.md#price-intervals)."""

    level: float = Field(examples=[0.9])
    low: float = Field(description="US dollars", examples=[402000.0])
    high: float = Field(description="US dollars", examples=[933000.0])


INTERVAL_FIELD = Field(None, description="Null from a version logged without a calibration")


class PricePrediction(BaseModel):
    price: float = Field(description="Predicted price in US dollars", examples=[612345.0])
    interval: PriceInterval | None = INTERVAL_FIELD
    version: str = Field(description="The version that priced this listing", examples=["3"])
    arm: Literal["production", "canary"] = Field(description="Its arm in a rollout")


class PriceResponse(BaseModel):
    request_id: str
    model: ModelRef
    predictions: list[PricePrediction]


class ExplainRequest(RequestBody):
    model_config = ConfigDict(json_schema_extra={"examples": [{"listing": EXAMPLE_LISTING}]})

    listing: Listing


class Contribution(BaseModel):
    feature: str = Field(examples=["log_house_size"])
    value: str | float | None = Field(description="The feature's value for this listing")
    shap: float = Field(description="Contribution to the log price (0.1 is about +10.5 %)")


class ExplainResponse(BaseModel):
    request_id: str
    model: ModelRef
    price: float = Field(description="Predicted price in US dollars")
    interval: PriceInterval | None = INTERVAL_FIELD
    base_value: float = Field(description="The model's average log price")
    log_price: float = Field(description="base_value + the sum of the contributions")
    contributions: list[Contribution] = Field(description="Largest |shap| first")


class DigitsRequest(RequestBody):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"request_id": "req-1", "image": "iVBORw0KGgo..."}]}
    )

    request_id: text(200)
    image: text(IMAGE_MAX_CHARS) = Field(
        min_length=1, description="Base64 of an image file, a .npy array or 64 values"
    )


class DigitsResponse(BaseModel):
    request_id: str
    prediction: int = Field(ge=0, le=9)
    model: ModelRef


class CompatDigitsRequest(RequestBody):
    """The course clients' body: every field optional so that a missing one gets their 400."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"request_id": "1", "model": "digits", "image": "iVBORw0KGgo..."}]
        }
    )

    request_id: text(200) | int | None = None
    model: text(100) | None = Field(None, description="digits (or the legacy name clf.pickle)")
    image: text(IMAGE_MAX_CHARS) | None = None


class CompatDigitsResponse(BaseModel):
    request_id: str | int | None
    prediction: int


class LoadedModelInfo(BaseModel):
    name: str
    version: str
    alias: str
    loaded_at: datetime
    run_id: str | None


class ReloadAttemptInfo(BaseModel):
    at: datetime
    outcome: Literal[
        "loaded", "unchanged", "failed", "skipped", "no production version", "registry error"
    ]
    version: str | None
    message: str


class RolloutInfo(BaseModel):
    challenger: str
    stage: Literal["none", "shadow", "canary"]
    share: float = Field(description="The canary's share of listings (0 in shadow)")
    paused: bool
    step_started_at: str | None
    loaded: bool = Field(description="Whether this process has the challenger loaded")
    last_attempt: ReloadAttemptInfo | None


class ModelSlotInfo(BaseModel):
    name: str
    loaded: LoadedModelInfo | None
    last_attempt: ReloadAttemptInfo | None
    last_failure: ReloadAttemptInfo | None
    rollout: RolloutInfo | None = None


class ModelsResponse(BaseModel):
    models: list[ModelSlotInfo]
    poll_interval_s: float


class ModelHealth(BaseModel):
    status: Literal["ok", "degraded", "unavailable"]
    version: str | None
    reason: str | None
    rollout: RolloutInfo | None = None


class HealthResponse(BaseModel):
    status: Literal["ok", "degraded"]
    reason: str | None = None
    models: dict[str, ModelHealth]


class ReadyResponse(BaseModel):
    ready: bool
    missing: dict[str, str] = Field(
        description="Each required model without a loaded version, and why"
    )


class ReloadResponse(BaseModel):
    attempts: dict[str, ReloadAttemptInfo]
