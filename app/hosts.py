"""What a host is: `is_loopback`, the one test the exposure check and the image downloader's
URL rules share."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """`localhost` or a literal loopback address (127.0.0.0/8, ::1), given bare: no brackets or
    white space around it. A name that merely starts with "127." is not loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
