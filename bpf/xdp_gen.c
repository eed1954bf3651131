/* Traffic generator for the benchmark: run with BPF_PROG_TEST_RUN and
 * BPF_F_TEST_XDP_LIVE_FRAMES (as xdp-trafficgen does), every copy of the test frame is
 * redirected out of gen_target[0], an ifindex of the namespace the run is started in. */
#include <uapi/linux/bpf.h>

BPF_ARRAY(gen_target, u32, 1);

int xdp_gen(struct xdp_md *ctx)
{
    u32 zero = 0;
    u32 *ifindex = gen_target.lookup(&zero);
    if (!ifindex)
        return XDP_ABORTED;
    return bpf_redirect(*ifindex, 0);
}
