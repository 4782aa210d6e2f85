#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""strata-storage-daemon's lifecycle: signals with requests in flight,
--daemonize and --pidfile, start-up errors.  TAP output.

  lifecycle.py DAEMON
"""

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import shutil

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..', '..', 'scripts'))
from qmp import QMPClient  # noqa: E402

DAEMON = sys.argv[1]
n = 0
failures = 0


PROCS = []


def spawn(*args, **kwargs):
    """Popen, remembered so that a failing test leaves no daemon behind."""
    p = subprocess.Popen(*args, **kwargs)
    PROCS.append(p)
    return p


def reap():
    for p in PROCS:
        if p.poll() is None:
            p.kill()
            p.wait()
    PROCS.clear()


def tap(ok, what, detail=''):
    global n, failures
    n += 1
    if not ok:
        failures += 1
        for line in str(detail).splitlines():
            print(f'# {line}')
    print(f'{"ok" if ok else "not ok"} {n} - {what}')


def wait_socket(path, proc=None, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            for _ in range(100):
                try:
                    return QMPClient(path, timeout=30)
                except ConnectionRefusedError:
                    time.sleep(0.02)
        if proc is not None and proc.poll() is not None:
            return None
        time.sleep(0.01)
    return None


def pattern_ok(path, offset, length, byte):
    with open(path, 'rb') as f:
        f.seek(offset)
        data = f.read(length)
    return data == bytes([byte]) * length


def signal_in_flight(tmp, signals):
    """Writes left in flight by x-strata-io aio_write, then @signals
    SIGTERMs: every byte is on disk afterwards, exit status 0."""
    img = os.path.join(tmp, 'disk.raw')
    sock = os.path.join(tmp, 'qmp.sock')
    pidfile = os.path.join(tmp, 'pid')
    size, chunk = 64 << 20, 2 << 20
    with open(img, 'wb') as f:
        f.truncate(size)
    proc = spawn(
        [DAEMON, '--blockdev',
         f'driver=raw,node-name=disk,file.driver=file,file.filename={img}',
         '--chardev', f'socket,id=m0,path={sock},server=on,wait=off',
         '--monitor', 'chardev=m0', '--pidfile', pidfile],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    q = wait_socket(sock, proc)
    if q is None:
        return False, 'daemon did not start: ' + proc.stderr.read().decode()
    # Pipelined: all the writes are submitted before the signal.
    for off in range(0, size, chunk):
        q.send_raw('{"execute": "x-strata-io", "arguments": {"node-name": '
                   f'"disk", "command": "aio_write -P 0x5a {off} {chunk}"}}}}\n')
    for off in range(0, size, chunk):
        r = q.response()
        if not r or 'error' in r:
            return False, f'x-strata-io failed: {r}'
    stats = q.command('query-blockstats')
    done = stats[0]['stats']['wr_operations']
    for _ in range(signals):
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.001)
    try:
        rc = proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return False, 'daemon did not exit within 60 s'
    err = proc.stderr.read().decode()
    q.close()
    problems = []
    if rc != 0:
        problems.append(f'exit status {rc}: {err}')
    if not pattern_ok(img, 0, size, 0x5a):
        problems.append('data written before the signal is not on disk')
    for p in (sock, pidfile):
        if os.path.exists(p):
            problems.append(f'{p} left behind')
    print(f'# {signals} signal(s): {done} of {size // chunk} writes had '
          f'completed when the signal was sent')
    return not problems, '\n'.join(problems)


def test_daemonize(tmp):
    sock = os.path.join(tmp, 'd.sock')
    pidfile = os.path.join(tmp, 'd.pid')
    r = subprocess.run([DAEMON, '--blockdev', 'driver=null-co,node-name=n0',
                        '--chardev',
                        f'socket,id=m0,path={sock},server=on,wait=off',
                        '--monitor', 'chardev=m0', '--pidfile', pidfile,
                        '--daemonize'], capture_output=True, timeout=30)
    if r.returncode != 0:
        return False, f'exit {r.returncode}: {r.stderr.decode()}'
    # Ready means set up: the socket and the pidfile exist when the
    # parent returns.
    if not os.path.exists(sock) or not os.path.exists(pidfile):
        return False, 'socket or pidfile missing when the parent returned'
    pid = int(open(pidfile).read())
    try:
        os.kill(pid, 0)
    except OSError:
        return False, f'pid {pid} from the pidfile is not running'
    with QMPClient(sock) as q:
        nodes = [x['node-name'] for x in q.command('query-named-block-nodes')]
        q.command('quit')
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            break
        time.sleep(0.02)
    else:
        os.kill(pid, signal.SIGKILL)
        return False, 'daemon did not exit after quit'
    left = [p for p in (sock, pidfile) if os.path.exists(p)]
    ok = nodes == ['n0'] and not left
    return ok, f'nodes {nodes}, left behind {left}'


def test_daemonize_error(tmp):
    r = subprocess.run([DAEMON, '--daemonize', '--blockdev',
                        'driver=nosuch,node-name=x'],
                       capture_output=True, timeout=30)
    err = r.stderr.decode()
    return (r.returncode == 1 and '--blockdev driver=nosuch' in err,
            f'exit {r.returncode}, stderr {err!r}')


def test_pidfile_lock(tmp):
    sock = os.path.join(tmp, 'l.sock')
    pidfile = os.path.join(tmp, 'l.pid')
    a = spawn([DAEMON, '--chardev',
                          f'socket,id=m0,path={sock},server=on,wait=off',
                          '--monitor', 'chardev=m0', '--pidfile', pidfile],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    q = wait_socket(sock, a)
    b = subprocess.run([DAEMON, '--pidfile', pidfile], capture_output=True,
                       timeout=30)
    if q:
        q.command('quit')
        q.close()
    a.wait(10)
    err = b.stderr.decode()
    return (b.returncode == 1 and 'Cannot lock pid file' in err and
            not os.path.exists(pidfile),
            f'second daemon: exit {b.returncode}, {err!r}')


def test_config_example(tmp):
    """docs/examples/strata-storage-daemon.json, paths moved under @tmp."""
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, '..', '..', 'docs', 'examples',
                           'strata-storage-daemon.json')) as f:
        text = f.read()
    text = text.replace('/var/lib/strata', tmp).replace('/run/strata', tmp)
    cfg = os.path.join(tmp, 'config.json')
    with open(cfg, 'w') as f:
        f.write(text)
    with open(os.path.join(tmp, 'disk0.img'), 'wb') as f:
        f.truncate(1 << 20)
    sock = os.path.join(tmp, 'qmp.sock')
    proc = spawn([DAEMON, '--config', cfg],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    q = wait_socket(sock, proc)
    if not q:
        return False, proc.stderr.read().decode()
    nodes = sorted(x['node-name'] for x in q.command('query-named-block-nodes'))
    objs = [o['name'] for o in q.command('qom-list', path='/objects')]
    q.command('quit')
    q.close()
    rc = proc.wait(10)
    want = ['disk0', 'disk0-file', 'scratch']
    return (rc == 0 and nodes == want and objs == ['io0'],
            f'exit {rc}, nodes {nodes}, objects {objs}: '
            f'{proc.stderr.read().decode()}')


def test_one_client_per_monitor(tmp):
    """A second client of a monitor waits (no greeting) until the first
    leaves, as with QSD; then it negotiates afresh."""
    sock = os.path.join(tmp, 'one.sock')
    proc = spawn([DAEMON, '--chardev',
                             f'socket,id=m0,path={sock},server=on,wait=off',
                             '--monitor', 'chardev=m0'],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    a = wait_socket(sock, proc)
    import socket as so
    b = so.socket(so.AF_UNIX, so.SOCK_STREAM)
    b.connect(sock)
    b.settimeout(0.5)
    try:
        early = b.recv(4096)
    except so.timeout:
        early = b''
    a.close()
    b.settimeout(5)
    greeting = b.recv(4096)
    b.sendall(b'{"execute": "qmp_capabilities"}\n{"execute": "quit"}\n')
    try:
        rc = proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
    b.close()
    return (early == b'' and b'"QMP"' in greeting and rc == 0,
            f'early {early!r}, greeting {greeting!r}, exit {rc}')


def test_tcp_loopback(tmp):
    """host=127.0.0.1: accepted with a warning naming the risk."""
    import socket as so
    s = so.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    proc = spawn([DAEMON, '--chardev',
                             f'socket,id=m0,host=127.0.0.1,port={port},'
                             'server=on,wait=off', '--monitor', 'chardev=m0'],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    q = None
    deadline = time.monotonic() + 10
    while q is None and time.monotonic() < deadline:
        try:
            q = QMPClient(('127.0.0.1', port))
        except OSError:
            time.sleep(0.02)
    if q is None:
        proc.kill()
        return False, 'could not connect'
    v = q.command('query-version')
    q.command('quit')
    q.close()
    rc = proc.wait(10)
    err = proc.stderr.read().decode()
    return (rc == 0 and 'package' in v and 'no authentication' in err,
            f'exit {rc}, stderr {err!r}')


def test_stdio_monitor(tmp):
    """--chardev stdio with pretty=on: the session on stdin/stdout."""
    r = subprocess.run([DAEMON, '--chardev', 'stdio,id=s', '--monitor',
                        'chardev=s,pretty=on', '--blockdev',
                        'driver=null-co,node-name=n0'],
                       input=b'{"execute": "qmp_capabilities"}\n'
                             b'{"execute": "query-block-exports"}\n'
                             b'{"execute": "quit"}\n',
                       capture_output=True, timeout=30)
    out = r.stdout.decode()
    return (r.returncode == 0 and out.count('"return"') == 3 and
            '"SHUTDOWN"' in out and '\n    ' in out,
            f'exit {r.returncode}, stdout {out!r}')


def test_stdio_regular_files(tmp):
    """--chardev stdio with stdin and stdout redirected to regular files,
    which epoll refuses (it aborted at start-up): the commands run and the
    answers land in the file."""
    cmds = os.path.join(tmp, 'cmds.json')
    out = os.path.join(tmp, 'out.json')
    with open(cmds, 'wb') as f:
        f.write(b'{"execute": "qmp_capabilities"}\n'
                b'{"execute": "query-block-exports"}\n'
                b'{"execute": "quit"}\n')
    with open(cmds, 'rb') as fin, open(out, 'wb') as fout:
        r = subprocess.run([DAEMON, '--chardev', 'stdio,id=s', '--monitor',
                            'chardev=s', '--blockdev',
                            'driver=null-co,node-name=n0'],
                           stdin=fin, stdout=fout, stderr=subprocess.PIPE,
                           timeout=30)
    with open(out) as f:
        text = f.read()
    return (r.returncode == 0 and text.count('"return"') == 3 and
            '"SHUTDOWN"' in text,
            f'exit {r.returncode}, stdout {text!r}, stderr {r.stderr!r}')


def read_messages(fd, count, timeout=10):
    """Up to @count QMP messages (one per line) from file descriptor @fd
    within @timeout seconds, and whether @fd reached EOF (fewer messages
    when it did or the time ran out)."""
    buf, msgs = b'', []
    deadline = time.monotonic() + timeout
    while len(msgs) < count:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return msgs, False
        data = os.read(fd, 65536)
        if not data:
            return msgs, True
        buf += data
        while b'\n' in buf and len(msgs) < count:
            line, buf = buf.split(b'\n', 1)
            msgs.append(json.loads(line))
    return msgs, False


def io_cmd(cmd, id_):
    return ('{"execute": "x-strata-io", "arguments": {"node-name": "disk", '
            f'"command": "{cmd}"}}, "id": {id_}}}\n')


def answers(msgs):
    """(id, 'ok' or the error class) of each response; events left out."""
    return [(m.get('id'), 'ok' if 'return' in m else m['error']['class'])
            for m in msgs if 'return' in m or 'error' in m]


# What the daemon must never print: GLib's criticals and warnings (the
# lost-input bug showed as g_byte_array_remove_range's), sanitizer reports.
BAD_STDERR = ('CRITICAL', 'WARNING', 'runtime error', 'AddressSanitizer')


def stdio_eof_in_command(tmp, quit):
    """--chardev stdio whose input (written whole into a pipe, then closed)
    ends while x-strata-io runs loop iterations: the daemon reads the EOF
    during the command.  Every complete command after it still runs, in
    order, and is answered; with @quit the daemon exits 0, without it an
    unfinished last message is dropped and the daemon stays up, as QSD's
    does, until SIGTERM."""
    img = os.path.join(tmp, 'disk.raw')
    with open(img, 'wb') as f:
        f.truncate(1 << 20)
    text = ('{"execute": "qmp_capabilities", "id": 0}\n' +
            io_cmd('write -P 0x5a 0 4k', 1) +
            io_cmd('read -P 0x5a 0 4k', 2) +
            '{"execute": "query-version", "id": 3}\n' +
            ('{"execute": "quit", "id": 4}\n' if quit else
             '{"execute": "query-'))
    want = [(i, 'ok') for i in range(5 if quit else 4)]
    r, w = os.pipe()
    os.write(w, text.encode())      # far below the pipe's capacity
    os.close(w)
    proc = spawn([DAEMON, '--blockdev',
                  f'driver=file,node-name=disk,filename={img}',
                  '--chardev', 'stdio,id=s', '--monitor', 'chardev=s'],
                 stdin=r, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(r)
    msgs, _ = read_messages(proc.stdout.fileno(), 1 + len(want))
    alive = proc.poll() is None
    if not quit and alive:
        proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(10)
    except subprocess.TimeoutExpired:
        return False, (f'daemon did not exit; answers {answers(msgs)}, '
                       f'want {want}')
    err = proc.stderr.read().decode()
    got = answers(msgs)
    problems = []
    if got != want:
        problems.append(f'answers {got}, want {want}')
    if 'verification failed' in json.dumps(msgs):
        problems.append(f'read -P found other data: {msgs}')
    if not quit and not alive:
        problems.append('the daemon exited at EOF without quit')
    if rc != 0:
        problems.append(f'exit status {rc}')
    if any(b in err for b in BAD_STDERR):
        problems.append(f'stderr: {err}')
    return not problems, '\n'.join(problems)


def socket_daemon(tmp, args):
    """A daemon with @args and one socket monitor, up and accepting: its
    socket path, process and None, or an error text."""
    sock = os.path.join(tmp, 'qmp.sock')
    proc = spawn([DAEMON] + args +
                 ['--chardev', f'socket,id=m0,path={sock},server=on,wait=off',
                  '--monitor', 'chardev=m0'],
                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    q = wait_socket(sock, proc)
    if q is None:
        return sock, proc, 'daemon did not start: ' + \
            proc.stderr.read().decode()
    q.close()
    return sock, proc, None


def quit_and_check(proc, q, problems):
    """Send quit on monitor connection @q: the daemon must exit 0 with no
    GLib critical or sanitizer report; the test's result with @problems."""
    q.command('quit')
    q.close()
    try:
        rc = proc.wait(10)
    except subprocess.TimeoutExpired:
        return False, '\n'.join(problems + ['daemon did not exit after quit'])
    err = proc.stderr.read().decode()
    if rc != 0:
        problems.append(f'exit status {rc}')
    if any(b in err for b in BAD_STDERR):
        problems.append(f'stderr: {err}')
    return not problems, '\n'.join(problems)


