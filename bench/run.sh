#!/usr/bin/env bash
# Reproducible benchmark of workloads W1-W7 (see ../shared/bench/README.md): deadbeat
# against the floor and rsyslog as the peer, median of RUNS runs. Floors: W1 cat; W2 and W3
# examples/w2_floor.rs (only the regex captures and the JSON writing; W3 is W2 plus
# anonymising `client`, which the floor leaves out, so W3's floor is W2's); W4 socat;
# W5 and W6 examples/window_floor.rs (parse + a hash map per window). W7 has no floor; its
# peer is rsyslog (imfile startmsg.regex), as W1-W4's. W5-W7's outputs are checked against
# the references bench/reference/w5.py, w6.py, w7.py after every run (deadbeat's and the
# floor's; the peer's on the fields it writes alike): a mismatch stops the run, exit 1.
# W3k (issue 18) is W3 with keyed anonymisation, run as config/bench/w3k.toml and inside
# `parallel` with 2 workers: config/bench/w3k_parallel.toml (the workers also render the
# JSON lines) and w3k_parallel_records.toml (the drain renders them on the loop's thread);
# all unpinned (the parallel runs need both cores), in turns; their outputs must be
# byte-identical (else exit 1).
#   bash bench/run.sh            # 1M-line corpora, 3 runs each
#   QUICK=1 bash bench/run.sh    # 100k-line corpora (smoke run)
#   OLD_BIN=path/to/old/deadbeat bash bench/run.sh   # also runs an older binary, side by side
# Env: SHARED (the corpus generator's folder, default ../shared/bench), RUNS (5), CPU (core the measured process is pinned to, default 1; PIN=0: no pinning),
#      ONLY="w1 w4" (subset, default w1 to w7, w3k and dns), NO_PEER=1 (skip rsyslog), PORT (first
#      TCP port, 40514), DNS_PORT (dnsmasq's, 40553). OLD_BIN applies to W1-W4.
# dns (issue 18): W2 + dns_reverse (config/bench/w2_dns.toml) against a local dnsmasq that
# synthesises a PTR name for every address (--synth-domain; skipped without dnsmasq):
# cold on W2's corpus (all clients distinct), warm on apache-dns95 (one line in 20 brings
# a new client, the others reuse one already seen: 95% of lines hit the cache), with W2 on
# the same corpus for the difference.
# w2dedup (issue 16) runs when named: ONLY=w2dedup: W2 and W2 + dedup on client
# (config/bench/w2_dedup.toml, every key new) in turns; the ratio of their CPU s is
# dedup's cost (target: at most 1.15).
# W8 (Redis Streams; needs redis-server and redis-cli) runs when named: ONLY=w8. Loading:
# deadbeat `redis_out` against the floor `redis-cli --pipe` sending the same XADD commands;
# then W2 in a consumer group of 1 and of 2 `redis_in` workers. The server's own CPU (INFO
# cpu) is reported beside each system's.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SHARED="${SHARED:-$ROOT/../shared/bench}"
DATA="$ROOT/target/bench-data"
RUNS="${RUNS:-5}"
ONLY="${ONLY:-w1 w2 w3 w3k w4 w5 w6 w7 dns}"
DNS_PORT="${DNS_PORT:-40553}"
PORT="${PORT:-40514}"
if [[ "${QUICK:-0}" == 1 ]]; then LINES=100000; else LINES=1000000; fi

if [[ ! -f "$SHARED/gen_corpus.py" ]]; then
  echo "bench/run.sh: $SHARED/gen_corpus.py not found."
  echo "  The corpus generator lives in the shared folder beside this repository (../shared/bench/)."
  echo "  Put gen_corpus.py there (or check out the shared folder) and run bash bench/run.sh again."
  exit 0
fi
for tool in python3 socat /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "bench/run.sh: $tool is required (apt-get install time socat)"; exit 1; }
done
HAVE_RSYSLOG=1
if [[ "${NO_PEER:-0}" == 1 ]] || ! command -v rsyslogd >/dev/null; then HAVE_RSYSLOG=0; fi

# pinning: the measured receiver on core $CPU, the sender (socat) on another one
if [[ "${PIN:-1}" == 1 ]] && command -v taskset >/dev/null && [[ "$(nproc)" -ge 2 ]]; then
  CPU="${CPU:-1}"; SEND_CPU=$(( CPU == 0 ? 1 : 0 ))
  PIN_RX=(taskset -c "$CPU"); PIN_TX=(taskset -c "$SEND_CPU")
else
  PIN_RX=(); PIN_TX=()
fi

echo "== build"
cargo build --release --quiet
BIN="$ROOT/target/release/deadbeat"
# A separate invocation: an example brings in the dev-dependencies, and building it together
# with the binary could change the features the binary is built with.
FLOOR_W2="$ROOT/target/release/examples/w2_floor"
if [[ " $ONLY " == *" w2 "* || " $ONLY " == *" w3 "* ]]; then
  cargo build --release --quiet --example w2_floor
