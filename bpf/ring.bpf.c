// SPDX-License-Identifier: GPL-2.0
/* Veth ring, in the style of the kernel selftest prog_tests/test_xdp_veth.c with its
 * progs xdp_redirect_map.c, xdp_dummy.c and xdp_tx.c folded into one object:
 * xdp_ring_<i> redirects every frame through ring_ports key i (the next hop of the
 * ring) and counts the frames it redirected in ring_cnt[i]; xdp_dummy passes
 * everything (the peer that only needs an XDP program attached); xdp_tx_back swaps the
 * Ethernet MACs and bounces the frame out of the interface it came in on.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define RING_SLOTS 3

struct {
    __uint(type, BPF_MAP_TYPE_DEVMAP);
    __uint(max_entries, 8);
    __type(key, __u32);
    __type(value, __u32);           /* egress ifindex */
} ring_ports SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, RING_SLOTS);
    __type(key, __u32);
    __type(value, __u64);
} ring_cnt SEC(".maps");

static __always_inline int ring_redirect(__u32 slot)
{
    int action = bpf_redirect_map(&ring_ports, slot, 0);

    if (action == XDP_REDIRECT) {
        __u64 *n = bpf_map_lookup_elem(&ring_cnt, &slot);
        if (n)
            *n += 1;
    }
    return action;
}

SEC("xdp")
int xdp_ring_0(struct xdp_md *ctx)
{
    return ring_redirect(0);
}

SEC("xdp")
int xdp_ring_1(struct xdp_md *ctx)
{
    return ring_redirect(1);
}

SEC("xdp")
int xdp_ring_2(struct xdp_md *ctx)
{
    return ring_redirect(2);
}

SEC("xdp")
int xdp_dummy(struct xdp_md *ctx)
{
    return XDP_PASS;
}

SEC("xdp")
int xdp_tx_back(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    unsigned char tmp[ETH_ALEN];

    if ((void *)(eth + 1) > data_end)
        return XDP_DROP;

    __builtin_memcpy(tmp, eth->h_source, ETH_ALEN);
    __builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
    __builtin_memcpy(eth->h_dest, tmp, ETH_ALEN);
    return XDP_TX;
}

/* A 3 that is not a verdict: a subprogram's return value used as a map key. The main
 * function returns XDP_PASS; the XDP_TX preflight must not mistake this for XDP_TX. */
static __attribute__((noinline)) int tx_slot(struct xdp_md *ctx)
{
    return ctx->data_end - ctx->data > 100 ? 3 : 1;
}

SEC("xdp")
int xdp_pass_counting(struct xdp_md *ctx)
{
    __u32 slot = tx_slot(ctx);
    __u64 *n = bpf_map_lookup_elem(&ring_cnt, &slot);

    if (n)
        __sync_fetch_and_add(n, 1);
    return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
