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
echo "dropspec set-up done: $(clang-19 --version | head -n1), kernel $(uname -r)"
