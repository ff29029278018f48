#!/usr/bin/env bash
# repeat-tests.sh - the proof that the suite passes every time: run the
# README's test command (`npm test`) N times in a row on this machine; stop at
# the first failure and keep its log; print "N runs, K failed".
#
#   scripts/repeat-tests.sh N [LOGDIR]
#
# Logs go to LOGDIR (default: a new temp dir), one per run; the logs of
# passing runs are removed, the failing run's log is kept and named.
set -uo pipefail
cd "$(dirname "$0")/.."
n=${1:?usage: scripts/repeat-tests.sh N [LOGDIR]}
case "$n" in ''|*[!0-9]*) echo "repeat-tests: N must be a number" >&2; exit 2 ;; esac
logdir=${2:-$(mktemp -d "${TMPDIR:-/tmp}/jdls-repeat-XXXXXX")}
mkdir -p "$logdir"
runs=0
failed=0
for i in $(seq 1 "$n"); do
  log="$logdir/run-$i.log"
  start=$(date +%s)
  npm test >"$log" 2>&1
  status=$?
  runs=$i
  summary=$(grep -E '^ *[0-9]+ tests? (passed|failed)|remained pending|^sweep: (clean|FAILED)' "$log" | sed 's/^ *//' | paste -sd ';' -)
  echo "run $i: exit $status in $(( $(date +%s) - start )) s: $summary"
  if [ "$status" -ne 0 ]; then
    failed=1
    echo "repeat-tests: run $i failed; its log: $log"
    break
  fi
  rm -f "$log"
done
echo "$runs runs, $failed failed"
[ "$failed" -eq 0 ] && rmdir "$logdir" 2>/dev/null
[ "$failed" -eq 0 ]
