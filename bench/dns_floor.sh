#!/usr/bin/env bash
# Issue 18's dns_reverse target (at most 150 ns of CPU a line over W2 at a 95% cache hit
# rate), taken apart. Five runs per round, interleaved so that the load of the shared
# machine falls on all alike, each the daemon's CPU-s (user + sys, `/usr/bin/time`):
#   w2       W2 on apache-dns95 (the baseline);
#   field    W2 + `set` of a constant 28-byte `hostname` (a name of the benchmark's
#            length, one shared string: what one more field costs, with no lookup);
#   hit998   W2 + dns_reverse on apache-dns2k (2,000 clients, 99.8% hits: the hit path
#            with a cache that stays in the CPU's caches);
#   warm50k  W2 + dns_reverse on apache-dns95 with its 49,998 names loaded from a state
#            file (`persist = true`, saved by a first run): every line a hit in a cache of
#            the 95% run's size, no query. Its CPU includes loading and saving the state
#            file, reported separately as `persist` (a run on a one-line corpus);
#   dns95    W2 + dns_reverse on apache-dns95 (the target's run: 5% misses).
# dnsmasq as bench/run.sh starts it (synthesised names), unpinned, on a free port.
# Corpora: target/bench-data/apache-1000000.log (made by bench/run.sh), from which the
# dns95 and dns2k corpora are derived here as bench/run.sh does; all copied to a temp dir
# under /dev/shm when there is one (no disk write-back in the figures).
#   bash bench/dns_floor.sh          # 3 rounds
#   RUNS=5 bash bench/dns_floor.sh
#   PRIO="chrt -f 10" bash bench/dns_floor.sh   # daemon and dnsmasq at real-time priority
#                                   # (a shared machine's other processes preempt neither)
# Env: RUNS (3), BIN (target/release/deadbeat, built if absent or BUILD=1), PRIO (a
#      command prefix for the daemon and dnsmasq, none by default).
# Prints each run, then the best of each and its difference from w2's best in ns a line.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RUNS="${RUNS:-3}"
LINES=1000000
SRC="$ROOT/target/bench-data/apache-$LINES.log"
BIN="${BIN:-$ROOT/target/release/deadbeat}"
DNSMASQ="$(command -v dnsmasq || echo /usr/sbin/dnsmasq)"
[[ -x "$DNSMASQ" ]] || { echo "bench/dns_floor.sh: dnsmasq is required (apt-get install dnsmasq)"; exit 1; }
[[ -s "$SRC" ]] || { echo "bench/dns_floor.sh: $SRC is missing: run ONLY=dns bash bench/run.sh once"; exit 1; }
if [[ "${BUILD:-0}" == 1 || ! -x "$BIN" ]]; then cargo build --release --quiet; fi

BASE="${TMPDIR:-/tmp}"; [[ -d /dev/shm && -w /dev/shm ]] && BASE=/dev/shm
RUNDIR="$(mktemp -d "$BASE/deadbeat-dnsfloor.XXXXXX")"
DNSPID=""
cleanup() { [[ -n "$DNSPID" ]] && kill "$DNSPID" 2>/dev/null; rm -rf "$RUNDIR"; }
trap cleanup EXIT
mkdir -p "$RUNDIR/out" "$RUNDIR/state"

# The two corpora, as bench/run.sh makes apache-dns95 (and its apache-dns2k of the
# performance notes: every line one of the first 2,000 clients).
python3 - "$SRC" "$RUNDIR/dns95.log" "$RUNDIR/dns2k.log" <<'PY'
import sys
seen, first = [], []
with open(sys.argv[1]) as src, open(sys.argv[2], "w") as d95, open(sys.argv[3], "w") as d2k:
    for i, line in enumerate(src):
        client, rest = line.split(" ", 1)
        if i % 20 == 0:
            seen.append(client)
            c95 = client
        else:
            c95 = seen[(i * 7919) % len(seen)]
        d95.write(c95 + " " + rest)
        if len(first) < 2000:
            first.append(client)
            c2k = client
        else:
            c2k = first[(i * 7919) % 2000]
        d2k.write(c2k + " " + rest)
PY
head -n 1 "$RUNDIR/dns95.log" > "$RUNDIR/one.log"

# A free UDP port for dnsmasq: the kernel picks one, the socket is closed, dnsmasq binds it.
PORT=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
read -r -a PRIO_CMD <<< "${PRIO:-}"
"${PRIO_CMD[@]}" "$DNSMASQ" --no-daemon --port="$PORT" --listen-address=127.0.0.1 --bind-interfaces \
  --no-resolv --no-hosts --conf-file=/dev/null --local-ttl=3600 \
  --local=/in-addr.arpa/ --local=/ip6.arpa/ --synth-domain=bench.test,0.0.0.0/1,h- \
  --synth-domain=bench.test,128.0.0.0/1,h- --synth-domain=bench.test,::/0,h- \
  > "$RUNDIR/dnsmasq.log" 2>&1 &
