#!/usr/bin/env python3
"""Memory per HTTP/2 connection of `kes server --dev --cores 1` against an unauthenticated
client (any self-signed certificate) that holds 250 streams on a zero window, each with the
same 4000-byte :path (indexed by HPACK once, then one byte per stream). Prints RssAnon per
connection while the streams are held, once they ended and the connection idled, and for an
idle connection that made one request (the idle figures after malloc_trim, called through
gdb, so that memory freed into the allocator's arena does not count).

    tools/h2-memory.py target/release/kes [CONNECTIONS]     # needs openssl and gdb
"""
import os, shutil, socket, ssl, struct, subprocess, sys, tempfile, time

if len(sys.argv) < 2:
    sys.exit(__doc__)
for tool in ("openssl", "gdb"):
    if shutil.which(tool) is None:
        sys.exit(f"h2-memory.py needs {tool} (apt-get install {tool})")

kes = sys.argv[1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else 60
tmp = tempfile.mkdtemp()
subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-subj", "/CN=stranger", "-addext", "basicConstraints=critical,CA:FALSE", "-addext", "extendedKeyUsage=clientAuth", "-days", "1", "-keyout", f"{tmp}/k.pem",
                "-out", f"{tmp}/c.pem"], check=True, capture_output=True)
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
server = subprocess.Popen([kes, "server", "--dev", "--cores", "1", "--addr", f"127.0.0.1:{port}"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
for _ in range(100):
    try:
        socket.create_connection(("127.0.0.1", port)).close(); break
    except OSError:
        time.sleep(0.1)

ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
ctx.load_cert_chain(f"{tmp}/c.pem", f"{tmp}/k.pem")
ctx.set_alpn_protocols(["h2"])

def frame(kind, flags, sid, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", sid) + payload

def settings(pairs):
    return frame(4, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))

class Conn:
    def __init__(self):
        self.s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)))
        assert self.s.selected_alpn_protocol() == "h2"
        self.buf = b""
    def send(self, b):
        self.s.sendall(b)
    def frames(self):
        while True:
            while len(self.buf) >= 9:
                n = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) < 9 + n:
                    break
                kind, flags = self.buf[3], self.buf[4]
                sid = int.from_bytes(self.buf[5:9], "big") & 0x7fffffff
                self.buf = self.buf[9 + n:]
                yield kind, flags, sid
            data = self.s.recv(65536)
            if not data:
                raise EOFError
            self.buf += data

def attack():
    c = Conn()
    out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + settings([(4, 0)]) + frame(4, 1, 0, b"")
    first = bytes([0x82, 0x87, 0x44, 0x7f, 0xa1, 0x1e]) + b"/" + b"p" * 3999
    out += frame(1, 5, 1, first)
    for i in range(1, 250):
        out += frame(1, 5, 1 + 2 * i, bytes([0x82, 0x87, 0x80 | 62]))
    c.send(out)
    headers = 0
    for kind, flags, sid in c.frames():
        if kind == 1:
            headers += 1
            if headers == 250:
                return c

def finish(c):
    c.send(settings([(4, 65535)]))
    ended = 0
    for kind, flags, sid in c.frames():
        if kind == 0 and flags & 1:
            ended += 1
            if ended == 250:
                return

def rss(trim):
    if trim:
        subprocess.run(["gdb", "-p", str(server.pid), "-batch", "-ex", "call (int)malloc_trim(0)"],
                       capture_output=True)
    for line in open(f"/proc/{server.pid}/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1])

try:
    finish(attack())  # warm-up
    time.sleep(1)
    base = rss(True)
    conns = [attack() for _ in range(N)]
    held = rss(False)
    for c in conns:
        finish(c)
    time.sleep(1.5)
    idle = rss(True)
    plain = []
    for _ in range(N):
        c = Conn()
        c.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + settings([]) + frame(4, 1, 0, b"")
               + frame(1, 5, 1, bytes([0x82, 0x87, 0x84])))
        for kind, flags, sid in c.frames():
            if kind == 0 and flags & 1:
                break
        plain.append(c)
    time.sleep(1.5)
    plain_idle = rss(True)
    print(f"{os.path.basename(kes)}: {N} connections, per connection: "
          f"{(held - base) / N:.0f} KiB while 250 streams are held, "
          f"{(idle - base) / N:.0f} KiB once they ended and the connection idled; "
          f"an idle connection after one request: {(plain_idle - idle) / N:.0f} KiB "
          f"(RssAnon, idle figures after malloc_trim)")
finally:
    server.kill()
