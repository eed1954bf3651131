// SPDX-License-Identifier: GPL-2.0
/* Devmap broadcast, in the style of the kernel selftest xdp_redirect_multi_kern.c:
 * xdp_bcast sends every frame to every port of `ports` (BPF_F_BROADCAST);
 * xdp_bcast_ex does the same but not back out of the ingress port
 * (BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS). A devmap entry may carry a second program
 * that runs on each copy as it leaves (SEC("xdp/devmap")): xdp_egress_mark writes the
 * egress ifindex into the first byte of the source MAC's last octet pair
 * (02:00:00:00:00:<ifindex>), xdp_egress_drop drops the copy.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
    __uint(max_entries, 32);
    __type(key, __u32);
    __type(value, struct bpf_devmap_val);   /* ifindex, and an optional egress program */
} ports SEC(".maps");

SEC("xdp")
int xdp_bcast(struct xdp_md *ctx)
{
    return bpf_redirect_map(&ports, 0, BPF_F_BROADCAST);
}

SEC("xdp")
int xdp_bcast_ex(struct xdp_md *ctx)
{
    return bpf_redirect_map(&ports, 0, BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS);
}

SEC("xdp/devmap")
int xdp_egress_mark(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;

    if ((void *)(eth + 1) > data_end)
        return XDP_DROP;
    __builtin_memset(eth->h_source, 0, ETH_ALEN);
    eth->h_source[0] = 0x02;
    eth->h_source[5] = (unsigned char)ctx->egress_ifindex;
    return XDP_PASS;
}

SEC("xdp/devmap")
int xdp_egress_drop(struct xdp_md *ctx)
{
    return XDP_DROP;
}

char _license[] SEC("license") = "GPL";
