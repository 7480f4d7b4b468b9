"""The hotline container's health: both processes of `hotline serve` are ready (the API's
/api/ready: the database; the call services' /api/ready on controller.port: ARI, AMI, FastAGI).
Exit status 0 when both answer 200. Standard library only."""

import os
import sys
import urllib.request


def url(host_var: str, host_default: str, port_var: str, port_default: str) -> str:
    host = os.environ.get(host_var) or host_default
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://{host}:{os.environ.get(port_var) or port_default}/api/ready"


for target in (url("HOTLINE_API_HOST", "127.0.0.1", "HOTLINE_API_PORT", "8080"),
               url("HOTLINE_CONTROLLER_HOST", "127.0.0.1", "HOTLINE_CONTROLLER_PORT", "8081")):
    try:
        with urllib.request.urlopen(target, timeout=5) as response:
            if response.status != 200:
                sys.exit(f"{target}: {response.status}")
    except Exception as exc:  # noqa: BLE001 - any failure is unhealthy
        sys.exit(f"{target}: {exc}")
