#!/usr/bin/env python3
"""HEALTHCHECK of the images: exit 0 when the URL answers 2xx, 1 otherwise (slim images have
no curl). Usage: healthcheck URL"""

import sys
import urllib.error
import urllib.request


def main(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            return 0 if 200 <= response.status < 300 else 1
    except (urllib.error.URLError, OSError) as error:
        print(f"{url}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
