/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The few kernel types drops.bpf.c reads, declared by hand instead of a generated
 * vmlinux.h (130,000 lines that would pin us to one kernel's layout anyway).
 *
 * Only the fields we read are declared. `preserve_access_index` makes clang record
 * every access as a CO-RE relocation (type + field name), and aya rewrites the offsets
 * against the running kernel's BTF when it loads the object. So field order and
 * offsets here are meaningless: only names and rough types matter. Fields that live
 * inside anonymous unions/structs in the kernel (sk_buff's `dev`, `protocol`,
 * `network_header`) are declared flat; the relocation matcher descends into
 * anonymous members to find them.
 */
#ifndef DROPSPEC_KERNEL_TYPES_H
#define DROPSPEC_KERNEL_TYPES_H

/* UAPI integer types (linux/types.h), needed by libbpf's bpf_helper_defs.h. */
typedef signed char __s8;
typedef unsigned char __u8;
typedef short __s16;
typedef unsigned short __u16;
typedef int __s32;
typedef unsigned int __u32;
typedef long long __s64;
typedef unsigned long long __u64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u64 __be64;
typedef __u32 __wsum;

/* UAPI constants from linux/bpf.h: fixed ABI numbers, not kernel-assigned. */
enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_PERCPU_HASH = 5,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_LRU_PERCPU_HASH = 10,
};
enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
};
#define EEXIST 17

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct ns_common {
	unsigned int inum;
};

struct net {
	struct ns_common ns;
};

/* possible_net_t: `struct net *net` exists when CONFIG_NET_NS=y, which namespaces need. */
typedef struct {
	struct net *net;
} possible_net_t;

struct net_device {
	possible_net_t nd_net;
};

struct sock_common {
	unsigned short skc_family;
	possible_net_t skc_net;
};

struct sock {
	struct sock_common __sk_common;
};

struct sk_buff {
	struct net_device *dev;
	struct sock *sk;
	unsigned int len;
	__be16 protocol;
	__u16 network_header;
	unsigned char *head;
	unsigned char *data;
};

/* The argument of every netfilter hook function; its `net` is the hook's namespace. */
struct nf_hook_state {
	struct net *net;
};

struct nsproxy {
	struct net *net_ns;
};

struct task_struct {
	struct nsproxy *nsproxy;
	void *stack;
};

#pragma clang attribute pop

#endif /* DROPSPEC_KERNEL_TYPES_H */
