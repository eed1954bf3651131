/* fast_l2fwd: the XDP L2 forwarder of the seed notes, in bcc C.
 *
 *   rx frame ──► qidconf_map[rx_queue] set? ──yes──► xsks_map[rx_queue]   (AF_XDP)
 *                      │ no
 *                      ▼
 *               IPv4 and daddr in l2fwd_map? ──yes──► eth.h_dest = dst_mac,
 *                      │ no                            redirect txport_map[outif]
 *                      ▼
 *                  XDP_PASS
 *
 * verdict_cnt counts what the program returned, indexed by the XDP action
 * (0 aborted, 1 drop, 2 pass, 3 tx, 4 redirect) plus VERDICT_MALFORMED for
 * frames it could not parse (those are passed too, and counted in both).
 * redirect_key records, per CPU, the key of the last redirect it asked for
 * (slot 0: txport_map, slot 1: xsks_map; key + 1, 0 = none): the lab's unit
 * backend reads it, as BPF_PROG_TEST_RUN does not report a redirect's target.
 *
 * bpf/l2fwd.bpf.c is the same forwarder in libbpf style, for clang.
 *
 * Build flags: -DL2FWD_DEBUG turns on bpf_trace_printk lines, each starting
 * with "l2fwd[<tag>]", where <tag> is what user space wrote in trace_tag[0]
 * (the lab writes one per test, so that each test finds its own lines).
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>

#define VERDICT_MALFORMED 5
#define VERDICT_SLOTS 6

#ifdef L2FWD_DEBUG
BPF_ARRAY(trace_tag, u32, 1);

static __always_inline u32 tag(void)
{
    u32 zero = 0;
    u32 *t = trace_tag.lookup(&zero);
    return t ? *t : 0;
}

/* bcc rewrites bpf_trace_printk() only outside macros: call the raw helper (at most 3 arguments). */
#define dbg(fmt, ...) ({ char _fmt[] = "l2fwd[%u] " fmt; \
                         bpf_trace_printk_(_fmt, sizeof(_fmt), tag(), ##__VA_ARGS__); })
#else
#define dbg(fmt, ...) do { } while (0)
#endif

struct fwd {
    u32 outif;        /* egress ifindex, also the key of txport_map */
    u8 dst_mac[6];    /* new destination MAC; 2 bytes of tail padding follow */
};

BPF_ARRAY(qidconf_map, u32, 64);
BPF_HASH(l2fwd_map, u32, struct fwd, 64);   /* key: daddr as it sits in the IP header */
BPF_DEVMAP(txport_map, 64);
BPF_XSKMAP(xsks_map, 64);
BPF_PERCPU_ARRAY(verdict_cnt, u64, VERDICT_SLOTS);
BPF_PERCPU_ARRAY(redirect_key, u32, 2);

static __always_inline int count(u32 slot, int action)
{
    u64 *n = verdict_cnt.lookup(&slot);
    if (n)
        *n += 1;
    return action;
}

static __always_inline int verdict(int action)
{
    return count(action, action);
}

static __always_inline void record_key(u32 slot, u32 key)
{
    u32 *k = redirect_key.lookup(&slot);
    if (k)
        *k = key + 1;
}

int xdp_l2fwd(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    u32 qid = ctx->rx_queue_index;

    u32 *qconf = qidconf_map.lookup(&qid);
    if (qconf && *qconf) {
        dbg("queue %u to xsks_map\n", qid);
        record_key(1, qid);
        return verdict(xsks_map.redirect_map(qid, XDP_PASS));
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

    u32 daddr = ip->daddr;
    struct fwd *f = l2fwd_map.lookup(&daddr);
    if (!f) {
        dbg("no route for %x, pass\n", bpf_ntohl(daddr));
        return verdict(XDP_PASS);
    }

    __builtin_memcpy(eth->h_dest, f->dst_mac, ETH_ALEN);
    record_key(0, f->outif);
    int action = txport_map.redirect_map(f->outif, 0);
    dbg("%x to outif %u\n", bpf_ntohl(daddr), f->outif);
    dbg("redirect action %d\n", action);
    return verdict(action);
}
