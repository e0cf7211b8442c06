"""Open the viewer in one command: build the UI if needed, then serve API + UI on one port.

    python -m server                 # http://127.0.0.1:24577, this machine only
    python -m server --port 8000 --host 0.0.0.0 --no-build

Equivalent to `(cd ui && bun install && bun run build) && uvicorn server.app:app --port 24577`;
the build step runs only when `ui/dist` is missing (or with --rebuild). When bun is not installed
it is installed first, with npm, into ui/.tools/ (server/bun.py), so a fresh machine with Node.js
needs no manual step; without npm either, the API is served alone and the message says what to install.

`--host 0.0.0.0` listens on every network interface: anyone who can reach the port can read the
results (there is no login). Other machines open it by this machine's IP address; a host name
must be listed in GPT2DICT_ALLOWED_HOSTS (the server refuses unknown Host headers, a guard against
DNS rebinding). `--host NAME` allows NAME itself.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import subprocess
import sys

from .bun import UI, BunMissing, find_bun
from .guards import is_ip_address


def build_ui(force: bool = False) -> bool:
    """Build ui/dist with bun (installed locally first when missing) unless it exists; returns
    whether a built UI exists."""
    if (UI / "dist" / "index.html").is_file() and not force:
        return True
    if not (UI / "package.json").is_file():
        print(f"There is no UI source at {UI} to build (an install without the repository?); serving the API only.",
              file=sys.stderr)
        return False
    try:
        bun = find_bun(install=True)
    except BunMissing as e:
        print(f"{e} Serving the API only.", file=sys.stderr)
        return False
    print("Building the viewer (bun install && bun run build, once)...", file=sys.stderr)
    subprocess.run([bun, "install", "--frozen-lockfile"], cwd=UI, check=True, stdout=sys.stderr)
    subprocess.run([bun, "run", "build"], cwd=UI, check=True, stdout=sys.stderr)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=24577)
    parser.add_argument("--no-build", action="store_true", help="never build the UI")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the UI even if ui/dist exists")
    args = parser.parse_args()
    if not args.no_build:
        build_ui(force=args.rebuild)
    import uvicorn

    url = f"http://{browse_address(args.host)}:{args.port}"
    print(f"Viewer: {url}   (API docs: {url}/docs)", file=sys.stderr)
    if not is_loopback(args.host):
        print(f"Listening on {args.host}: anyone who can reach port {args.port} can read the results. Other machines "
              "open it by this machine's IP address; to use a host name, add it to GPT2DICT_ALLOWED_HOSTS.",
              file=sys.stderr)
    if not is_ip_address(args.host) and args.host != "localhost":  # a name given here is one the user will browse to
        os.environ["GPT2DICT_ALLOWED_HOSTS"] = ",".join(filter(None, [os.environ.get("GPT2DICT_ALLOWED_HOSTS"),
                                                                      args.host]))
    uvicorn.run("server.app:app", host=args.host, port=args.port)


def is_loopback(host: str) -> bool:
    return host == "localhost" or (is_ip_address(host) and ipaddress.ip_address(host).is_loopback)


def browse_address(host: str) -> str:
    """Where a browser on this machine reaches a server bound to `host` (a wildcard is reached on loopback)."""
    if host in ("0.0.0.0", "", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


if __name__ == "__main__":
    main()
