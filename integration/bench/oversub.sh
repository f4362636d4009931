#!/usr/bin/env bash
# Oversubscription benchmark (issue #13): utilisation against tail latency, side by side.
#
# A latency-sensitive guaranteed service (nginx from Debian's nginx-light, packaged into an
# image with its libraries) on CPU 1; an open-loop load generator that corrects for
# coordinated omission (oha -q RATE --latency-correction) pinned to CPU 0, which the agent
# keeps out of every container (--reserved-cpus 0), at 30/50/70% of the rate the service
# sustains alone; so the best-effort work shares CPU 1 with the service; best-effort work stress-ng --cpu 2 --vm 1 with
# --metrics-brief (its bogo ops count). Four ways, in one run:
#   alone      the service only
#   naive      the same best-effort work co-located with no controller, equal CPU weights
#   kill-only  Mesos-style: best-effort work killed whenever the node's CPU passes 85%,
#              relaunched 10 s later by its "framework" (this script)
#   berth      the best-effort work `run --revocable`: lowest weight, graded reclaim
# Reports per load level (medians over runs): p99 and p99.9 latency, p99 against alone,
# CPU busy % of the containers' CPU, best-effort throughput, effective machine utilisation (EMU =
# service load fraction + best-effort throughput / its throughput alone), reclaim reaction
# time (load start to Berth's first reclaim step), revocable kills, guaranteed OOM kills.
#
#   sudo integration/bench/oversub.sh [RUNS] [WARM_S] [MEASURE_S]   (default 5 30 60)
#   smoke: oversub.sh 1  → 1 run of 3 s + 5 s at one load level (50%)
set -euo pipefail
RUNS=${1:-5}
WARM=${2:-30}
MEASURE=${3:-60}
LEVELS="30 50 70"
if [ "$RUNS" = 1 ] && [ -z "${2:-}" ]; then WARM=3; MEASURE=5; LEVELS="50"; fi
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT="$HERE/results"
mkdir -p "$OUT"
[ "$(id -u)" = 0 ] || { echo "oversub.sh: run as root" >&2; exit 1; }
export PATH="$HOME/.cargo/bin:$PATH"
for tool in oha stress-ng taskset python3; do
  command -v "$tool" >/dev/null || { echo "oversub.sh: missing $tool; run scripts/setup.sh --bench" >&2; exit 1; }
done
[ -x /usr/sbin/nginx ] || { echo "oversub.sh: missing nginx-light; run scripts/setup.sh --bench" >&2; exit 1; }
. "$HERE/common.sh"
bench_init oversub
KILLER=""
cleanup() {
  set +e
  [ -n "$KILLER" ] && kill "$KILLER" 2>/dev/null
  bench_cleanup
}
trap cleanup EXIT
bench_build
export BERTH

# Images: busybox plus the host's binary and the libraries it links.
rootfs_of() {
  local dir=$1; shift
  mkdir -p "$dir"
  for bin in "$@"; do
    cp --parents "$bin" "$dir"
    for lib in $(ldd "$bin" | awk '/=>/ {print $3} /ld-linux/ {print $1}'); do
      cp -L --parents "$lib" "$dir"
    done
  done
}
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
rootfs_of "$WORK/nginx" /usr/sbin/nginx
mkdir -p "$WORK/nginx/etc/nginx" "$WORK/nginx/srv"
head -c 1024 /dev/zero | tr '\0' 'x' > "$WORK/nginx/srv/index.html"
cat > "$WORK/nginx/etc/nginx/nginx.conf" <<EOF
user root;
worker_processes 1;
daemon off;
error_log stderr warn;
pid /tmp/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path /tmp/body; proxy_temp_path /tmp/proxy; fastcgi_temp_path /tmp/fcgi;
  uwsgi_temp_path /tmp/uwsgi; scgi_temp_path /tmp/scgi;
  server { listen 127.0.0.1:$PORT; location / { root /srv; } }
}
EOF
rootfs_of "$WORK/stress" "$(command -v stress-ng)"
"$REPO/target/release/berth-fixture" dir "$WORK/nginx-oci" "$WORK/nginx" /usr/sbin/nginx >/dev/null
"$REPO/target/release/berth-fixture" dir "$WORK/stress-oci" "$WORK/stress" stress-ng >/dev/null

cat > "$WORK/config.json" <<'EOF'
{"version": 1, "revocable": {"warmup": "0s"}}
EOF
export BERTH_CONFIG="$WORK/config.json"
bench_agent --default-network none --reserved-cpus 0
"$BERTH" import --tag nginx "$WORK/nginx-oci" -q >/dev/null
"$BERTH" import --tag stress "$WORK/stress-oci" -q >/dev/null

