// SPDX-License-Identifier: GPL-2.0
/* Redirect into a cpumap, in the style of the kernel samples' xdp_redirect_cpu:
 * xdp_cpu sends every frame to the CPU in cpu_target[0] through `cpus`; the frame is
 * turned into an skb there, by the cpumap's kthread, and goes up that CPU's stack.
 * A cpumap entry may carry a second program that runs on the remote CPU first
 * (SEC("xdp/cpumap")): xdp_cpu_pass passes, xdp_cpu_drop drops.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_CPUMAP);
    __uint(max_entries, 64);
    __type(key, __u32);
    __type(value, struct bpf_cpumap_val);   /* queue size, and an optional program */
} cpus SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);                   /* the CPU every frame goes to */
} cpu_target SEC(".maps");

SEC("xdp")
int xdp_cpu(struct xdp_md *ctx)
{
    __u32 zero = 0, *cpu = bpf_map_lookup_elem(&cpu_target, &zero);

    if (!cpu)
        return XDP_ABORTED;
    return bpf_redirect_map(&cpus, *cpu, 0);
}

SEC("xdp/cpumap")
int xdp_cpu_pass(struct xdp_md *ctx)
{
    return XDP_PASS;
}

SEC("xdp/cpumap")
int xdp_cpu_drop(struct xdp_md *ctx)
{
    return XDP_DROP;
}

char _license[] SEC("license") = "GPL";
