// Command l2fwdctl imitates the seed's fast_l2fwd Go control plane: it loads the
// forwarder's ELF object (bpf/l2fwd.bpf.o) with cilium/ebpf, fills txport_map and
// l2fwd_map, and attaches xdp_l2fwd with netlink.LinkSetXdpFdWithFlags, the way the
// seed did, including its bugs, each behind a flag so the lab can switch it on or off:
//
//   - -flags seed: the seed attached with flags 0, so on a veth the kernel picks native
//     mode; a sane control plane (-flags auto) asks for generic mode on a veth.
//   - -layout seed: the seed wrote the value of l2fwd_map from the Go struct
//     struct{ Outif int; DstMac [6]byte } through unsafe.Pointer(&v). The Go struct is
//     16 bytes (Outif is 8), the map value 12 (struct fwd { __u32 outif; __u8
//     dst_mac[6]; }), so the kernel keeps outif followed by 4 zero bytes and the first
//     2 bytes of the MAC. -layout fixed writes the 12 bytes the C struct expects.
//   - -key-order host: the third suspect, the IPv4 destination as a host-order
//     uint32 (192.168.0.1 -> 01 00 a8 c0) instead of the bytes of the IP header
//     (c0 a8 00 01, -key-order network).
//
// Run it inside the forwarder's network namespace (ip netns exec NS l2fwdctl ...):
// interface names and the ifindexes written to the devmap are resolved there. On
// success it prints one JSON line and exits, leaving the program attached (the netlink
// attachment holds the program, the program holds its maps). Nothing is pinned.
//
// Build offline from Debian's packages (golang-go, golang-github-cilium-ebpf-dev,
// golang-github-vishvananda-netlink-dev): `make ctl`, i.e.
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o build/l2fwdctl ./controlplane/l2fwdctl
package main

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strings"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const (
	xdpFlagsSkbMode = 2 // XDP_FLAGS_SKB_MODE: generic XDP
	xdpFlagsDrvMode = 4 // XDP_FLAGS_DRV_MODE: native XDP
)

// seedFwd is the seed's value type: 16 bytes in Go, written through unsafe.Pointer
// into a map whose value is 12 bytes.
type seedFwd struct {
	Outif  int
	DstMac [6]byte
}

// fixedFwd matches struct fwd of bpf/l2fwd.bpf.c byte for byte (12 bytes).
type fixedFwd struct {
	Outif  uint32
	DstMac [6]byte
	_      [2]byte
}

type route struct {
	spec  string
	dst   net.IP // 4 bytes
	outif string
	mac   net.HardwareAddr
}

type routeFlags []string

func (r *routeFlags) String() string     { return strings.Join(*r, " ") }
func (r *routeFlags) Set(s string) error { *r = append(*r, s); return nil }

type write struct {
	Map   string `json:"map"`
	Key   string `json:"key"`
	Value string `json:"value"`
}

type result struct {
	ProgID     uint32            `json:"prog_id"`
	Iface      string            `json:"iface"`
	Ifindex    int               `json:"ifindex"`
	Flags      int               `json:"flags"`
	AttachMode string            `json:"attach_mode"`
	Layout     string            `json:"layout"`
	KeyOrder   string            `json:"key_order"`
	Maps       map[string]uint32 `json:"maps"`
	Writes     []write           `json:"writes"`
}

// failure is an error already phrased as "<verb object>: <reason>".
type failure struct{ msg string }

func (f failure) Error() string { return f.msg }

func fail(format string, args ...interface{}) error {
	return failure{fmt.Sprintf(format, args...)}
}

