#!/usr/bin/env bash
# Runs the scenario suite on other kernels, each in a `dropspec vm` guest (qemu TCG).
#
#   bash ci/vm-suite.sh                          every kernel in ci/kernels.toml
#   bash ci/vm-suite.sh 6.12.117+deb12           one kernel (anything --kernel takes)
#   bash ci/vm-suite.sh 6.1.0-56 -- iptables/    a libtest filter: a subset of scenarios
#   bash ci/vm-suite.sh --skip-unavailable       skip (loudly) a kernel Debian no longer has
#   bash ci/vm-suite.sh --ci                     leave out (loudly, with why) the kernels
#                                                ci/kernels.toml marks `ci = false`; a
#                                                kernel's `skip` list is always left out,
#                                                each scenario with its why
#   bash ci/vm-suite.sh --accel kvm              qemu's accelerator (default tcg; the GitHub
#                                                workflow uses kvm where /dev/kvm exists)
#   bash ci/vm-suite.sh --cpus 2                 guests with two vCPUs (TCG then runs them in
#                                                turn on one host thread; default one)
#   bash ci/vm-suite.sh --release                the guests run a release build of the suite
#                                                (TCG emulates every instruction: the debug
#                                                build's harness code is much of a guest's
#                                                time). Not for .ci/run (--ci): it saves
#                                                ~50-80 s per kernel, 4-7 min over five, but
#                                                building it took 8 min from scratch and
#                                                3.5 min after a change to harness/src on
#                                                this machine (BENCHMARKS.md, "Guests")
#   bash ci/vm-suite.sh --with-host              the host's kernel first, then every guest:
#                                                the whole kernel matrix, each against its
#                                                own baselines, with the time each took
#
# Debian drops superseded kernel ABIs (6.1.0-56 once 6.1.0-57 is out) from its mirrors
# after a while; --skip-unavailable keeps .ci/run from failing on that alone, and says so.
#
# The test binaries are built on the host (cargo in the guest works too, but its
# freshness check alone takes ~30 s under TCG) and run in the guest, which sees this
# tree at the same path and may write to it. Needs root, qemu-system-x86, busybox-static
# and apt (bash ci/setup.sh). Exit status: 1 if the suite failed on any kernel.
set -euo pipefail
cd "$(dirname "$0")/.."

kernels=()
filter=()
skip_unavailable=false
ci_only=false
with_host=false
accel=tcg
cpus=1
profile=()
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; filter=("$@"); break ;;
    --skip-unavailable) skip_unavailable=true; shift ;;
    --ci) ci_only=true; shift ;;
    --with-host) with_host=true; shift ;;
    --release) profile=(--release); shift ;;
    --accel) accel=$2; shift 2 ;;
    --cpus) cpus=$2; shift 2 ;;
    *) kernels+=("$1"); shift ;;
  esac