now_ms() { date +%s%3N; }
# Not `grep -q`: it leaves before the writer is done, and pipefail takes the writer's
# SIGPIPE for "not running".
is_running() { "$BERTH" state "$1" 2>/dev/null | grep '"status": "running"' >/dev/null; }
# Busy and total ticks of CPU 1, the containers' CPU (CPU 0 is the generator's, kept out of
# every container with --reserved-cpus 0).
busy() { awk '/^cpu1 / {b=$2+$3+$4+$7+$8+$9; t=b+$5+$6; print b, t}' /proc/stat; }
STRESS_ARGS=(stress-ng --cpu 2 --vm 1 --vm-bytes 256m --metrics-brief)

# Bogo ops of a finished stress-ng container, "CPU VM" (its --metrics-brief lines); "0 0"
# when it was killed before it could report (the work of a killed instance is lost).
ops_of() {
  "$BERTH" logs "$1" 2>&1 | awk '$2 == "metrc:" && $4 == "cpu" {c = $5} $2 == "metrc:" && $4 == "vm" {v = $5}
    END {print c + 0, v + 0}'
}

echo "== the service alone: its sustainable rate, closed loop (CPU 1; generator on CPU 0)"
"$BERTH" run -d --name svc --network host --cpus 1 -m 256m --cpuset-cpus 1 nginx >/dev/null
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/" >/dev/null && break; sleep 0.1; done
RATE_MAX=$(taskset -c 0 oha -z "$((MEASURE < 10 ? 3 : 10))s" -c 16 --no-tui --output-format json "http://127.0.0.1:$PORT/" \
  | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["summary"]["requestsPerSec"]))')
echo "sustained alone: $RATE_MAX req/s"
echo "== best-effort work alone: its throughput"
"$BERTH" run --name be-alone stress "${STRESS_ARGS[@]}" --timeout "${MEASURE}s" >/dev/null 2>&1 || true
BE_ALONE=$(ops_of be-alone)
"$BERTH" rm -f be-alone >/dev/null
echo "stress-ng alone in ${MEASURE} s: $BE_ALONE bogo ops (cpu vm)"

# Mesos' load QoS controller, in the small: kill the best-effort container whenever the
# containers' CPU passes 85% busy over a second; its framework relaunches it 10 s later.
killer() {
  local name=$1 until=$2 kills=0 last_kill=0 b0 t0 b1 t1
  read -r b0 t0 < <(busy)
  while [ "$(now_ms)" -lt "$until" ]; do
    sleep 1
    read -r b1 t1 < <(busy)
    local pct=$(( (b1 - b0) * 100 / ((t1 - t0) > 0 ? (t1 - t0) : 1) ))
    b0=$b1; t0=$t1
    if [ "$pct" -gt 85 ] && is_running "$name"; then
      "$BERTH" rm -f "$name" >/dev/null 2>&1 && kills=$((kills + 1)) && last_kill=$(now_ms)
    elif ! "$BERTH" state "$name" >/dev/null 2>&1 && [ $(( $(now_ms) - last_kill )) -gt 10000 ]; then
      local left=$(( (until - $(now_ms)) / 1000 ))
      [ "$left" -gt 1 ] && "$BERTH" run -d --name "$name" --cpu-shares 1024 stress "${STRESS_ARGS[@]}" --timeout "${left}s" >/dev/null 2>&1
    fi
  done
  echo "$kills" > "$WORK/kills"
}

