"""The listing schema of the realtor.com "USA Real Estate" data, shared by every component."""

from __future__ import annotations

# Column order of the data API and of the Kaggle file (newer schema).
LISTING_COLUMNS: tuple[str, ...] = (
    "brokered_by",
    "status",
    "price",
    "bed",
    "bath",
    "acre_lot",
    "street",
    "city",
    "state",
    "zip_code",
    "house_size",
    "prev_sold_date",
)

STATUS_VALUES: tuple[str, ...] = ("for_sale", "sold", "ready_to_build")

# A zip code as delivered or posted: 601 or 601.0 (a float lost the leading zeros of "00601"),
# 00601, or ZIP+4 02134-1234; its digits, padded to five, are the zip. The one rule cleaning,
# training and serving read zip codes by (each applies it vectorised its own way).
ZIP_CODE_PATTERN = r"^(?P<digits>\d{1,5})(?:\.0*|-\d{4})?$"

# States and territories that appear in the dataset (50 states, DC and 5 territories).
US_STATES: tuple[str, ...] = (
    "Alabama", "Alaska", "Arizona", "Arkansas", "California", "Colorado", "Connecticut",
    "Delaware", "District of Columbia", "Florida", "Georgia", "Hawaii", "Idaho", "Illinois",
    "Indiana", "Iowa", "Kansas", "Kentucky", "Louisiana", "Maine", "Maryland", "Massachusetts",
    "Michigan", "Minnesota", "Mississippi", "Missouri", "Montana", "Nebraska", "Nevada",
    "New Hampshire", "New Jersey", "New Mexico", "New York", "North Carolina", "North Dakota",
    "Ohio", "Oklahoma", "Oregon", "Pennsylvania", "Rhode Island", "South Carolina",
    "South Dakota", "Tennessee", "Texas", "Utah", "Vermont", "Virginia", "Washington",
    "West Virginia", "Wisconsin", "Wyoming",
    "Puerto Rico", "Virgin Islands", "Guam", "New Brunswick",
)  # fmt: skip
