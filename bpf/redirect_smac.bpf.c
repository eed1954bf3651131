// SPDX-License-Identifier: GPL-2.0
/* Redirect by source MAC, in the style of xdp-tutorial's packet03-redirecting
 * xdp_prog_kern.c (xdp_redirect_map_func): a frame whose Ethernet source MAC has an
 * entry in redirect_params gets that entry as its new destination MAC and is
 * redirected through tx_port key 0; everything else is passed. Every frame is
 * counted in xdp_stats_map under the action the program returns, as the tutorial's
 * xdp_stats_record_action does. Also carries the tutorial's xdp_pass_func.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef XDP_ACTION_MAX
#define XDP_ACTION_MAX (XDP_REDIRECT + 1)
#endif

/* Per-action record, as in the tutorial's common_kern_user.h */
struct datarec {
    __u64 rx_packets;
    __u64 rx_bytes;
};

struct {
    __uint(type, BPF_MAP_TYPE_DEVMAP);
    __uint(max_entries, 16);
    __type(key, __u32);
    __type(value, __u32);           /* egress ifindex; key 0 is the one used */
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} tx_port SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 64);
    __type(key, unsigned char[ETH_ALEN]);   /* source MAC of the frame */
    __type(value, unsigned char[ETH_ALEN]); /* new destination MAC */
} redirect_params SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, XDP_ACTION_MAX);
    __type(key, __u32);
    __type(value, struct datarec);
} xdp_stats_map SEC(".maps");

static __always_inline __u32 xdp_stats_record_action(struct xdp_md *ctx, __u32 action)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;

    if (action >= XDP_ACTION_MAX)
        return XDP_ABORTED;

    struct datarec *rec = bpf_map_lookup_elem(&xdp_stats_map, &action);
    if (!rec)
        return XDP_ABORTED;

    /* per-CPU slot: no atomics needed */
    rec->rx_packets++;
    rec->rx_bytes += (data_end - data);

    return action;
}

SEC("xdp")
int xdp_redirect_smac(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    unsigned char *dst;
    __u32 action = XDP_PASS;

    if ((void *)(eth + 1) > data_end) {
        action = XDP_DROP;      /* runt frame */
        goto out;
    }

    dst = bpf_map_lookup_elem(&redirect_params, eth->h_source);
    if (!dst)
        goto out;               /* no entry for this source MAC: XDP_PASS */

    __builtin_memcpy(eth->h_dest, dst, ETH_ALEN);
    /* XDP_REDIRECT, or XDP_ABORTED (flags 0) when tx_port key 0 is empty */
    action = bpf_redirect_map(&tx_port, 0, 0);

out:
    return xdp_stats_record_action(ctx, action);
}

SEC("xdp")
int xdp_pass_func(struct xdp_md *ctx)
{
    return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
