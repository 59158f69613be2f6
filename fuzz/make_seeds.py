#!/usr/bin/env python3
"""Write the seed corpora in seeds/TARGET/: a few small inputs per target
that reach each of its actions, in the input format its harness reads
(src/line.rs, src/strings.rs, src/udp.rs, src/tls.rs). Run from anywhere;
it rewrites the files it owns and leaves others (kept crash inputs) alone.
"""

import os
import ssl

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")


def write(target, name, data):
    os.makedirs(os.path.join(HERE, target), exist_ok=True)
    with open(os.path.join(HERE, target, name), "wb") as f:
        f.write(data)


def chunks(*sizes):
    """The chunk-size header: a count, then each size minus one."""
    return bytes([len(sizes)] + [s - 1 for s in sizes])


# line_receiver: config byte (bits 0-1 delimiter, bit 2 keep open after an
# over-long line, bit 3 allow clear_buffer, bits 4-6 max length index),
# chunk sizes, stream.
CRLF_16K = 0x70
write("line_receiver", "actions", bytes([CRLF_16K]) + chunks(3, 7, 1) +
      b"Eecho\r\nR\x05raw!!Wwrite\r\nPpause\r\nafter\r\nM\x02\r\nlonger than eight\r\nlost\r\n")
write("line_receiver", "delimiters", bytes([0x71]) + chunks(2) +
      b"one\nD\x03\nxyabzabD\x00ab\r\nEdone\r\nC\r\nignored\r\n")
write("line_receiver", "over-long-kept-open", bytes([0x24]) + chunks(5, 1) +
      b"short\r\nmuch too long a line\r\nEnext\r\n\r\n")
write("line_receiver", "clear-buffer", bytes([0x78]) + chunks(9) +
      b"Xreset\r\ndropped\r\nEkept\r\n")

# string_receivers: config byte (bits 0-1 framing: netstring, 1, 2, 4-byte
# prefix; bit 2 allow clear_buffer; bits 5-7 max length index), chunk
# sizes, stream.
MAX_1000 = 5 << 5
write("string_receivers", "netstrings", bytes([MAX_1000]) + chunks(4, 1) +
      b"5:Ehell,0:,2:P!,3:abc,1:C,3:xyz,")
write("string_receivers", "netstring-malformed", bytes([MAX_1000]) + chunks() +
      b"3:Eab,01:x,")
write("string_receivers", "netstring-too-long", bytes([3 << 5]) + chunks(2) +
      b"2:Eh,99:" + b"x" * 20)
write("string_receivers", "int8", bytes([MAX_1000 | 1]) + chunks(3) +
      b"\x03Eab\x02M\x04\x00\x01W")
write("string_receivers", "int16", bytes([MAX_1000 | 2]) + chunks(1, 5) +
      b"\x00\x02Ex\x00\x01P\x00\x03Xab\x00\x00")
write("string_receivers", "int32-clear", bytes([MAX_1000 | 6]) + chunks(7) +
      b"\x00\x00\x00\x02Ex\x00\x00\x00\x01X\x00\x00\x00\x02Ey")
write("string_receivers", "int32-too-long", bytes([MAX_1000 | 3]) + chunks() +
      b"\x00\x00\x10\x00" + b"y" * 8)


# udp_port: config byte (bit 0 IPv6, bits 1-3 read budget), max datagram
# (1 + 4 * byte), then datagrams: header (bit 0 sender, bits 1-3 length
# multiplier minus one), length byte, payload.
def dgram(sender, payload, mult=1):
    assert len(payload) % mult == 0
    return bytes([sender | (mult - 1) << 1, len(payload) // mult]) + payload


MAX_41 = 10
write("udp_port", "echo-and-oversize", bytes([0, MAX_41]) +
      dgram(0, b"Ehello") + dgram(1, b"Tto the other") + dgram(0, b"x" * 48, 8) +
      dgram(1, b"") + dgram(0, b"B\x01") + dgram(1, b"6other family"))
write("udp_port", "connect-then-stop", bytes([2, MAX_41]) +
      dgram(1, b"C") + dgram(0, b"Edropped") + dgram(1, b"Wconnected") +
      dgram(1, b"Tnot allowed") + dgram(1, b"S") + dgram(0, b"Eafter stop"))
write("udp_port", "refused", bytes([4, MAX_41]) +
      dgram(0, b"Wnot connected") + dgram(0, b"Dclosed port") + dgram(1, b"Elost"))
write("udp_port", "ipv6", bytes([1, 255]) +
      dgram(0, b"Esix") + dgram(1, b"6four") + dgram(1, b"C") + dgram(1, b"Ework"))


# tls_server: config byte (0 plain, 1 SNI + ALPN + any client certificate,
# 2 optional client certificate, 3 SNI certificates only), chunk sizes,
# then the bytes a client sends: real first flights from Python's ssl
# (OpenSSL), and plain garbage.
def client_hello(sni, max_version=None, alpn=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if max_version:
        ctx.maximum_version = max_version
    if alpn:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    s = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    try:
        s.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


write("tls_server", "tls13-hello", bytes([0]) + chunks() + client_hello("localhost"))
write("tls_server", "tls12-sni-alpn-hello-chunked", bytes([1]) + chunks(5, 101, 256) +
      client_hello("a.example", ssl.TLSVersion.TLSv1_2, ["gemini"]))
write("tls_server", "tls13-hello-optional-client-cert", bytes([2]) + chunks(64) +
      client_hello("b.example", None, ["http/1.1"]))
write("tls_server", "no-sni-for-sni-only", bytes([3]) + chunks() + client_hello(None))
write("tls_server", "plaintext-http", bytes([0]) + chunks() + b"GET / HTTP/1.0\r\n\r\n")
