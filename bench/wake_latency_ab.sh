#!/bin/bash
# Two builds of nl3dmm, alternately, through bench/wake_latency.py (issue 15's variance study):
# idle with the peers protocol's 50 ms pause, idle back to back, and with a competing load of
# two busy loops at the same priority. Each build needs its own checkout and interpreter:
#   git worktree add /tmp/base <rev> && python -m venv --system-site-packages /tmp/base/.venv \
#     && /tmp/base/.venv/bin/pip install --no-deps --no-build-isolation -e /tmp/base
#   bash bench/wake_latency_ab.sh /tmp/base/.venv/bin/python .venv/bin/python [ROUNDS]
# Prints one line per run: condition, build, then rasterize | forward+backward as
# median / best (ms), spread (median/best) and p90.
A=$1; B=$2; ROUNDS=${3:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
run() {  # condition python pause
    "$2" "$HERE/wake_latency.py" 2>/dev/null | python3 -c "import json,sys; d=json.load(sys.stdin); print('$1', '$2', d['threads'], 'threads |', d['rasterize'], '|', d['fwd+bwd'])"
}
for cond in idle-pause idle-back-to-back load2-pause; do
    if [ $cond = load2-pause ]; then
        python3 -c "while True: pass" & L1=$!; python3 -c "while True: pass" & L2=$!
    fi
    pause=0.05; [ $cond = idle-back-to-back ] && pause=0
    for r in $(seq "$ROUNDS"); do
        PAUSE=$pause run $cond "$A"; PAUSE=$pause run $cond "$B"
    done
    [ $cond = load2-pause ] && kill $L1 $L2
done