RESULTS="$WORK/results.tsv"
: > "$RESULTS"
for run in $(seq "$RUNS"); do
  for level in $LEVELS; do
    RATE=$(( RATE_MAX * level / 100 ))
    for mode in alone naive kill-only berth; do
      be=""
      kills=0
      t_load=$(now_ms)
      case $mode in
        naive) be=be; "$BERTH" run -d --name be --cpu-shares 1024 stress "${STRESS_ARGS[@]}" --timeout "$((WARM + MEASURE))s" >/dev/null ;;
        kill-only) be=be; "$BERTH" run -d --name be --cpu-shares 1024 stress "${STRESS_ARGS[@]}" --timeout "$((WARM + MEASURE))s" >/dev/null
                   killer be "$(( $(now_ms) + (WARM + MEASURE) * 1000 ))" & KILLER=$! ;;
        berth) be=be; "$BERTH" run -d --name be --revocable stress "${STRESS_ARGS[@]}" --timeout "$((WARM + MEASURE))s" >/dev/null ;;
      esac
      t_load=$(now_ms)
      taskset -c 0 oha -z "${WARM}s" -q "$RATE" --latency-correction --no-tui --output-format json \
        "http://127.0.0.1:$PORT/" >/dev/null
      read -r b0 t0 < <(busy)
      taskset -c 0 oha -z "${MEASURE}s" -q "$RATE" --latency-correction --no-tui --output-format json \
        "http://127.0.0.1:$PORT/" > "$WORK/oha.json"
      read -r b1 t1 < <(busy)
      cpu_busy=$(( (b1 - b0) * 100 / (t1 - t0) ))
      ops="0 0"
      if [ -n "$be" ]; then
        if [ "$mode" = kill-only ]; then wait "$KILLER"; KILLER=""; kills=$(cat "$WORK/kills"); fi
        for _ in $(seq 300); do is_running be || break; sleep 0.1; done
        "$BERTH" state be >/dev/null 2>&1 && ops=$(ops_of be)
        "$BERTH" rm -f be >/dev/null 2>&1 || true
      fi
      # Reaction: from the load's start to Berth's first reclaim step after it.
      reaction=$(python3 - "$t_load" <<'PY'
import json, subprocess, sys, datetime, os
t0 = int(sys.argv[1]) / 1000
out = subprocess.run([os.environ["BERTH"], "events", "--since", "10m", "--until", "0s", "--json",
                      "--filter", "type=reclaim"], capture_output=True, text=True).stdout
for line in out.splitlines():
    e = json.loads(line)
    t = datetime.datetime.fromisoformat(e["time"][:26].rstrip("Z") + "+00:00").timestamp()
    if t >= t0 and e["attributes"].get("phase") == "applied":
        print(f"{(t - t0) * 1000:.0f}"); break
else:
    print("-")
PY
)
      oom=$("$BERTH" state svc | grep -c '"OOMKilled": true' || true)
      python3 - "$WORK/oha.json" "$run" "$level" "$mode" "$cpu_busy" "$ops" "$kills" "$reaction" "$oom" "$BE_ALONE" "$MEASURE" "$((WARM + MEASURE))" >> "$RESULTS" <<'PY'
import json, sys
f, run, level, mode, busy, ops, kills, reaction, oom, alone, t_alone, t_be = sys.argv[1:]
# Best-effort throughput as a fraction of its throughput alone, averaged over stressors.
fr = [(float(o) / float(t_be)) / (float(a) / float(t_alone)) for o, a in zip(ops.split(), alone.split()) if float(a) > 0]
ops = f"{sum(fr) / len(fr) if fr else 0:.3f}"
d = json.load(open(f))
p = d["latencyPercentiles"]
print("\t".join([run, level, mode, f'{p["p99"] * 1000:.3f}', f'{p["p99.9"] * 1000:.3f}', busy, ops, kills, reaction, oom]))
PY
      echo "run $run, ${level}% load, $mode: $(tail -1 "$RESULTS" | cut -f4-)"
    done
  done
done

STAMP=$(date -u +%Y-%m-%dT%H%MZ)
python3 - "$RESULTS" "$RATE_MAX" "$RUNS" "$WARM" "$MEASURE" > "$OUT/oversub-$STAMP.md" <<'PY'
import statistics, sys
path, rate_max, runs, warm, measure = sys.argv[1:]
rate_max = int(rate_max)
rows = [l.rstrip("\n").split("\t") for l in open(path) if l.strip()]
print(f"## Oversubscription: nginx p99 against best-effort throughput ({runs} runs, {warm} s warm-up + {measure} s measured)\n")
print(f"Service alone sustains {rate_max} req/s (closed loop). Best-effort: its throughput as a share of")
print("its throughput alone (bogo ops/s, mean of the cpu and vm stressors); EMU = load + that share.\n")
print("| load | mode | p99 ms | p99.9 ms | p99 / alone | CPU busy % | best-effort share | EMU | reaction ms | revocable kills | guaranteed OOM |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
med = lambda xs: statistics.median(xs) if xs else 0
for level in sorted({r[1] for r in rows}, key=int):
    alone = med([float(r[3]) for r in rows if r[1] == level and r[2] == "alone"]) or 1e-9
    for mode in ("alone", "naive", "kill-only", "berth"):
        rs = [r for r in rows if r[1] == level and r[2] == mode]
        if not rs:
            continue
        p99 = med([float(r[3]) for r in rs]); p999 = med([float(r[4]) for r in rs])
        busy = med([float(r[5]) for r in rs]); ops = med([float(r[6]) for r in rs])
        kills = sum(int(r[7]) for r in rs); oom = sum(int(r[9]) for r in rs)
        reacts = [float(r[8]) for r in rs if r[8] != "-"]
        emu = int(level) / 100 + ops
        react = f"{med(reacts):.0f}" if reacts else "-"
        print(f"| {level}% | {mode} | {p99:.2f} | {p999:.2f} | {p99 / alone:.2f}x | {busy:.0f} | {ops:.2f} | {emu:.2f} | {react} | {kills} | {oom} |")
PY
cat "$OUT/oversub-$STAMP.md"
