# A Python socketserver that adopts fd 3 (systemd socket activation, no library but python-systemd
# for READY=1): what `ktricks serve` and `ktricks takeover` run in the integration tests.
# Answers every GET with "generation G pid P". On SIGTERM it answers each open connection's next
# request with "Connection: close", stops accepting and exits when its handlers are done.
import http.server
import os
import signal
import socket
import socketserver
import sys

from systemd import daemon

# Set by the SIGTERM handler. Python runs signal handlers in the main thread between bytecodes, even
# inside threading's own locked sections: starting a thread (or taking any lock) from the handler can
# deadlock, so the handler only sets this flag and the main loop looks at it.
draining = False
body = f"generation {os.environ.get('KTRICKS_SERVE_GENERATION', '?')} pid {os.getpid()}\n".encode()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        if draining:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = False
    block_on_close = True


assert os.environ.get("LISTEN_PID") == str(os.getpid()), "LISTEN_PID is not this process"
server = Server(("127.0.0.1", 0), Handler, bind_and_activate=False)
server.socket.close()
server.socket = socket.socket(fileno=3)
# The listener is shared with other generations: a blocking accept() after select() could hang
# when another process won the connection.
server.socket.setblocking(False)


def on_term(*_):
    global draining
    draining = True


signal.signal(signal.SIGTERM, on_term)
# --never-ready: serve, but never say READY=1 (a new version serve must roll back).
if "--never-ready" not in sys.argv[1:]:
    daemon.notify("READY=1")
server.timeout = 0.05
while not draining:
    server.handle_request()
server.server_close()  # joins the handler threads: every accepted request is answered
