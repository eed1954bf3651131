// SPDX-License-Identifier: GPL-2.0
/* Fates: what the kernel did with frames on a lab's interfaces, from its own tracepoints.
 *
 * BTF-typed raw tracepoints (tp_btf) on xdp:xdp_exception, xdp_redirect, xdp_redirect_err,
 * xdp_devmap_xmit, xdp_bulk_tx and skb:kfree_skb. Each event is kept only when its device
 * is in `devices`, keyed by (network namespace inode, ifindex): every namespace has its own
 * ifindex 2, and a lab (one per test process) lists only its own devices, so parallel
 * sessions and other software never see each other's events. Nothing here touches the
 * tracing switches of tracefs.
 *
 * Events are counted in `fates` (lossless until the map is full; then `lost`). skb drops
 * also go to `frames` with the first FRAME_BYTES bytes of the frame, so that the lab can
 * tell which of its frames died (a full ring buffer counts in `lost`, never silently).
 *
 * Struct layouts are the kernel's own, through CO-RE (libbpf relocates every field
 * offset from /sys/kernel/btf/vmlinux at load): one object serves 5.10 to 6.18, with a second
 * program where a tracepoint's arguments changed (lab/fates.py OLDER picks it by probing).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

struct ns_common { unsigned int inum; } __attribute__((preserve_access_index));
struct net { struct ns_common ns; } __attribute__((preserve_access_index));
typedef struct { struct net *net; } __attribute__((preserve_access_index)) possible_net_t;
struct net_device { int ifindex; possible_net_t nd_net; } __attribute__((preserve_access_index));
struct bpf_prog_aux { __u32 id; } __attribute__((preserve_access_index));
struct bpf_prog { struct bpf_prog_aux *aux; } __attribute__((preserve_access_index));
struct bpf_map { __u32 id; enum bpf_map_type map_type; } __attribute__((preserve_access_index));
struct bpf_dtab_netdev { struct net_device *dev; } __attribute__((preserve_access_index));
struct xdp_cpumap_stats { unsigned int redirect; unsigned int pass; unsigned int drop; }
    __attribute__((preserve_access_index));
struct sk_buff {
    struct net_device *dev;
    unsigned int len;
    unsigned int data_len;
    __u16 mac_header;
    unsigned char *head;
    unsigned char *data;
} __attribute__((preserve_access_index));

#define FRAME_BYTES 128
#define MAP_TYPE_DEVMAP 14          /* BPF_MAP_TYPE_DEVMAP */
#define MAP_TYPE_DEVMAP_HASH 25
#define INT_MAX_ID 0x7fffffff       /* bpf_redirect() without a map: map_id INT_MAX */

enum kind { EXCEPTION = 1, REDIRECT, REDIRECT_ERR, DEVMAP_XMIT, BULK_TX, KFREE_SKB, CPUMAP_ENQUEUE, CPUMAP_KTHREAD,
            KINDS };

struct dev_key { __u32 netns; __u32 ifindex; };

struct fate_key {
    __u32 kind;
    __u32 netns, ifindex;           /* where it happened */
    __u32 prog_id;
    __s32 code;                     /* XDP action, errno (negative) or drop reason */
    __u32 to_netns, to_ifindex;     /* redirect / transmit target */
    __u32 map_id, map_index;
    __u32 pad;
    __u64 location;                 /* kfree_skb: the kernel function that dropped it */
};

struct fate_val { __u64 events; __u64 frames; __u64 drops; };

struct frame_event {
    __u64 location;
    __u64 time;                     /* bpf_ktime_get_ns: CLOCK_MONOTONIC, as the lab's send times */
    __u32 netns, ifindex;
    __u32 reason;
    __u32 len;                      /* the whole frame, from its Ethernet header */
    __u32 caplen;                   /* how much of it follows */
    __u32 pad;
    __u8 data[FRAME_BYTES];
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 4096);
    __type(key, struct dev_key);
    __type(value, __u32);
} devices SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1024);
    __type(key, __u32);             /* map id: cpumap events name no device, only their map */
    __type(value, __u32);
} cpumaps SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_HASH);   /* no atomics on the hot path: summed by the lab */
    __uint(max_entries, 8192);
    __type(key, struct fate_key);
    __type(value, struct fate_val);
} fates SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, KINDS);
    __type(key, __u32);
    __type(value, __u64);
} lost SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 1 << 22);
} frames SEC(".maps");

static __always_inline int lab_device(const struct net_device *dev, struct dev_key *k)
{
    if (!dev)
        return 0;
    k->ifindex = dev->ifindex;                 /* direct loads: tp_btf arguments are typed */
    k->netns = dev->nd_net.net->ns.inum;
    return bpf_map_lookup_elem(&devices, k) != NULL;
}

static __always_inline void count_lost(__u32 kind)
{
    __u64 *n = bpf_map_lookup_elem(&lost, &kind);
    if (n)
        __sync_fetch_and_add(n, 1);
}

