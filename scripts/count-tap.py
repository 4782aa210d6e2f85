#!/usr/bin/env python3
"""Count test cases in a meson testlog.json whose tests speak TAP.

Prints "passed failed skipped broken": individual TAP results, plus the
number of test binaries that failed without a failing TAP line (a crash, a
timeout, a sanitizer abort).  With a second argument, appends the name of
every failing test (binary and TAP line) to that file, so that the end of
the suite's output says what failed.
"""
import json
import re
import sys

passed = failed = skipped = broken = 0
names = []
with open(sys.argv[1]) as fh:
    for line in fh:
        entry = json.loads(line)
        out = entry.get('stdout') or ''
        p = f = s = 0
        for tap in out.splitlines():
            m = re.match(r'^(not ok|ok)\b(.*)$', tap)
            if not m:
                continue
            if re.search(r'#\s*SKIP', m.group(2), re.I):
                s += 1
            elif m.group(1) == 'ok':
                p += 1
            else:
                f += 1
                names.append(f"{entry.get('name')}: {tap.strip()}")
        passed += p
        failed += f
        skipped += s
        if entry.get('result') not in ('OK', 'SKIP', 'EXPECTEDFAIL') and f == 0:
            broken += 1
            names.append(f"{entry.get('name')}: {entry.get('result')} "
                         f"(no failing TAP line: crash, timeout or "
                         f"sanitizer report)")
print(passed, failed, skipped, broken)
if len(sys.argv) > 2 and names:
    with open(sys.argv[2], 'a') as fh:
        for n in names:
            fh.write(n + '\n')
