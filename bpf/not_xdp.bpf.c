// SPDX-License-Identifier: GPL-2.0
/* Not an XDP program: a socket filter that keeps nothing (returns 0, so every packet
 * is truncated to zero bytes). Its only use is to be handed to the lab as if it were
 * an XDP object, to see it refused as "not an XDP program" rather than with the
 * kernel's EINVAL from an attach of the wrong program type. No maps.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

SEC("socket")
int sock_filter_all(struct __sk_buff *skb)
{
    return 0;
}

char _license[] SEC("license") = "GPL";
