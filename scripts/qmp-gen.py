#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Generate the QMP tables, the introspection data and docs/qmp.md from
qapi/qmp.json (with qapi/block.json for blockdev-add's arguments).

  qmp-gen.py [--schema F] [--block-schema F] --c OUT.c --h OUT.h
  qmp-gen.py [--schema F] [--block-schema F] --docs OUT.md
  qmp-gen.py [--schema F] [--block-schema F] --check FILE.md

The member format and its checks are qapi-gen.py's (imported); the format
of qmp.json is described by its "_comment".  Standard library only;
deterministic output.
"""

import argparse
import importlib.util
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location(
    'qapi_gen', os.path.join(HERE, 'qapi-gen.py'))
qg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(qg)

SchemaError = qg.SchemaError
SCHEMA_DISPLAY_NAME = 'qapi/qmp.json'
TOP_KEYS = {'_comment', 'commands', 'events', 'objects', 'exports'}
COMMAND_KEYS = {'name', 'doc', 'args', 'args_from', 'returns'}
ARGS_FROM = ('blockdev', 'export', 'object')


def check_named_list(items, keys, where, members_key):
    if not isinstance(items, list) or not items:
        raise SchemaError(f'{where}: must be a non-empty list')
    seen = set()
    for i, it in enumerate(items):
        w = f'{where} {i}'
        if not isinstance(it, dict):
            raise SchemaError(f'{w}: must be an object')
        extra = set(it) - keys
        if extra:
            raise SchemaError(f'{w}: unknown field(s) {sorted(extra)}')
        name = it.get('name')
        if not isinstance(name, str) or not name:
            raise SchemaError(f'{w}: bad or missing "name"')
        if name in seen:
            raise SchemaError(f'{w}: duplicate name {name!r}')
        seen.add(name)
        qg.check_doc(it, f'{where} {name}')
        if members_key:
            qg.check_members(it.setdefault(members_key, []),
                             f'{where} {name}')
    return items


def load(path, block_path):
    with open(path, encoding='utf-8') as f:
        try:
            s = json.load(f)
        except json.JSONDecodeError as e:
            raise SchemaError(f'{path}: {e}') from None
    extra = set(s) - TOP_KEYS
    if extra:
        raise SchemaError(f'{path}: unknown top-level key(s) {sorted(extra)}')
    cmds = check_named_list(s.get('commands'), COMMAND_KEYS,
                            f'{path}: command', None)
    for c in cmds:
        w = f'{path}: command {c["name"]}'
        if 'args' in c and 'args_from' in c:
            raise SchemaError(f'{w}: "args" and "args_from" are exclusive')
        if 'args_from' in c and c['args_from'] not in ARGS_FROM:
            raise SchemaError(f'{w}: "args_from" must be one of {ARGS_FROM}')
        qg.check_members(c.setdefault('args', []), w)
        if not isinstance(c.get('returns'), str):
            raise SchemaError(f'{w}: "returns" must be a string')
    events = check_named_list(s.get('events'), {'name', 'doc', 'data'},
                              f'{path}: event', 'data')
    objects = check_named_list(s.get('objects'), {'name', 'doc', 'members'},
                               f'{path}: object', 'members')
    exp = s.get('exports')
    if not isinstance(exp, dict) or set(exp) != {'common', 'types'}:
        raise SchemaError(f'{path}: "exports" needs "common" and "types"')
    qg.check_members(exp['common'], f'{path}: exports common')
    types = check_named_list(exp['types'], {'name', 'doc', 'members'},
                             f'{path}: export type', 'members')
    tmember = [m for m in exp['common'] if m['name'] == 'type']
    if not tmember or tmember[0]['values'] != [t['name'] for t in types]:
        raise SchemaError(f'{path}: exports common "type" must list the '
                          f'export types in order')
    common, drivers = qg.load_schema(block_path)
    return cmds, events, objects, exp['common'], types, common, drivers


# ---- C ----------------------------------------------------------------------

def generate_c(cmds, events, objects, exp_common, exp_types, intro):
    g = qg.CGen([], [], SCHEMA_DISPLAY_NAME)
    cmd_lists = {}
    for c in cmds:
        if c['args']:
            cmd_lists[c['name']] = g.member_list(c['args'],
                                                 ['qmp', 'cmd', c['name']])
    ev_lists = {}
    for e in events:
        if e['data']:
            ev_lists[e['name']] = g.member_list(e['data'],
                                                ['qmp', 'event', e['name']])
    obj_lists = {o['name']: g.member_list(o['members'], ['qmp', 'obj',
                                                         o['name']])
                 for o in objects}
    g.member_list(exp_common, ['qmp', 'export'], 'qmp_export_common_members')
    exp_lists = {t['name']: g.member_list(t['members'],
                                          ['qmp', 'export', t['name']])
                 for t in exp_types}
    c = g.c
    c.append('static const SchemaMember qmp_members_none[] = '
             '{ { .name = NULL } };')
    c.append('static const char *const qmp_no_aliases[] = { NULL };')
    c.append('')
    kinds = {None: 'QMP_ARGS_MEMBERS', 'blockdev': 'QMP_ARGS_BLOCKDEV',
             'export': 'QMP_ARGS_EXPORT', 'object': 'QMP_ARGS_OBJECT'}
    c.append('const QmpCommandSchema qmp_command_schemas[] = {')
    for cmd in cmds:
        c.append('    {')
        c.append(f'        .name = {qg.c_str(cmd["name"])},')
        c.append(f'        .args_kind = {kinds[cmd.get("args_from")]},')
        c.append(f'        .args = {cmd_lists.get(cmd["name"], "qmp_members_none")},')
        c.append(f'        .doc = {qg.c_str(cmd["doc"])},')
        c.append('    },')
    c.append('    { .name = NULL },')
    c.append('};')
    c.append('')
    c.append('const QmpEventSchema qmp_event_schemas[] = {')
    for e in events:
        c.append(f'    {{ .name = {qg.c_str(e["name"])}, .data = '
                 f'{ev_lists.get(e["name"], "qmp_members_none")} }},')
    c.append('    { .name = NULL },')
    c.append('};')
    c.append('')
    for arr, items, lists in (('qmp_object_schemas', objects, obj_lists),
                              ('qmp_export_schemas', exp_types, exp_lists)):
        c.append(f'const SchemaDriver {arr}[] = {{')
        for it in items:
            c.append(f'    {{ .name = {qg.c_str(it["name"])}, .aliases = '
                     f'qmp_no_aliases, .members = {lists[it["name"]]}, '
                     f'.doc = {qg.c_str(it["doc"])} }},')
        c.append('    { .name = NULL },')
        c.append('};')
        c.append('')
    c.append('const char qmp_introspection_json[] =')
    text = json.dumps(intro, separators=(',', ':'), sort_keys=False)
    for i in range(0, len(text), 68):
        c.append(f'    {qg.c_str(text[i:i + 68])}')
    c.append('    ;')
    banner = ('/* Generated by scripts/qmp-gen.py from qapi/qmp.json: '
              'do not edit.\n * SPDX-License-Identifier: MIT */\n')
    c_text = banner + '\n#include "qapi/qmp-schema.h"\n\n' + '\n'.join(c) + '\n'
    h_lines = [l for i, l in enumerate(g.h) if l or (i and g.h[i - 1])]
    h_text = (banner +
              '#ifndef STRATA_QAPI_QMP_SCHEMA_H\n'
              '#define STRATA_QAPI_QMP_SCHEMA_H\n\n'
              '#include <stdbool.h>\n'
              '#include <stdint.h>\n'
              '#include "qapi/schema.h"\n\n'
              '/* Where a command\'s arguments are described. */\n'
              'typedef enum QmpArgsKind {\n'
              '    QMP_ARGS_MEMBERS,   /* .args */\n'
              '    QMP_ARGS_BLOCKDEV,  /* a node\'s options (qapi/block.json) */\n'
              '    QMP_ARGS_EXPORT,    /* qmp_export_common_members + type */\n'
              '    QMP_ARGS_OBJECT,    /* qom-type, id + qmp_object_schemas */\n'
              '} QmpArgsKind;\n\n'
              'typedef struct QmpCommandSchema {\n'
              '    const char *name;           /* NULL ends the table */\n'
              '    QmpArgsKind args_kind;\n'
              '    const SchemaMember *args;\n'
              '    const char *doc;\n'
              '} QmpCommandSchema;\n\n'
              'typedef struct QmpEventSchema {\n'
              '    const char *name;\n'
              '    const SchemaMember *data;\n'
              '} QmpEventSchema;\n\n'
              'extern const QmpCommandSchema qmp_command_schemas[];\n'
              'extern const QmpEventSchema qmp_event_schemas[];\n'
              '/* Object and export types, in the SchemaDriver shape. */\n'
              'extern const SchemaDriver qmp_object_schemas[];\n'
              'extern const SchemaDriver qmp_export_schemas[];\n'
              'extern const SchemaMember qmp_export_common_members[];\n'
              '/* query-qmp-schema\'s return value, as JSON text. */\n'
              'extern const char qmp_introspection_json[];\n\n' +
              '\n'.join(h_lines).strip('\n') + '\n\n#endif\n')
    return c_text, h_text


# ---- introspection (QEMU's SchemaInfo list) ----------------------------------

class Intro:
    BUILTIN = {'bool': 'boolean', 'int': 'int', 'size': 'int',
               'string': 'string', 'any': 'value', 'null': 'null'}

    def __init__(self):
        self.infos = []
        self.names = set()

    def add(self, info):
        if info['name'] not in self.names:
            self.names.add(info['name'])
            self.infos.append(info)
        return info['name']

    def builtin(self, t):
        name = {'string': 'str', 'size': 'size', 'int': 'int',
                'bool': 'bool', 'any': 'any', 'null': 'null'}[t]
        return self.add({'name': name, 'meta-type': 'builtin',
                         'json-type': self.BUILTIN[t]})

    def member_type(self, m, prefix):
        t = m['type']
        if t in ('bool', 'int', 'size', 'string', 'any'):
            return self.builtin(t)
        if t == 'enum':
            return self.add({'name': prefix + '-' + m['name'],
                             'meta-type': 'enum', 'values': m['values'],
                             'members': [{'name': v} for v in m['values']]})
        if t == 'child':
            return self.add({'name': 'BlockdevRef', 'meta-type': 'alternate',
                             'members': [{'type': 'BlockdevOptions'},
                                         {'type': self.builtin('string')}]})
        inner = self.object(m['members'], prefix + '-' + m['name'])
        if t == 'object':
            return inner
        return self.add({'name': f'[{inner}]', 'meta-type': 'array',
                         'element-type': inner})

    def object(self, members, name, extra=None):
        info = {'name': name, 'meta-type': 'object', 'members': []}
        self.names.add(name)
        for m in members:
            mi = {'name': m['name'], 'type': self.member_type(m, name)}
            if not m.get('required'):
                mi['default'] = None
            info['members'].append(mi)
        if extra:
            info.update(extra)
        self.infos.append(info)
        return name


def introspection(cmds, events, objects, exp_common, exp_types, common,
                  drivers):
    it = Intro()
    empty = it.add({'name': 'q_empty', 'meta-type': 'object', 'members': []})
    any_t = it.builtin('any')
    # blockdev-add: common options, then a variant per driver on 'driver'.
    variants = []
    for d in drivers:
        variants.append({'case': d['name'],
                         'type': it.object(d['members'],
                                           'BlockdevOptions-' + d['name'])})
    drv_common = [dict(m) for m in common]
    drv_common[0] = dict(drv_common[0], type='enum',
                         values=[d['name'] for d in drivers])
    it.object(drv_common, 'BlockdevOptions',
              {'tag': 'driver', 'variants': variants})
    variants = [{'case': t['name'],
                 'type': it.object(t['members'], 'BlockExportOptions-' +
                                   t['name'])} for t in exp_types]
    it.object(exp_common, 'BlockExportOptions',
              {'tag': 'type', 'variants': variants})
    variants = [{'case': o['name'],
                 'type': it.object(o['members'], 'ObjectOptions-' +
                                   o['name'])} for o in objects]
    it.object([{'name': 'qom-type', 'type': 'enum', 'required': True,
                'values': [o['name'] for o in objects]},
               {'name': 'id', 'type': 'string', 'required': True}],
              'ObjectOptions', {'tag': 'qom-type', 'variants': variants})
    from_types = {'blockdev': 'BlockdevOptions', 'export': 'BlockExportOptions',
                  'object': 'ObjectOptions'}
    for c in cmds:
        if c.get('args_from'):
            arg = from_types[c['args_from']]
        elif c['args']:
            arg = it.object(c['args'], 'q_obj_' + c['name'] + '-arg')
        else:
            arg = empty
        it.add({'name': c['name'], 'meta-type': 'command', 'arg-type': arg,
                'ret-type': empty if c['returns'].startswith('An empty')
                else any_t})
    for e in events:
        arg = (it.object(e['data'], 'q_obj_' + e['name'] + '-arg')
               if e['data'] else empty)
        it.add({'name': e['name'], 'meta-type': 'event', 'arg-type': arg})
    return it.infos


# ---- Markdown -----------------------------------------------------------------

DOCS_INTRO = '''\
# QMP reference

<!-- Generated by scripts/qmp-gen.py from qapi/qmp.json: do not edit.
     Change the schema, then run: scripts/qmp-gen.py --docs docs/qmp.md -->

`strata-storage-daemon` is configured at run time over QMP, the QEMU
Machine Protocol, with the command and event names and argument shapes of
`qemu-storage-daemon` 7.2 where the concept exists (see
[strata-storage-daemon.md](strata-storage-daemon.md) for the protocol
details and every known difference).  Arguments are checked against this
schema before a command runs; an error names the offending member, in
QEMU's words ("Parameter 'size' is missing").

Types as in the [options reference](options.md); **any** is a value the
command checks itself.
'''


def member_section(members):
    if not members:
        return 'No arguments.\n'
    return qg.doc_table(members)


def generate_docs(cmds, events, objects, exp_common, exp_types):
    out = [DOCS_INTRO, '## Commands\n']
    out.append(''.join(f'- [`{c["name"]}`](#{c["name"].replace("_", "_")})\n'
                       for c in cmds))
    for c in cmds:
        out.append(f'\n### {c["name"]}\n\n{c["doc"].strip()}\n')
        src = c.get('args_from')
        if src == 'blockdev':
            out.append('\nArguments: a node\'s options, as in the '
                       '[options reference](options.md).\n')
        elif src == 'export':
            out.append('\nArguments: an export\'s options, see '
                       '[Export types](#export-types).\n')
        elif src == 'object':
            out.append('\nArguments: `qom-type`, `id` and the type\'s '
                       'properties, see [Object types](#object-types).\n')
        else:
            out.append('\n' + member_section(c['args']))
        out.append(f'\nReturns: {qg.md_escape(c["returns"])}\n')
    out.append('\n## Events\n')
    for e in events:
        out.append(f'\n### {e["name"]}\n\n{e["doc"].strip()}\n\n')
        out.append(member_section(e['data']))
    out.append('\n## Object types\n')
    for o in objects:
        out.append(f'\n### {o["name"]}\n\n{o["doc"].strip()}\n\n')
        out.append(member_section(o['members']))
    out.append('\n## Export types\n\nEvery export takes:\n\n')
    out.append(qg.doc_table(exp_common))
    for t in exp_types:
        out.append(f'\n### {t["name"]}\n\n{t["doc"].strip()}\n\n')
        out.append(member_section(t['members']))
    return ''.join(out)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--schema', default=os.path.join(HERE, '..', 'qapi',
                                                     'qmp.json'))
    ap.add_argument('--block-schema', default=os.path.join(HERE, '..', 'qapi',
                                                           'block.json'))
    ap.add_argument('--c')
    ap.add_argument('--h')
    ap.add_argument('--docs')
    ap.add_argument('--check')
    args = ap.parse_args(argv)
    if not (args.c or args.h or args.docs or args.check):
        ap.error('nothing to do: give --c/--h, --docs or --check')
    if bool(args.c) != bool(args.h):
        ap.error('--c and --h go together')
    try:
        schema = load(args.schema, args.block_schema)
    except (SchemaError, OSError) as e:
        print(f'qmp-gen: {e}', file=sys.stderr)
        return 1
    cmds, events, objects, exp_common, exp_types, common, drivers = schema
    if args.c:
        intro = introspection(*schema)
        c_text, h_text = generate_c(cmds, events, objects, exp_common,
                                    exp_types, intro)
        qg.write_if_changed(args.c, c_text)
        qg.write_if_changed(args.h, h_text)
    docs = generate_docs(cmds, events, objects, exp_common, exp_types)
    if args.docs:
        qg.write_if_changed(args.docs, docs)
    if args.check:
        return qg.check_docs(args.check, docs, 'qmp-gen')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