fi
FLOOR_WINDOW="$ROOT/target/release/examples/window_floor"
if [[ " $ONLY " == *" w5 "* || " $ONLY " == *" w6 "* ]]; then
  cargo build --release --quiet --example window_floor
fi
has() { [[ " $ONLY " == *" $1 "* ]]; }

echo "== corpora ($LINES lines) in $DATA"
mkdir -p "$DATA" "$DATA/out"
KINDS=""
if has w1 || has w2 || has w3 || has w3k || has w5 || has w8 || has dns || has w2dedup; then KINDS+=" apache"; fi
if has w4; then KINDS+=" syslog"; fi
if has w6; then KINDS+=" sshd"; fi
if has w7; then KINDS+=" java"; fi
for kind in $KINDS; do
  f="$DATA/$kind-$LINES.log"
  if [[ ! -s "$f" ]]; then
    python3 "$SHARED/gen_corpus.py" --kind "$kind" --lines "$LINES" --seed 1 > "$f.tmp"
    mv "$f.tmp" "$f"
  fi
done
APACHE="$DATA/apache-$LINES.log"
SYSLOG="$DATA/syslog-$LINES.log"
SSHD="$DATA/sshd-$LINES.log"
JAVA="$DATA/java-$LINES.log"
if has dns && ! command -v dnsmasq >/dev/null && [[ ! -x /usr/sbin/dnsmasq ]]; then
  echo "== dns: skipped (dnsmasq is not installed: apt-get install dnsmasq)"
  ONLY="${ONLY//dns/}"
fi
APACHE95="$DATA/apache-dns95-$LINES.log"
if has dns && [[ ! -s "$APACHE95" ]]; then
  # One line in 20 keeps its own client (a cache miss); the others take a client already
  # seen (a hit, or a join while its lookup is in flight).
  python3 - "$DATA/apache-$LINES.log" "$APACHE95.tmp" <<'PY'
import sys
seen = []
with open(sys.argv[1]) as src, open(sys.argv[2], "w") as dst:
    for i, line in enumerate(src):
        client, rest = line.split(" ", 1)
        if i % 20 == 0:
            seen.append(client)
        else:
            client = seen[(i * 7919) % len(seen)]
        dst.write(client + " " + rest)
PY
  mv "$APACHE95.tmp" "$APACHE95"
fi
# config/bench/*.toml name the 1M corpus (../../target/bench-data/apache-1000000.log);
# mkconf rewrites that to $DATA and the size of this run (QUICK=1: 100k).

RUNDIR="$(mktemp -d "${TMPDIR:-/tmp}/deadbeat-bench.XXXXXX")"
cleanup() {
  local p
  # receivers' pid files, and the peers' own (in their work dirs)
  for p in $(cat "$RUNDIR"/*.pid "$RUNDIR"/*/*.pid 2>/dev/null); do kill "$p" 2>/dev/null || true; done
  rm -rf "$RUNDIR"
}
trap cleanup EXIT

# W5-W7: the expected output, from the Python references (written from the README, not
# from deadbeat), computed once per run of this script. W6's reference takes the year of
# the syslog times as deadbeat does (the wall clock's).
declare -A EXPECTED=() INPUT=()
INPUT[w5]="$APACHE"; INPUT[w6]="$SSHD"; INPUT[w7]="$JAVA"
for w in w5 w6 w7; do
  has "$w" || continue
  ref="$ROOT/bench/reference/$w.py"
  if [[ ! -f "$ref" ]]; then
    echo "bench/run.sh: $ref is missing: $w cannot be checked (is the window branch merged?)" >&2
    exit 1
  fi
  EXPECTED[$w]="$RUNDIR/expected-$w.json"
  echo "== reference $w: python3 bench/reference/$w.py ${INPUT[$w]}"
  python3 "$ref" "${INPUT[$w]}" > "${EXPECTED[$w]}"
  echo "   $(wc -l < "${EXPECTED[$w]}") records expected"
done

# check_output NAME WORKLOAD OUTFILE [compare.py options]: the output against the reference,
# sorted; a mismatch ends the whole run, loudly.
check_output() {
  local name="$1" w="$2" out="$3"; shift 3
  if ! python3 "$ROOT/bench/reference/compare.py" "${EXPECTED[$w]}" "$out" "$@"; then
    echo "bench/run.sh: MISMATCH: $name's output ($out) differs from bench/reference/$w.py's" >&2
    echo "  (kept: $DATA/mismatch-$name.json and $DATA/expected-$w.json)" >&2
    cp "$out" "$DATA/mismatch-$name.json" 2>/dev/null || true
    cp "${EXPECTED[$w]}" "$DATA/expected-$w.json"
    exit 1
  fi
  echo "  $name: output checked against the reference"
}

