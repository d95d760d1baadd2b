"""A container's health check: exit 0 only when the URL answers 200 itself.

``python deploy/healthcheck.py http://127.0.0.1:8000/healthz`` (docker-compose.yml,
Dockerfile). Redirects are not followed: with ``CHAT_HTTPS=1`` a redirect to https
means the request never reached the check, so it is not health. Standard library only.
"""

import http.client
import sys
from urllib.parse import urlsplit


def healthy(url: str, timeout: float = 3) -> bool:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        connection.request("GET", parts.path or "/")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


if __name__ == "__main__":
    sys.exit(0 if healthy(sys.argv[1]) else 1)
