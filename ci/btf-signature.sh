#!/usr/bin/env bash
# Prints a kernel function's parameters as the running kernel's BTF has them:
#   bash ci/btf-signature.sh inet_csk_accept   →   inet_csk_accept(sk, flags, err, kern)
# ci/kernel-diff.sh runs it in each guest for the hook-point table (docs/hook-points.md):
# Retina's inet_csk_accept probe broke when 6.10 changed this signature.
set -euo pipefail
fn=$1
bpftool btf dump file /sys/kernel/btf/vmlinux format raw | awk -v fn="$fn" '
  { line[NR] = $0 }
  $2 == "FUNC" && $3 == ("\x27" fn "\x27") {
    for (i = 4; i <= NF; i++) if ($i ~ /^type_id=/) proto = "[" substr($i, 9) "]"
  }
  END {
    if (proto == "") { print fn ": not in this kernel'"'"'s BTF"; exit 0 }
    for (n = 1; n <= NR; n++) {
      split(line[n], f, " ")
      if (f[1] == proto && f[2] == "FUNC_PROTO") {
        params = ""
        for (m = n + 1; m <= NR && line[m] ~ /^\t/; m++) {
          split(line[m], p, " "); name = p[1]; gsub("\x27", "", name); gsub("\t", "", name)
          params = params (params == "" ? "" : ", ") name
        }
        print fn "(" params ")"; exit 0
      }
    }
  }'
