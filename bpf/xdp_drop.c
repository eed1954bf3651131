/* Drop every frame: the cheapest sink, for the benchmark's ceiling (drop_mpps). */
#include <uapi/linux/bpf.h>

int xdp_drop(struct xdp_md *ctx)
{
    return XDP_DROP;
}
