// SPDX-License-Identifier: GPL-2.0
/* fast_l2fwd in libbpf style: the forwarder of bpf/l2fwd.c, built by clang into an ELF
 * object (bpf/l2fwd.bpf.o, `make bpf`) with BTF-defined maps, as teams ship it to be
 * loaded by their own control plane. Same maps, same logic, same counters: the lab runs
 * the forwarding and drop scenarios, and the differential check, against both.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define VERDICT_MALFORMED 5
#define VERDICT_SLOTS 6

struct fwd {
    __u32 outif;        /* egress ifindex, also the key of txport_map */
    __u8 dst_mac[6];    /* new destination MAC; 2 bytes of tail padding follow */
};

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 64);
    __type(key, __u32);
    __type(value, __u32);
} qidconf_map SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 64);
    __type(key, __u32);             /* daddr as it sits in the IP header */
    __type(value, struct fwd);
} l2fwd_map SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_DEVMAP);
    __uint(max_entries, 64);
    __type(key, __u32);
    __type(value, __u32);
} txport_map SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_XSKMAP);
    __uint(max_entries, 64);
    __type(key, __u32);
    __type(value, __u32);
} xsks_map SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, VERDICT_SLOTS);
    __type(key, __u32);
    __type(value, __u64);
} verdict_cnt SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 2);
    __type(key, __u32);
    __type(value, __u32);
} redirect_key SEC(".maps");

#ifdef L2FWD_DEBUG
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
} trace_tag SEC(".maps");

static __always_inline __u32 tag(void)
{
    __u32 zero = 0;
    __u32 *t = bpf_map_lookup_elem(&trace_tag, &zero);
    return t ? *t : 0;
}
#define dbg(fmt, ...) bpf_printk("l2fwd[%u] " fmt, tag(), ##__VA_ARGS__)
#else
#define dbg(fmt, ...) do { } while (0)
#endif

static __always_inline int count(__u32 slot, int action)
{
    __u64 *n = bpf_map_lookup_elem(&verdict_cnt, &slot);
    if (n)
        *n += 1;
    return action;
}

static __always_inline int verdict(int action)
{
    return count(action, action);
}

static __always_inline void record_key(__u32 slot, __u32 key)
{
    __u32 *k = bpf_map_lookup_elem(&redirect_key, &slot);
    if (k)
        *k = key + 1;
}

SEC("xdp")
int xdp_l2fwd(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    __u32 qid = ctx->rx_queue_index;

    __u32 *qconf = bpf_map_lookup_elem(&qidconf_map, &qid);
    if (qconf && *qconf) {
        dbg("queue %u to xsks_map\n", qid);
        record_key(1, qid);
        return verdict(bpf_redirect_map(&xsks_map, qid, XDP_PASS));
    }

    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end) {
        dbg("runt frame, %d bytes\n", (int)(data_end - data));
        count(VERDICT_MALFORMED, XDP_PASS);
        return verdict(XDP_PASS);
    }
    if (eth->h_proto != bpf_htons(ETH_P_IP))
        return verdict(XDP_PASS);

    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5) {
        dbg("malformed ipv4 header, %d bytes\n", (int)(data_end - data));
        count(VERDICT_MALFORMED, XDP_PASS);
        return verdict(XDP_PASS);
    }

    __u32 daddr = ip->daddr;
    struct fwd *f = bpf_map_lookup_elem(&l2fwd_map, &daddr);
    if (!f) {
        dbg("no route for %x, pass\n", bpf_ntohl(daddr));
        return verdict(XDP_PASS);
    }

    __builtin_memcpy(eth->h_dest, f->dst_mac, ETH_ALEN);
    record_key(0, f->outif);
    int action = bpf_redirect_map(&txport_map, f->outif, 0);
    dbg("%x to outif %u\n", bpf_ntohl(daddr), f->outif);
    dbg("redirect action %d\n", action);
    return verdict(action);
}

char LICENSE[] SEC("license") = "GPL";
