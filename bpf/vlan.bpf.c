// SPDX-License-Identifier: GPL-2.0
/* What an XDP program sees of VLAN-tagged frames: xdp_vlan counts each frame under the
 * EtherType at offset 12 (0x8100 when the tag is in the frame, 0x0800 when it is not) and
 * its length, and passes it; xdp_vlan_redirect counts and redirects it out of out[0]. tc_vlan_push (tc egress, on the sender) pushes VLAN 100 with
 * bpf_skb_vlan_push, which puts the tag in the skb's metadata (as a NIC's offload does),
 * not in its bytes: where it ends up depends on the sender's tx-vlan-offload.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct seen_key {
    __u16 proto;        /* EtherType at offset 12, host order */
    __u16 len;          /* data_end - data */
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 16);
    __type(key, struct seen_key);
    __type(value, __u64);
} seen SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_DEVMAP);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);           /* ifindex */
} out SEC(".maps");

static __always_inline void count(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    struct seen_key k = {};
    __u64 one = 1, *n;

    if ((void *)(eth + 1) > end)
        return;
    k.proto = bpf_ntohs(eth->h_proto);
    k.len = (__u16)(end - data);
    n = bpf_map_lookup_elem(&seen, &k);
    if (n)
        __sync_fetch_and_add(n, 1);
    else
        bpf_map_update_elem(&seen, &k, &one, BPF_NOEXIST);
}

SEC("xdp")
int xdp_vlan(struct xdp_md *ctx)
{
    count(ctx);
    return XDP_PASS;
}

/* The same, then out of the interface in out[0]. */
SEC("xdp")
int xdp_vlan_redirect(struct xdp_md *ctx)
{
    count(ctx);
    return bpf_redirect_map(&out, 0, 0);
}

SEC("tc")
int tc_vlan_push(struct __sk_buff *skb)
{
    bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), 100);
    return TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";
