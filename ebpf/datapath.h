/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * ABI of ebpf/datapath.bpf.c, mirrored once in harness/src/probes/abi.rs
 * (DatapathIface, DatapathDrop) with size and offset checks.
 */
#ifndef DROPSPEC_DATAPATH_H
#define DROPSPEC_DATAPATH_H

/* Lost counters (dropspec_lost indices). */
#define DATAPATH_LOST_RINGBUF 0
#define DATAPATH_LOST_COUNTERS 1

/* Bytes of each dropped packet kept, from its Ethernet header: enough for an IPv4 or
 * IPv6 header with options and the ports behind it. */
#define DATAPATH_HEAD_BYTES 96

/* An interface a program under test is attached to: (watch slot, ifindex). */
struct datapath_iface {
	__u32 slot;
	__u32 ifindex;
};

/* One packet the kernel freed as a drop on a watched interface. */
struct datapath_drop {
	__u32 slot;
	__u32 ifindex;
	/* enum skb_drop_reason, named in user space from the running kernel's BTF */
	__u32 reason;
	/* skb->len at the drop (from the network header at tc, the MAC header at native XDP) */
	__u32 len;
	/* the caller of kfree_skb, named from kallsyms */
	__u64 location;
	/* 1 when head[] starts at the MAC header, 0 when at skb->data (no MAC header set) */
	__u16 from_mac;
	__u16 pad0;
	__u32 pad1;
	__u8 head[DATAPATH_HEAD_BYTES];
};

#endif /* DROPSPEC_DATAPATH_H */
