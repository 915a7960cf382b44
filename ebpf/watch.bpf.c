// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * `dropspec watch`: every packet drop (tp_btf skb:kfree_skb) in the watched namespaces,
 * or in all, at a bounded cost:
 *   watch_counts   per-CPU counts per (namespace, reason, call site): every drop
 *   watch_samples  a ring buffer of per-packet detail (addresses, ports, protocol),
 *                  at most cfg_sample_interval_ns apart per CPU (a token bucket per
 *                  CPU, no atomics), written with BPF_RB_NO_WAKEUP: the reader polls
 *                  every ~100 ms and is never woken per drop.
 * Namespace attribution is slots.bpf.h's, shared with the drop and hook probes.
 *
 * Two entry points; user space loads the one the kernel's BTF says fits:
 *   watch_tpbtf   kfree_skb with rx_sk (about 6.12 on)
 *   watch_tpbtf3  kfree_skb without rx_sk (5.17 .. 6.11)
 */
#include "kernel_types.h"

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

#include "watch.h"
#define DROPSPEC_LOST_COUNTERS DROPSPEC_WATCH_LOST_COUNTERS
#include "slots.bpf.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* UAPI numbers (linux/bpf.h) not in kernel_types.h. */
#define DROPSPEC_MAP_TYPE_ARRAY 2
#define DROPSPEC_MAP_TYPE_RINGBUF 27
#define DROPSPEC_RB_NO_WAKEUP 1

/* Set by the loader. Reason numbers are the running kernel's (BTF). */
const volatile __u32 cfg_reason_not_dropped = 0xffffffff;
const volatile __u32 cfg_reason_consumed = 0xffffffff;
/* 1: every namespace; 0: only those in dropspec_netns. */
const volatile __u32 cfg_all_namespaces = 0;
/* Per CPU: the time one sample costs (CPUs × 1 s / samples per second). */
const volatile __u64 cfg_sample_interval_ns = 1000000000ULL;
/* Per CPU: how many samples may go at once after a quiet spell. */
const volatile __u64 cfg_sample_burst = 1;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, DROPSPEC_WATCH_MAX_KEYS);
	__uint(map_flags, DROPSPEC_COUNTER_MAP_FLAGS);
	__type(key, struct dropspec_watch_key);
	__type(value, struct dropspec_watch_value);
} watch_counts SEC(".maps");

struct {
	__uint(type, DROPSPEC_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} watch_samples SEC(".maps");

/* Per CPU: the token bucket's theoretical arrival time (GCRA): no atomics needed. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} watch_bucket SEC(".maps");

#define AF_UNIX 1
#define AF_NETLINK 16
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17

static __always_inline int may_sample(void)
{
	__u32 zero = 0;
	__u64 *tat = bpf_map_lookup_elem(&watch_bucket, &zero);
	if (!tat)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	__u64 tolerance = (cfg_sample_burst - 1) * cfg_sample_interval_ns;
	if (*tat > now + tolerance)
		return 0;
	*tat = (*tat > now ? *tat : now) + cfg_sample_interval_ns;
	return 1;
}

/* Addresses, protocol and ports from the network header as the packet is at the probe. */
static __always_inline void read_packet(struct sk_buff *skb, struct dropspec_watch_sample *s)
{
	__u16 nh = BPF_CORE_READ(skb, network_header);
	if (nh == 0 || nh == (__u16)~0U)
		return;
	unsigned char *hdr = BPF_CORE_READ(skb, head) + nh;
	__u8 first = 0;
	if (bpf_probe_read_kernel(&first, 1, hdr))
		return;
	__u32 l4_offset = 0;
	if ((first >> 4) == 4) {
		s->l3proto = ETH_P_IP;
		bpf_probe_read_kernel(&s->l4proto, 1, hdr + 9);
		bpf_probe_read_kernel(s->saddr, 4, hdr + 12);
		bpf_probe_read_kernel(s->daddr, 4, hdr + 16);
		l4_offset = (first & 0xf) * 4;
	} else if ((first >> 4) == 6) {
		s->l3proto = ETH_P_IPV6;
		bpf_probe_read_kernel(&s->l4proto, 1, hdr + 6);
		bpf_probe_read_kernel(s->saddr, 16, hdr + 8);
		bpf_probe_read_kernel(s->daddr, 16, hdr + 24);
		l4_offset = 40; /* extension headers: no ports shown */
	} else {
		s->l3proto = bpf_ntohs(BPF_CORE_READ(skb, protocol));
		return;
	}
	if ((s->l4proto == IPPROTO_TCP || s->l4proto == IPPROTO_UDP) && l4_offset >= 20 &&
	    l4_offset <= 60) {
		__be16 ports[2] = { 0, 0 };
		if (bpf_probe_read_kernel(ports, sizeof(ports), hdr + l4_offset) == 0) {
			s->sport = bpf_ntohs(ports[0]);
			s->dport = bpf_ntohs(ports[1]);
			s->has_ports = 1;
		}
	}
}

static __always_inline void watch_drop(struct sk_buff *skb, __u64 location, __u32 reason,
				       struct sock *rx_sk)
{
	if (reason == cfg_reason_not_dropped || reason == cfg_reason_consumed)
		return;
	struct sock *sk = BPF_CORE_READ(skb, sk);
	struct net *net = netns_of_skb(skb, sk, rx_sk);
	if (!net)
		return;
	if (!cfg_all_namespaces && !watched_slot(net))
		return;
	/* Local IPC freed on socket close, not packets (as in drops.bpf.c). */
	if (sk) {
		__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
		if (family == AF_UNIX || family == AF_NETLINK)
			return;
	}
	struct dropspec_watch_key key;
	__builtin_memset(&key, 0, sizeof(key));
	key.netns = BPF_CORE_READ(net, ns.inum);
	key.reason = reason;
	key.location = location;
	__u32 len = BPF_CORE_READ(skb, len);
	struct dropspec_watch_value first = { .packets = 1, .bytes = len };
	struct dropspec_watch_value *value =
		percpu_value(&watch_counts, &key, &first, DROPSPEC_WATCH_LOST_COUNTS);
	if (value) {
		value->packets += 1;
		value->bytes += len;
	}
	if (!may_sample())
		return;
	struct dropspec_watch_sample s;
	__builtin_memset(&s, 0, sizeof(s));
	s.time_ns = bpf_ktime_get_ns();
	s.location = location;
	s.netns = key.netns;
	s.reason = reason;
	s.len = len;
	read_packet(skb, &s);
	if (bpf_ringbuf_output(&watch_samples, &s, sizeof(s), DROPSPEC_RB_NO_WAKEUP))
		count_lost(DROPSPEC_WATCH_LOST_SAMPLES);
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(watch_tpbtf, struct sk_buff *skb, void *location, __u32 reason,
	     struct sock *rx_sk)
{
	watch_drop(skb, (__u64)location, reason, rx_sk);
	return 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(watch_tpbtf3, struct sk_buff *skb, void *location, __u32 reason)
{
	watch_drop(skb, (__u64)location, reason, 0);
	return 0;
}
