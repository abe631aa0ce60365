#!/usr/bin/env bash
# Runs deltarec as a cluster of N local processes on free loopback ports.
#
#   scripts/cluster.sh N run [RUN FLAGS...]
#   scripts/cluster.sh 2 run --events ../shared/data/real/taobao-userbehavior -w 1
#
# Writes a hostfile of N 127.0.0.1 ports to a temporary directory, starts
# processes 0..N-1 of the release binary with your arguments and
# `-n N -p I -h HOSTFILE`, and waits for all of them. Process 0 writes the
# outputs and prints the summary; each process's stderr lines are prefixed
# with `[pI]`. When one process fails, the others are stopped and the script
# exits with the failed process's status.
#
# The binary is $DELTAREC when set, else target/release/deltarec under
# $CARGO_TARGET_DIR or the repository (`cargo build --release` first).
# Needs bash 5.1 or later.
set -euo pipefail

usage() {
    echo "usage: $0 N run [RUN FLAGS...]   (N >= 1 processes)" >&2
    exit 2
}
[[ $# -ge 2 && $1 =~ ^[1-9][0-9]*$ ]] || usage
processes=$1
shift
if ((BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] < 501)); then
    echo "$0: needs bash 5.1 or later (wait -n -p); this is $BASH_VERSION" >&2
    exit 2
fi

root=$(cd "$(dirname "$0")/.." && pwd)
binary=${DELTAREC:-${CARGO_TARGET_DIR:-$root/target}/release/deltarec}
if [[ ! -x $binary ]]; then
    echo "$0: no binary at $binary; run cargo build --release, or set DELTAREC" >&2
    exit 2
fi

workdir=$(mktemp -d "${TMPDIR:-/tmp}/deltarec-cluster.XXXXXX")
hostfile=$workdir/hosts
declare -A index_of=()
running=()

# Stop whatever still runs and remove the hostfile, however the script ends.
cleanup() {
    if ((${#running[@]} > 0)); then
        kill "${running[@]}" 2>/dev/null || true
        wait "${running[@]}" 2>/dev/null || true
    fi
    rm -rf "$workdir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A port nothing listens on, below the kernel's ephemeral range so that
# outgoing connections do not take it meanwhile. A port taken between this
# check and the bind fails the run with "cannot listen on ..."; run again.
free_port() {
    local port
    while :; do
        port=$((20000 + RANDOM % 12000))
        grep -qx "127.0.0.1:$port" "$hostfile" 2>/dev/null && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
}
: >"$hostfile"
for ((i = 0; i < processes; i++)); do
    echo "127.0.0.1:$(free_port)" >>"$hostfile"
done

for ((i = 0; i < processes; i++)); do
    "$binary" "$@" -n "$processes" -p "$i" -h "$hostfile" 2> >(sed -u "s/^/[p$i] /" >&2) &
    running+=("$!")
    index_of[$!]=$i
done

# Wait for every process; on the first failure, stop the rest (cleanup).
status=0
while ((${#running[@]} > 0)); do
    code=0
    wait -n -p finished "${running[@]}" || code=$?
    remaining=()
    for pid in "${running[@]}"; do
        [[ $pid == "$finished" ]] || remaining+=("$pid")
    done
    running=("${remaining[@]}")
    if ((code != 0)); then
        status=$code
        if ((${#running[@]} > 0)); then
            echo "$0: process ${index_of[$finished]} failed (status $code); stopping the others" >&2
        fi
        break
    fi
done
exit "$status"
