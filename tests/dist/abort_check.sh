#!/usr/bin/env bash
# An uncaught error on one rank aborts the whole job with that rank's message,
# well before the collective timeout (no silent hang).
#   abort_check.sh MPIEXEC ABORT_CHECK_BINARY
set -uo pipefail
start=$(date +%s)
output=$(timeout 120 "$1" --oversubscribe --allow-run-as-root -np 2 "$2" 2>&1)
status=$?
elapsed=$(( $(date +%s) - start ))
if [ $status -eq 0 ]; then echo "the job succeeded despite the planted failure"; exit 1; fi
if [ $status -eq 124 ]; then echo "the job hung until the 120 s guard"; exit 1; fi
grep -q "rank 1 failed: planted failure on purpose" <<< "$output" || { echo "no rank message in: $output"; exit 1; }
[ $elapsed -lt 60 ] || { echo "took $elapsed s to abort"; exit 1; }
echo "aborted in ${elapsed} s with rank 1's message (exit $status)"
