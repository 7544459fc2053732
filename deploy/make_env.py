#!/usr/bin/env python3
"""Make the docker-compose deployment's ``.env``: ``.env.sample`` with every empty value a new secret.

    python3 deploy/make_env.py [--output PATH]

Needs only Python's standard library (it runs on the host, before any image exists). Writes the file
readable by its owner alone and never overwrites one: to rotate a secret, edit it in ``.env``. The
secrets are URL-safe base64 (letters, digits, ``-`` and ``_``): nothing a shell, JSON or compose's
``$`` interpolation reads specially. Tokens get Heartbeat's ``hb_`` prefix.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECRET_BYTES = 32  # 43 characters of base64


def fill(sample: str) -> str:
    """The sample's text with each ``NAME=`` that has no value given a new secret; other lines as they are."""
    lines = []
    for line in sample.splitlines():
        name, equals, value = line.partition("=")
        if equals and not value.strip() and not name.lstrip().startswith("#"):
            prefix = "hb_" if name.strip().endswith("_TOKEN") else ""
            line = f"{name}={prefix}{secrets.token_urlsafe(SECRET_BYTES)}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=ROOT / ".env", help="the file to write (default: .env)")
    parser.add_argument("--sample", type=Path, default=ROOT / ".env.sample", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    text = fill(args.sample.read_text(encoding="utf-8"))
    try:
        descriptor = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"{args.output} exists already: edit it, or move it away to make a new one", file=sys.stderr)
        return 1
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(text)
    print(f"wrote {args.output} with new secrets; keep it private", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