func main() {
	defer func() {
		// No Go panic trace ever reaches the user: a bug in this tool is still an error line.
		if r := recover(); r != nil {
			fmt.Fprintf(os.Stderr, "l2fwdctl: internal error: %v\n", r)
			os.Exit(1)
		}
	}()
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "l2fwdctl: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("l2fwdctl", flag.ContinueOnError)
	// Flag errors come out as one "l2fwdctl: parse arguments: ..." line, not with the
	// usage text; -h prints the usage on stdout.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	obj := fs.String("obj", "bpf/l2fwd.bpf.o", "the forwarder's ELF object")
	progName := fs.String("prog", "xdp_l2fwd", "the XDP program to attach")
	iface := fs.String("iface", "", "the interface to attach to (required)")
	flagsMode := fs.String("flags", "auto", "attach flags: auto (veth: skb, else drv), seed (0, the seed's bug), skb (2), drv (4)")
	layout := fs.String("layout", "fixed", "l2fwd_map value: fixed (12-byte struct fwd) or seed (16-byte Go struct through unsafe.Pointer)")
	keyOrder := fs.String("key-order", "network", "l2fwd_map key: network (IP header bytes) or host (host-order uint32)")
	var routeSpecs routeFlags
	fs.Var(&routeSpecs, "route", "DST=OUTIF,MAC (repeatable), e.g. 192.168.0.1=veth2,00:00:11:22:33:44")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Println("usage: l2fwdctl -iface NAME [-obj PATH] [-prog NAME] [-flags auto|seed|skb|drv]\n" +
				"                [-layout seed|fixed] [-key-order network|host] [-route DST=OUTIF,MAC]...")
			fs.SetOutput(os.Stdout)
			fs.PrintDefaults()
			os.Exit(0)
		}
		return fail("parse arguments: %v", err)
	}
	if fs.NArg() > 0 {
		return fail("parse arguments: unexpected argument %q", fs.Arg(0))
	}
	if *iface == "" {
		return fail("parse arguments: -iface is required")
	}
	if *layout != "fixed" && *layout != "seed" {
		return fail("parse arguments: -layout %q: want seed or fixed", *layout)
	}
	if *keyOrder != "network" && *keyOrder != "host" {
		return fail("parse arguments: -key-order %q: want network or host", *keyOrder)
	}
	switch *flagsMode {
	case "auto", "seed", "skb", "drv":
	default:
		return fail("parse arguments: -flags %q: want auto, seed, skb or drv", *flagsMode)
	}

	// Validate everything before the first side effect.
	routes := make([]route, 0, len(routeSpecs))
	for _, s := range routeSpecs {
		r, err := parseRoute(s)
		if err != nil {
			return err
		}
		routes = append(routes, r)
	}
	link, err := netlink.LinkByName(*iface)
	if err != nil {
		return fail("find interface %s: %v", *iface, err)
	}
	outifs := map[string]int{}
	for _, r := range routes {
		if _, ok := outifs[r.outif]; ok {
			continue
		}
		l, err := netlink.LinkByName(r.outif)
		if err != nil {
			return fail("find interface %s (route %s): %v", r.outif, r.spec, err)
		}
		outifs[r.outif] = l.Attrs().Index
	}
	var xdpFlags int
	switch *flagsMode {
	case "auto":
		if link.Type() == "veth" {
			xdpFlags = xdpFlagsSkbMode
		} else {
			xdpFlags = xdpFlagsDrvMode
		}
	case "seed":
		xdpFlags = 0 // the seed's bug: no mode, the kernel attaches natively on a veth
	case "skb":
		xdpFlags = xdpFlagsSkbMode
	case "drv":
		xdpFlags = xdpFlagsDrvMode
	}

	// A no-op on kernels >= 5.11, which charge BPF memory to the memory cgroup; if it
	// fails (no CAP_SYS_RESOURCE on an old kernel) the load below says why, so the
	// error is deliberately ignored.
	_ = rlimit.RemoveMemlock()

	spec, err := ebpf.LoadCollectionSpec(*obj)
	if err != nil {
		return fail("load object %s: %v", *obj, err)
	}
	progSpec, ok := spec.Programs[*progName]
	if !ok {
		return fail("find program %s in %s: not there (programs: %s)", *progName, *obj, strings.Join(sortedKeys(spec.Programs), ", "))
	}
	if progSpec.Type != ebpf.XDP {
		return fail("find program %s in %s: type %s, not XDP", *progName, *obj, progSpec.Type)
	}
	for _, name := range []string{"l2fwd_map", "txport_map"} {
		if _, ok := spec.Maps[name]; !ok {
			return fail("find map %s in %s: not there", name, *obj)
		}
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		return fail("load %s into the kernel: %v", *obj, err)
	}
	// Closing our fds at exit is fine: the netlink attachment keeps the program, and
	// the program its maps, alive.
	defer coll.Close()
	prog := coll.Programs[*progName]

	res := result{
		Iface:    *iface,
		Ifindex:  link.Attrs().Index,
		Flags:    xdpFlags,
		Layout:   *layout,
		KeyOrder: *keyOrder,
		Maps:     map[string]uint32{},
		Writes:   []write{},
	}
	for name, m := range coll.Maps {
		info, err := m.Info()
		if err != nil {
			return fail("read info of map %s: %v", name, err)
		}
		id, ok := info.ID()
		if !ok {
			return fail("read info of map %s: the kernel reports no map ID", name)
		}
		res.Maps[name] = uint32(id)
	}
	pinfo, err := prog.Info()
	if err != nil {
		return fail("read info of program %s: %v", *progName, err)
	}
	pid, ok := pinfo.ID()
	if !ok {
		return fail("read info of program %s: the kernel reports no program ID", *progName)
	}
	res.ProgID = uint32(pid)

	// Fill the maps before attaching, so the program never runs half-configured.
	txport, l2fwd := coll.Maps["txport_map"], coll.Maps["l2fwd_map"]
	for _, r := range routes {
		ifindex := outifs[r.outif]

		txKey := uint32(ifindex)
		if err := txport.Put(txKey, uint32(ifindex)); err != nil {
			return fail("write txport_map[%d] (route %s): %v", ifindex, r.spec, err)
		}
		w, err := readBack(txport, "txport_map", txKey)
		if err != nil {
			return err
		}
		res.Writes = append(res.Writes, w)

		var key interface{}
		if *keyOrder == "network" {
			key = []byte(r.dst) // c0 a8 00 01 for 192.168.0.1, as in the IP header
		} else {
			key = binary.BigEndian.Uint32(r.dst) // stored native (little) endian: 01 00 a8 c0
		}
		var mac [6]byte
		copy(mac[:], r.mac)
		if *layout == "seed" {
			// The seed's write, verbatim: the kernel copies value_size (12) bytes from
			// the pointer: Outif's 8 bytes (the ifindex, then 4 zero bytes) and
			// DstMac[0:4]. outif reads right; dst_mac (value bytes 4-9) becomes
			// 00 00 00 00 + the MAC's first 2 bytes, and the MAC's bytes 2-3 land in
			// the tail padding (07 00 00 00 00 00 00 00 00 00 11 22 for ifindex 7
			// and 00:00:11:22:33:44).
			fwd := seedFwd{Outif: ifindex, DstMac: mac}
			err = l2fwd.Put(key, unsafe.Pointer(&fwd))
		} else {
			fwd := fixedFwd{Outif: uint32(ifindex), DstMac: mac}
			err = l2fwd.Put(key, fwd)
		}
		if err != nil {
			return fail("write l2fwd_map (route %s): %v", r.spec, err)
		}
		w, err = readBack(l2fwd, "l2fwd_map", key)
		if err != nil {
			return err
		}
		res.Writes = append(res.Writes, w)
	}

	if err := netlink.LinkSetXdpFdWithFlags(link, prog.FD(), xdpFlags); err != nil {
		if msg := kernelReason(link.Attrs().Index, prog.FD(), xdpFlags); msg != "" {
			return fail("attach %s to %s with flags %d: %v (%s)", *progName, *iface, xdpFlags, err, msg)
		}
		return fail("attach %s to %s with flags %d: %v", *progName, *iface, xdpFlags, err)
	}
	after, err := netlink.LinkByName(*iface)
	if err != nil {
		return fail("re-read interface %s after attaching: %v", *iface, err)
	}
	x := after.Attrs().Xdp
	if x == nil || !x.Attached {
		return fail("attach %s to %s: the kernel reports no XDP program on the interface afterwards", *progName, *iface)
	}
	if x.ProgId != res.ProgID {
		return fail("attach %s to %s: the interface runs program %d, not ours (%d)", *progName, *iface, x.ProgId, res.ProgID)
	}
	switch x.AttachMode {
	case 1:
		res.AttachMode = "drv"
	case 2:
		res.AttachMode = "skb"
	case 3:
		res.AttachMode = "hw"
	default:
		res.AttachMode = fmt.Sprintf("mode %d", x.AttachMode)
	}

	out, err := json.Marshal(res)
	if err != nil {
		return fail("encode result: %v", err)
	}
	fmt.Println(string(out))
	return nil
}

