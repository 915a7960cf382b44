#!/usr/bin/env bash
# What changes in drop behaviour from one kernel to another: runs the whole scenario
# suite on both (`host` is this machine's kernel; anything else is booted in a
# `dropspec vm` guest) and prints `dropspec diff` of the two runs.
#
#   bash ci/kernel-diff.sh 6.1.0-50 host                  text
#   bash ci/kernel-diff.sh 6.1.0-50 6.1.0-56 --markdown   Markdown
#   bash ci/kernel-diff.sh 6.12 host --accept accepted.txt
#
# Extra arguments go to `dropspec diff`. The runs are kept in target/kdiff/<kernel>.json
# (with the kernel's inet_csk_accept signature in <kernel>.accept, for
# docs/hook-points.md); KERNEL_DIFF_REUSE=1 reuses a kept run instead of running
# again (ci/kernel-docs.sh). Exit status is the diff's: 1 if a behaviour change is not
# in the accept file.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
  sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
old=$1 new=$2
shift 2

cargo build --locked -p dropspec --bin dropspec
mkdir -p target/kdiff
run() {
  local kernel=$1 json=target/kdiff/$1.json
  if [ "${KERNEL_DIFF_REUSE:-0}" = 1 ] && [ -s "$json" ]; then
    echo "kernel-diff: $kernel: reusing $json" >&2
    return
  fi
  rm -f "$json"
  # A scenario failing its own expectations still yields a report to compare; that is
  # what a kernel not yet baselined looks like, so the run's exit status is not fatal.
  if [ "$kernel" = host ]; then
    target/debug/dropspec run --json "$json" > "target/kdiff/$kernel.log" 2>&1 || true
    bash ci/btf-signature.sh inet_csk_accept > "target/kdiff/$kernel.accept" || true
  else
    target/debug/dropspec vm --kernel "$kernel" --timeout "${DROPSPEC_VM_TIMEOUT:-900}" \
      -- bash -c 'target/debug/dropspec run --json "$0"; s=$?; bash ci/btf-signature.sh inet_csk_accept > "$1"; exit $s' \
      "$json" "target/kdiff/$kernel.accept" > "target/kdiff/$kernel.log" 2>&1 || true
  fi
  if [ ! -s "$json" ]; then
    echo "kernel-diff: no run saved for $kernel; see target/kdiff/$kernel.log" >&2
    exit 2
  fi
  echo "kernel-diff: $kernel: $(tail -n 3 "target/kdiff/$kernel.log" | grep -m1 -E 'passed|exited' || true)" >&2
}
run "$old"
run "$new"
target/debug/dropspec diff "target/kdiff/$old.json" "target/kdiff/$new.json" "$@"
