#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Generate the option tables and the options reference from qapi/block.json.

  qapi-gen.py [--schema FILE] --c OUT.c --h OUT.h   C tables for qapi/schema.c
  qapi-gen.py [--schema FILE] --docs OUT.md         docs/options.md
  qapi-gen.py [--schema FILE] --check FILE.md       fail with a diff when
                                                    FILE.md is out of date

The schema format is described by the "_comment" at the top of
qapi/block.json; the C types are in qapi/schema.h.  Python 3 standard
library only.  Output is deterministic: the same schema always gives the
same bytes, so docs/options.md can be checked in and checked by a test.
"""

import argparse
import difflib
import json
import os
import re
import sys

# 'any' is for the QMP schema (qapi/qmp.json): a value the command checks.
TYPES = ('bool', 'int', 'size', 'string', 'enum', 'object', 'list', 'child',
         'any')
MEMBER_KEYS = {'name', 'type', 'doc', 'required', 'default', 'default_doc',
               'values', 'min', 'max', 'power_of_2', 'members'}
DRIVER_KEYS = {'name', 'aliases', 'doc', 'members', 'members_from'}
TOP_KEYS = {'_comment', 'common', 'drivers'}
NAME_RE = re.compile(r'^[a-z][a-z0-9_-]*$')
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
UINT64_MAX = (1 << 64) - 1
SIZE_SUFFIXES = 'kmgtpe'

SCHEMA_DISPLAY_NAME = 'qapi/block.json'


class SchemaError(Exception):
    pass


# ---- loading and checking -------------------------------------------------

def parse_size(value, where):
    """A size is a non-negative integer, or a string in the dotted-key
    syntax: decimal or hex, with an optional k/M/G/T/P/E suffix."""
    if isinstance(value, bool):
        raise SchemaError(f'{where}: expected a size, got {value!r}')
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        m = re.fullmatch(r'(0[xX][0-9a-fA-F]+|[0-9]+)([kKmMgGtTpPeE]?)', value)
        if not m:
            raise SchemaError(f'{where}: bad size {value!r}')
        n = int(m.group(1), 0)
        if m.group(2):
            n <<= 10 * (SIZE_SUFFIXES.index(m.group(2).lower()) + 1)
    else:
        raise SchemaError(f'{where}: expected a size, got {value!r}')
    if not 0 <= n <= UINT64_MAX:
        raise SchemaError(f'{where}: size {value!r} out of range')
    return n


def check_int(value, where):
    if isinstance(value, bool) or not isinstance(value, int):
        raise SchemaError(f'{where}: expected an integer, got {value!r}')
    if not INT64_MIN <= value <= INT64_MAX:
        raise SchemaError(f'{where}: {value} out of int64 range')
    return value


def check_doc(obj, where):
    doc = obj.get('doc')
    if not isinstance(doc, str) or not doc.strip():
        raise SchemaError(f'{where}: "doc" must be a non-empty string')


def check_member(m, where):
    if not isinstance(m, dict):
        raise SchemaError(f'{where}: a member must be an object')
    extra = set(m) - MEMBER_KEYS
    if extra:
        raise SchemaError(f'{where}: unknown field(s) {sorted(extra)}')
    name = m.get('name')
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise SchemaError(f'{where}: bad or missing "name" {name!r}')
    where = f'{where} ({name})'
    t = m.get('type')
    if t not in TYPES:
        raise SchemaError(f'{where}: "type" must be one of {", ".join(TYPES)}')
    check_doc(m, where)
    for flag in ('required', 'power_of_2'):
        if flag in m and not isinstance(m[flag], bool):
            raise SchemaError(f'{where}: "{flag}" must be true or false')
    if 'default_doc' in m and not isinstance(m['default_doc'], str):
        raise SchemaError(f'{where}: "default_doc" must be a string')

    # A size may also take keywords ("values"), e.g. bounce-threshold=auto.
    if t == 'enum' or (t == 'size' and 'values' in m):
        values = m.get('values')
        if (not isinstance(values, list) or not values or
                not all(isinstance(v, str) and v for v in values)):
            raise SchemaError(f'{where}: {t} needs "values", non-empty strings')
        if len(set(values)) != len(values):
            raise SchemaError(f'{where}: duplicate {t} values')
        if t == 'size' and any(re.match(r'^[0-9]', v) for v in values):
            raise SchemaError(f'{where}: size keywords must not start with a digit')
    elif 'values' in m:
        raise SchemaError(f'{where}: "values" only for enum and size')

    if t in ('object', 'list'):
        if not isinstance(m.get('members'), list) or not m['members']:
            raise SchemaError(f'{where}: {t} needs "members"')
        m['members'] = check_members(m['members'], where)
    elif 'members' in m:
        raise SchemaError(f'{where}: "members" only for object and list')

    if ('min' in m or 'max' in m) and t not in ('int', 'size'):
        raise SchemaError(f'{where}: "min"/"max" only for int and size')
    if m.get('power_of_2') and t != 'size':
        raise SchemaError(f'{where}: "power_of_2" only for size')
    conv = check_int if t == 'int' else parse_size
    for bound in ('min', 'max'):
        if bound in m:
            m[bound] = conv(m[bound], f'{where} {bound}')
            if t == 'size' and m[bound] > INT64_MAX:
                raise SchemaError(f'{where}: {bound} must fit in int64')
    if 'min' in m and 'max' in m and m['min'] > m['max']:
        raise SchemaError(f'{where}: min > max')

    if 'default' in m:
        d = m['default']
        if m.get('required'):
            raise SchemaError(f'{where}: a required member has no default')
        if t in ('object', 'list', 'child', 'any'):
            raise SchemaError(f'{where}: no default for type {t}')
        if t == 'bool' and not isinstance(d, bool):
            raise SchemaError(f'{where}: default must be true or false')
        if t == 'string' and not isinstance(d, str):
            raise SchemaError(f'{where}: default must be a string')
        if t == 'enum' and d not in m['values']:
            raise SchemaError(f'{where}: default {d!r} is not one of the values')
        if t in ('int', 'size'):
            d = m['default'] = conv(d, f'{where} default')
            if 'min' in m and d < m['min'] or 'max' in m and d > m['max']:
                raise SchemaError(f'{where}: default {d} out of bounds')
            if m.get('power_of_2') and (d == 0 or d & (d - 1)):
                raise SchemaError(f'{where}: default {d} not a power of two')
    return m


def check_members(members, where):
    if not isinstance(members, list):
        raise SchemaError(f'{where}: "members" must be a list')
    seen = set()
    for i, m in enumerate(members):
        check_member(m, f'{where}, member {i}')
        if m['name'] in seen:
            raise SchemaError(f'{where}: duplicate member {m["name"]!r}')
        seen.add(m['name'])
    return members


def load_schema(path):
    with open(path, encoding='utf-8') as f:
        try:
            schema = json.load(f)
        except json.JSONDecodeError as e:
            raise SchemaError(f'{path}: {e}') from None
    if not isinstance(schema, dict):
        raise SchemaError(f'{path}: the top level must be an object')
    extra = set(schema) - TOP_KEYS
    if extra:
        raise SchemaError(f'{path}: unknown top-level key(s) {sorted(extra)}')
    common = check_members(schema.get('common'), f'{path}: common')
    common_names = {m['name'] for m in common}
    drivers = schema.get('drivers')
    if not isinstance(drivers, list) or not drivers:
        raise SchemaError(f'{path}: "drivers" must be a non-empty list')
    taken = set()
    for i, drv in enumerate(drivers):
        where = f'{path}: driver {i}'
        if not isinstance(drv, dict):
            raise SchemaError(f'{where}: must be an object')
        extra = set(drv) - DRIVER_KEYS
        if extra:
            raise SchemaError(f'{where}: unknown field(s) {sorted(extra)}')
        name = drv.get('name')
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise SchemaError(f'{where}: bad or missing "name" {name!r}')
        where = f'{path}: driver {name}'
        aliases = drv.setdefault('aliases', [])
        if (not isinstance(aliases, list) or
                not all(isinstance(a, str) and NAME_RE.match(a)
                        for a in aliases)):
            raise SchemaError(f'{where}: "aliases" must be a list of names')
        for n in [name] + aliases:
            if n in taken:
                raise SchemaError(f'{where}: driver name {n!r} used twice')
            taken.add(n)
        check_doc(drv, where)
        src = drv.get('members_from')
        if src is not None:
            # Another driver's option set, shared rather than copied.
            if 'members' in drv:
                raise SchemaError(f'{where}: "members" and "members_from" '
                                  f'are exclusive')
            earlier = [d for d in drivers[:i] if d['name'] == src]
            if not earlier or earlier[0].get('members_from'):
                raise SchemaError(f'{where}: "members_from" must name an '
                                  f'earlier driver with its own members')
            drv['members'] = earlier[0]['members']
        check_members(drv.setdefault('members', []), where)
        clash = common_names & {m['name'] for m in drv['members']}
        if clash:
            raise SchemaError(f'{where}: members {sorted(clash)} are common')
    return common, drivers


# ---- shared rendering -------------------------------------------------------

def render_size(n):
    """Sizes as a user would type them: 1G rather than 1073741824."""
    for i in range(len(SIZE_SUFFIXES), 0, -1):
        unit = 1 << (10 * i)
        if n >= unit and n % unit == 0:
            return f'{n // unit}{SIZE_SUFFIXES[i - 1].upper()}'
    return str(n)


def render_value(m, v):
    t = m['type']
    if t == 'bool':
        return 'true' if v else 'false'
    if t == 'size':
        return render_size(v)
    return str(v)


def default_text(m):
    """The Default column: default_doc wins, else the rendered default."""
    if 'default_doc' in m:
        return m['default_doc']
    if 'default' in m:
        return render_value(m, m['default'])
    return None


def c_ident(*parts):
    return '_'.join(re.sub(r'[^a-z0-9]', '_', p.lower()) for p in parts)


def camel(*parts):
    words = re.split(r'[^a-zA-Z0-9]+', ' '.join(parts))
    return ''.join(w[:1].upper() + w[1:] for w in words if w)


# ---- C ----------------------------------------------------------------------

def c_str(s):
    if s is None:
        return 'NULL'
    out = s.replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n')
    return f'"{out}"'


C_TYPES = {t: 'SCHEMA_TYPE_' + t.upper() for t in TYPES}


class CGen:
    def __init__(self, common, drivers, schema_name):
        self.common = common
        self.drivers = drivers
        self.schema_name = schema_name
        self.c = []         # definitions, dependencies first
        self.h = []         # enum types and default macros

    def member_list(self, members, prefix, exported_as=None):
        """Emit the arrays @members needs, then the list itself; returns
        the C name of the list."""
        for m in members:
            if 'members' in m:
                self.member_list(m['members'], prefix + [m['name']])
            if m['type'] == 'enum' or 'values' in m:
                self.enum(m, prefix)
            self.default_macro(m, prefix)
            if m['type'] == 'enum' or 'values' in m:
                self.h.append('')

        cname = exported_as or 'qapi_members_' + c_ident(*prefix)
        storage = 'const' if exported_as else 'static const'
        self.c.append(f'{storage} SchemaMember {cname}[] = {{')
        for m in members:
            self.c.append(self.member(m, prefix))
        self.c.append('    { .name = NULL },')
        self.c.append('};')
        self.c.append('')
        return cname

    def member(self, m, prefix):
        t = m['type']
        f = [f'.name = {c_str(m["name"])}', f'.type = {C_TYPES[t]}']
        if m.get('required'):
            f.append('.required = true')
        if 'default' in m:
            d = m['default']
            f.append('.has_default = true')
            if t == 'bool':
                f.append(f'.default_int = {int(d)}')
            elif t == 'int':
                f.append(f'.default_int = INT64_C({d})')
            elif t == 'size':
                f.append(f'.default_size = UINT64_C({d})')
            elif t == 'enum':
                f.append(f'.default_int = {m["values"].index(d)}')
            else:
                f.append(f'.default_str = {c_str(d)}')
        text = default_text(m)
        if text is not None:
            f.append(f'.default_text = {c_str(text)}')
        if t == 'enum' or 'values' in m:
            f.append('.values = qapi_enum_' + c_ident(*prefix, m['name']))
        if 'min' in m:
            f.append(f'.has_min = true, .min = INT64_C({m["min"]})')
        if 'max' in m:
            f.append(f'.has_max = true, .max = INT64_C({m["max"]})')
        if m.get('power_of_2'):
            f.append('.power_of_2 = true')
        if 'members' in m:
            f.append('.members = qapi_members_' +
                     c_ident(*prefix, m['name']))
        f.append(f'.doc = {c_str(m["doc"])}')
        return '    {\n' + ''.join(f'        {x},\n' for x in f) + '    },'

    def enum(self, m, prefix):
        ident = c_ident(*prefix, m['name'])
        upper = ident.upper()
        self.h.append('')
        self.h.append(f'typedef enum {camel("qapi", *prefix, m["name"])} {{')
        for v in m['values']:
            self.h.append(f'    QAPI_{upper}_{c_ident(v).upper()},')
        self.h.append(f'    QAPI_{upper}__MAX,')
        self.h.append(f'}} {camel("qapi", *prefix, m["name"])};')
        self.h.append(f'extern const char *const qapi_enum_{ident}[];')
        values = ', '.join(c_str(v) for v in m['values'])
        self.c.append(f'const char *const qapi_enum_{ident}[] = '
                      f'{{ {values}, NULL }};')
        self.c.append('')

    def default_macro(self, m, prefix):
        if 'default' not in m:
            return
        t, d = m['type'], m['default']
        name = f'QAPI_{c_ident(*prefix, m["name"]).upper()}_DEFAULT'
        if t == 'bool':
            value = 'true' if d else 'false'
        elif t == 'int':
            value = f'INT64_C({d})'
        elif t == 'size':
            value = f'UINT64_C({d})'
        elif t == 'enum':
            value = (f'QAPI_{c_ident(*prefix, m["name"]).upper()}_'
                     f'{c_ident(d).upper()}')
        else:
            value = c_str(d)
        self.h.append(f'#define {name} {value}')

    def generate(self):
        banner = (f'/* Generated by scripts/qapi-gen.py from '
                  f'{self.schema_name}: do not edit.\n'
                  f' * SPDX-License-Identifier: MIT */\n')
        self.member_list(self.common, ['common'], 'qapi_common_members')
        for drv in self.drivers:
            self.h.append('')
            if drv['members'] and not drv.get('members_from'):
                self.member_list(drv['members'], [drv['name']])
            if drv['aliases']:
                aliases = ''.join(f'{c_str(a)}, ' for a in drv['aliases'])
            else:
                aliases = ''
            self.c.append(f'static const char *const '
                          f'qapi_aliases_{c_ident(drv["name"])}[] = '
                          f'{{ {aliases}NULL }};')
            self.c.append('')
        if not all(drv['members'] for drv in self.drivers):
            self.c.append('static const SchemaMember qapi_members_none[] = '
                          '{ { .name = NULL } };')
            self.c.append('')
        self.c.append('const SchemaDriver qapi_drivers[] = {')
        for drv in self.drivers:
            owner = drv.get('members_from') or drv['name']
            members = ('qapi_members_' + c_ident(owner)
                       if drv['members'] else 'qapi_members_none')
            self.c.append('    {')
            self.c.append(f'        .name = {c_str(drv["name"])},')
            self.c.append(f'        .aliases = qapi_aliases_'
                          f'{c_ident(drv["name"])},')
            self.c.append(f'        .members = {members},')
            self.c.append(f'        .doc = {c_str(drv["doc"])},')
            self.c.append('    },')
        self.c.append('    { .name = NULL },')
        self.c.append('};')

        c_text = (banner + '\n#include "qapi/qapi-schema.h"\n\n' +
                  '\n'.join(self.c) + '\n')
        h_lines = [l for i, l in enumerate(self.h)
                   if l or (i and self.h[i - 1])]   # no double blank lines
        h_text = (banner +
                  '#ifndef STRATA_QAPI_QAPI_SCHEMA_H\n'
                  '#define STRATA_QAPI_QAPI_SCHEMA_H\n\n'
                  '#include <stdbool.h>\n'
                  '#include <stdint.h>\n'
                  '#include "qapi/schema.h"\n\n'
                  '/* Members every node takes, and the drivers\' schemas '
                  '(name NULL ends it). */\n'
                  'extern const SchemaMember qapi_common_members[];\n'
                  'extern const SchemaDriver qapi_drivers[];\n\n' +
                  '\n'.join(h_lines).strip('\n') + '\n\n'
                  '#endif\n')
        return c_text, h_text


# ---- Markdown -----------------------------------------------------------------

DOCS_INTRO = '''\
# Block node options

<!-- Generated by scripts/qapi-gen.py from {schema}: do not edit.
     Change the schema, then run: scripts/qapi-gen.py --docs docs/options.md -->

Every node of a block graph is opened from a tree of options, as QEMU's
`blockdev-add` takes it, and option names follow QEMU's where the concept
exists.  A node takes the [common options](#common-options) and those of its
driver; a child option opens another node, whose options nest under the
child's key.  The tree comes in either of two syntaxes.

**JSON**, where values have their own types:

```json
{{"driver": "raw", "node-name": "disk0",
 "file": {{"driver": "file", "filename": "disk.img", "aio": "io_uring",
          "cache": {{"direct": true}}}}}}
```

**Dotted keys**, for command lines: nested keys are joined with `.`, the
elements of a list are numbered from 0 (`inject-error.0.event=read_aio`), a
`,,` stands for a comma inside a value.  Every value is a string and is
converted to the option's type: `on`/`off`/`true`/`false` for booleans,
decimal or `0x` hex for integers, and sizes may end in `k`, `M`, `G`, `T`
(powers of 1024).  The tree above reads:

```
driver=raw,node-name=disk0,file.driver=file,file.filename=disk.img,file.aio=io_uring,file.cache.direct=on
```

A `json:{{...}}` filename holds JSON where a filename is expected.

Types: **bool**; **int** (64-bit, signed); **size** (bytes, an integer
≥ 0; JSON also accepts a string with a suffix such as `"1G"`); **string**;
**enum** (one of the listed strings); **object** (nested options, listed
below it as `object.member`); **list** (of objects, listed as
`list.N.member`); **node** (a child node: an object with the child's own
options, or the node-name of an existing node as a string).

Errors name the option by its path, e.g.
`file.aio: expected one of threads, native, io_uring, auto`.
'''


def md_escape(s):
    return s.replace('|', '\\|')


def doc_type(m):
    return {'child': 'node'}.get(m['type'], m['type'])


def doc_description(m):
    parts = [m['doc'].strip()]
    t = m['type']
    if t == 'enum':
        parts.append('Values: ' + ', '.join(f'`{v}`' for v in m['values']) +
                     '.')
    elif 'values' in m:
        parts.append('A size or ' + ', '.join(f'`{v}`' for v in m['values']) +
                     '.')
    if 'min' in m and 'max' in m:
        parts.append(f'From {render_value(m, m["min"])} to '
                     f'{render_value(m, m["max"])}.')
    elif 'min' in m:
        parts.append(f'At least {render_value(m, m["min"])}.')
    elif 'max' in m:
        parts.append(f'At most {render_value(m, m["max"])}.')
    if m.get('power_of_2'):
        parts.append('A power of two.')
    return md_escape(' '.join(parts))


def doc_default(m):
    if m.get('required'):
        return '*required*'
    if 'default_doc' in m:
        return md_escape(m['default_doc'])
    if 'default' in m:
        return f'`{render_value(m, m["default"])}`'
    return ''


def doc_rows(members, prefix):
    for m in members:
        path = prefix + m['name']
        yield (f'| `{path}` | {doc_type(m)} | {doc_default(m)} | '
               f'{doc_description(m)} |')
        if m['type'] == 'object':
            yield from doc_rows(m['members'], path + '.')
        elif m['type'] == 'list':
            yield from doc_rows(m['members'], path + '.N.')


def doc_table(members):
    out = ['| Option | Type | Default | Description |',
           '|---|---|---|---|']
    out.extend(doc_rows(members, ''))
    return '\n'.join(out) + '\n'


def generate_docs(common, drivers, schema_name):
    out = [DOCS_INTRO.format(schema=schema_name)]
    out.append('## Common options\n\n'
               'Every node takes these, whatever its driver.\n\n' +
               doc_table(common))
    out.append('## Drivers\n\n' + ''.join(
        f'- [`{d["name"]}`](#driver-{d["name"]})\n' for d in drivers))
    for drv in drivers:
        title = f'## Driver `{drv["name"]}`'
        text = drv['doc'].strip()
        if drv['aliases']:
            names = ', '.join(f'`{a}`' for a in drv['aliases'])
            text += f' Also selected as {names}.'
        if drv.get('members_from'):
            src = drv['members_from']
            table = (f'The same options as [`{src}`](#driver-{src}).\n')
        else:
            table = (doc_table(drv['members']) if drv['members']
                     else 'No options of its own.\n')
        out.append(f'{title}\n\n{text}\n\n{table}')
    return '\n'.join(out)


# ---- main -------------------------------------------------------------------------

def write_if_changed(path, text):
    """Leave an unchanged file alone so that its dependants do not
    rebuild."""
    try:
        with open(path, encoding='utf-8') as f:
            if f.read() == text:
                return
    except FileNotFoundError:
        pass
    with open(path, 'w', encoding='utf-8') as f:
        f.write(text)


def check_docs(path, docs, prog):
    """0 if @path holds exactly @docs; else print a diff and how to
    regenerate it (scripts/@prog.py --docs @path) and return 1.  Shared by
    qapi-gen.py and qmp-gen.py."""
    try:
        with open(path, encoding='utf-8') as f:
            current = f.read()
    except OSError as e:
        print(f'{prog}: {e}', file=sys.stderr)
        return 1
    if current == docs:
        return 0
    sys.stderr.writelines(difflib.unified_diff(
        current.splitlines(keepends=True), docs.splitlines(keepends=True),
        fromfile=path, tofile='generated'))
    print(f'{prog}: {path} is out of date; run scripts/{prog}.py --docs '
          f'{path}', file=sys.stderr)
    return 1


def main(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    default_schema = os.path.join(here, '..', 'qapi', 'block.json')
    ap = argparse.ArgumentParser(
        description='Generate C tables and docs from the option schema.')
    ap.add_argument('--schema', default=default_schema,
                    help='schema file (default: qapi/block.json)')
    ap.add_argument('--c', metavar='OUT.c', help='write the C tables')
    ap.add_argument('--h', metavar='OUT.h', help='write the C header')
    ap.add_argument('--docs', metavar='OUT.md', help='write the reference')
    ap.add_argument('--check', metavar='FILE.md',
                    help='fail with a diff if FILE.md is not up to date')
    args = ap.parse_args(argv)
    if not (args.c or args.h or args.docs or args.check):
        ap.error('nothing to do: give --c/--h, --docs or --check')
    if bool(args.c) != bool(args.h):
        ap.error('--c and --h go together')

    # Generated text names the schema the same way wherever the build runs.
    schema_name = SCHEMA_DISPLAY_NAME
    try:
        common, drivers = load_schema(args.schema)
    except (SchemaError, OSError) as e:
        print(f'qapi-gen: {e}', file=sys.stderr)
        return 1

    if args.c:
        c_text, h_text = CGen(common, drivers, schema_name).generate()
        write_if_changed(args.c, c_text)
        write_if_changed(args.h, h_text)
    docs = generate_docs(common, drivers, schema_name)
    if args.docs:
        write_if_changed(args.docs, docs)
    if args.check:
        return check_docs(args.check, docs, 'qapi-gen')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