done
if [ ${#kernels[@]} -eq 0 ]; then
  # With --ci, a kernel marked `ci = false` in ci/kernels.toml is left out, loudly, with
  # its why: it is in the matrix (run it by name) but not yet green.
  mapfile -t kernels < <(python3 - "$ci_only" <<'PY'
import sys, tomllib
with open("ci/kernels.toml", "rb") as f:
    kernels = tomllib.load(f)["kernel"]
for k in kernels:
    if sys.argv[1] == "true" and k.get("ci", True) is False:
        print(f"=== kernel {k['package']}: NOT IN CI: {k['ci_why']}", file=sys.stderr)
        continue
    print(k["package"])
PY
)
else
  # A kernel named as ci/kernels.toml names it ("5.10") means its pinned package: the
  # baselines under snapshots/kernels/ are for that ABI, not for whatever newer 5.10
  # `dropspec vm --kernel 5.10` would find. Anything else is passed on as written.
  mapfile -t kernels < <(python3 - "${kernels[@]}" <<'PY'
import sys, tomllib
with open("ci/kernels.toml", "rb") as f:
    pinned = {k["name"]: k["package"] for k in tomllib.load(f)["kernel"]}
for arg in sys.argv[1:]:
    print(pinned.get(arg, arg))
PY
)
fi

cargo build --locked -p dropspec --bin dropspec
suite=$(cargo test --locked "${profile[@]}" -p dropspec --test scenarios --no-run --message-format=json \
  | grep '"kind":\["test"\]' | grep '"name":"scenarios"' \
  | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n1)
if [ -z "$suite" ]; then
  echo "vm-suite: cargo built no scenarios test binary" >&2
  exit 2
fi

# Whether `dropspec vm` can get this kernel: cached, or downloadable from the Debian
# suites of dropspec's own apt sources (harness/src/vm/apt.rs). `--fetch-only` exits 3
# when Debian does not have the package; any other failure is not "unavailable" and
# fails the kernel's run below instead.
available() {
  local rc=0
  target/debug/dropspec vm --kernel "$1" --fetch-only >/dev/null || rc=$?
  [ "$rc" -ne 3 ]
}

# The scenarios ci/kernels.toml lists as known failures of a kernel (`skip`), one per line
# as "scenario<TAB>why".
known_failures() {
  python3 - "$1" <<'PY'
import sys, tomllib
with open("ci/kernels.toml", "rb") as f:
    kernels = tomllib.load(f)["kernel"]
for k in kernels:
    if sys.argv[1] in (k["package"], k["name"]):
        for s in k.get("skip", []):
            print(f"{s['scenario']}\t{s['why']}")
PY
}

failed=()
skipped=()
not_run=()
times=()
if $with_host; then
  host="host ($(uname -r))"
  echo "=== kernel $host"
  started=$(date +%s)
  # The host's kernel (6.18) is built without netem and police: those scenarios are
  # skipped on it, saying so (README, DROPSPEC_MAY_LACK); the guests below run them.
  if CI=true DROPSPEC_REQUIRE_PRIVILEGED=1 DROPSPEC_MAY_LACK=sch_netem,act_police "$suite" "${filter[@]}"; then
    echo "=== kernel $host: suite passed in $(( $(date +%s) - started ))s"
  else
    echo "=== kernel $host: suite FAILED after $(( $(date +%s) - started ))s"
    failed+=("$host")
  fi
  times+=("$host $(( $(date +%s) - started ))s")
fi
for kernel in "${kernels[@]}"; do
  echo "=== kernel $kernel"
  if $skip_unavailable && ! available "$kernel"; then
    echo "=== kernel $kernel: SKIPPED: Debian no longer has this package and it is not cached; bump ci/kernels.toml"
    skipped+=("$kernel")
    continue
  fi
  started=$(date +%s)
  # The whole suite also runs the hook-point scenarios and their control (the filter
  # `hook`) once more in the same guest, with every point attached by kprobe/kretprobe:
  # both attachments are held to the same counts.
  leave_out=()
  while IFS=$'\t' read -r scenario why; do
    [ -n "$scenario" ] || continue
    echo "=== kernel $kernel: NOT RUN: $scenario ($why)"
    leave_out+=(--skip "$scenario")
    not_run+=("$kernel: $scenario")
  done < <(known_failures "$kernel")
  guest_command=("$suite" "${filter[@]}" "${leave_out[@]}")
  if [ ${#filter[@]} -eq 0 ]; then
    guest_command=(bash -c '"$0" "${@}" && echo "=== hook points by kprobe" && DROPSPEC_HOOKS=kprobe "$0" hook "${@}"' "$suite" "${leave_out[@]}")
  fi
  if target/debug/dropspec vm --kernel "$kernel" --accel "$accel" --cpus "$cpus" --timeout "${DROPSPEC_VM_TIMEOUT:-900}" \
      --env CI=true --env DROPSPEC_REQUIRE_PRIVILEGED=1 --env DROPSPEC_REQUIRE_HOOKS=1 \
      -- "${guest_command[@]}"; then
    echo "=== kernel $kernel: suite passed in $(( $(date +%s) - started ))s"
  else
    echo "=== kernel $kernel: suite FAILED after $(( $(date +%s) - started ))s"
    failed+=("$kernel")
  fi
  times+=("$kernel $(( $(date +%s) - started ))s")
done
if [ ${#times[@]} -gt 0 ]; then
  echo "vm-suite: time per kernel (a guest's includes its boot):"
  printf '  %s\n' "${times[@]}"
fi
if [ ${#not_run[@]} -gt 0 ]; then
  echo "vm-suite: left out on these kernels (ci/kernels.toml, each with why):" >&2
  printf '  %s\n' "${not_run[@]}" >&2
fi
if [ ${#skipped[@]} -gt 0 ]; then
  echo "vm-suite: skipped ${skipped[*]} (package unavailable)" >&2
fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "vm-suite: failed on ${failed[*]}" >&2
  exit 1
fi
