#!/usr/bin/env python3
"""Count test cases in a meson testlog.json whose tests speak TAP.

Prints "passed failed skipped broken": individual TAP results, plus the
number of test binaries that failed without a failing TAP line (a crash, a
timeout, a sanitizer abort).
"""
import json
import re
import sys

passed = failed = skipped = broken = 0
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
        passed += p
        failed += f
        skipped += s
        if entry.get('result') not in ('OK', 'SKIP', 'EXPECTEDFAIL') and f == 0:
            broken += 1
print(passed, failed, skipped, broken)
