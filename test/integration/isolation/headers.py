#!/usr/bin/python3
"""Echo requests behind one IPv6 extension header, for the policy-profile test
(run inside a VM's namespace as /usr/bin/python3: Debian's scapy).

headers.py send <kind> <flow-label> <own-mac> <own-ip> <peer-mac> <peer-ip>
  kind: echo (no header), hbh, rt0, rt2 (Mobile IPv6), rt4 (segment routing), frag
Every frame carries the flow label, so packets.py's sniffer can tell which arrived.
"""
import sys
from scapy.all import (Ether, IPv6, ICMPv6EchoRequest, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting,
                       IPv6ExtHdrSegmentRouting, IPv6ExtHdrFragment, fragment6, sendp, conf)

conf.verb = 0


def frames(kind, fl, mac, ip, vmac, vip):
    e = Ether(src=mac, dst=vmac)
    six = IPv6(src=ip, dst=vip, fl=fl)
    echo = ICMPv6EchoRequest(data=b"metald-policy-test")
    if kind == "echo": return [e / six / echo]
    if kind == "hbh": return [e / six / IPv6ExtHdrHopByHop() / echo]
    # Type 0 (deprecated, RFC 5095) is dropped by every port whatever the policy; 2 and 4 are not.
    if kind == "rt0": return [e / six / IPv6ExtHdrRouting(type=0, segleft=0, addresses=[vip]) / echo]
    if kind == "rt2": return [e / six / IPv6ExtHdrRouting(type=2, segleft=1, addresses=[ip]) / echo]
    if kind == "rt4": return [e / six / IPv6ExtHdrSegmentRouting(segleft=0, addresses=[vip]) / echo]
    if kind == "frag":
        return [e / f for f in fragment6(six / IPv6ExtHdrFragment() / ICMPv6EchoRequest(data=b"x" * 200), 120)]
    raise SystemExit("unknown kind " + kind)


if __name__ == "__main__":
    if sys.argv[1] != "send":
        raise SystemExit(__doc__)
    for f in frames(sys.argv[2], int(sys.argv[3]), *sys.argv[4:8]):
        sendp(f, iface="eth0")
