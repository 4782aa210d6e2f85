# SPDX-License-Identifier: MIT
"""Helpers for Python iotests (the counterpart of common.rc).

    import iotests
    iotests.require_...()
    out = iotests.strata_io('-c', 'read 0 512', iotests.test_img)

Everything created through these helpers is undone at exit (atexit), also
on SIGTERM from the runner.
"""
import atexit
import json
import os
import re
import shlex
import signal
import subprocess
import sys

NOTRUN_STATUS = 77

strata_io_prog = os.environ.get('STRATA_IO', '')
qemu_io_prog = os.environ.get('QEMU_IO', '')
test_dir = os.environ.get('TEST_DIR', '')
test_img = os.environ.get('TEST_IMG', '')
shm_dir = os.environ.get('SHM_DIR', '/dev/shm')
aiomode = os.environ.get('AIOMODE', 'threads')
cachemode = os.environ.get('CACHEMODE', 'writeback')
sio_timeout = int(os.environ.get('SIO_TIMEOUT', '120'))

if not strata_io_prog or not test_dir:
    sys.exit('run iotests through tests/iotests/check')

_cleanups = []


def register_cleanup(fn):
    _cleanups.append(fn)


def _run_cleanups():
    while _cleanups:
        fn = _cleanups.pop()
        try:
            fn()
        except Exception as e:  # keep going: undo everything we can
            print(f'cleanup: {e}', file=sys.stderr)


atexit.register(_run_cleanups)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def notrun(reason):
    print(reason, flush=True)
    with open(os.path.join(test_dir, '.notrun'), 'w') as f:
        f.write(reason + '\n')
    sys.exit(NOTRUN_STATUS)


def log(msg=''):
    print(msg, flush=True)


def direct_cache():
    return cachemode if cachemode in ('none', 'directsync') else 'none'


def strata_io(*args, opts=True, cache=None, stdin=None):
    """Run strata-io; returns (exit status, stdout+stderr).  With opts the
    run's -t/-i are passed (cache= overrides -t)."""
    cmd = [strata_io_prog]
    if opts:
        cmd += ['-t', cache or cachemode, '-i', aiomode]
    cmd += list(args)
    p = subprocess.run(cmd, input=stdin, capture_output=True, text=True,
                       timeout=sio_timeout)
    return p.returncode, p.stdout + p.stderr


def make_test_img(size, path=None):
    path = path or test_img
    with open(path, 'wb') as f:
        f.truncate(size)
    register_cleanup(lambda: os.path.exists(path) and os.unlink(path))
    return path


def blkdebug_img(path=None, extra=''):
    """json: filename of raw over blkdebug align=4096 (node "dbg") over the
    file (node "img"); extra (JSON members, each followed by a comma) goes
    into the blkdebug node.  With PAD_FILTER=align in the environment the
    align driver pads instead: raw over align (node "dbg",
    request-alignment 4096, and the blkdebug members max-transfer and
    rmw-coalesce) over blkdebug (node "dbg-rules", the other members: its
    rules) over the file."""
    path = path or test_img
    if os.environ.get('PAD_FILTER') != 'align':
        return ('json:{"driver":"raw","file":{"driver":"blkdebug","node-name":"dbg",'
                '"align":4096,%s"image":{"driver":"file","node-name":"img","filename":"%s"}}}'
                % (extra, path))
    rules = json.loads('{%s"image":{"driver":"file","node-name":"img",'
                       '"filename":%s}}' % (extra, json.dumps(path)))
    top = {'driver': 'align', 'node-name': 'dbg', 'request-alignment': 4096}
    for key in ('max-transfer', 'rmw-coalesce'):
        if key in rules:
            top[key] = rules.pop(key)
    top['file'] = dict({'driver': 'blkdebug', 'node-name': 'dbg-rules'}, **rules)
    return 'json:' + json.dumps({'driver': 'raw', 'file': top},
                                separators=(',', ':'))


def _detach_loop_file(path):
    try:
        out = subprocess.run(['losetup', '-j', path], capture_output=True,
                             text=True).stdout
    except FileNotFoundError:
        return
    for line in out.splitlines():
        dev = line.split(':', 1)[0]
        if dev.startswith('/dev/loop'):
            subprocess.run(['losetup', '-d', dev], capture_output=True)


def make_loop_dev(size):
    """A 4096-byte-sector loop device with direct I/O over a file in
    $SHM_DIR; returns (device, backing file) or calls notrun()."""
    os.makedirs(shm_dir, exist_ok=True)
    backing = os.path.join(shm_dir, f'loop.{os.getpid()}.{len(_cleanups)}')
    with open(backing, 'wb') as f:
        f.truncate(size)

    def undo():
        _detach_loop_file(backing)
        os.unlink(backing)
    register_cleanup(undo)
    try:
        p = subprocess.run(['losetup', '--find', '--show', '--sector-size',
                            '4096', '--direct-io=on', backing],
                           capture_output=True, text=True)
    except FileNotFoundError:
        notrun('losetup is not installed')
    dev = p.stdout.strip()
    if p.returncode != 0 or not dev.startswith('/dev/loop'):
        notrun('cannot create a 4K-sector loop device')
    ss = subprocess.run(['blockdev', '--getss', dev], capture_output=True,
                        text=True).stdout.strip()
    if ss != '4096':
        notrun(f'loop device has {ss}-byte sectors, not 4096')
    return dev, backing


_TIMING = re.compile(r'[0-9]+ ops; [0-9/:. sec]+ \([0-9/.inf]+ [EPTGMKiBbytes]+/sec '
                     r'and [0-9/.inf]+ ops/sec\)')


def filter_strata_io(text):
    text = _TIMING.sub('X ops; XX:XX:XX.X (XXX YYY/sec and XXX ops/sec)', text)
    return re.sub(r'(strata-io|qemu-io)> ', '', text)


def filter_test_dir(text):
    text = text.replace(test_dir, 'TEST_DIR').replace(shm_dir, 'SHM_DIR')
    text = text.replace(strata_io_prog + ':', 'strata-io:')
    return re.sub(r'/dev/loop[0-9]+', 'LOOP_DEV', text)


def filter_node_names(text):
    return re.sub(r'#block[0-9]+', 'NODE_NAME', text)


def quote(args):
    return ' '.join(shlex.quote(a) for a in args)
