#!/usr/bin/env python3
"""Reference output of benchmark W5 (config/bench/w5.toml), written independently of deadbeat.

    python3 bench/reference/w5.py CORPUS > expected.jsonl

Reads an apache combined log and prints one JSON object per (60-second tumbling window of
the line's own time, client), sorted by (window_start, client): window_start (RFC 3339,
UTC), client, requests, bytes (sum; "-" counts 0), errors (status >= 400). Event-time
rules as deadbeat's `window` with lateness 0: a window closes once a later time has been
seen past its end; a line whose window has closed is late and not counted.
"""

import datetime
import json
import re
import sys

LINE = re.compile(
    r'^(\S+) \S+ .*? \[([^\]]+)\] "(?:[^"\\]|\\.)*" (\d+) (\S+)'
)
SIZE = 60


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: w5.py CORPUS")
    windows = {}
    watermark = None
    late = 0
    with open(sys.argv[1], "rb") as f:
        for raw in f:
            m = LINE.match(raw.decode("utf-8", "replace"))
            if not m:
                continue
            client, when, status, size = m.groups()
            t = datetime.datetime.strptime(when, "%d/%b/%Y:%H:%M:%S %z").timestamp()
            t = int(t)
            if watermark is None or t > watermark:
                watermark = t
            start = t - t % SIZE
            if start + SIZE <= watermark:
                late += 1
                continue
            w = windows.setdefault((start, client), [0, 0, 0])
            w[0] += 1
            w[1] += 0 if size == "-" else int(size)
            w[2] += 1 if int(status) >= 400 else 0
    out = sys.stdout
    for (start, client) in sorted(windows):
        requests, size, errors = windows[(start, client)]
        stamp = datetime.datetime.fromtimestamp(start, datetime.timezone.utc)
        out.write(
            json.dumps(
                {
                    "window_start": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "client": client,
                    "requests": requests,
                    "bytes": size,
                    "errors": errors,
                },
                separators=(",", ":"),
            )
            + "\n"
        )
    if late:
        print(f"w5.py: {late} late lines not counted", file=sys.stderr)


if __name__ == "__main__":
    main()
