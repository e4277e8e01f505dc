#!/usr/bin/env bash
# Issue 20's TLS target, measured: W4 (1M syslog lines over TCP to `tcp_in`, newline
# framing, `file_out` JSON) plain against the same with a `tls` table on `tcp_in` (a
# throwaway CA and an EC P-256 server certificate made here with the `openssl` CLI).
# Senders: `socat -u FILE:corpus TCP:...` (plain) and `socat -u FILE:corpus OPENSSL:...`
# (TLS, verifying the server against the throwaway CA). Runs alternate plain/TLS so that
# the load of the shared machine falls on both alike. Per run: lines/s (first byte sent
# until the output holds every line), the receiver's and the sender's CPU-s (user+sys,
# from their rusage); then the best and median of each, the TLS/plain ratio of each round
# and their median. Every run's output must hold exactly the corpus's line count, else
# the script stops (exit 1).
#   bash bench/tls_w4.sh             # 5 runs of each
#   RUNS=3 bash bench/tls_w4.sh
#   CG=1 bash bench/tls_w4.sh        # instead: instruction counts of the receiver under
#                                    # cachegrind (the first CG_LINES lines, 200000), one run
#                                    # each; the annotations are kept in target/bench-data/cg/
#   CG=1 CG_ENV="GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=..." bash bench/tls_w4.sh
#                                    # the same with the daemon's environment changed
# Env: RUNS (5), LINES (1000000; the corpus size), SHARED (folder holding gen_corpus.py,
#      default ../shared/bench beside the repository), CPU (core of the receiver, default 1;
#      the sender gets the other one; PIN=0: no pinning), BIN (the daemon, default
#      target/release/deadbeat, built if absent or BUILD=1).
# Everything runs on 127.0.0.1, on ports the kernel reports free, in a temp dir removed
# at the end; every wait is bounded.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SHARED="${SHARED:-$ROOT/../shared/bench}"
DATA="$ROOT/target/bench-data"
RUNS="${RUNS:-5}"
LINES="${LINES:-1000000}"
BIN="${BIN:-$ROOT/target/release/deadbeat}"
CORPUS="$DATA/syslog-$LINES.log"

if [[ ! -s "$CORPUS" && ! -f "$SHARED/gen_corpus.py" ]]; then
  echo "bench/tls_w4.sh: $SHARED/gen_corpus.py not found and no corpus at $CORPUS."
  echo "  The corpus generator lives in the shared folder beside this repository (../shared/bench/);"
  echo "  put it there (or point SHARED at its folder) and run bash bench/tls_w4.sh again."
  exit 0
fi
for tool in python3 socat openssl ss; do
  command -v "$tool" >/dev/null || {
    echo "bench/tls_w4.sh: $tool is required (apt-get install python3 socat openssl iproute2)" >&2
    exit 1
  }
done
if [[ "${PIN:-1}" == 1 ]] && command -v taskset >/dev/null && [[ "$(nproc)" -ge 2 ]]; then
  CPU="${CPU:-1}"; SEND_CPU=$(( CPU == 0 ? 1 : 0 ))
  PIN_RX=(taskset -c "$CPU"); PIN_TX=(taskset -c "$SEND_CPU")
else
  PIN_RX=(); PIN_TX=()
fi

if [[ ! -x "$BIN" || "${BUILD:-0}" == 1 ]]; then
  echo "== build (release)"
  cargo build --release --quiet
fi

mkdir -p "$DATA"
if [[ ! -s "$CORPUS" ]]; then
  echo "== corpus: gen_corpus.py --kind syslog --lines $LINES --seed 1 > $CORPUS"
  python3 "$SHARED/gen_corpus.py" --kind syslog --lines "$LINES" --seed 1 > "$CORPUS.tmp"
  mv "$CORPUS.tmp" "$CORPUS"
fi
if [[ "${CG:-0}" == 1 ]]; then
  command -v valgrind >/dev/null || { echo "bench/tls_w4.sh: CG=1 needs valgrind" >&2; exit 1; }
  CG_LINES="${CG_LINES:-200000}"
  mkdir -p "$DATA/cg"
  head -n "$CG_LINES" "$CORPUS" > "$DATA/syslog-cg-$CG_LINES.log"
  CORPUS="$DATA/syslog-cg-$CG_LINES.log"
