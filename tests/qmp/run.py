#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""QMP transcript tests, in the iotests style.

  run.py --daemon PATH [--update] [CASE.qmp ...]
      Run each transcript against strata-storage-daemon and compare the
      output (timestamps and versions filtered) with CASE.out.
  run.py --daemon PATH --qsd PATH [CASE.qmp ...]
      Run each transcript against Strata and qemu-storage-daemon side by
      side and check that the responses agree in shape: return or error,
      the same error class and message, and return values whose members
      (Strata's, x-strata-* aside) QSD's have too, with the same JSON
      types.  Lines marked @differs are known differences, listed with
      their reason; blocks in @strata-only ... @end run on Strata alone.

Transcript syntax (one item per line; '#' starts a comment):
  @daemon-args ARGS   extra daemon arguments ($TMP, $IMG, $IMG2 expand;
                      $IMG and $IMG2 are 1 MiB raw files made per run)
  @monitors N         N monitors (m0..m{N-1}), default 1
  @case NAME          start a case (printed as '== NAME')
  {JSON}              send a command, print it and its response (and any
                      events that arrived before the response)
  @raw LITERAL        send a Python string literal's bytes as they are
  @recv N             print the next N messages (5 s timeout each)
  @connect N          use monitor N (connect, print the greeting)
  @negotiate          send qmp_capabilities on the current connection
  @close              close the current connection
  @event NAME         wait for event NAME and print it
  @shell CMD          run CMD with sh ($PID is the daemon's pid)
  @differs REASON     the next response is known to differ from QSD's
  @summarize-padding  print only each node's rmw-writes counter of the next
                      (query-blockstats) response
  @summarize          print only the commands and events of the next
                      response (query-qmp-schema), so that block drivers
                      added to qapi/block.json do not change the output
  @strata-only / @end a block QSD does not run
"""

import argparse
import difflib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', '..', 'scripts'))
from qmp import QMPClient  # noqa: E402


def normalize(msg):
    """Filter what differs run to run: timestamps and versions."""
    if not isinstance(msg, dict):
        return msg
    msg = json.loads(json.dumps(msg))
    if 'timestamp' in msg:
        msg['timestamp'] = {'seconds': 'SECS', 'microseconds': 'USECS'}
    if 'QMP' in msg:
        msg['QMP']['version'] = 'VERSION'
    ret = msg.get('return')
    if isinstance(ret, str):
        # strata-io's timing lines (x-strata-io)
        msg['return'] = re.sub(r'; [0-9:.]+ sec \([^)]*\)', '; TIMING', ret)
    if isinstance(ret, dict) and 'qemu' in ret and 'package' in ret:
        msg['return'] = {'qemu': 'VERSION', 'package': 'PACKAGE'}
    if isinstance(ret, list):
        # query-iothreads: a real thread id, checked here and hidden
        for item in ret:
            if isinstance(item, dict) and 'thread-id' in item:
                tid = item['thread-id']
                item['thread-id'] = ('TID' if isinstance(tid, int) and tid > 0
                                     else 'BAD-TID %r' % (tid,))
    return msg


def dumps(msg):
    return json.dumps(normalize(msg), sort_keys=True)


class Daemon:
    def __init__(self, exe, args, tmp, nmon):
        self.tmp = tmp
        self.socks = [os.path.join(tmp, f'm{i}.sock') for i in range(nmon)]
        argv = [exe] + args
        for i, s in enumerate(self.socks):
            argv += ['--chardev',
                     f'socket,id=m{i},path={s},server=on,wait=off',
                     '--monitor', f'chardev=m{i}']
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not all(os.path.exists(s) for s in self.socks):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                out = self.proc.stdout.read().decode(errors='replace')
                raise RuntimeError(f'daemon did not start: {out}')
            time.sleep(0.01)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        out = self.proc.stdout.read().decode(errors='replace')
        return self.proc.returncode, out


class Runner:
    def __init__(self, exe, path, tmp, for_qsd=False):
        self.exe, self.path, self.tmp = exe, path, tmp
        self.for_qsd = for_qsd
        self.out = []
        self.pairs = []         # (case, request, response, differs)
        self.cases = 0
        self.strata_only = False
        self.summarize = False

    def expand(self, s):
        for k, v in (('$TMP', self.tmp), ('$IMG2', self.img2),
                     ('$IMG', self.img)):
            s = s.replace(k, v)
        return s

    def run(self):
        with open(self.path, encoding='utf-8') as f:
            lines = f.read().splitlines()
        args, nmon = [], 1
        for line in lines:
            if line.startswith('@daemon-args '):
                args += shlex.split(line[len('@daemon-args '):])
            elif line.startswith('@monitors '):
                nmon = int(line.split()[1])
        self.img = os.path.join(self.tmp, 'img.raw')
        self.img2 = os.path.join(self.tmp, 'img2.raw')
        for p in (self.img, self.img2):
            with open(p, 'wb') as f:
                f.truncate(1 << 20)
        args = [self.expand(a) for a in args]
        self.daemon = Daemon(self.exe, args, self.tmp, nmon)
        self.conns = {}
        self.cur = None
        case = ''
        differs = None
        skipping = False
        try:
            for line in lines:
                s = line.strip()
                if not s or s.startswith('#') or s.startswith('@daemon-args')\
                        or s.startswith('@monitors'):
                    continue
                if s == '@strata-only':
                    skipping = self.for_qsd
                    self.strata_only = True
                    continue
                if s == '@end':
                    skipping = self.strata_only = False
                    continue
                if skipping:
                    continue
                word, _, rest = s.partition(' ')
                if word == '@case':
                    case = rest
                    self.cases += 1
                    self.out.append(f'== {rest}')
                elif word == '@differs':
                    differs = rest
                elif word == '@summarize':
                    self.summarize = True
                elif word == '@summarize-padding':
                    self.summarize = 'padding'
                elif word == '@connect':
                    self.connect(int(rest))
                elif word == '@negotiate':
                    self.send_and_print('{"execute": "qmp_capabilities"}',
                                        case, None)
                elif word == '@close':
                    self.conns.pop(self.cur).close()
                    self.cur = None
                    self.out.append('-- closed')
                elif word == '@raw':
                    # A Python expression (the tests' own input).
                    data = eval(rest, {'__builtins__': {}})
                    self.out.append(f'=> raw {rest}')
                    self.conn().send_raw(data)
                elif word == '@recv':
                    for _ in range(int(rest)):
                        msg = self.conn().recv(5)
                        self.out.append('<= ' + (dumps(msg) if msg else
                                                 'nothing'))
                        self.pairs.append((case, 'raw', msg, differs, self.strata_only))
                        differs = None
                elif word == '@event':
                    ev = self.conn().wait_event(rest, 10)
                    self.out.append('<= ' + (dumps(ev) if ev else
                                             f'no {rest} event'))
                elif word == '@shell':
                    cmd = self.expand(rest).replace(
                        '$PID', str(self.daemon.proc.pid))
                    r = subprocess.run(cmd, shell=True, capture_output=True,
                                       text=True)
                    self.out.append(f'$ {rest}')
                    self.out.extend(r.stdout.splitlines())
                elif s.startswith('{'):
                    self.send_and_print(self.expand(s), case, differs)
                    differs = None
                else:
                    raise RuntimeError(f'{self.path}: bad line {line!r}')
        finally:
            for c in self.conns.values():
                c.close()
            rc, output = self.daemon.stop()
        self.out.append(f'-- daemon exit status {rc}')
        self.out = [l.replace(self.tmp, '$TMP') for l in self.out]
        if not self.for_qsd:
            left = [s for s in self.daemon.socks if os.path.exists(s)]
            if left:
                self.out.append(f'-- sockets left behind: {left}')
        return self.out

    def conn(self):
        if self.cur is None:
            self.connect(0)
        return self.conns[self.cur]

    def connect(self, n):
        if n not in self.conns:
            # The socket file appears at bind(), a moment before listen().
            for attempt in range(100):
                try:
                    c = QMPClient(self.daemon.socks[n], negotiate=False,
                                  timeout=10)
                    break
                except ConnectionRefusedError:
                    if attempt == 99:
                        raise
                    time.sleep(0.02)
            self.conns[n] = c
            self.out.append(f'-- connected to m{n}: {dumps(c.greeting)}')
        self.cur = n

    def send_and_print(self, text, case, differs):
        c = self.conn()
        c.send_raw(text + '\n')
        self.out.append(f'=> {text}')
        resp = c.response(10)
        if self.summarize == 'padding' and resp and \
                isinstance(resp.get('return'), list):
            resp = dict(resp, **{'return': {
                s['node-name']: s['x-strata-padding']['rmw-writes']
                for s in resp['return']}})
        elif self.summarize and resp and isinstance(resp.get('return'), list):
            resp = dict(resp, **{'return': sorted(
                f'{e["meta-type"]} {e["name"]}' for e in resp['return']
                if e.get('meta-type') in ('command', 'event'))})
        self.summarize = False
        for ev in c.events:
            self.out.append('<= ' + dumps(ev))
        c.events.clear()
        self.out.append('<= ' + (dumps(resp) if resp else 'nothing'))
        self.pairs.append((case, text, resp, differs, self.strata_only))


def shape_diff(a, b, path='return'):
    """Differences where Strata's value @a is not shaped like QSD's @b."""
    if isinstance(a, dict):
        if not isinstance(b, dict):
            return [f'{path}: object vs {type(b).__name__}']
        out = []
        for k, v in a.items():
            if k.startswith('x-strata'):
                continue
            if k not in b:
                out.append(f'{path}.{k}: not in QSD\'s')
            else:
                out += shape_diff(v, b[k], f'{path}.{k}')
        return out
    if isinstance(a, list):
        if not isinstance(b, list):
            return [f'{path}: array vs {type(b).__name__}']
        if a and b:
            return shape_diff(a[0], b[0], f'{path}[0]')
        return []
    if type(a) is not type(b) and not (isinstance(a, (int, float)) and
                                       isinstance(b, (int, float))):
        return [f'{path}: {type(a).__name__} vs {type(b).__name__}']
    return []


def compare(strata, qsd):
    problems, known = [], []
    strata = [p for p in strata if not p[4]]
    for (case, req, a, differs, _), (_, _, b, _, _) in zip(strata, qsd):
        where = f'[{case}] {req}'
        if differs:
            known.append(f'{where}: {differs}')
            continue
        if a is None or b is None:
            if (a is None) != (b is None):
                problems.append(f'{where}: one daemon sent nothing')
            continue
        if ('error' in a) != ('error' in b):
            problems.append(f'{where}: Strata {dumps(a)} vs QSD {dumps(b)}')
        elif 'error' in a:
            if a['error'] != b['error']:
                problems.append(f'{where}: error {a["error"]} vs '
                                f'{b["error"]}')
        elif 'return' in a:
            if 'return' not in b:
                # Not an answer at all (a greeting, or a reply that
                # belongs elsewhere): the sequences went out of step.
                problems.append(f'{where}: Strata {dumps(a)} vs QSD '
                                f'{dumps(b)}')
                continue
            for d in shape_diff(a['return'], b['return']):
                problems.append(f'{where}: {d}')
        if 'id' in a or 'id' in b:
            if a.get('id') != b.get('id'):
                problems.append(f'{where}: id {a.get("id")} vs {b.get("id")}')
    if len(strata) != len(qsd):
        problems.append(f'{len(strata)} responses vs {len(qsd)}')
    return problems, known


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument('--daemon', required=True)
    ap.add_argument('--qsd')
    ap.add_argument('--update', action='store_true')
    ap.add_argument('--tap', action='store_true',
                    help='TAP output: one result per case (per transcript '
                    'with --qsd)')
    ap.add_argument('cases', nargs='*')
    args = ap.parse_args(argv)
    if args.qsd and not shutil.which(args.qsd):
        print(f'1..0 # SKIP {args.qsd} not found (apt-get install '
              f'qemu-system-common)' if args.tap else
              f'skipped: {args.qsd} not found')
        return 0
    cases = args.cases or sorted(
        os.path.join(HERE, f) for f in os.listdir(HERE) if f.endswith('.qmp'))
    failed, total_cases = 0, 0
    tap_n = 0

    def tap(ok, what, detail=()):
        nonlocal tap_n
        tap_n += 1
        for d in detail:
            print(f'# {d}')
        print(f'{"ok" if ok else "not ok"} {tap_n} - {what}')

    if not args.tap:
        def tap(ok, what, detail=()):     # noqa: F811
            for d in detail:
                print(d)
    for path in cases:
        name = os.path.basename(path)
        tmp = tempfile.mkdtemp(prefix='strata-qmp-')
        try:
            r = Runner(args.daemon, path, tmp)
            out = '\n'.join(r.run()) + '\n'
            total_cases += r.cases
            if args.qsd:
                tmp2 = tempfile.mkdtemp(prefix='strata-qmp-qsd-')
                try:
                    q = Runner(args.qsd, path, tmp2, for_qsd=True)
                    q.run()
                finally:
                    shutil.rmtree(tmp2, ignore_errors=True)
                problems, known = compare(r.pairs, q.pairs)
                detail = [f'{name}: known difference: {k}' for k in known]
                detail += [f'{name}: MISMATCH: {p}' for p in problems]
                if problems:
                    failed += 1
                tap(not problems, f'{name}: {len(q.pairs)} responses '
                    f'compared with qemu-storage-daemon', detail)
                if not args.tap:
                    print(f'{name}: {"FAIL" if problems else "ok"}')
                continue
            golden = os.path.splitext(path)[0] + '.out'
            if args.update:
                with open(golden, 'w', encoding='utf-8') as f:
                    f.write(out)
                print(f'{name}: updated')
                continue
            try:
                with open(golden, encoding='utf-8') as f:
                    want = f.read()
            except OSError:
                want = ''
            got_s, want_s = sections(out), sections(want)
            bad = False
            for i, (title, text) in enumerate(got_s):
                exp = want_s[i] if i < len(want_s) else (title, '')
                diff = list(difflib.unified_diff(
                    exp[1].splitlines(), text.splitlines(), golden,
                    'actual', lineterm=''))
                tap(not diff and exp[0] == title, f'{name}: {title}', diff)
                bad |= bool(diff) or exp[0] != title
            if len(want_s) > len(got_s):
                tap(False, f'{name}: {len(want_s) - len(got_s)} expected '
                    f'cases did not run')
                bad = True
            failed += bad
            if not args.tap:
                print(f'{name}: {"FAIL" if bad else "ok"} ({r.cases} cases)')
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.tap:
        print(f'1..{tap_n}')
    else:
        print(f'{len(cases) - failed}/{len(cases)} transcripts passed, '
              f'{total_cases} cases')
    return 1 if failed else 0


def sections(text):
    """Split a transcript's output at its '== case' lines: [(title,
    text)], the lines before the first case under 'start'."""
    out = [('start', [])]
    for line in text.splitlines():
        if line.startswith('== '):
            out.append((line[3:], []))
        out[-1][1].append(line)
    return [(t, '\n'.join(ls)) for t, ls in out if ls or t != 'start']


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
