"""asyncio echo servers on uvloop for twistor-bench: the fastest way to
write one in Python (protocols, not streams).

usage: echo_asyncio.py tcp | tls CERT KEY | udp

Listens on 127.0.0.1 (a free port), prints the port on stdout, and exits
when stdin closes. TCP connections get TCP_NODELAY, the UDP socket a 4 MiB
receive buffer, as every server in the bench does.
"""

import asyncio
import os
import socket
import ssl
import sys
import threading

import uvloop


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data):
        self.transport.write(data)


class DatagramEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)


def exit_when_stdin_closes():
    sys.stdin.buffer.read()
    os._exit(0)


async def serve(mode, args):
    loop = asyncio.get_running_loop()
    if mode in ("tcp", "tls"):
        context = None
        if mode == "tls":
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(args[0], args[1])
        server = await loop.create_server(Echo, "127.0.0.1", 0, ssl=context)
        port = server.sockets[0].getsockname()[1]
    elif mode == "udp":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind(("127.0.0.1", 0))
        await loop.create_datagram_endpoint(DatagramEcho, sock=sock)
        port = sock.getsockname()[1]
    else:
        sys.exit("unknown mode " + mode)
    print(port, flush=True)
    await asyncio.Event().wait()


def main():
    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(serve(sys.argv[1], sys.argv[2:]))


main()