now() { date +%s.%N; }
# Before every timed run: the previous run's output must not still be written back to
# disk (by a kernel thread, possibly on the measured core) while this one is timed. Without
# this, whichever system ran after rsyslog (2 s, 180 MB written) measured 20-30% slower.
settle() { rm -f "$1"; sync; }
lines_of() { if [[ -f "$1" ]]; then wc -l < "$1"; else echo 0; fi; }

# wait_lines FILE N: poll until FILE holds N lines; prints the time the file last grew
# (the end of the work), so the poll interval does not add to the measured time.
# (awk prints numbers with 6 significant digits unless told: the deadline needs printf.)
wait_lines() {
  local file="$1" want="$2" size=-1 s last t0 deadline
  t0=$(now); last=$t0; deadline=$(awk -v t="$t0" 'BEGIN{printf "%.3f", t+600}')
  while :; do
    s=$(stat -c %s "$file" 2>/dev/null || echo 0)
    if [[ "$s" != "$size" ]]; then size=$s; last=$(now)
    elif [[ "$(lines_of "$file")" -ge "$want" ]]; then echo "$last"; return 0
    fi
    if awk -v a="$(now)" -v b="$deadline" 'BEGIN{exit !(a>b)}'; then
      echo "timeout waiting for $want lines in $file (have $(lines_of "$file"))" >&2; return 1
    fi
    sleep 0.02
  done
}

wait_port() {  # wait until something listens on 127.0.0.1:$1
  local i
  for i in $(seq 1 500); do
    ss -Hltn "sport = :$1" 2>/dev/null | grep -q . && return 0
    sleep 0.01
  done
  echo "nothing listens on port $1" >&2; return 1
}

# result row for one run: "lines_per_s cpu_s rss_kib" appended to $RUNDIR/NAME.res; lines/s
# counts input lines. WANT: the output lines expected (W1-W4 one per input line).
WANT=$LINES
record() {  # NAME T0 T1 TIMEFILE OUTFILE
  local name="$1" t0="$2" t1="$3" tf="$4" out="$5" got
  got=$(lines_of "$out")
  if [[ "$WANT" != any && "$got" -ne "$WANT" ]]; then echo "  warning: $name wrote $got lines, expected $WANT" >&2; fi
  read -r u s m < <(tail -n 1 "$tf")
  awk -v n="$LINES" -v t0="$t0" -v t1="$t1" -v u="$u" -v s="$s" -v m="$m" \
    'BEGIN{printf "%.0f %.2f %d\n", n/(t1-t0), u+s, m}' >> "$RUNDIR/$name.res"
  printf '  %-18s %s\n' "$name" "$(tail -n 1 "$RUNDIR/$name.res")"
}

TIMEFMT="%U %S %M"

# deadbeat config for this run: point the relative paths at $DATA and the corpus size
mkconf() {  # WORKLOAD PORT -> path of the rewritten config
  local w="$1" port="$2" c="$RUNDIR/$1.toml"
  sed -e "s|\.\./\.\./target/bench-data/|$DATA/|g" \
      -e "s|-1000000\.log|-$LINES.log|g" \
      -e "s|127\.0\.0\.1:40514|127.0.0.1:$port|" \
      -e "s|$DATA/out/|$RUNDIR/out/|" "config/bench/$w.toml" > "$c"
  echo "$c"
}

# rsyslog config for this run
mkpeer() {  # WORKLOAD INPUT PORT
  local w="$1" input="$2" port="$3" wd="$RUNDIR/rsyslog-$1"
  rm -rf "$wd"; mkdir -p "$wd"
  sed -e "s|@WORKDIR@|$wd|; s|@INPUT@|$input|; s|@OUTPUT@|$RUNDIR/out/peer-$w.out|" \
      -e "s|@PORT@|$port|; s|@RULEBASE@|$ROOT/bench/peers/apache_combined.rb|" \
      -e "s|@JAVA_RULEBASE@|$ROOT/bench/peers/java_header.rb|" \
      "bench/peers/rsyslog-$w.conf" > "$wd/rsyslog.conf"
  echo "$wd"
}

# a batch process: time from start to exit
run_batch() {  # NAME OUTFILE CMD...
  local name="$1" out="$2"; shift 2
  settle "$out"; local tf="$RUNDIR/time.$name"
  local t0 t1; t0=$(now)
  /usr/bin/time -f "$TIMEFMT" -o "$tf" "${PIN_RX[@]}" "$@"
  t1=$(now)
  record "$name" "$t0" "$t1" "$tf" "$out"
}

