#!/usr/bin/python3
# Crafted IPv6 packets for the port-guard tests (run inside a VM namespace
# with `ip netns exec`, as /usr/bin/python3: Debian's scapy).
#   packets.py send <attack> <flow-label> <own-mac> <own-ip> <victim-mac> <victim-ip> <gateway-ip>
#   packets.py sniff <seconds> [ready-file] -> (creates ready-file once capturing) prints the flow labels of every IPv6 frame seen on eth0 (JSON),
#                                        stopping early at flow label 0xfffff (the end marker)
#   packets.py flood <attack> <pps> <seconds> <own-mac> <own-ip> <victim-mac> <victim-ip>
#                                     -> sends paced frames, prints {"sent": n, "seconds": t}
# Every packet of attack N carries IPv6 flow label N, so the sniffer can tell which arrived.
import ipaddress, json, os, socket, sys, time
from scapy.all import (Ether, Dot1Q, Dot1AD, IPv6, ICMPv6EchoRequest, ICMPv6ND_RA, ICMPv6ND_NS, ICMPv6ND_NA,
                       ICMPv6ND_Redirect, ICMPv6NDOptPrefixInfo, ICMPv6NDOptSrcLLAddr, ICMPv6NDOptDstLLAddr,
                       ICMPv6PacketTooBig, IPv6ExtHdrHopByHop, IPv6ExtHdrDestOpt, IPv6ExtHdrRouting,
                       IPv6ExtHdrFragment, UDP, TCP, Raw, fragment6, in6_getnsma, in6_getnsmac, sniff, sendp, conf)
from socket import inet_pton, AF_INET6
from scapy.layers.dhcp6 import DHCP6_Reply, DHCP6OptServerId, DHCP6OptClientId

conf.verb = 0
ALL = "33:33:00:00:00:01"

def lladdr(mac):
    b = [int(x, 16) for x in mac.split(":")]
    b[0] ^= 2
    return "fe80::%02x%02x:%02xff:fe%02x:%02x%02x" % tuple(b)