def socket_eof_in_command(tmp):
    """A socket monitor's client sends commands behind a long one (sleep
    runs loop iterations) and ends its input.  Half-closed (shutdown of
    its sending side): every complete command runs, in order, and is
    answered, an unfinished last message is dropped, then the daemon
    closes the connection.  Fully closed: the commands still run (the
    next client finds their data) and the answers are dropped.  The next
    clients are served throughout; no GLib critical."""
    img = os.path.join(tmp, 'disk.raw')
    with open(img, 'wb') as f:
        f.truncate(1 << 20)
    sock, proc, err = socket_daemon(tmp, ['--blockdev',
                                          f'driver=file,node-name=disk,'
                                          f'filename={img}'])
    if err:
        return False, err
    problems = []
    import socket as so
    for half in (True, False):
        c = so.socket(so.AF_UNIX, so.SOCK_STREAM)
        c.settimeout(10)
        c.connect(sock)
        read_messages(c.fileno(), 1)            # the greeting
        pattern = 0x5a if half else 0xa5
        c.sendall(('{"execute": "qmp_capabilities", "id": 0}\n' +
                   io_cmd('sleep 300', 1) +
                   io_cmd(f'write -P {pattern:#x} 0 4k', 2) +
                   io_cmd(f'read -P {pattern:#x} 0 4k', 3) +
                   '{"execute": "query-version", "id": 4}\n'
                   '{"execute": "query-').encode())
        if half:
            c.shutdown(so.SHUT_WR)
            msgs, eof = read_messages(c.fileno(), 6)
            got = answers(msgs)
            want = [(i, 'ok') for i in range(5)]
            if got != want or 'verification failed' in json.dumps(msgs):
                problems.append(f'half-closed: answers {got}, want {want}: '
                                f'{msgs}')
            if not eof:
                problems.append('half-closed: the daemon did not close the '
                                'connection after answering')
        c.close()
        # The next client waits until the daemon is done with this one.
        what = 'half-closed' if half else 'closed'
        q = wait_socket(sock, proc)
        if q is None:
            problems.append(f'no client served after the {what} one')
            return False, '\n'.join(problems)
        out = q.command('x-strata-io', {'node-name': 'disk', 'command':
                                        f'read -P {pattern:#x} 0 4k'})
        if 'verification failed' in out:
            problems.append(f'{what}: the write queued behind sleep did not '
                            f'run: {out}')
        if half:
            q.close()
    return quit_and_check(proc, q, problems)


