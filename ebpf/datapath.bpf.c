// SPDX-License-Identifier: GPL-2.0
/*
 * The ground truth for programs under test (harness/src/probes/datapath.rs): every
 * kfree_skb drop on an interface a scenario attached a tc or XDP program to, one record
 * per packet (reason, caller, length, first bytes) in a ring buffer. Which of them the
 * program caused is decided in user space from reason and caller (TC_INGRESS /
 * TC_EGRESS at tc; NOT_SPECIFIED at veth_xdp_rcv_skb or do_xdp_generic for XDP, as
 * measured on 6.18 and documented in docs/kernel-findings.md; before 5.17, without
 * reasons, from the caller alone).
 *
 * Per packet rather than counted, unlike drops.bpf.c: the report names each unreported
 * packet's addresses, and only a handful of interfaces are watched.
 */
#define DROPSPEC_LOST_COUNTERS 1
#include "slots.bpf.h"
#include "datapath.h"

/* BPF_MAP_TYPE_RINGBUF from linux/bpf.h (5.8), a fixed ABI number. */
#define DATAPATH_MAP_TYPE_RINGBUF 27

/*
 * The fields of sk_buff and net_device this probe reads beyond kernel_types.h's. The
 * `___datapath` suffix is a CO-RE flavour: relocated against the kernel's sk_buff.
 */
struct net_device___datapath {
	int ifindex;
} __attribute__((preserve_access_index));

struct sk_buff___datapath {
	struct net_device___datapath *dev;
	unsigned int len;
	__u16 mac_header;
	unsigned char *head;
	unsigned char *data;
} __attribute__((preserve_access_index));

/* Set by harness/src/probes/datapath.rs from the kernel's enum skb_drop_reason;
 * ~0 when the kernel has no such reason. */
const volatile __u32 cfg_reason_not_dropped = ~0U;
const volatile __u32 cfg_reason_consumed = ~0U;

/* Interfaces watched: (slot, ifindex) -> 1. Filled by the loader. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct datapath_iface);
	__type(value, __u32);
} datapath_ifaces SEC(".maps");

struct {
	__uint(type, DATAPATH_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} datapath_drops SEC(".maps");

/* Stands for "this kernel passes no reason" (before 5.17); DROPSPEC_NO_REASON in drops.h. */
#define DATAPATH_NO_REASON 0xfffffffeu

static __always_inline int record_drop(struct sk_buff *skb, __u64 location, __u32 reason)
{
	struct sk_buff___datapath *s = (struct sk_buff___datapath *)skb;
	/* Frees that are not drops. Their numbers are the running kernel's (1 is CONSUMED
	 * from 6.3 but NOT_SPECIFIED on 6.1), set by the loader from its BTF. */
	if (reason == cfg_reason_not_dropped || reason == cfg_reason_consumed)
		return 0;
	struct net_device___datapath *dev = BPF_CORE_READ(s, dev);
	if (!dev)
		return 0;
	__u32 *slot = watched_slot(netns_of_skb(skb, 0, 0));
	if (!slot)
		return 0;
	struct datapath_iface key = { .slot = *slot, .ifindex = BPF_CORE_READ(dev, ifindex) };
	if (!bpf_map_lookup_elem(&datapath_ifaces, &key))
		return 0;
	struct datapath_drop *rec = bpf_ringbuf_reserve(&datapath_drops, sizeof(*rec), 0);
	if (!rec) {
		count_lost(DATAPATH_LOST_RINGBUF);
		return 0;
	}
	rec->slot = key.slot;
	rec->ifindex = key.ifindex;
	rec->reason = reason;
	rec->len = BPF_CORE_READ(s, len);
	rec->location = location;
	rec->pad0 = 0;
	rec->pad1 = 0;
	unsigned char *head = BPF_CORE_READ(s, head);
	__u16 mac = BPF_CORE_READ(s, mac_header);
	unsigned char *start;
	if (mac != (__u16)~0U) {
		start = head + mac;
		rec->from_mac = 1;
	} else {
		start = BPF_CORE_READ(s, data);
		rec->from_mac = 0;
	}
	if (bpf_probe_read_kernel(rec->head, sizeof(rec->head), start))
		__builtin_memset(rec->head, 0, sizeof(rec->head));
	bpf_ringbuf_submit(rec, 0);
	return 0;
}

SEC("tp_btf/kfree_skb")
int dropspec_datapath_kfree_skb(__u64 *ctx)
{
	/* kfree_skb(skb, location, reason[, rx_sk]): the same first three from 5.17 on. */
	return record_drop((struct sk_buff *)ctx[0], ctx[1], (__u32)ctx[2]);
}

/*
 * Before 5.17 kfree_skb(skb, location) passes no reason (the verifier refuses a read of
 * ctx[2]): every drop is recorded with DATAPATH_NO_REASON, and which are the program's
 * is decided from the freeing function alone (probes/datapath.rs, caused_by).
 */
SEC("tp_btf/kfree_skb")
int dropspec_datapath_kfree_skb2(__u64 *ctx)
{
	return record_drop((struct sk_buff *)ctx[0], ctx[1], DATAPATH_NO_REASON);
}

char LICENSE[] SEC("license") = "GPL";
