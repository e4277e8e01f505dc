#!/usr/bin/env python3
"""Reference for benchmark W6 and for config/sshd_bruteforce.toml (Python 3 stdlib only).

    python3 bench/reference/w6.py CORPUS > expected.jsonl              # W6: one line per
        # (10-minute window, src_ip) with at least 10 failures, the final count:
        # {"window_start":"2026-11-22T10:00:00Z","src_ip":"1.2.3.4","failures":37}
    python3 bench/reference/w6.py --crossing CORPUS > alerts.jsonl     # the flagship's
        # alerts (threshold fire = "crossing"): one per (window, src_ip), made by the 10th
        # failure: window_start, window_end, src_ip, failures (10), first_user, last_user

Written from ../shared/bench/README.md (W6) without looking at deadbeat's parser:
- a line is `Mmm dd hh:mm:ss HOST sshd[PID]: MESSAGE` (optionally `<PRI>` in front,
  `sshd-session` or `sshd(MODULE)` as the program); other lines are skipped;
- a failure is a MESSAGE holding `Failed password`, `Invalid user` or
  `authentication failure` (case as written);
- its address is the IP address after ` from ` (sshd's wordings) or after `rhost=` (PAM's);
  a failure naming no IP address (a host name in rhost=, nothing) is not counted;
- its user: the word after `invalid user ` / `Invalid user `, else after `Failed password
  for `, else after ` user=`;
- windows: 10-minute tumbling windows of event time, aligned on the epoch, in UTC.

The year: syslog times have none. Like deadbeat's `time_format` without a year, the year
is the wall clock's (UTC), or the one before when that puts the time more than one day
ahead of now; `--year YYYY` fixes it instead. (A test comparing with deadbeat runs both at
the same time, so both take the same year.)

Output is sorted by (window_start, src_ip), compact JSON, so runs are comparable with
`sort` + `cmp` or bench/reference/compare.py.
"""
import argparse
import datetime as dt
import ipaddress
import json
import re
import sys

MONTHS = {m: i + 1 for i, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split())}
LINE = re.compile(r"^(?:<\d{1,3}>)?([A-Z][a-z]{2}) ([ \d]\d) (\d\d):(\d\d):(\d\d) \S+ "
                  r"sshd(?:-session)?(?:\([^)]+\))?\[\d+\]: (.*)$")
FAILURE = ("Failed password", "Invalid user", "authentication failure")
WINDOW = 600
THRESHOLD = 10


def address(msg):
    for marker in (" from ", "rhost="):
        i = msg.find(marker)
        if i < 0:
            continue
        word = msg[i + len(marker):].split(" ", 1)[0]
        try:
            ipaddress.ip_address(word)
            return word
        except ValueError:
            continue
    return None


def user(msg):
    for marker in ("nvalid user ", "Failed password for ", " user="):
        i = msg.find(marker)
        if i >= 0:
            word = msg[i + len(marker):].split(" ", 1)[0]
            if word:
                return word
    return None


def epoch(mon, day, h, m, s, year, now):
    def at(y):
        return dt.datetime(y, mon, day, h, m, s, tzinfo=dt.timezone.utc)
    if year is not None:
        return int(at(year).timestamp())
    t = at(now.year)
    if t > now + dt.timedelta(days=1):
        t = at(now.year - 1)
    return int(t.timestamp())


def rfc3339(secs):
    return dt.datetime.fromtimestamp(secs, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus")
    ap.add_argument("--crossing", action="store_true", help="the flagship's alerts (fire = crossing)")
    ap.add_argument("--year", type=int, help="the year of the syslog times (default: as deadbeat)")
    a = ap.parse_args()
    now = dt.datetime.now(dt.timezone.utc)
    windows = {}  # (window start, ip) -> [count, first user, user of the 10th]
    with open(a.corpus, "rb") as f:
        for raw in f:
            line = raw.rstrip(b"\n").removesuffix(b"\r").decode("utf-8", "replace")
            m = LINE.match(line)
            if not m:
                continue
            msg = m.group(6)
            if not any(w in msg for w in FAILURE):
                continue
            ip = address(msg)
            if ip is None:
                continue
            mon = MONTHS.get(m.group(1))
            if mon is None:
                continue
            try:
                t = epoch(mon, int(m.group(2)), int(m.group(3)), int(m.group(4)), int(m.group(5)), a.year, now)
            except ValueError:  # 29 Feb of a year without one
                continue
            start = t - t % WINDOW
            w = windows.setdefault((start, ip), [0, user(msg), None])
            w[0] += 1
            if w[0] == THRESHOLD:
                w[2] = user(msg)
    out = sys.stdout
    for (start, ip), (count, first, tenth) in sorted(windows.items()):
        if count < THRESHOLD:
            continue
        if a.crossing:
            rec = {"window_start": rfc3339(start), "window_end": rfc3339(start + WINDOW), "src_ip": ip,
                   "failures": THRESHOLD, "first_user": first, "last_user": tenth}
        else:
            rec = {"window_start": rfc3339(start), "src_ip": ip, "failures": count}
        out.write(json.dumps(rec, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