def socket_flood_unread(tmp):
    """A socket client that sends commands and reads none of the answers
    meets flow control: once about 1 MiB of answers waits to be written,
    the daemon reads no more of its input, so the client's sends stop
    making progress long before 64 MiB (without it the daemon read on and
    queued every answer in memory); the next client is served."""
    sock, proc, err = socket_daemon(tmp, [])
    if err:
        return False, err
    import socket as so
    c = so.socket(so.AF_UNIX, so.SOCK_STREAM)
    c.settimeout(10)
    c.connect(sock)
    read_messages(c.fileno(), 1)                # the greeting
    c.sendall(b'{"execute": "qmp_capabilities", "id": 0}\n')
    chunk = b'{"execute": "query-version"}\n' * 4096
    c.setblocking(False)
    sent, last_progress, rest = 0, time.monotonic(), b''
    while sent < (64 << 20) and time.monotonic() - last_progress < 1.0:
        rest = rest or chunk
        try:
            n = c.send(rest)        # whole commands only: keep the rest
            sent, rest = sent + n, rest[n:]
            last_progress = time.monotonic()
        except BlockingIOError:
            time.sleep(0.01)
    c.close()
    problems = []
    if sent > (16 << 20):
        problems.append(f'the daemon took {sent} bytes of commands whose '
                        f'answers nobody read')
    q = wait_socket(sock, proc, timeout=60)
    if q is None:
        problems.append('no client served after the flood')
        return False, '\n'.join(problems)
    return quit_and_check(proc, q, problems)


