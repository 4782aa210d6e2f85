#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A small QMP client (Python standard library only).

As a module:
    from qmp import QMPClient
    with QMPClient('/run/strata/qmp.sock') as q:     # greeting + negotiation
        q.command('query-version')                    # -> the return value
        q.execute('blockdev-add', driver='null-co', **{'node-name': 'n0'})
                                                      # -> the whole response

As a tool:
    qmp.py SOCKET COMMAND [JSON-ARGUMENTS]   one command, prints the response
    qmp.py SOCKET -                          JSON commands from stdin, one per
                                             line; prints each response
Events that arrive are printed (tool) or kept in q.events (module).
"""

import json
import socket
import sys
import time


class QMPError(Exception):
    def __init__(self, error):
        super().__init__(f'{error.get("class")}: {error.get("desc")}')
        self.error = error


class QMPClient:
    def __init__(self, path, negotiate=True, timeout=30.0):
        self.path = path
        self.timeout = timeout
        self.events = []
        self.sock = None
        self.buf = b''
        self.greeting = None
        self.connect(negotiate)

    def connect(self, negotiate=True):
        if isinstance(self.path, tuple):
            self.sock = socket.create_connection(self.path, self.timeout)
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(self.timeout)
            self.sock.connect(self.path)
        self.buf = b''
        self.greeting = self.recv()
        if negotiate:
            self.execute('qmp_capabilities')

    def close(self):
        if self.sock:
            self.sock.close()
            self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send_raw(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def recv(self, timeout=None):
        """The next message (dict), or None at EOF or after @timeout."""
        deadline = time.monotonic() + (timeout if timeout is not None
                                       else self.timeout)
        while b'\n' not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return None
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b'\n', 1)
        return json.loads(line)

    def response(self, timeout=None):
        """The next non-event message; events go to self.events."""
        while True:
            msg = self.recv(timeout)
            if msg is None or 'event' not in msg:
                return msg
            self.events.append(msg)

    def execute(self, name, args=None, id=None, **kwargs):
        req = {'execute': name}
        if args is None and kwargs:
            args = kwargs
        if args is not None:
            req['arguments'] = args
        if id is not None:
            req['id'] = id
        self.send_raw(json.dumps(req) + '\n')
        return self.response()

    def command(self, name, args=None, **kwargs):
        resp = self.execute(name, args, **kwargs)
        if resp is None:
            raise ConnectionError('connection closed')
        if 'error' in resp:
            raise QMPError(resp['error'])
        return resp['return']

    def wait_event(self, name, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for i, ev in enumerate(self.events):
                if ev['event'] == name:
                    return self.events.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            msg = self.recv(left)
            if msg is None:
                return None
            if 'event' in msg:
                self.events.append(msg)


def main(argv):
    if len(argv) < 2 or argv[0] in ('-h', '--help'):
        print(__doc__.strip())
        return 0 if argv and argv[0] in ('-h', '--help') else 2
    path = argv[0]
    if ':' in path and not path.startswith('/') and not path.startswith('.'):
        host, port = path.rsplit(':', 1)
        path = (host, int(port))
    with QMPClient(path) as q:
        if argv[1] == '-':
            lines = [l for l in sys.stdin.read().splitlines() if l.strip()]
            reqs = [json.loads(l) for l in lines]
        else:
            args = json.loads(argv[2]) if len(argv) > 2 else None
            reqs = [{'execute': argv[1], **({'arguments': args} if args
                                             is not None else {})}]
        status = 0
        for req in reqs:
            q.send_raw(json.dumps(req) + '\n')
            resp = q.response()
            for ev in q.events:
                print(json.dumps(ev))
            q.events.clear()
            print(json.dumps(resp, indent=2))
            if resp is None or 'error' in resp:
                status = 1
        return status


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
