"""``heartbeat events``: the API's events, one JSON object a line, through the worker SDK."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any


def events(args: argparse.Namespace) -> int:
    """Print every kept event after ``--after`` and exit; with ``--follow``, go on printing new ones
    until Ctrl-C (exit 0). Each line is flushed as it is written, so a pipe gets it at once."""
    from heartbeat.worker import Client, CursorExpired, HeartbeatError, InvalidRequest, ServerUnavailable

    client = Client(args.api, args.token, retries=2)
    try:
        client.health()  # nothing listening: one line now, rather than retrying for ever
    except ServerUnavailable:
        print(f"error: no Heartbeat API answers at {args.api} (the URL of {args.api_given_as})", file=sys.stderr)
        return 1
    except HeartbeatError as error:
        print(f"error: {args.api} ({args.api_given_as}) is not a Heartbeat API: {error}", file=sys.stderr)
        return 1
    feed = client.events(args.after, args.types, args.software, follow=args.follow)
    try:
        for event in feed:
            _print_line(event)
    except KeyboardInterrupt:  # Ctrl-C: how --follow is meant to end
        return 0
    except BrokenPipeError:  # the reader went (| head): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 0
    except CursorExpired as error:  # asked after a cursor older than the events the server keeps
        print(f"error: cursor {feed.cursor}: {error.description} (run again without --after)", file=sys.stderr)
        return 1
    except InvalidRequest as error:  # a cursor this server did not make
        print(f"error: {error.description}", file=sys.stderr)
        return 2
    except HeartbeatError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0


def _print_line(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event, separators=(",", ":"), ensure_ascii=False) + "\n")
    sys.stdout.flush()
