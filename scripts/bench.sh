#!/usr/bin/env bash
# End-to-end throughput of `deltarec run`: builds the release binary,
# generates seeded RetailRocket-format logs under target/bench-data/ (kept
# and reused), runs each on one worker, two worker threads, and two
# processes of one worker on loopback, and prints a markdown table of
# events/s and peak memory with the commit, machine and exact commands.
#
# Usage: scripts/bench.sh [--sizes 1000000,10000000] [--quick]
#   --sizes N,M  event counts to measure (default 1000000,10000000)
#   --quick      1000000 events only
# Honours CARGO_TARGET_DIR. Needs GNU time (/usr/bin/time -v): installed with
# apt-get when missing. Run logs go to target/bench-out/.
set -euo pipefail
cd "$(dirname "$0")/.."

sizes=1000000,10000000
while [ $# -gt 0 ]; do
    case "$1" in
        --sizes) sizes=${2:?--sizes needs a list like 1000000,10000000}; shift 2 ;;
        --quick) sizes=1000000; shift ;;
        *) echo "bench.sh: unknown option $1 (see the top of $0)" >&2; exit 2 ;;
    esac
done

if [ ! -x /usr/bin/time ]; then
    echo "bench.sh: /usr/bin/time is missing; installing the 'time' package with apt-get" >&2
    apt-get install -y -qq time >/dev/null
fi

target=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet
bin=$target/release/deltarec
data=target/bench-data
out=target/bench-out
mkdir -p "$data" "$out"

# The wall seconds and peak RSS (MiB) in a `/usr/bin/time -v` report.
wall_of() { awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0;
    for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }' "$1"; }
rss_of() { awk -F': ' '/Maximum resident set size/ { printf "%.0f", $2 / 1024 }' "$1"; }
# User plus system CPU seconds of the reports given.
cpu_of() { awk -F': ' '/(User|System) time \(seconds\)/ { s += $2 } END { printf "%.1f", s }' "$@"; }
# The 1-minute load average: the machine is shared, so a busy one shows here.
load() { cut -d' ' -f1 /proc/loadavg; }

# Events per second, rounded.
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }

rows=()
commands=()

# One measured configuration: file name, label, events, then the command.
measure() {
    local name=$1 label=$2 events=$3; shift 3
    local report=$out/$name.time
    commands+=("$*")
    local before
    before=$(load)
    if ! /usr/bin/time -v -o "$report" "$@" >"$out/$name.log" 2>&1; then
        echo "bench.sh: $label failed; its output:" >&2
        tail -n 20 "$out/$name.log" >&2
        exit 1
    fi
    local wall rss
    wall=$(wall_of "$report")
    rss=$(rss_of "$report")
    rows+=("| $events | $label | $wall | $(cpu_of "$report") | $(rate "$events" "$wall") | $rss \
| $before / $(load) |")
}

# Two processes of one worker each, on two loopback ports; both must succeed.
measure_cluster() {
    local name=$1 label=$2 events=$3 log=$4 dir=$5
    local base=$((20000 + RANDOM % 20000))
    local hosts=$out/hostfile
    printf '127.0.0.1:%d\n127.0.0.1:%d\n' "$base" "$((base + 1))" >"$hosts"
    local cmd0=("$bin" run --events "$log" --out "$dir" -q -n 2 -p 0 -h "$hosts")
    local cmd1=("$bin" run --events "$log" --out "$dir" -q -n 2 -p 1 -h "$hosts")
    commands+=("${cmd0[*]} & ${cmd1[*]}")
    local start end before
    before=$(load)
    start=$(date +%s.%N)
    /usr/bin/time -v -o "$out/$name-p0.time" "${cmd0[@]}" >"$out/$name-p0.log" 2>&1 &
    local pid0=$!
    /usr/bin/time -v -o "$out/$name-p1.time" "${cmd1[@]}" >"$out/$name-p1.log" 2>&1 &
    local pid1=$!
    local status0=0 status1=0
    wait "$pid0" || status0=$?
    wait "$pid1" || status1=$?
    end=$(date +%s.%N)
    if [ "$status0" -ne 0 ] || [ "$status1" -ne 0 ]; then
        echo "bench.sh: $label failed (process 0: $status0, process 1: $status1)" >&2
        tail -n 20 "$out/$name-p0.log" "$out/$name-p1.log" >&2
        exit 1
    fi
    local wall rss0 rss1
    wall=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')
    rss0=$(rss_of "$out/$name-p0.time")
    rss1=$(rss_of "$out/$name-p1.time")
    rows+=("| $events | $label | $wall | $(cpu_of "$out/$name"-p?.time) | $(rate "$events" "$wall") \
| $rss0 + $rss1 | $before / $(load) |")
}

IFS=, read -r -a size_list <<<"$sizes"
for events in "${size_list[@]}"; do
    log=$data/retailrocket-$events.csv
    gen=("$bin" generate --format retailrocket --events "$events" --days 139 --seed 1 --out "$log")
    if [ -s "$log" ]; then
        commands+=("${gen[*]}    # reused: already there")
    else
        echo "generating $log" >&2
        commands+=("${gen[*]}")
        /usr/bin/time -f "generated in %e s, peak %M KiB" "${gen[@]}" >&2
    fi
    for workers in 1 2; do
        echo "running $events events, -w $workers" >&2
        measure "w$workers-$events" "-w $workers" "$events" "$bin" run --events "$log" --out "$out/w$workers-$events" \
            -q -w "$workers"
    done
    echo "running $events events, 2 processes x 1 worker" >&2
    measure_cluster "n2-$events" "-n 2 (2 processes x 1 worker)" "$events" "$log" \
        "$out/n2-$events"
done

echo
echo "## deltarec run throughput"
echo
echo "commit $(git rev-parse --short HEAD), $(date -u +%Y-%m-%d), $(nproc) cores" \
    "($(lscpu | sed -n 's/^Model name: *//p')), $(free -g | awk '/Mem:/ { print $2 }') GiB memory"
echo
echo "| events | configuration | wall s | CPU s | events/s | peak RSS MiB | load before / after |"
echo "|---:|---|---:|---:|---:|---:|---|"
printf '%s\n' "${rows[@]}"
echo
echo "events/s = events / wall s. CPU s is user + system time (both processes for -n 2);"
echo "the load averages show how busy the shared machine was around each run. Commands:"
echo
printf '    %s\n' "${commands[@]}"