fi
WANT=$(wc -l < "$CORPUS")

RUNDIR="$(mktemp -d "${TMPDIR:-/tmp}/deadbeat-tls-w4.XXXXXX")"
DAEMON_PID=""
TIME_PID=""
cleanup() {
  # the daemon, or (before its pid is known) the wrapper, which passes SIGTERM on
  if [[ -n "$DAEMON_PID" ]]; then kill -TERM "$DAEMON_PID" 2>/dev/null || true
  elif [[ -n "$TIME_PID" ]]; then kill -TERM "$TIME_PID" 2>/dev/null || true
  fi
  [[ -n "$TIME_PID" ]] && wait "$TIME_PID" 2>/dev/null || true
  rm -rf "$RUNDIR"
}
trap cleanup EXIT

echo "== certificates (throwaway CA, P-256 server certificate for 127.0.0.1) in $RUNDIR"
PKI="$RUNDIR/pki"; mkdir -p "$PKI"
{
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=deadbeat bench CA" -keyout "$PKI/ca.key" -out "$PKI/ca.pem"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=127.0.0.1" -keyout "$PKI/server.key" -out "$PKI/server.csr"
  printf 'subjectAltName = IP:127.0.0.1, DNS:localhost\nbasicConstraints = CA:FALSE\nextendedKeyUsage = serverAuth\n' \
    > "$PKI/server.ext"
  openssl x509 -req -in "$PKI/server.csr" -CA "$PKI/ca.pem" -CAkey "$PKI/ca.key" \
    -CAcreateserial -days 2 -extfile "$PKI/server.ext" -out "$PKI/server.pem"
} > "$PKI/openssl.log" 2>&1 || { cat "$PKI/openssl.log" >&2; exit 1; }

now() { date +%s.%N; }
# python3 -c "$RUSAGE" TIMEFILE PIDFILE CMD...: runs CMD as its child, writes the child's
# pid to PIDFILE and, when it ends, its "user sys maxrss_kib" to TIMEFILE in microseconds'
# precision (/usr/bin/time prints hundredths: 5% of a run here). SIGTERM is passed on.
RUSAGE='
import os, signal, sys
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[3], sys.argv[3:])
    finally:
        os._exit(127)
signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGTERM))
with open(sys.argv[2] + ".tmp", "w") as f:
    f.write("%d\n" % pid)
os.rename(sys.argv[2] + ".tmp", sys.argv[2])
_, status, ru = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write("%.4f %.4f %d\n" % (ru.ru_utime, ru.ru_stime, ru.ru_maxrss))
'

# a port nobody listens on now (the kernel's choice); the daemon binds it a moment later
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
past() { awk -v a="$(now)" -v b="$1" 'BEGIN{exit !(a>b)}'; }
deadline_in() { awk -v t="$(now)" -v d="$1" 'BEGIN{printf "%.3f", t+d}'; }
lines_of() { if [[ -f "$1" ]]; then wc -l < "$1"; else echo 0; fi; }

wait_port() {  # PORT: until something listens on 127.0.0.1:PORT (60 s at most: valgrind)
  local dl; dl=$(deadline_in 60)
  until ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; do
    if past "$dl"; then echo "nothing listens on 127.0.0.1:$1 after 60 s" >&2; return 1; fi
    if ! kill -0 "$TIME_PID" 2>/dev/null; then echo "the daemon exited before listening" >&2; return 1; fi
    sleep 0.01
  done
}

# wait_lines FILE N: until FILE holds N lines (300 s at most); prints when the file last
# grew (the end of the work), so the poll interval does not add to the measured time.
wait_lines() {
  local file="$1" want="$2" size=-1 s last dl
  last=$(now); dl=$(deadline_in 300)
  while :; do
    s=$(stat -c %s "$file" 2>/dev/null || echo 0)
    if [[ "$s" != "$size" ]]; then size=$s; last=$(now)
    elif [[ "$(lines_of "$file")" -ge "$want" ]]; then echo "$last"; return 0
    fi
    if past "$dl"; then
      echo "timeout waiting for $want lines in $file (have $(lines_of "$file"))" >&2; return 1
    fi
    sleep 0.02
  done
}