# Start-up errors: (arguments, text the message must contain).  Every one
# exits 1, names the option, and leaves no socket behind.
STARTUP_ERRORS = [
    (['--blockdev', 'driver=nosuch,node-name=x'],
     "--blockdev driver=nosuch,node-name=x: "),
    (['--blockdev', '{"driver": "null-co"'],
     '--blockdev {"driver": "null-co": '),
    (['--blockdev', 'driver=file,node-name=f,filename=/nonexistent/x'],
     "Could not open '/nonexistent/x'"),
    (['--object', 'qom-type=nosuch,id=o'], '--object qom-type=nosuch,id=o: '),
    (['--chardev', 'socket,id=c,path=$TMP/c.sock,server=on,wait=on'],
     'wait: '),
    (['--chardev', 'socket,id=c,host=0.0.0.0,port=0,server=on,wait=off'],
     "host: '0.0.0.0' is not a loopback address"),
    (['--chardev', 'pty,id=c'], "backend: unsupported chardev type 'pty'"),
    (['--monitor', 'chardev=nope'], '--monitor chardev=nope: chardev "nope" '
     'not found'),
    (['--chardev', 'socket,id=c,path=$TMP/m.sock,server=on,wait=off',
      '--monitor', 'c,mode=readline'], 'mode: Only QMP is supported'),
    (['--export', 'type=nbd,id=e0,node-name=nope'], '--export type=nbd'),
    (['--nbd-server', 'addr.type=vsock,addr.cid=3'],
     "--nbd-server addr.type=vsock,addr.cid=3: addr.type: expected unix or "
     "inet, not 'vsock'"),
    (['--nbd-server', 'addr.type=unix,addr.path=$TMP/n.sock',
      '--nbd-server', 'addr.type=unix,addr.path=$TMP/n2.sock'],
     'NBD server already running'),
    (['--export', 'type=nbd,id=e0,node-name=nope'],
     "Cannot find device='' nor node-name='nope'"),
    (['--pidfile', '/nonexistent/dir/pid'], 'Cannot open pid file'),
    (['--config', '/nonexistent.json'], '--config /nonexistent.json: '),
    (['--config', '$TMP/bad.json'], "config.daemonize: not an option a "
     "config file can give"),
    (['--no-such-option'], "unrecognized option '--no-such-option'"),
    (['--blockdev'], "option '--blockdev' requires an argument"),
    (['stray-argument'], "unexpected argument 'stray-argument'"),
]


