#!/usr/bin/env python3
"""Reference for benchmark W7 (Python 3 stdlib only).

    python3 bench/reference/w7.py CORPUS > expected.jsonl

One JSON object per event of the java corpus, with the fields config/bench/w7.toml writes
(besides `path`, the input file): `message` (the event's lines joined by `\\n`), `time`
(RFC 3339, milliseconds when not zero, UTC as the corpus has no offset), `level`,
`thread`, `logger`.

Written from ../shared/bench/README.md without looking at deadbeat's cogs. An event starts
at a line that has the header `yyyy-mm-dd hh:mm:ss,mmm LEVEL [thread] logger - `; every
other line belongs to the event before it. (The README lists continuation lines as those
starting with whitespace, `Caused by:` or `... N more`; the corpus also puts the exception's
own line, `java.net.SocketTimeoutException: ...`, unindented under its ERROR line, and
rsyslog's startmsg.regex as well as the config join it to that event: so does this.)
Lines before the first header would make an event without the parsed fields; the corpus
has none.

Output is sorted (as text), compact JSON, so runs are comparable with `sort` + `cmp` or
bench/reference/compare.py.
"""
import json
import re
import sys

HEADER = re.compile(r"^(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d),(\d{3}) ([A-Z]+) +\[([^\]]+)\] (\S+) - ")


def event(lines):
    rec = {"message": "\n".join(lines)}
    m = HEADER.match(lines[0])
    if m:
        y, mo, d, h, mi, s, ms, level, thread, logger = m.groups()
        frac = "" if ms == "000" else "." + ms
        rec.update(time="%s-%s-%sT%s:%s:%s%sZ" % (y, mo, d, h, mi, s, frac),
                   level=level, thread=thread, logger=logger)
    return json.dumps(rec, separators=(",", ":"), ensure_ascii=False)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: w7.py CORPUS > expected.jsonl")
    out, cur = [], []
    with open(sys.argv[1], "rb") as f:
        for raw in f:
            line = raw.rstrip(b"\n").removesuffix(b"\r").decode("utf-8", "replace")
            if HEADER.match(line) and cur:
                out.append(event(cur))
                cur = []
            cur.append(line)
    if cur:
        out.append(event(cur))
    out.sort()
    sys.stdout.write("".join(o + "\n" for o in out))


if __name__ == "__main__":
    main()