func parseRoute(s string) (route, error) {
	r := route{spec: s}
	eq := strings.SplitN(s, "=", 2)
	if len(eq) != 2 {
		return r, fail("parse route %q: want DST=OUTIF,MAC", s)
	}
	ip := net.ParseIP(eq[0]).To4()
	if ip == nil {
		return r, fail("parse route %q: %q is not an IPv4 address", s, eq[0])
	}
	comma := strings.SplitN(eq[1], ",", 2)
	if len(comma) != 2 || comma[0] == "" {
		return r, fail("parse route %q: want DST=OUTIF,MAC", s)
	}
	mac, err := net.ParseMAC(comma[1])
	if err != nil || len(mac) != 6 {
		return r, fail("parse route %q: %q is not a 6-byte MAC address", s, comma[1])
	}
	r.dst, r.outif, r.mac = ip, comma[0], mac
	return r, nil
}

// readBack reports a write as the kernel stored it: the key bytes and the value read
// back from the map.
func readBack(m *ebpf.Map, name string, key interface{}) (write, error) {
	var keyBytes []byte
	switch k := key.(type) {
	case []byte:
		keyBytes = k
	case uint32:
		keyBytes = make([]byte, 4)
		binary.LittleEndian.PutUint32(keyBytes, k) // native endian on amd64
	}
	val, err := m.LookupBytes(key)
	if err != nil {
		return write{}, fail("read back %s[%s]: %v", name, hexBytes(keyBytes), err)
	}
	if val == nil {
		return write{}, fail("read back %s[%s]: no such key after writing it", name, hexBytes(keyBytes))
	}
	return write{Map: name, Key: hexBytes(keyBytes), Value: hexBytes(val)}, nil
}