# rsyslog reading a file: time from start until the output holds every line (WAIT_FOR,
# default WANT), then SIGTERM
run_rsyslog_file() {  # W INPUT
  local w="$1" input="$2" name="rsyslog-$1" out="$RUNDIR/out/peer-$1.out" wd t0 t1 tp
  wd=$(mkpeer "$w" "$input" 0); settle "$out"; local tf="$RUNDIR/time.$name"
  t0=$(now)
  /usr/bin/time -f "$TIMEFMT" -o "$tf" "${PIN_RX[@]}" rsyslogd -n -f "$wd/rsyslog.conf" -i "$wd/rsyslogd.pid" \
    > "$wd/log" 2>&1 & tp=$!
  t1=$(wait_lines "$out" "${WAIT_FOR:-$WANT}")
  # the rest (W7: the last event, after imfile's readTimeout) comes untimed
  if [[ "${WAIT_FOR:-$WANT}" -lt "$WANT" ]]; then wait_lines "$out" "$WANT" > /dev/null || true; fi
  stop_daemon "$wd/rsyslogd.pid" "$tp"
  record "$name" "$t0" "$t1" "$tf" "$out"
}

stop_daemon() {  # PIDFILE TIMEPID: SIGTERM the daemon (a child of /usr/bin/time), wait for time
  local pid; pid=$(cat "$1" 2>/dev/null || pgrep -P "$2" || true)
  [[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null || true
  wait "$2" 2>/dev/null || true
}

# a TCP receiver in the background, socat sending the corpus
run_tcp() {  # NAME OUTFILE PORT CMD...
  local name="$1" out="$2" port="$3"; shift 3
  settle "$out"; local tf="$RUNDIR/time.$name" t0 t1 tp pidf="$RUNDIR/$name.pid"
  /usr/bin/time -f "$TIMEFMT" -o "$tf" "${PIN_RX[@]}" "$@" & tp=$!
  wait_port "$port"
  echo "$(pgrep -P "$tp" | head -n 1)" > "$pidf"
  t0=$(now)
  "${PIN_TX[@]}" socat -u "FILE:$SYSLOG" "TCP:127.0.0.1:$port"
  t1=$(wait_lines "$out" "$LINES")
  stop_daemon "$pidf" "$tp"; rm -f "$pidf"
  record "$name" "$t0" "$t1" "$tf" "$out"
}

# --- W8: Redis Streams. One redis-server (unpinned, no persistence) for the whole workload;
# every run starts from an empty database (load) or a fresh consumer group (workers).
W8_PORT=$((PORT + 500))
W8_DIR="$RUNDIR/redis-w8"
w8_cli() { redis-cli -p "$W8_PORT" "$@"; }
w8_cpu() { w8_cli INFO cpu | tr -d '\r' | awk -F: '/^used_cpu_(user|sys):/{s+=$2} END{printf "%.2f", s}'; }
w8_start() {
  if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    echo "bench/run.sh: w8 needs redis-server and redis-cli (apt-get install redis-server redis-tools)" >&2
    exit 1
  fi
  mkdir -p "$W8_DIR"
  redis-server --port "$W8_PORT" --bind 127.0.0.1 --dir "$W8_DIR" --save '' --appendonly no \
    --daemonize yes --pidfile "$W8_DIR/redis.pid" --logfile "$W8_DIR/redis.log"
  local i; for i in $(seq 1 500); do w8_cli PING 2>/dev/null | grep -q PONG && break; sleep 0.01; done
  # the floor's input: the corpus as RESP XADD commands, made once, untimed
  python3 - "$APACHE" "$RUNDIR/w8.resp" <<'PY'
import sys
with open(sys.argv[1], 'rb') as f, open(sys.argv[2], 'wb') as out:
    for line in f:
        line = line.rstrip(b'\n')
        out.write(b'*5\r\n$4\r\nXADD\r\n$3\r\nw8s\r\n$1\r\n*\r\n$7\r\nmessage\r\n$%d\r\n%s\r\n' % (len(line), line))
PY
  cat > "$RUNDIR/w8-out.toml" <<TOML
[log]
level = "warn"
[[train]]
name = "w8load"
  [[train.cog]]
  type = "file_in"
  paths = ["$APACHE"]
  [[train.cog]]
  type = "redis_out"
  address = "127.0.0.1:$W8_PORT"
  stream = "w8s"
TOML
}
w8_stop() { if [[ -f "$W8_DIR/redis.pid" ]]; then kill "$(cat "$W8_DIR/redis.pid")" 2>/dev/null || true; fi; }
# w8_worker_conf GROUP CONSUMER OUT: W2 (as config/bench/w2.toml) behind redis_in
w8_worker_conf() {
  local c="$RUNDIR/w8-$2.toml"
  cat > "$c" <<TOML
[log]
level = "warn"
[[train]]
name = "w8"
  [[train.cog]]
  type = "redis_in"
  address = "127.0.0.1:$W8_PORT"
  stream = "w8s"
  group = "$1"
  consumer = "$2"
  block = "100ms"
  [[train.cog]]
  type = "regex"
  preset = "apache_combined"
  [[train.cog]]
  type = "remove"
  fields = ["message", "_redis_id"]
  [[train.cog]]
  type = "file_out"
  path = "$3"
  format = "json"
TOML
  echo "$c"
}
# w8_record NAME T0 T1 CPU_S RSS_KIB REDIS_CPU_S: "lines/s cpu_s rss_kib redis_cpu_s"
w8_record() {
  awk -v n="$LINES" -v t0="$2" -v t1="$3" -v c="$4" -v m="$5" -v r="$6" \
    'BEGIN{printf "%.0f %.2f %d %.2f\n", n/(t1-t0), c, m, r}' >> "$RUNDIR/$1.res"
  printf '  %-18s %s\n' "$1" "$(tail -n 1 "$RUNDIR/$1.res")"
}
w8_check_len() {
  local got; got=$(w8_cli XLEN w8s)
  [[ "$got" -eq "$LINES" ]] || { echo "bench/run.sh: w8: the stream holds $got entries, expected $LINES" >&2; exit 1; }
}
w8_load() {  # the stream loaded by redis_out, then by redis-cli --pipe (the floor)
  local tf="$RUNDIR/time.w8load" t0 t1 c0 c1 u s m
  w8_cli FLUSHALL > /dev/null; c0=$(w8_cpu); t0=$(now)
  /usr/bin/time -f "$TIMEFMT" -o "$tf" "${PIN_RX[@]}" "$BIN" run "$RUNDIR/w8-out.toml"
  t1=$(now); c1=$(w8_cpu); w8_check_len
  read -r u s m < <(tail -n 1 "$tf")
  w8_record deadbeat-w8load "$t0" "$t1" "$(awk -v u="$u" -v s="$s" 'BEGIN{print u+s}')" "$m" \
    "$(awk -v a="$c0" -v b="$c1" 'BEGIN{print b-a}')"
  w8_cli FLUSHALL > /dev/null; c0=$(w8_cpu); t0=$(now)
  /usr/bin/time -f "$TIMEFMT" -o "$tf" "${PIN_RX[@]}" redis-cli -p "$W8_PORT" --pipe < "$RUNDIR/w8.resp" > /dev/null
  t1=$(now); c1=$(w8_cpu); w8_check_len
  read -r u s m < <(tail -n 1 "$tf")
  w8_record floor-w8load "$t0" "$t1" "$(awk -v u="$u" -v s="$s" 'BEGIN{print u+s}')" "$m" \
    "$(awk -v a="$c0" -v b="$c1" 'BEGIN{print b-a}')"
}
w8_workers() {  # RUN K: W2 in a group of K workers (worker j pinned to core CPU+j-1 when pinning)
  local run="$1" k="$2" name="deadbeat-w8w$2" group="g$1-$2" j t0 t1 c0 c1 total out conf tp
  local cpu=0 rss=0 u s m
  local -a tps=() outs=() pin=()
  c0=$(w8_cpu); t0=$(now)
  for j in $(seq 1 "$k"); do
    out="$RUNDIR/out/w8-$k-$j.json"; outs+=("$out")
    conf=$(w8_worker_conf "$group" "w$j" "$out")
    pin=(); if [[ ${#PIN_RX[@]} -gt 0 ]]; then pin=(taskset -c $(( (CPU + j - 1) % $(nproc) ))); fi
    /usr/bin/time -f "$TIMEFMT" -o "$RUNDIR/time.w8-$j" "${pin[@]}" "$BIN" run "$conf" & tps+=($!)
  done
  while :; do
    total=0; for out in "${outs[@]}"; do total=$((total + $(lines_of "$out"))); done
    [[ "$total" -ge "$LINES" ]] && break
    sleep 0.02
  done
  t1=$(now); c1=$(w8_cpu)
  for tp in "${tps[@]}"; do kill -TERM "$(pgrep -P "$tp")" 2>/dev/null || true; wait "$tp" || true; done
  total=0; for out in "${outs[@]}"; do total=$((total + $(lines_of "$out"))); done
  [[ "$total" -eq "$LINES" ]] || { echo "bench/run.sh: w8: $total lines out of $LINES entries" >&2; exit 1; }
  for j in $(seq 1 "$k"); do
    read -r u s m < <(tail -n 1 "$RUNDIR/time.w8-$j")
    cpu=$(awk -v a="$cpu" -v u="$u" -v s="$s" 'BEGIN{print a+u+s}'); rss=$(( m > rss ? m : rss ))
  done
  w8_record "$name" "$t0" "$t1" "$cpu" "$rss" "$(awk -v a="$c0" -v b="$c1" 'BEGIN{print b-a}')"
}
if has w8; then w8_start; trap 'w8_stop; cleanup' EXIT; fi

mkdir -p "$RUNDIR/out"
if has dns; then
  DNSMASQ="$(command -v dnsmasq || echo /usr/sbin/dnsmasq)"
  # Names for every address, computed (a hosts file of 1M records would make each PTR
  # answer a scan of dnsmasq's whole cache); TTL 1 h; nothing forwarded.
  # On the sender's core, as socat for W4: the measured process keeps its own.
  "${PIN_TX[@]}" "$DNSMASQ" --no-daemon --port="$DNS_PORT" --listen-address=127.0.0.1 --bind-interfaces \
    --no-resolv --no-hosts --conf-file=/dev/null --local-ttl=3600 \
    --local=/in-addr.arpa/ --local=/ip6.arpa/ --synth-domain=bench.test,0.0.0.0/1,h- \
    --synth-domain=bench.test,128.0.0.0/1,h- --synth-domain=bench.test,::/0,h- \
    > "$RUNDIR/dnsmasq.log" 2>&1 &
  echo $! > "$RUNDIR/dnsmasq.pid"
  for i in $(seq 1 100); do ss -Hlun "sport = :$DNS_PORT" 2>/dev/null | grep -q . && break; sleep 0.05; done
fi
declare -A SYSTEMS=()
for w in $ONLY; do
  echo "== $w"
  WANT=$LINES
  if [[ -n "${EXPECTED[$w]:-}" ]]; then WANT=$(wc -l < "${EXPECTED[$w]}"); fi
  for i in $(seq 1 "$RUNS"); do
    PORT=$((PORT + 1))
    case "$w" in
      w1|w2|w3)
        conf=$(mkconf "$w" "$PORT")
        out=$(grep -o "$RUNDIR/out/[^\"]*" "$conf")
        # With an older binary, the two take turns going first: the first run after the
        # previous workload's output was synced is not the same as the second.
        if [[ -n "${OLD_BIN:-}" && $((i % 2)) == 0 ]]; then run_batch "before-$w" "$out" "$OLD_BIN" run "$conf"; fi
        run_batch "deadbeat-$w" "$out" "$BIN" run "$conf"
        if [[ -n "${OLD_BIN:-}" && $((i % 2)) == 1 ]]; then run_batch "before-$w" "$out" "$OLD_BIN" run "$conf"; fi
        if [[ "$w" == w1 ]]; then
          run_batch "floor-w1" "$RUNDIR/out/floor.log" sh -c 'cat "$1" > "$2"' sh "$APACHE" "$RUNDIR/out/floor.log"
        else  # w2, w3: the same floor (it does not anonymise)
          run_batch "floor-$w" "$RUNDIR/out/floor.json" "$FLOOR_W2" "$APACHE" "$RUNDIR/out/floor.json"
        fi
        if [[ "$HAVE_RSYSLOG" == 1 ]]; then run_rsyslog_file "$w" "$APACHE"; fi
        ;;
      w3k)
        conf=$(mkconf w3k "$PORT"); out=$(grep -o "$RUNDIR/out/[^\"]*" "$conf")
        pinned=("${PIN_RX[@]}"); PIN_RX=()
        # The three take turns going first, as with OLD_BIN above.
        order=(deadbeat parallel records)
        order=("${order[@]:i%3}" "${order[@]:0:i%3}")
        for sys in "${order[@]}"; do
          case "$sys" in
            deadbeat) run_batch "deadbeat-w3k" "$out" "$BIN" run "$conf" ;;
            parallel) c=$(mkconf w3k_parallel "$PORT"); run_batch "parallel-w3k" "$(grep -o "$RUNDIR/out/[^\"]*" "$c")" "$BIN" run "$c" ;;
            records) c=$(mkconf w3k_parallel_records "$PORT"); run_batch "records-w3k" "$(grep -o "$RUNDIR/out/[^\"]*" "$c")" "$BIN" run "$c" ;;
          esac
        done
        PIN_RX=("${pinned[@]}")
        for v in w3k_parallel w3k_parallel_records; do
          pout="$RUNDIR/out/$v.json"
          if ! cmp -s "$out" "$pout"; then
            echo "bench/run.sh: MISMATCH: $v's output differs from w3k's" >&2
            cp "$out" "$DATA/mismatch-w3k.json"; cp "$pout" "$DATA/mismatch-$v.json"
            echo "  (kept: $DATA/mismatch-w3k.json and $DATA/mismatch-$v.json)" >&2
            exit 1
          fi
          echo "  $v: output identical to w3k's"
        done
        ;;
      w4)
        conf=$(mkconf w4 "$PORT")
        if [[ -n "${OLD_BIN:-}" && $((i % 2)) == 0 ]]; then
          run_tcp "before-w4" "$RUNDIR/out/w4.json" "$PORT" "$OLD_BIN" run "$conf"
          PORT=$((PORT + 1)); conf=$(mkconf w4 "$PORT")
        fi
        run_tcp "deadbeat-w4" "$RUNDIR/out/w4.json" "$PORT" "$BIN" run "$conf"
        if [[ -n "${OLD_BIN:-}" && $((i % 2)) == 1 ]]; then
          PORT=$((PORT + 1)); conf=$(mkconf w4 "$PORT")
          run_tcp "before-w4" "$RUNDIR/out/w4.json" "$PORT" "$OLD_BIN" run "$conf"
        fi
        PORT=$((PORT + 1))
        rm -f "$RUNDIR/out/floor.log"
        run_tcp "floor-w4" "$RUNDIR/out/floor.log" "$PORT" \
          sh -c 'exec socat -u "TCP-LISTEN:$1,reuseaddr,bind=127.0.0.1" - > "$2"' sh "$PORT" "$RUNDIR/out/floor.log"
        if [[ "$HAVE_RSYSLOG" == 1 ]]; then
          PORT=$((PORT + 1)); wd=$(mkpeer w4 - "$PORT")
          run_tcp "rsyslog-w4" "$RUNDIR/out/peer-w4.out" "$PORT" rsyslogd -n -f "$wd/rsyslog.conf" -i "$wd/rsyslogd.pid"
        fi
        ;;
      dns)
        base=$(mkconf w2 "$PORT"); sed -i "s|apache-$LINES\.log|apache-dns95-$LINES.log|" "$base"
        warm="$RUNDIR/w2_dns_warm.toml"; cold=$(mkconf w2_dns "$PORT")
        sed -i "s|127\.0\.0\.1:40553|127.0.0.1:$DNS_PORT|; s|level = \"warn\"|level = \"info\"|" "$cold"
        sed "s|apache-$LINES\.log|apache-dns95-$LINES.log|" "$cold" > "$warm"
        out=$(grep -o "$RUNDIR/out/[^\"]*" "$base")
        run_batch "dns-w2" "$out" "$BIN" run "$base"
        out=$(grep -o "$RUNDIR/out/[^\"]*" "$warm")
        run_batch "dns-warm" "$out" "$BIN" run "$warm" 2> "$RUNDIR/dns-warm.log"
        grep -o "dns_reverse counts.*" "$RUNDIR/dns-warm.log" | sed 's/^/    /'
        run_batch "dns-cold" "$out" "$BIN" run "$cold" 2> "$RUNDIR/dns-cold.log"
        grep -o "dns_reverse counts.*" "$RUNDIR/dns-cold.log" | sed 's/^/    /'
        ;;
      w2dedup)
        # dedup drops the lines of clients seen again (a few): its output is not counted.
        order=(w2 w2_dedup); order=("${order[@]:i%2}" "${order[@]:0:i%2}")
        for v in "${order[@]}"; do
          conf=$(mkconf "$v" "$PORT"); out=$(grep -o "$RUNDIR/out/[^\"]*" "$conf")
          if [[ "$v" == w2 ]]; then WANT=$LINES; else WANT=any; fi
          run_batch "${v/w2_dedup/dedup}-w2dedup" "$out" "$BIN" run "$conf"
        done
        ;;
      w5|w6|w7)
        conf=$(mkconf "$w" "$PORT")
        out=$(grep -o "$RUNDIR/out/[^\"]*" "$conf")
        run_batch "deadbeat-$w" "$out" "$BIN" run "$conf"
        check_output "deadbeat-$w" "$w" "$out"
        if [[ "$w" != w7 ]]; then
          run_batch "floor-$w" "$RUNDIR/out/floor.json" "$FLOOR_WINDOW" "$w" "${INPUT[$w]}" "$RUNDIR/out/floor.json"
          check_output "floor-$w" "$w" "$RUNDIR/out/floor.json"
        elif [[ "$HAVE_RSYSLOG" == 1 ]]; then
          # imfile holds the last event until readTimeout (1 s) passes without a new line:
          # timed until every other event is out, then the last one is waited for untimed.
          WAIT_FOR=$((WANT - 1)) run_rsyslog_file w7 "$JAVA"
          check_output "rsyslog-w7" w7 "$RUNDIR/out/peer-w7.out" --fields=message,level,thread,logger
        fi
        ;;
      w8)
        w8_load
        w8_workers "$i" 1
        w8_workers "$i" 2
        ;;
    esac
    rm -f "$RUNDIR"/out/*
  done
done

median() {  # FILE COLUMN
  awk -v c="$2" '{print $c}' "$1" | sort -g | awk '{a[NR]=$1} END{ if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'
}

echo
echo "== results: $LINES lines, median of $RUNS runs$( [[ ${#PIN_RX[@]} -gt 0 ]] && echo ", receiver pinned to CPU $CPU" )"
printf '| %-3s | %-9s | %12s | %7s | %13s |\n' wl system "lines/s" "CPU s" "peak RSS MiB"
printf '|-----|-----------|-------------:|--------:|--------------:|\n'
for w in $ONLY; do
  for sys in deadbeat parallel records before floor rsyslog w2 dedup; do
    f="$RUNDIR/$sys-$w.res"; [[ -f "$f" ]] || continue
    printf '| %-3s | %-9s | %12s | %7s | %13s |\n' "$w" "$sys" \
      "$(median "$f" 1 | awk '{printf "%d", $1}')" "$(median "$f" 2)" "$(median "$f" 3 | awk '{printf "%.1f", $1/1024}')"
  done
done
echo
for w in $ONLY; do
  [[ "$w" == dns ]] && continue
  d="$RUNDIR/deadbeat-$w.res"; p="$RUNDIR/rsyslog-$w.res"; fl="$RUNDIR/floor-$w.res"
  line="$w:"
  b="$RUNDIR/before-$w.res"
  pa="$RUNDIR/parallel-$w.res"
  [[ -f "$pa" ]] && line+=" parallel/deadbeat = $(awk -v a="$(median "$pa" 1)" -v b="$(median "$d" 1)" 'BEGIN{printf "%.2fx", a/b}') (lines/s; CPU s $(median "$pa" 2) against $(median "$d" 2))"
  if [[ "$w" == w2dedup ]]; then
    echo "w2dedup: dedup/w2 CPU s = $(awk -v a="$(median "$RUNDIR/dedup-w2dedup.res" 2)" -v b="$(median "$RUNDIR/w2-w2dedup.res" 2)" 'BEGIN{printf "%.3fx", a/b}') (target <= 1.15)"
    continue
  fi
  re="$RUNDIR/records-$w.res"
  [[ -f "$re" ]] && line+=" records/deadbeat = $(awk -v a="$(median "$re" 1)" -v b="$(median "$d" 1)" 'BEGIN{printf "%.2fx", a/b}')"
  [[ -f "$b" ]] && line+=" deadbeat/before = $(awk -v a="$(median "$d" 1)" -v b="$(median "$b" 1)" 'BEGIN{printf "%.3fx", a/b}')"
  [[ -f "$p" ]] && line+=" deadbeat/rsyslog = $(awk -v a="$(median "$d" 1)" -v b="$(median "$p" 1)" 'BEGIN{printf "%.2fx", a/b}')"
  [[ -f "$fl" ]] && line+="  deadbeat/floor = $(awk -v a="$(median "$d" 1)" -v b="$(median "$fl" 1)" 'BEGIN{printf "%.2fx", a/b}')"
  echo "$line"
done
if [[ " $ONLY " == *" w3 "* ]]; then
  echo "(w3's floor is the W2 floor, examples/w2_floor.rs: it does not anonymise client)"
fi
if has w8; then
  echo
  echo "== w8 (Redis Streams), median of $RUNS: lines/s, CPU s of the process(es), peak RSS MiB, redis-server CPU s"
  for sys in deadbeat-w8load floor-w8load deadbeat-w8w1 deadbeat-w8w2; do
    f="$RUNDIR/$sys.res"; [[ -f "$f" ]] || continue
    printf '| %-15s | %10s | %6s | %6s | %6s |\n' "$sys" "$(median "$f" 1 | awk '{printf "%d", $1}')" \
      "$(median "$f" 2)" "$(median "$f" 3 | awk '{printf "%.1f", $1/1024}')" "$(median "$f" 4)"
  done
  echo "w8: redis_out/floor = $(awk -v a="$(median "$RUNDIR/deadbeat-w8load.res" 1)" -v b="$(median "$RUNDIR/floor-w8load.res" 1)" 'BEGIN{printf "%.2fx", a/b}')," \
    "2 workers/1 worker = $(awk -v a="$(median "$RUNDIR/deadbeat-w8w2.res" 1)" -v b="$(median "$RUNDIR/deadbeat-w8w1.res" 1)" 'BEGIN{printf "%.2fx", a/b}')"
fi
if has dns && [[ -f "$RUNDIR/dns-cold.res" ]]; then
  echo
  echo "== dns (median of $RUNS; CPU best of $RUNS): lines/s, CPU s"
  for r in dns-w2 dns-warm dns-cold; do
    printf '  %-9s %10s lines/s  CPU median %s s, best %s s\n' "$r" "$(median "$RUNDIR/$r.res" 1 | awk '{printf "%d", $1}')" \
      "$(median "$RUNDIR/$r.res" 2)" "$(awk '{print $2}' "$RUNDIR/$r.res" | sort -g | head -n 1)"
  done
  awk -v n="$LINES" -v a="$(awk '{print $2}' "$RUNDIR/dns-warm.res" | sort -g | head -n 1)" \
      -v b="$(awk '{print $2}' "$RUNDIR/dns-w2.res" | sort -g | head -n 1)" \
    'BEGIN{printf "  dns_reverse at 95%% hits adds %.0f ns of CPU a line to W2 (best against best; target <= 150)\n", (a-b)/n*1e9}'
  echo "  cold: lines/s of dns-cold = distinct addresses looked up a second (target >= 20,000)"
fi
if [[ " $ONLY " == *" w3k "* ]]; then
  echo "(w3k and its parallel runs are not pinned: parallel uses 2 worker threads besides the loop;"
  echo " parallel = w3k_parallel.toml, rendering on the workers; records = w3k_parallel_records.toml)"
fi
