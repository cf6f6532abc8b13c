"""The web container's healthcheck: GET /healthz from the Daphne in this container.

    python deploy/healthcheck.py [URL]     # default http://127.0.0.1:8000/healthz

Exits 0 when the answer is 200, else 1 (what Docker's HEALTHCHECK expects).
Django answers only for host names in ALLOWED_HOSTS, and with
SECURE_SSL_REDIRECT on it redirects plain HTTP; so the probe presents itself
the way nginx does: the first allowed host name and X-Forwarded-Proto: https.
Uses the standard library only: it runs in the slim image as is.
"""

import os
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8000/healthz"


def probe_host(allowed_hosts: str) -> str:
    """A Host header Django accepts, from the ALLOWED_HOSTS variable."""
    for host in (item.strip() for item in allowed_hosts.split(",")):
        if host and host != "*":
            # ".example.com" allows example.com and its subdomains.
            return host.lstrip(".")
    return "localhost"


def main(argv: list[str]) -> int:
    url = argv[1] if len(argv) > 1 else DEFAULT_URL
    headers = {
        "Host": probe_host(os.environ.get("ALLOWED_HOSTS", "")),
        "X-Forwarded-Proto": "https",
    }
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - a local http URL
    try:
        with urllib.request.urlopen(request, timeout=3) as response:  # noqa: S310
            healthy = response.status == 200
    except urllib.error.HTTPError as error:
        # /readyz names the failing check in its body.
        print(f"unhealthy: {error.code} {error.read().decode(errors='replace')}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as error:
        print(f"unhealthy: {error}", file=sys.stderr)
        return 1
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