DNSPID=$!
for _ in $(seq 1 100); do ss -Hlun "sport = :$PORT" 2>/dev/null | grep -q . && break; sleep 0.05; done
ss -Hlun "sport = :$PORT" | grep -q . || { echo "bench/dns_floor.sh: dnsmasq did not start"; cat "$RUNDIR/dnsmasq.log"; exit 1; }

# conf NAME SOURCE CORPUS [extra sed]: config/bench/SOURCE.toml on CORPUS, paths in RUNDIR.
conf() {
  sed -e "s|\.\./\.\./target/bench-data/apache-$LINES\.log|$3|" \
      -e "s|\.\./\.\./target/bench-data/state|$RUNDIR/state|" \
      -e "s|\.\./\.\./target/bench-data/out/|$RUNDIR/out/|" \
      -e "s|127\.0\.0\.1:40553|127.0.0.1:$PORT|" -e 's|level = "warn"|level = "info"|' \
      ${4:+-e "$4"} "config/bench/$2.toml" > "$RUNDIR/$1.toml"
}
conf w2 w2 "$RUNDIR/dns95.log"
conf dns95 w2_dns "$RUNDIR/dns95.log"
conf hit998 w2_dns "$RUNDIR/dns2k.log"
PERSIST='s|^  max_in_flight = 4096$|  max_in_flight = 4096\n  persist = true|'
conf warm50k w2_dns "$RUNDIR/dns95.log" "$PERSIST"
conf persist w2_dns "$RUNDIR/one.log" "$PERSIST"
# The field: a `set` cog before file_out.
python3 - "$RUNDIR/w2.toml" "$RUNDIR/field.toml" <<'PY'
import sys
s = open(sys.argv[1]).read()
at = s.index('  [[train.cog]]\n  type = "file_out"')
s = s[:at] + '  [[train.cog]]\n  type = "set"\n  fields = { hostname = "h-151-241-194-202.bench.test" }\n\n' + s[at:]
open(sys.argv[2], "w").write(s)
PY
grep -q "persist = true" "$RUNDIR/warm50k.toml" || { echo "bench/dns_floor.sh: config/bench/w2_dns.toml changed: no persist"; exit 1; }

run() {  # NAME: one timed run, its output checked for every line (the one-line run: 1)
  local name="$1" want=$LINES u s c
  [[ "$name" == persist ]] && want=1
  rm -f "$RUNDIR"/out/*
  /usr/bin/time -f "%U %S %c" -o "$RUNDIR/time" "${PRIO_CMD[@]}" "$BIN" run "$RUNDIR/$name.toml" > /dev/null 2> "$RUNDIR/log.$name"
  read -r u s c < "$RUNDIR/time"
  local got; got=$(cat "$RUNDIR"/out/* | wc -l)
  [[ "$got" -eq "$want" ]] || { echo "bench/dns_floor.sh: $name wrote $got lines, not $want" >&2; exit 1; }
  local cpu; cpu=$(awk -v u="$u" -v s="$s" 'BEGIN{printf "%.2f", u+s}')
  echo "$cpu" >> "$RUNDIR/$name.res"
  printf '%-8s cpu %s (user %s sys %s) involuntary switches %s load %s %s\n' "$name" "$cpu" "$u" "$s" "$c" \
    "$(cut -d' ' -f1 /proc/loadavg)" "$(grep -o 'queries=[0-9]*\|cache_hits=[0-9]*' "$RUNDIR/log.$name" | tr '\n' ' ')"
}
# A first run saves the 95% run's cache for warm50k.
run warm50k > /dev/null
: > "$RUNDIR/warm50k.res"
for i in $(seq 1 "$RUNS"); do
  echo "== round $i"
  for name in w2 field hit998 warm50k persist dns95; do run "$name"; done
done
best() { sort -g "$RUNDIR/$1.res" | head -n 1; }
echo "== best of $RUNS (CPU-s), over w2 in ns a line"
for name in w2 field hit998 warm50k persist dns95; do
  awk -v n="$name" -v b="$(best "$name")" -v w="$(best w2)" -v l="$LINES" \
    'BEGIN{ if (n == "w2" || n == "persist") printf "  %-8s %.2f\n", n, b; else printf "  %-8s %.2f  %+.0f\n", n, b, (b - w) / l * 1e9 }'
done
echo "  (warm50k includes persist's load and save of the state file)"
