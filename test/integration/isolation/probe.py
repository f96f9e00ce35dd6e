#!/usr/bin/python3
"""Probes for the isolation test, run inside a VM's namespace.

serve ADDR PORT          TCP and UDP echo on ADDR, PORT; prints "got <proto> <source>" per request.
ask SRC ADDR PROTO PORT  one request (tcp|udp) from SRC, prints "ok" when the echo came back, else "no".

Both ends use the VM's configured address, not its SLAAC one, so a reply is
from the address the request went to (what a flow is).
"""
import socket
import sys
import threading


def serve(addr, port):
    u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    u.bind((addr, port))
    t = socket.socket(socket.AF_INET6)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((addr, port))
    t.listen(64)
    print("ready", flush=True)

    def udp():
        while True:
            d, a = u.recvfrom(100)
            print("got udp", a[0], flush=True)
            u.sendto(d, a)

    threading.Thread(target=udp, daemon=True).start()
    while True:
        c, a = t.accept()
        print("got tcp", a[0], flush=True)
        c.settimeout(2)
        try:
            c.sendall(c.recv(100))
        except OSError:
            pass
        c.close()


def ask(src, addr, proto, port):
    try:
        if proto == "tcp":
            s = socket.create_connection((addr, port), timeout=1.5, source_address=(src, 0))
            s.sendall(b"x")
            ok = s.recv(10) == b"x"
        else:
            s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            s.bind((src, 0))
            s.settimeout(1.5)
            s.sendto(b"x", (addr, port))
            ok = s.recvfrom(10)[0] == b"x"
    except OSError:
        ok = False
    print("ok" if ok else "no")


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        ask(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