def test_startup_error(tmp, args, want):
    args = [a.replace('$TMP', tmp) for a in args]
    with open(os.path.join(tmp, 'bad.json'), 'w') as f:
        f.write('{"blockdev": {"driver": "null-co", "node-name": "n"}, '
                '"daemonize": true}')
    r = subprocess.run([DAEMON] + args, capture_output=True, timeout=30)
    err = r.stderr.decode()
    left = [f for f in os.listdir(tmp) if f.endswith('.sock')]
    ok = r.returncode == 1 and want in err and not left
    return ok, f'exit {r.returncode}, stderr {err!r}, left {left}'


def main():
    # A timeout's SIGTERM (meson's) unwinds like a failure: the finally
    # below reaps the daemons and removes the directory.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    tests = [
        ('SIGTERM with writes in flight: data on disk, exit 0, socket and '
         'pidfile removed', lambda t: signal_in_flight(t, 1)),
        ('a second SIGTERM during shutdown changes nothing',
         lambda t: signal_in_flight(t, 2)),
        ('--daemonize and --pidfile', test_daemonize),
        ('--daemonize: a start-up error reaches stderr, exit 1',
         test_daemonize_error),
        ('--pidfile is locked against a second daemon', test_pidfile_lock),
        ('--config with the example of docs/', test_config_example),
        ('one client per monitor at a time', test_one_client_per_monitor),
        ('TCP monitor on loopback, with a warning', test_tcp_loopback),
        ('stdio monitor, pretty-printed', test_stdio_monitor),
        ('stdio monitor on regular files (stdin and stdout redirected)',
         test_stdio_regular_files),
        ('stdio monitor: EOF during a command, then quit: every command '
         'answered in order, exit 0', lambda t: stdio_eof_in_command(t, True)),
        ('stdio monitor: EOF during a command, no quit: complete commands '
         'answered, unfinished one dropped, daemon stays up',
         lambda t: stdio_eof_in_command(t, False)),
        ('socket monitor: client half-closes or leaves during a command: '
         'queued commands run, next clients served',
         socket_eof_in_command),
        ('socket monitor: a client that reads no answers is held back '
         '(flow control), next client served', socket_flood_unread),
    ]
    for args, want in STARTUP_ERRORS:
        tests.append((f'start-up error: {" ".join(args)}',
                      lambda t, a=args, w=want: test_startup_error(t, a, w)))
    for what, fn in tests:
        tmp = tempfile.mkdtemp(prefix='strata-lifecycle-',
                               dir=os.environ.get('TMPDIR', '/var/tmp'))
        try:
            ok, detail = fn(tmp)
        except Exception as e:      # a test bug or a hung daemon
            ok, detail = False, repr(e)
        finally:
            reap()
            shutil.rmtree(tmp, ignore_errors=True)
        tap(ok, what, detail)
    for what, args in (('-h prints the usage', ['-h']),
                       ('-V prints the version', ['-V'])):
        r = subprocess.run([DAEMON] + args, capture_output=True, text=True)
        tap(r.returncode == 0 and ('Usage:' in r.stdout if args == ['-h']
                                   else 'strata-storage-daemon version'
                                   in r.stdout), what, r.stdout + r.stderr)
    print(f'1..{n}')
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