mkconf() {  # MODE PORT OUT -> config path
  local mode="$1" port="$2" out="$3" c="$RUNDIR/$1.toml" tls=""
  if [[ "$mode" == tls ]]; then
    tls="tls = { cert = \"$PKI/server.pem\", key = \"$PKI/server.key\" }"
  fi
  cat > "$c" <<TOML
[log]
level = "warn"

[state]
dir = "$RUNDIR/state-$mode"

[[train]]
name = "w4"

  [[train.cog]]
  type = "tcp_in"
  listen = "127.0.0.1:$port"
  framing = "newline"
  $tls

  [[train.cog]]
  type = "file_out"
  path = "$out"
  format = "json"
TOML
  echo "$c"
}

# one run: MODE (plain|tls); appends "lines_per_s cpu_s rss_kib" to $RUNDIR/MODE.res
run_one() {
  local mode="$1" port out conf tf t0 t1 got u s m su ss target
  port=$(free_port)
  out="$RUNDIR/out-$mode.json"; rm -f "$out"; sync
  conf=$(mkconf "$mode" "$port" "$out")
  tf="$RUNDIR/time.$mode"
  rm -f "$RUNDIR/daemon.pid"
  local -a pre=("${PIN_RX[@]}")
  if [[ "${CG:-0}" == 1 ]]; then
    # shellcheck disable=SC2206 # CG_ENV is a list of NAME=VALUE words
    pre=(env ${CG_ENV:-} valgrind --tool=cachegrind --cache-sim=no
         "--cachegrind-out-file=$DATA/cg/$mode${CG_TAG:+-$CG_TAG}.out"
         "--log-file=$DATA/cg/$mode${CG_TAG:+-$CG_TAG}.log")
  fi
  python3 -c "$RUSAGE" "$tf" "$RUNDIR/daemon.pid" "${pre[@]}" "$BIN" run "$conf" & TIME_PID=$!
  wait_port "$port"
  DAEMON_PID=$(cat "$RUNDIR/daemon.pid")
  if [[ "$mode" == tls ]]; then
    target="OPENSSL:127.0.0.1:$port,cafile=$PKI/ca.pem"
  else
    target="TCP:127.0.0.1:$port"
  fi
  t0=$(now)
  python3 -c "$RUSAGE" "$RUNDIR/stime.$mode" "$RUNDIR/sender.pid" \
    timeout 300 "${PIN_TX[@]}" socat -b 65536 -u "FILE:$CORPUS" "$target"
  t1=$(wait_lines "$out" "$WANT")
  kill -TERM "$DAEMON_PID" 2>/dev/null || true
  wait "$TIME_PID" || true
  DAEMON_PID=""; TIME_PID=""
  got=$(lines_of "$out")
  if [[ "$got" -ne "$WANT" ]]; then
    echo "bench/tls_w4.sh: $mode run wrote $got lines, expected $WANT" >&2
    exit 1
  fi
  read -r u s m < <(tail -n 1 "$tf")
  read -r su ss _ < <(tail -n 1 "$RUNDIR/stime.$mode")
  awk -v n="$WANT" -v t0="$t0" -v t1="$t1" -v u="$u" -v s="$s" -v m="$m" -v su="$su" -v ss="$ss" \
    'BEGIN{printf "%.0f %.3f %d %.3f\n", n/(t1-t0), u+s, m, su+ss}' >> "$RUNDIR/$mode.res"
  printf '  %-5s %9s lines/s  %s CPU-s  %s KiB peak RSS  (sender: %s CPU-s)\n' "$mode" $(tail -n 1 "$RUNDIR/$mode.res")
  rm -f "$out"
}

if [[ "${CG:-0}" == 1 ]]; then
  echo "== cachegrind, receiver only, $WANT lines${CG_ENV:+, daemon environment: $CG_ENV}"
  for mode in plain tls; do
    run_one "$mode"
    f="$DATA/cg/$mode${CG_TAG:+-$CG_TAG}.out"
    cg_annotate "$f" > "$f.txt" 2>/dev/null || true
    awk '/^summary:/{print $2}' "$f" > "$RUNDIR/$mode.ir"
    printf '  %-5s %s instructions (annotated: %s.txt)\n' "$mode" "$(cat "$RUNDIR/$mode.ir")" "$f"
  done
  awk -v p="$(cat "$RUNDIR/plain.ir")" -v t="$(cat "$RUNDIR/tls.ir")" \
    'BEGIN{printf "  plain %.2fM, tls %.2fM: ratio %.3f\n", p/1e6, t/1e6, t/p}'
  exit 0
