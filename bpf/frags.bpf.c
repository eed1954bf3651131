// SPDX-License-Identifier: GPL-2.0
/* What a program sees of frames larger than a page: xdp_len (a plain program) and
 * xdp_len_frags (SEC("xdp.frags"): it accepts multi-buffer frames) both count, per whole
 * frame length (bpf_xdp_get_buff_len), the frames they saw and the longest linear part
 * (data_end - data) among them, and pass every frame.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct seen {
    __u64 frames;
    __u32 linear;       /* the longest linear part of a frame of this length */
    __u32 pad;
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 64);
    __type(key, __u32);             /* whole frame length */
    __type(value, struct seen);
} lengths SEC(".maps");

static __always_inline int record(struct xdp_md *ctx)
{
    __u32 len = bpf_xdp_get_buff_len(ctx);
    __u32 linear = ctx->data_end - ctx->data;
    struct seen *s = bpf_map_lookup_elem(&lengths, &len);

    if (!s) {
        struct seen zero = {};
        bpf_map_update_elem(&lengths, &len, &zero, BPF_NOEXIST);
        s = bpf_map_lookup_elem(&lengths, &len);
        if (!s)
            return XDP_PASS;
    }
    __sync_fetch_and_add(&s->frames, 1);
    if (linear > s->linear)
        s->linear = linear;
    return XDP_PASS;
}

SEC("xdp")
int xdp_len(struct xdp_md *ctx)
{
    return record(ctx);
}

SEC("xdp.frags")
int xdp_len_frags(struct xdp_md *ctx)
{
    return record(ctx);
}

char _license[] SEC("license") = "GPL";
