"""A TCP proxy on loopback whose connections a test can cut, to play a
network failure between the Reader and the server."""

import socket
import threading


class Proxy:
    def __init__(self, target_port, target_host="127.0.0.1"):
        self.target = (target_host, target_port)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.pairs = []
        self.lock = threading.Lock()
        self.connections = 0
        self.closed = False
        self.frozen = threading.Event()     # set: carry nothing
        self.pumps = {}                     # pair -> its two pump threads
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            pumps = [threading.Thread(target=self._pump, args=(a, b),
                                      daemon=True)
                     for a, b in ((client, server), (server, client))]
            with self.lock:
                self.pairs.append((client, server))
                self.pumps[(client, server)] = pumps
                self.connections += 1
            for t in pumps:
                t.start()

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self.frozen.is_set():
                    continue        # the packet is lost
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def freeze(self):
        """Lose every byte from now on, without closing anything: a network
        that silently stopped working."""
        self.frozen.set()

    def thaw(self):
        """Carry bytes again (new connections work; frozen ones stay dead)."""
        self.frozen.clear()

    def cut(self):
        """Drop every open connection, as a failing network would (RST)."""
        with self.lock:
            pairs, self.pairs = self.pairs, []
            pumps = [self.pumps.pop(pair) for pair in pairs]
        for pair in pairs:
            for s in pair:
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                 b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    # shutdown() wakes the pump blocked in recv() on it:
                    # close() alone would leave the socket open until then
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        # close a socket only once no pump uses it (closing a descriptor
        # another thread is reading races: the number may be reused)
        for threads in pumps:
            for t in threads:
                t.join(10)
        for pair in pairs:
            for s in pair:
                s.close()

    def close(self):
        """Stop listening (connections are refused) and cut everything."""
        # shutdown() first: close() alone leaves the socket listening while
        # the accept() of another thread holds it
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.acceptor.join(10)
        self.sock.close()
        self.cut()
