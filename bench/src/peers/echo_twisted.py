"""Twisted echo servers for twistor-bench: what a Twisted user would run.

usage: echo_twisted.py tcp | tls CERT KEY | udp

Listens on 127.0.0.1 (a free port), prints the port on stdout, and exits
when stdin closes. TCP connections get TCP_NODELAY, as every server in the
bench does; the UDP socket gets a 4 MiB receive buffer, as every UDP
server in the bench does.
"""

import os
import socket
import sys
import threading

from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol


class Echo(Protocol):
    def connectionMade(self):
        self.transport.setTcpNoDelay(True)

    def dataReceived(self, data):
        self.transport.write(data)


class DatagramEcho(DatagramProtocol):
    def datagramReceived(self, data, addr):
        self.transport.write(data, addr)


def exit_when_stdin_closes():
    sys.stdin.buffer.read()
    os._exit(0)


def main():
    mode = sys.argv[1]
    if mode == "tcp":
        port = reactor.listenTCP(0, Factory.forProtocol(Echo), interface="127.0.0.1")
    elif mode == "tls":
        from twisted.internet import ssl

        with open(sys.argv[2]) as c, open(sys.argv[3]) as k:
            cert = ssl.PrivateCertificate.loadPEM(c.read() + k.read())
        port = reactor.listenSSL(0, Factory.forProtocol(Echo), cert.options(), interface="127.0.0.1")
    elif mode == "udp":
        port = reactor.listenUDP(0, DatagramEcho(), interface="127.0.0.1")
        port.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    else:
        sys.exit("unknown mode " + mode)
    print(port.getHost().port, flush=True)
    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    reactor.run()


main()
