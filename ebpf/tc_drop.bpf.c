// SPDX-License-Identifier: GPL-2.0
// A tc classifier in direct-action mode that drops every packet it sees: the `tc_drop`
// fault attaches it to one interface, so the kernel reports TC_INGRESS / TC_EGRESS drops.
// (Debian's kernels build cls_bpf but not act_gact, so `action drop` is not available.)
#include "kernel_types.h"
#include <bpf/bpf_helpers.h>

// From include/uapi/linux/pkt_cls.h: its uapi headers need the host's asm/ headers,
// which a -target bpf build does not see.
#define TC_ACT_SHOT 2

struct __sk_buff;

SEC("tc")
int dropspec_tc_drop(struct __sk_buff *skb)
{
	return TC_ACT_SHOT;
}

char LICENSE[] SEC("license") = "GPL";
