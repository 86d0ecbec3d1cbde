"""Write the part of a full pip-compile lock that base locks lack: `python .ci/lock_rest.py FULL BASE... -o OUT`.

requirements-torch.lock (the `torch` extra over requirements-dev.lock) and
docker/requirements-deploy.lock (the run launchers over requirements.lock) are installed on top of
their base with `pip install --require-hashes --no-deps`, so each holds only what its base lacks.
A package pinned in both at different versions is an error: re-lock the base first.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?)\s*\\?$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def blocks(text: str) -> list[tuple[str, str, str]]:
    """(name, version, block text) of each pin with its hash and via lines."""
    found = []
    for block in re.split(r"(?m)^(?=[A-Za-z0-9])", text)[1:]:
        match = PIN.match(block.splitlines()[0])
        if not match:
            raise SystemExit(f"not a pin: {block.splitlines()[0]!r}")
        found.append((canonical(match[1]), match[2], block))
    return found


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("full", type=Path)
    parser.add_argument("base", type=Path, nargs="+")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--header", default="", help="comment lines put first")
    args = parser.parse_args()
    base = {name: version for path in args.base for name, version, _ in blocks(path.read_text())}
    rest, clashes = [], []
    for name, version, block in blocks(args.full.read_text()):
        if name not in base:
            rest.append(block)
        elif base[name] != version:
            clashes.append(f"{name}: {version} here, {base[name]} in the base")
    if clashes:
        print("\n".join(["the full lock and its base disagree (re-lock the base):", *clashes]), file=sys.stderr)
        return 1
    header = "".join(f"# {line}\n" if line else "#\n" for line in args.header.splitlines())
    args.output.write_text(header + "".join(rest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
