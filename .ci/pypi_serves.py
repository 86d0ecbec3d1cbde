"""Check that PyPI serves every file the given locks pin, hash for hash, without downloading them:
`python .ci/pypi_serves.py LOCK...` (PyPI's simple index, JSON form, lists each file's sha256).

`make check-pypi` runs it over the locks too big to download on every CI run (PyPI's CUDA torch
is 2.7 GB) and over the deploy lock; it downloads the runtime and dev locks outright.
"""

from __future__ import annotations

import json
import re
import sys
import urllib.request
from pathlib import Path

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?)\s*\\?$")


def pins(path: Path) -> dict[str, tuple[str, set[str]]]:
    found: dict[str, tuple[str, set[str]]] = {}
    name = None
    for line in path.read_text().splitlines():
        match = PIN.match(line)
        if match:
            name = re.sub(r"[-_.]+", "-", match[1]).lower()
            found[name] = (match[2], set())
        elif line.strip().startswith("--hash=") and name:
            found[name][1].add(line.strip().removeprefix("--hash=sha256:").rstrip(" \\"))
    return found


def served(name: str) -> dict[str, str]:
    """sha256 → file name of every file PyPI serves for the project."""
    request = urllib.request.Request(f"https://pypi.org/simple/{name}/",
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        files = json.load(response)["files"]
    return {f["hashes"]["sha256"]: f["filename"] for f in files if "sha256" in f["hashes"]}


def main() -> int:
    problems = []
    for lock in map(Path, sys.argv[1:]):
        for name, (version, hashes) in pins(lock).items():
            files = served(name)
            missing = sorted(h for h in hashes if h not in files)
            if not hashes or missing:
                problems.append(f"{lock}: {name}=={version}: {len(missing)} of {len(hashes)} hashes not served by PyPI")
        print(f"{lock}: checked against PyPI")
    print("\n".join(problems), file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
