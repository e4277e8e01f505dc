#!/usr/bin/env python3
"""Compares a workload's output with its reference (Python 3 stdlib only).

    python3 bench/reference/compare.py EXPECTED GOT [--count-only | --fields=a,b,c]

Both are JSON lines. Each line of GOT is cut down to the fields the reference's lines
have (so extra fields such as `path` do not matter, a different one does; a missing
field counts as null),
both sides are sorted, and they must be equal. Exit 0 when they are; else 1, with the
counts and the first differences on stderr. `--count-only` compares the number of lines
only; `--fields=a,b,c` compares those fields only, on both sides (for a peer whose output
writes some fields otherwise).
"""
import json
import sys


def canon(line, keys):
    try:
        rec = json.loads(line)
    except ValueError:
        return "unparsable: " + line.strip()[:200]
    if keys is not None:
        rec = {k: rec.get(k) for k in keys}
    return json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 2:
        sys.exit("usage: compare.py EXPECTED GOT [--count-only | --fields=a,b,c]")
    with open(args[0], encoding="utf-8", errors="replace") as f:
        want_lines = [l for l in f if l.strip()]
    with open(args[1], encoding="utf-8", errors="replace") as f:
        got_lines = [l for l in f if l.strip()]
    if "--count-only" in sys.argv:
        if len(want_lines) != len(got_lines):
            print("MISMATCH: %d lines expected, %d written" % (len(want_lines), len(got_lines)), file=sys.stderr)
            return 1
        return 0
    fields = [a.split("=", 1)[1].split(",") for a in sys.argv[1:] if a.startswith("--fields=")]
    if fields:
        keys = fields[0]
    else:
        keys = list(json.loads(want_lines[0]).keys()) if want_lines else None
    want = sorted(canon(l, keys if fields else None) for l in want_lines)
    got = sorted(canon(l, keys) for l in got_lines)
    if want == got:
        return 0
    print("MISMATCH: %d records expected, %d written" % (len(want), len(got)), file=sys.stderr)
    ws, gs = set(want), set(got)
    missing = [w for w in want if w not in gs]
    extra = [g for g in got if g not in ws]
    for label, items in (("expected, not written", missing), ("written, not expected", extra)):
        print("  %s: %d, e.g." % (label, len(items)), file=sys.stderr)
        for i in items[:5]:
            print("    " + i[:300], file=sys.stderr)
    if not missing and not extra:
        print("  (the same records, other multiplicities)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