static __always_inline void count(struct fate_key *k, __u64 frames_, __u64 drops)
{
    struct fate_val *v = bpf_map_lookup_elem(&fates, k);
    if (!v) {
        struct fate_val zero = {};
        if (bpf_map_update_elem(&fates, k, &zero, BPF_NOEXIST) && !bpf_map_lookup_elem(&fates, k)) {
            count_lost(k->kind);
            return;
        }
        v = bpf_map_lookup_elem(&fates, k);
        if (!v)
            return;
    }
    v->events += 1;
    v->frames += frames_;
    v->drops += drops;
}

static __always_inline __u32 prog_id(const struct bpf_prog *p)
{
    return p ? p->aux->id : 0;
}

SEC("tp_btf/xdp_exception")
int BPF_PROG(fate_xdp_exception, const struct net_device *dev, const struct bpf_prog *xdp, __u32 act)
{
    struct dev_key d;
    if (!lab_device(dev, &d))
        return 0;
    struct fate_key k = {.kind = EXCEPTION, .netns = d.netns, .ifindex = d.ifindex,
                         .prog_id = prog_id(xdp), .code = act};
    count(&k, 1, 1);
    return 0;
}

static __always_inline void redirect(__u32 kind, const struct net_device *dev, const struct bpf_prog *xdp,
                                     const void *tgt, int err, __u32 map_type, __u32 map_id, __u32 index)
{
    struct dev_key d;
    if (!lab_device(dev, &d))
        return;
    struct fate_key k = {.kind = kind, .netns = d.netns, .ifindex = d.ifindex, .prog_id = prog_id(xdp),
                         .code = err, .map_id = map_id, .map_index = index};
    if ((map_type == MAP_TYPE_DEVMAP || map_type == MAP_TYPE_DEVMAP_HASH) && tgt) {
        struct net_device *to = NULL;
        bpf_probe_read_kernel(&to, sizeof(to), tgt);   /* struct bpf_dtab_netdev starts with dev */
        if (to) {
            k.to_ifindex = BPF_CORE_READ(to, ifindex);
            k.to_netns = BPF_CORE_READ(to, nd_net.net, ns.inum);
        }
    } else if (map_type == 0 && map_id == INT_MAX_ID) {   /* bpf_redirect(ifindex): same namespace */
        k.to_ifindex = index;
        k.to_netns = d.netns;
        k.map_id = 0;
        k.map_index = 0;
    }
    count(&k, 1, kind == REDIRECT_ERR);
}

/* Arguments declared `void *` (a redirect's target, kfree_skb's location) cannot be read
 * from a tp_btf context before 6.x ("arg type UNKNOWN is not a struct" on 6.1): copy them. */
static __always_inline __u64 untyped_arg(unsigned long long *ctx, int i)
{
    __u64 v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), &ctx[i]);
    return v;
}

SEC("tp_btf/xdp_redirect")
int fate_xdp_redirect(unsigned long long *ctx)
{
    redirect(REDIRECT, (const struct net_device *)ctx[0], (const struct bpf_prog *)ctx[1],
             (const void *)untyped_arg(ctx, 2), (int)ctx[3], (__u32)ctx[4], (__u32)ctx[5], (__u32)ctx[6]);
    return 0;
}

SEC("tp_btf/xdp_redirect_err")
int fate_xdp_redirect_err(unsigned long long *ctx)
{
    redirect(REDIRECT_ERR, (const struct net_device *)ctx[0], (const struct bpf_prog *)ctx[1],
             (const void *)untyped_arg(ctx, 2), (int)ctx[3], (__u32)ctx[4], (__u32)ctx[5], (__u32)ctx[6]);
    return 0;
}

/* The same on kernels before 5.13 (5.10): the tracepoints pass the map, not its type and id
 * (dev, xdp, tgt, err, map, index); bpf_redirect() without a map passes NULL and the ifindex. */
static __always_inline void redirect_map_ptr(__u32 kind, unsigned long long *ctx)
{
    const struct bpf_map *map = (const struct bpf_map *)untyped_arg(ctx, 4);
    __u32 type = 0, id = INT_MAX_ID;

    if (map) {
        type = BPF_CORE_READ(map, map_type);
        id = BPF_CORE_READ(map, id);
    }
    redirect(kind, (const struct net_device *)ctx[0], (const struct bpf_prog *)ctx[1],
             (const void *)untyped_arg(ctx, 2), (int)ctx[3], type, id, (__u32)ctx[5]);
}

SEC("tp_btf/xdp_redirect")
int fate_xdp_redirect_map_ptr(unsigned long long *ctx)
{
    redirect_map_ptr(REDIRECT, ctx);
    return 0;
}

SEC("tp_btf/xdp_redirect_err")
int fate_xdp_redirect_err_map_ptr(unsigned long long *ctx)
{
    redirect_map_ptr(REDIRECT_ERR, ctx);
    return 0;
}