fi

echo "== $RUNS runs each, alternating (receiver: ${PIN_RX[*]:-unpinned} $BIN; $WANT lines)"
echo "   load: $(uptime)"
for i in $(seq 1 "$RUNS"); do
  echo "-- run $i"
  if (( i % 2 )); then run_one plain; run_one tls; else run_one tls; run_one plain; fi
done
echo "   load: $(uptime)"

echo "== summary (every run delivered all $WANT lines)"
summary() {  # MODE
  awk -v mode="$1" '
    { r[NR]=$1; c[NR]=$2; m[NR]=$3; if ($1>br) br=$1; if (bc=="" || $2<bc) bc=$2; if ($3>mm) mm=$3; if (bs=="" || $4<bs) bs=$4 }
    END {
      rs=""; cs=""
      for (i=1;i<=NR;i++) { rs=rs (i>1?", ":"") sprintf("%.0fk", r[i]/1000); cs=cs (i>1?", ":"") sprintf("%.3f", c[i]) }
      printf "| W4 %s | %s | %.0fk | %s | %.3f | %.1f MB | %.3f |\n", mode, rs, br/1000, cs, bc, mm/1024, bs
    }' "$RUNDIR/$1.res"
}
echo "| | lines/s (runs) | best lines/s | CPU-s (runs) | best CPU-s | peak RSS | sender's best CPU-s |"
echo "|---|---|---|---|---|---|---|"
summary plain
summary tls
best() { sort -k"$2" -g "$RUNDIR/$1.res" | { if [[ "$3" == max ]]; then tail -n 1; else head -n 1; fi; } | awk -v k="$2" '{print $k}'; }
median() { sort -k"$2" -g "$RUNDIR/$1.res" | awk -v k="$2" '{v[NR]=$k} END{print (NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2}'; }
awk -v rp="$(best plain 1 max)" -v rt="$(best tls 1 max)" -v cp="$(best plain 2 min)" -v ct="$(best tls 2 min)" \
    -v mrp="$(median plain 1)" -v mrt="$(median tls 1)" -v mcp="$(median plain 2)" -v mct="$(median tls 2)" 'BEGIN{
  printf "best:   TLS keeps %.0f%% of plain lines/s (wall); CPU-s TLS/plain = %.2f (%+.0f%%; lines per CPU-s kept: %.0f%%)\n", 100*rt/rp, ct/cp, 100*(ct/cp-1), 100*cp/ct
  printf "median: TLS keeps %.0f%% of plain lines/s (wall); CPU-s TLS/plain = %.2f (%+.0f%%; lines per CPU-s kept: %.0f%%)\n", 100*mrt/mrp, mct/mcp, 100*(mct/mcp-1), 100*mcp/mct
}'
# per round (a plain and a TLS run side by side in time, so under the same load): the
# ratios, and their median, which drifting load distorts least
paste -d' ' "$RUNDIR/plain.res" "$RUNDIR/tls.res" | awk '{printf "%.3f %.3f\n", $5/$1, $6/$2}' > "$RUNDIR/pairs"
med() { sort -g | awk '{v[NR]=$1} END{printf "%.2f", (NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2}'; }
list() { awk -v k="$1" '{printf "%s%.2f", (NR>1?", ":""), $k}' "$RUNDIR/pairs"; }
echo "paired: lines/s TLS/plain per round $(list 1); median $(awk '{print $1}' "$RUNDIR/pairs" | med)"
mc=$(awk '{print $2}' "$RUNDIR/pairs" | med)
echo "paired: CPU-s TLS/plain per round $(list 2); median $mc (lines per CPU-s kept: $(awk -v m="$mc" 'BEGIN{printf "%.0f", 100/m}')%)"
awk 'BEGIN{
  printf "issue 20 target: TLS at least 70%% of W4 rate, i.e. costs at most 30%%\n"
}'
