#!/usr/bin/env bash
# Machine-wide sysctls survive any crash and any neighbour (as root, ~1 minute a round):
#  1. the interrupt stress trial: SIGKILL of `dropspec run` on the conntrack scenario at
#     random moments, 20 times alone and 20 with its process group; nf_conntrack_max must
#     be back within 1 s each time, with no dropspec command in between;
#  2. two `cargo test --test scenarios` and one `dropspec run` at once: all pass, and
#     nf_conntrack_max is what it was before.
#
#   bash ci/guard-stress.sh [ROUNDS]     ROUNDS of part 2 (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
key=/proc/sys/net/netfilter/nf_conntrack_max
log=target/guard-stress
mkdir -p "$log"

cargo build --locked --workspace --all-targets
original=$(cat "$key")
echo "nf_conntrack_max before: $original"

cargo test --locked --test interrupt -- --ignored --exact interrupt/stress_sigkill_at_random_moments

failed=0
for round in $(seq "$rounds"); do
  cargo test --locked --test scenarios > "$log/test-a.log" 2>&1 & a=$!
  cargo test --locked --test scenarios > "$log/test-b.log" 2>&1 & b=$!
  target/debug/dropspec run > "$log/run.log" 2>&1 & r=$!
  status=""
  for job in "a:$a" "b:$b" "run:$r"; do
    if wait "${job#*:}"; then status+="${job%%:*} ok, "; else status+="${job%%:*} FAILED, "; failed=1; fi
  done
  now=$(cat "$key")
  [ "$now" = "$original" ] || failed=1
  echo "round $round: ${status}nf_conntrack_max $now (was $original); logs in $log/"
  [ "$failed" = 0 ] || break
done
# Summaries of the last round, so a failure shows where to look.
grep -h "^test result\|passed, .* failed" "$log"/*.log || true
exit "$failed"
