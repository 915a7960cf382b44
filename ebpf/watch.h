/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * What watch.bpf.c writes for `dropspec watch`, mirrored once in harness/src/watch/abi.rs
 * (with size checks).
 */
#ifndef DROPSPEC_WATCH_H
#define DROPSPEC_WATCH_H

/* Indexes of dropspec_lost (slots.bpf.h) for this probe. */
#define DROPSPEC_WATCH_LOST_COUNTS 0  /* watch_counts full: a drop not aggregated */
#define DROPSPEC_WATCH_LOST_SAMPLES 1 /* ring buffer full: a sample not sent */
#define DROPSPEC_WATCH_LOST_COUNTERS 2

/* Distinct (namespace, reason, call site) rows aggregated at once. */
#define DROPSPEC_WATCH_MAX_KEYS 4096

/* Aggregated per CPU. */
struct dropspec_watch_key {
	__u32 netns;  /* the namespace's inode number */
	__u32 reason; /* enum skb_drop_reason on this kernel */
	__u64 location;
};

struct dropspec_watch_value {
	__u64 packets;
	__u64 bytes;
};

/* One sampled drop, with what the packet said at the probe. */
struct dropspec_watch_sample {
	__u64 time_ns; /* bpf_ktime_get_ns */
	__u64 location;
	__u32 netns;
	__u32 reason;
	__u32 len;
	__u16 l3proto; /* ETH_P_IP, ETH_P_IPV6, … (host order); 0 when unknown */
	__u8 l4proto;  /* IPPROTO_*; 0 when unknown */
	__u8 has_ports;
	__u8 saddr[16]; /* IPv4 in the first 4 bytes */
	__u8 daddr[16];
	__u16 sport; /* host order */
	__u16 dport;
	__u32 _pad;
};

/* The Rust mirror (harness/src/watch/abi.rs) asserts the same sizes. */
_Static_assert(sizeof(struct dropspec_watch_key) == 16, "watch key ABI");
_Static_assert(sizeof(struct dropspec_watch_sample) == 72, "watch sample ABI");

#endif /* DROPSPEC_WATCH_H */
