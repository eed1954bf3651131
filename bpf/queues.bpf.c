// SPDX-License-Identifier: GPL-2.0
/* Which receive queue a frame came in on, as the program sees it: xdp_queue counts each
 * frame under ctx->rx_queue_index and passes it.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 64);
    __type(key, __u32);             /* rx_queue_index */
    __type(value, __u64);           /* frames */
} rx_queue SEC(".maps");

static __always_inline void count(struct xdp_md *ctx)
{
    __u32 q = ctx->rx_queue_index;
    __u64 *n = bpf_map_lookup_elem(&rx_queue, &q);

    if (n)
        __sync_fetch_and_add(n, 1);
}

SEC("xdp")
int xdp_queue(struct xdp_md *ctx)
{
    count(ctx);
    return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
