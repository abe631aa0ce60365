#!/usr/bin/env bash
# The reference task done the way users do it today, timed beside deltarec
# on the same generated RetailRocket-format log: a full recompute of the
# features and examples with DuckDB then scikit-learn's SGDClassifier (log
# loss); River's online pipeline (StandardScaler | LogisticRegression,
# learn_one/predict_one per example); Vowpal Wabbit on the same examples.
# deltarec runs with -w 2. Prints events/s per tool and the ratio to deltarec.
#
# Usage: scripts/bench-peers.sh [--events N]    (default 1000000)
# The Python tools are pip-installed into a venv at target/peers-venv; if
# vowpalwabbit cannot be installed, it is skipped and the output says so.
# Honours CARGO_TARGET_DIR. Logs and results go to target/bench-out/peers/.
set -euo pipefail
cd "$(dirname "$0")/.."

events=1000000
while [ $# -gt 0 ]; do
    case "$1" in
        --events) events=${2:?--events needs a number}; shift 2 ;;
        *) echo "bench-peers.sh: unknown option $1 (see the top of $0)" >&2; exit 2 ;;
    esac
done
if [ ! -x /usr/bin/time ]; then
    echo "bench-peers.sh: /usr/bin/time is missing; installing the 'time' package with apt-get" >&2
    apt-get install -y -qq time >/dev/null
fi

# The log: the same file as scripts/bench.sh, generated if missing.
target=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet
bin=$target/release/deltarec
data=target/bench-data
out=target/bench-out/peers
mkdir -p "$data" "$out"
log=$data/retailrocket-$events.csv
if [ ! -s "$log" ]; then
    "$bin" generate --format retailrocket --events "$events" --days 139 --seed 1 --out "$log" >&2
fi

# The peers, in their own venv.
venv=target/peers-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py=$venv/bin/python
pip=("$venv/bin/pip" install --quiet --disable-pip-version-check)
echo "installing the peers into $venv" >&2
"${pip[@]}" duckdb numpy scikit-learn river
vw=1
if ! "${pip[@]}" vowpalwabbit || ! "$py" -c "import vowpalwabbit" 2>/dev/null; then
    echo "bench-peers.sh: vowpalwabbit could not be installed or imported; Vowpal Wabbit is skipped" >&2
    vw=0
fi

# Each tool in turn, so none competes with another for the two cores.
echo "deltarec -w 2" >&2
/usr/bin/time -v -o "$out/deltarec.time" \
    "$bin" run --events "$log" --out "$out/deltarec" -q -w 2 >"$out/deltarec.log" 2>&1
echo "DuckDB + scikit-learn" >&2
/usr/bin/time -v -o "$out/duckdb.time" "$py" scripts/peers/duckdb_sklearn.py "$log" \
    --examples-out "$out/examples.csv" >"$out/duckdb.json"
echo "River" >&2
/usr/bin/time -v -o "$out/river.time" "$py" scripts/peers/river_online.py "$out/examples.csv" \
    >"$out/river.json"
if [ "$vw" = 1 ]; then
    echo "Vowpal Wabbit" >&2
    /usr/bin/time -v -o "$out/vw.time" "$py" scripts/peers/vw_online.py "$out/examples.csv" \
        >"$out/vw.json"
else
    echo '{"tool": "Vowpal Wabbit", "skipped": "pip could not install or import vowpalwabbit"}' \
        >"$out/vw.json"
    : >"$out/vw.time"
fi

echo
echo "## The reference task: deltarec and today's tools, $events events"
echo
echo "commit $(git rev-parse --short HEAD), $(date -u +%Y-%m-%d), $(nproc) cores," \
    "$(free -g | awk '/Mem:/ { print $2 }') GiB memory, load $(cut -d' ' -f1 /proc/loadavg);" \
    "$("$py" -c 'import duckdb, sklearn, river
print(f"duckdb {duckdb.__version__}, scikit-learn {sklearn.__version__}, river {river.__version__}")')$(
    [ "$vw" = 1 ] && "$venv/bin/pip" show vowpalwabbit 2>/dev/null | awk '/^Version/ { printf ", vowpalwabbit %s", $2 }')"
echo
"$py" scripts/peers/table.py "$events" "$out/deltarec" "$out/deltarec.time" \
    "$out/duckdb.json" "$out/duckdb.time" "$out/river.json" "$out/river.time" \
    "$out/vw.json" "$out/vw.time"
echo
echo "Events/s is the log's rows over the seconds shown. deltarec's seconds are the"
echo "wall time of the whole run; the peers' exclude Python start-up and imports."
echo "The peers assume a clean file (no quarantine); River and Vowpal Wabbit do only"
echo "the model part, on the examples DuckDB computed. Commands:"
echo
echo "    $bin run --events $log --out $out/deltarec -q -w 2"
echo "    $py scripts/peers/duckdb_sklearn.py $log --examples-out $out/examples.csv"
echo "    $py scripts/peers/river_online.py $out/examples.csv"
echo "    $py scripts/peers/vw_online.py $out/examples.csv"