func hexBytes(b []byte) string {
	parts := make([]string, len(b))
	for i, c := range b {
		parts[i] = fmt.Sprintf("%02x", c)
	}
	return strings.Join(parts, " ")
}

func sortedKeys(m map[string]*ebpf.ProgramSpec) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// kernelReason recovers the kernel's explanation of a refused attach. The netlink
// package Debian ships does not ask for extended acks, so its error is a bare errno
// ("device or resource busy"); this replays the same RTM_SETLINK request (IFLA_XDP
// with IFLA_XDP_FD and, when non-zero, IFLA_XDP_FLAGS) on a socket with
// NETLINK_EXT_ACK and returns the NLMSGERR_ATTR_MSG text, or "" if there is none.
// Refusals are deterministic (wrong mode, another program in the other mode, MTU),
// so the replay fails the same way and changes nothing.
func kernelReason(ifindex, fd, flags int) string {
	sock, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return ""
	}
	defer unix.Close(sock)
	if unix.SetsockoptInt(sock, unix.SOL_NETLINK, unix.NETLINK_EXT_ACK, 1) != nil {
		return ""
	}
	_ = unix.SetsockoptInt(sock, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1) // don't echo our request back
	if unix.Bind(sock, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}) != nil {
		return ""
	}

	ne := binary.LittleEndian // native endian on amd64
	attr := func(typ uint16, payload []byte) []byte {
		b := make([]byte, 4, 4+len(payload)+3)
		ne.PutUint16(b[0:], uint16(4+len(payload)))
		ne.PutUint16(b[2:], typ)
		b = append(b, payload...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
		return b
	}
	u32 := func(v uint32) []byte { b := make([]byte, 4); ne.PutUint32(b, v); return b }
	const iflaXdpFd, iflaXdpFlags = 1, 3
	xdp := attr(iflaXdpFd, u32(uint32(fd)))
	if flags != 0 {
		xdp = append(xdp, attr(iflaXdpFlags, u32(uint32(flags)))...)
	}
	body := make([]byte, unix.SizeofIfInfomsg)
	body[0] = unix.AF_UNSPEC
	ne.PutUint32(body[4:], uint32(ifindex))
	body = append(body, attr(unix.IFLA_XDP|unix.NLA_F_NESTED, xdp)...)
	msg := make([]byte, unix.NLMSG_HDRLEN, unix.NLMSG_HDRLEN+len(body))
	ne.PutUint32(msg[0:], uint32(unix.NLMSG_HDRLEN+len(body)))
	ne.PutUint16(msg[4:], unix.RTM_SETLINK)
	ne.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	ne.PutUint32(msg[8:], 1)
	msg = append(msg, body...)
	if unix.Sendto(sock, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}) != nil {
		return ""
	}

	buf := make([]byte, 65536)
	n, _, err := unix.Recvfrom(sock, buf, 0)
	if err != nil || n < unix.NLMSG_HDRLEN+4+unix.NLMSG_HDRLEN {
		return ""
	}
	buf = buf[:n]
	if ne.Uint16(buf[4:]) != unix.NLMSG_ERROR {
		return ""
	}
	hdrFlags := ne.Uint16(buf[6:])
	if hdrFlags&unix.NLM_F_ACK_TLVS == 0 {
		return ""
	}
	// struct nlmsgerr { int error; struct nlmsghdr msg; <payload unless capped> }, then TLVs
	off := unix.NLMSG_HDRLEN + 4
	origLen := int(ne.Uint32(buf[off:]))
	if hdrFlags&unix.NLM_F_CAPPED != 0 {
		off += unix.NLMSG_HDRLEN
	} else {
		off += (origLen + 3) &^ 3
	}
	for off+4 <= len(buf) {
		l, t := int(ne.Uint16(buf[off:])), ne.Uint16(buf[off+2:])
		if l < 4 || off+l > len(buf) {
			break
		}
		if t == unix.NLMSGERR_ATTR_MSG {
			return strings.TrimRight(string(buf[off+4:off+l]), "\x00")
		}
		off += (l + 3) &^ 3
	}
	return ""
}