SEC("tp_btf/xdp_devmap_xmit")
int BPF_PROG(fate_xdp_devmap_xmit, const struct net_device *from, const struct net_device *to,
             int sent, int drops, int err)
{
    struct dev_key d, t = {};
    int mine = lab_device(from, &d);
    if (mine && to) {               /* the target needs no lookup: the event is the lab's already */
        t.ifindex = to->ifindex;
        t.netns = to->nd_net.net->ns.inum;
    } else if (!mine) {
        if (!lab_device(to, &t))
            return 0;
        d.netns = d.ifindex = 0;    /* into a lab device from elsewhere */
    }
    struct fate_key k = {.kind = DEVMAP_XMIT, .netns = d.netns, .ifindex = d.ifindex, .code = err,
                         .to_netns = t.netns, .to_ifindex = t.ifindex};
    count(&k, sent, drops);
    return 0;
}

SEC("tp_btf/xdp_bulk_tx")
int BPF_PROG(fate_xdp_bulk_tx, const struct net_device *dev, int sent, int drops, int err)
{
    struct dev_key d;
    if (!lab_device(dev, &d))
        return 0;
    struct fate_key k = {.kind = BULK_TX, .netns = d.netns, .ifindex = d.ifindex, .code = err};
    count(&k, sent, drops);
    return 0;
}

SEC("tp_btf/xdp_cpumap_enqueue")
int BPF_PROG(fate_xdp_cpumap_enqueue, int map_id, unsigned int processed, unsigned int drops, int to_cpu)
{
    __u32 id = map_id;
    if (!bpf_map_lookup_elem(&cpumaps, &id))
        return 0;
    struct fate_key k = {.kind = CPUMAP_ENQUEUE, .map_id = id, .map_index = to_cpu};
    count(&k, processed, drops);
    return 0;
}

/* code 0: frames the kthread turned into skbs (drops: allocation failures); 1, 2, 3: what
 * the entry's own program did with them (XDP_PASS, XDP_DROP, XDP_REDIRECT) */
SEC("tp_btf/xdp_cpumap_kthread")
int BPF_PROG(fate_xdp_cpumap_kthread, int map_id, unsigned int processed, unsigned int drops, int sched,
             struct xdp_cpumap_stats *stats)
{
    __u32 id = map_id;
    if (!bpf_map_lookup_elem(&cpumaps, &id))
        return 0;
    struct fate_key k = {.kind = CPUMAP_KTHREAD, .map_id = id, .map_index = bpf_get_smp_processor_id()};
    if (processed || drops)
        count(&k, processed, drops);
    if (!stats)
        return 0;
    unsigned int pass = stats->pass, drop = stats->drop, redirect = stats->redirect;
    if (pass) {
        k.code = 1;
        count(&k, pass, 0);
    }
    if (drop) {
        k.code = 2;
        count(&k, drop, drop);
    }
    if (redirect) {
        k.code = 3;
        count(&k, redirect, 0);
    }
    return 0;
}

static __always_inline void skb_drop(struct sk_buff *skb, void *location, __u32 reason)
{
    struct dev_key d;
    if (!skb || !lab_device(skb->dev, &d))
        return;
    struct fate_key k = {.kind = KFREE_SKB, .netns = d.netns, .ifindex = d.ifindex, .code = reason,
                         .location = (__u64)location};
    count(&k, 1, 1);

    struct frame_event *e = bpf_ringbuf_reserve(&frames, sizeof(*e), 0);
    if (!e) {
        count_lost(0);    /* slot 0: skb drops whose bytes were not kept */
        return;
    }
    unsigned char *head = skb->head, *data = skb->data;
    __u16 mac = skb->mac_header;
    unsigned char *start = (mac == (__u16)~0U) ? data : head + mac;
    __u32 len = skb->len, linear = len - skb->data_len;
    __u32 before = data > start ? (__u32)(data - start) : 0;
    e->location = (__u64)location;
    e->time = bpf_ktime_get_ns();
    e->netns = d.netns;
    e->ifindex = d.ifindex;
    e->reason = reason;
    e->len = len + before;
    e->caplen = linear + before < FRAME_BYTES ? linear + before : FRAME_BYTES;
    e->pad = 0;
    if (bpf_probe_read_kernel(e->data, FRAME_BYTES, start))
        e->caplen = 0;
    bpf_ringbuf_submit(e, 0);
}

SEC("tp_btf/kfree_skb")
int fate_kfree_skb(unsigned long long *ctx)
{
    skb_drop((struct sk_buff *)ctx[0], (void *)untyped_arg(ctx, 1), (__u32)ctx[2]);
    return 0;
}

/* Kernels before 5.17 pass no reason: the lab loads this one instead. */
SEC("tp_btf/kfree_skb")
int fate_kfree_skb_noreason(unsigned long long *ctx)
{
    skb_drop((struct sk_buff *)ctx[0], (void *)untyped_arg(ctx, 1), 0);
    return 0;
}

char _license[] SEC("license") = "GPL";