def frames(name, fl, mac, ip, vmac, vip, gw):
    ll = lladdr(mac)
    e = Ether(src=mac, dst=vmac)
    em = Ether(src=mac, dst=ALL)
    six = lambda src=ip, dst=vip, **kw: IPv6(src=src, dst=dst, fl=fl, **kw)
    ra = ICMPv6ND_RA(routerlifetime=1800) / ICMPv6NDOptPrefixInfo(prefix="2001:db8:bad::", prefixlen=64)
    echo = ICMPv6EchoRequest(data=b"metald-guard-test")
    if name == "echo": return [e / six() / echo]
    if name == "echo-gateway": return [Ether(src=mac) / six(dst=gw) / echo]
    if name == "ra": return [em / six(src=ll, dst="ff02::1", hlim=255) / ra]
    if name == "ra-hbh": return [em / six(src=ll, dst="ff02::1", hlim=255) / IPv6ExtHdrHopByHop() / ra]
    if name == "ra-dstopts": return [em / six(src=ll, dst="ff02::1", hlim=255) / IPv6ExtHdrDestOpt() / ra]
    if name == "ra-fragmented":
        pkt = six(src=ll, dst="ff02::1", hlim=255) / IPv6ExtHdrFragment() / ra / Raw(b"\0" * 64)
        return [em / f for f in fragment6(pkt, 80)]
    if name == "ra-vlan": return [Ether(src=mac, dst=ALL) / Dot1Q(vlan=5) / six(src=ll, dst="ff02::1", hlim=255) / ra]
    if name == "ra-qinq": return [Ether(src=mac, dst=ALL) / Dot1AD(vlan=7) / six(src=ll, dst="ff02::1", hlim=255) / ra]
    if name == "udp-vlan":  # own MAC and address, tagged: the fast path must not take it
        return [e / Dot1Q(vlan=5) / six() / UDP(sport=40000, dport=9) / Raw(b"tagged")]
    net = ipaddress.IPv6Network(ip + "/64", strict=False).network_address
    if name == "dad":  # duplicate address detection: from ::, for its own address (to the victim's MAC so it is seen)
        return [e / six(src="::", dst=socket.inet_ntop(AF_INET6, in6_getnsma(inet_pton(AF_INET6, ip))), hlim=255) / ICMPv6ND_NS(tgt=ip)]
    if name == "unspecified-echo": return [e / six(src="::") / echo]
    if name == "privacy": return [e / six(src=str(net + 0x1234_5678_9abc_def0)) / echo]  # any address of its /64
    if name == "spoof-next-64": return [e / six(src=str(net + (1 << 64) + 0x10)) / echo]
    if name == "spoof-random": return [e / six(src="fd00:77::99") / echo]
    if name == "spoof-neighbour": return [e / six(src=vip) / echo]
    if name == "spoof-other-tenant": return [e / six(src=sys.argv[9]) / echo]
    if name == "spoof-outside": return [e / six(src="2001:db8::1") / echo]
    if name == "spoof-mac": return [Ether(src="52:54:00:de:ad:01", dst=vmac) / six() / echo]
    if name == "na-spoof-target":  # claim the neighbour's address
        return [em / six(src=ip, dst="ff02::1", hlim=255) / ICMPv6ND_NA(tgt=vip, R=0, S=0, O=1) / ICMPv6NDOptDstLLAddr(lladdr=mac)]
    if name == "na-spoof-lla":     # own target, someone else's MAC in the option
        return [em / six(src=ip, dst="ff02::1", hlim=255) / ICMPv6ND_NA(tgt=ip, R=0, S=0, O=1) / ICMPv6NDOptDstLLAddr(lladdr=vmac)]
    if name == "ns-spoof-lla":
        return [Ether(src=mac, dst=in6_getnsmac(inet_pton(AF_INET6, vip))) / six(src=ip, dst="ff02::1:ff00:0", hlim=255) /
                ICMPv6ND_NS(tgt=vip) / ICMPv6NDOptSrcLLAddr(lladdr="52:54:00:de:ad:02")]
    if name == "redirect":
        return [e / six(src=ll, hlim=255) / ICMPv6ND_Redirect(tgt=ll, dst="2001:db8::1")]
    if name == "spoof-tcp": return [e / six(src="fd00:77::99") / TCP(sport=40000, dport=80, flags="S")]
    if name == "dhcpv6-reply-unicast":  # from the VM's own global address: must not ride the fast path
        return [e / six() / UDP(sport=547, dport=546) / DHCP6_Reply(trid=2) / DHCP6OptServerId() / DHCP6OptClientId()]
    if name == "dhcpv6-reply":
        return [em / six(src=ll, dst="ff02::1") / UDP(sport=547, dport=546) / DHCP6_Reply(trid=1) / DHCP6OptServerId() / DHCP6OptClientId()]
    if name == "rh0": return [e / six() / IPv6ExtHdrRouting(type=0, addresses=["fd00:77::1"]) / echo]
    if name == "hbh": return [e / six() / IPv6ExtHdrHopByHop() / echo]
    if name == "dstopts": return [e / six() / IPv6ExtHdrDestOpt() / echo]
    if name == "fragment": return [e / f for f in fragment6(six() / IPv6ExtHdrFragment() / ICMPv6EchoRequest(data=b"x" * 200), 120)]
    if name == "first-fragment-split":  # RFC 7112: the chain does not fit in the first fragment
        return [e / six(nh=44) / IPv6ExtHdrFragment(nh=60, m=1, offset=0, id=77) / Raw(b"\x3a\x05")]
    if name == "ns-fragmented":
        pkt = six(src=ip, dst=vip, hlim=255) / IPv6ExtHdrFragment() / ICMPv6ND_NS(tgt=vip) / ICMPv6NDOptSrcLLAddr(lladdr=mac) / Raw(b"\0" * 64)
        return [e / f for f in fragment6(pkt, 80)]
    if name == "packet-too-big":
        inner = IPv6(src=vip, dst=ip) / UDP(sport=1, dport=2) / Raw(b"y" * 64)
        return [e / six() / ICMPv6PacketTooBig(mtu=1280) / inner]
    if name == "ra-host":  # an RA as a router on the bridge sends it: no prefix, router lifetime 0 (harmless)
        return [Ether(src=mac, dst=ALL) / six(src=ll, dst="ff02::1", hlim=255) / ICMPv6ND_RA(routerlifetime=0)]
    if name == "nd-flood": return [em / six(src=ip, dst="ff02::1:ff00:12", hlim=255) / ICMPv6ND_NS(tgt=vip) / ICMPv6NDOptSrcLLAddr(lladdr=mac)]
    if name == "icmp-flood": return [e / six() / echo]
    if name == "mcast-flood": return [Ether(src=mac, dst="33:33:00:00:12:34") / six(dst="ff02::1234") / UDP(sport=9, dport=9) / Raw(b"z" * 20)]
    raise SystemExit("unknown attack " + name)

def main():
    cmd = sys.argv[1]
    if cmd == "send":
        name, fl = sys.argv[2], int(sys.argv[3])
        for f in frames(name, fl, *sys.argv[4:9]):
            sendp(f, iface="eth0")
    elif cmd == "sniff":
        seen = []
        def note(p):
            if IPv6 in p: seen.append(p[IPv6].fl)
        ready = lambda: open(sys.argv[3], "w").close() if len(sys.argv) > 3 else None
        sniff(iface="eth0", timeout=float(sys.argv[2]), prn=note, store=False, started_callback=ready,
              stop_filter=lambda p: IPv6 in p and p[IPv6].fl == 0xfffff)
        print(json.dumps(seen), flush=True)
    elif cmd == "flood":
        name, pps, secs = sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
        raw = bytes(frames(name, 0xabcde, *sys.argv[5:9], "::")[0])
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.bind((os.environ.get("IFACE", "eth0"), 0))
        start = time.monotonic(); n = 0
        while True:
            now = time.monotonic() - start
            if now >= secs: break
            due = int(now * pps) + 1
            while n < due:
                s.send(raw); n += 1
            time.sleep(0.0005)
        print(json.dumps({"sent": n, "seconds": time.monotonic() - start}), flush=True)
    else:
        raise SystemExit("usage: packets.py send|sniff|flood ...")

main()
