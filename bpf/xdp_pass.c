/* The smallest XDP program: pass every frame to the stack.
 * Attached in drv mode to the peer of a veth that receives redirected frames,
 * it turns on that peer's NAPI so the veth accepts XDP_REDIRECT'ed frames
 * (drivers/net/veth.c; see KERNEL_NOTES). */
#include <uapi/linux/bpf.h>

int xdp_pass(struct xdp_md *ctx)
{
    return XDP_PASS;
}
