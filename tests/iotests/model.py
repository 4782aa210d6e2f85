# SPDX-License-Identifier: MIT
"""Randomized model test: a seeded stream of unaligned, vectored and
concurrent requests runs through strata-io, and the final image is compared
byte for byte against an in-memory model.

Concurrency: the requests of one aio burst (aio_write ..., then aio_flush)
are in flight together and may land in any order, but each lands atomically
per 4096-byte block.  The model therefore keeps, per block, the SET of
contents some serial order of the bursts so far could have produced: for a
burst, every permutation of the burst's writes that touch the block is
applied to every content in the set.  The final block must be in its set:
every serial order is accepted, and nothing else.  Bursts are small (at
most MAX_BURST writes) so that the sets stay small; the generator drops a
burst member that would grow a block's set past MAX_STATES.

Used by tests 027 (blkdebug align=4096 over a file), 028 (4K-native loop
device) and 029 (long runs).
"""
import itertools
import random

import iotests

BLOCK = 4096
MAX_BURST = 4
MAX_STATES = 512


class Model:
    def __init__(self, size):
        assert size % BLOCK == 0
        self.size = size
        self.nblocks = size // BLOCK
        zero = bytes(BLOCK)
        self.blocks = [{zero} for _ in range(self.nblocks)]

    # A write is (offset, data-generator) where data is given as
    # (offset, length, byte): a run of one byte value (pattern or zero).
    def _apply_run(self, content, block, off, length, value):
        lo = max(off, block * BLOCK)
        hi = min(off + length, (block + 1) * BLOCK)
        if lo >= hi:
            return content
        b = bytearray(content)
        b[lo - block * BLOCK:hi - block * BLOCK] = bytes([value]) * (hi - lo)
        return bytes(b)

    @staticmethod
    def blocks_of(off, length):
        if length == 0:
            return range(0)
        return range(off // BLOCK, (off + length - 1) // BLOCK + 1)

    def apply_serial(self, off, length, value):
        for blk in self.blocks_of(off, length):
            self.blocks[blk] = {self._apply_run(c, blk, off, length, value)
                                for c in self.blocks[blk]}

    def burst_states(self, writes, blk):
        """The set of contents of block blk after a burst of writes
        (each (off, length, value)) in any order."""
        touching = [w for w in writes if blk in self.blocks_of(w[0], w[1])]
        if not touching:
            return self.blocks[blk]
        out = set()
        for perm in itertools.permutations(touching):
            for c in self.blocks[blk]:
                for off, length, value in perm:
                    c = self._apply_run(c, blk, off, length, value)
                out.add(c)
        return out

    def apply_burst(self, writes):
        touched = set()
        for off, length, _ in writes:
            touched.update(self.blocks_of(off, length))
        new = {blk: self.burst_states(writes, blk) for blk in touched}
        for blk, states in new.items():
            self.blocks[blk] = states

    def uniform_value(self, off, length):
        """The byte value every byte of the range is known to hold, or
        None if the range is not uniform or not known for certain."""
        value = None
        for blk in self.blocks_of(off, length):
            if len(self.blocks[blk]) != 1:
                return None
            (c,) = self.blocks[blk]
            lo = max(off, blk * BLOCK) - blk * BLOCK
            hi = min(off + length, (blk + 1) * BLOCK) - blk * BLOCK
            seg = c[lo:hi]
            if value is None:
                value = seg[0]
            if seg.count(value) != len(seg):
                return None
        return value

    def check(self, data):
        """None if data (the whole image) is a possible final state, else a
        description of the first block that is not."""
        if len(data) < self.size:
            return f'image is {len(data)} bytes, expected {self.size}'
        for blk in range(self.nblocks):
            got = data[blk * BLOCK:(blk + 1) * BLOCK]
            if got in self.blocks[blk]:
                continue
            best = min(self.blocks[blk],
                       key=lambda c: sum(x != y for x, y in zip(c, got)))
            first = next(i for i in range(BLOCK) if best[i] != got[i])
            return (f'block {blk} (offset {blk * BLOCK}) matches none of its '
                    f'{len(self.blocks[blk])} possible contents; nearest '
                    f'differs first at byte {blk * BLOCK + first}: '
                    f'got 0x{got[first]:02x}, expected 0x{best[first]:02x}')
        return None


class Generator:
    """Commands for strata-io, applied to the model as they are made."""

    def __init__(self, seed, size, zeroes=True):
        self.rng = random.Random(seed)
        self.model = Model(size)
        self.size = size
        self.zeroes = zeroes
        self.cmds = []
        self.writes = 0        # result lines expected: "wrote"
        self.reads = 0         # and "read"
        self.pattern = 0
        self.recent = []       # recent (offset, length) written serially

    def next_pattern(self):
        self.pattern = self.pattern % 254 + 1
        return self.pattern

    def rand_range(self, near=None):
        r = self.rng
        if near is not None:
            base = max(0, min(self.size - 1, near + r.randint(-BLOCK, BLOCK)))
        else:
            blk = r.randrange(self.size // BLOCK)
            base = blk * BLOCK + r.choice([0, 0, 1, 511, 512, 513, 2048, 4095,
                                           r.randrange(BLOCK)])
        length = r.choice([1, 2, 100, 511, 512, 513, 1000, 4095, 4096, 4097,
                           8191, 8192, 12289, r.randint(1, 3 * BLOCK),
                           r.randint(1, 16 * BLOCK)])
        base = min(base, self.size - 1)
        length = max(1, min(length, self.size - base))
        return base, length

    def split(self, length):
        """Random element lengths (not multiples of 512 where possible)
        that add up to length."""
        r = self.rng
        n = r.choice([1, 2, 3, 5, 8, 17, 64])
        n = max(1, min(n, length))
        cuts = sorted(r.sample(range(1, length), n - 1)) if n > 1 else []
        edges = [0] + cuts + [length]
        return [edges[i + 1] - edges[i] for i in range(n)]

    def serial_write(self):
        r = self.rng
        off, length = self.rand_range()
        kind = r.random()
        if self.zeroes and kind < 0.12:
            flags = r.choice(['', '-u '])
            self.cmds.append(f'write -z {flags}{off} {length}')
            self.model.apply_serial(off, length, 0)
        elif kind < 0.5:
            pat = self.next_pattern()
            lens = self.split(length)
            self.cmds.append(f'writev -P {pat} {off} ' + ' '.join(map(str, lens)))
            self.model.apply_serial(off, length, pat)
        else:
            pat = self.next_pattern()
            self.cmds.append(f'write -P {pat} {off} {length}')
            self.model.apply_serial(off, length, pat)
        self.writes += 1
        self.recent = (self.recent + [(off, length)])[-8:]

    def burst(self):
        r = self.rng
        n = r.randint(2, MAX_BURST)
        members = []
        cmds = []
        for i in range(n):
            near = None
            if members and r.random() < 0.7:
                near = r.choice(members)[0]
            off, length = self.rand_range(near)
            if self.zeroes and r.random() < 0.1:
                w = (off, length, 0)
                cmd = f'aio_write -z {off} {length}'
            else:
                pat = self.next_pattern()
                w = (off, length, pat)
                lens = self.split(length) if r.random() < 0.5 else [length]
                cmd = f'aio_write -P {pat} {off} ' + ' '.join(map(str, lens))
            trial = members + [w]
            too_big = any(len(self.model.burst_states(trial, blk)) > MAX_STATES
                          for blk in self.model.blocks_of(off, length))
            if too_big:
                continue
            members.append(w)
            cmds.append(cmd)
        self.model.apply_burst(members)
        self.cmds.extend(cmds)
        self.cmds.append('aio_flush')
        self.writes += len(members)

    def check_read(self):
        """A verifying read of a range the model knows to be uniform."""
        for _ in range(8):
            if self.recent and self.rng.random() < 0.7:
                # Inside a recent write: likely uniform, and long.
                woff, wlen = self.rng.choice(self.recent)
                off = woff + self.rng.randrange(wlen)
                length = self.rng.randint(1, woff + wlen - off)
            else:
                off, length = self.rand_range()
            value = self.model.uniform_value(off, length)
            if value is not None:
                if self.rng.random() < 0.5:
                    self.cmds.append(f'read -q -P {value} {off} {length}')
                else:
                    lens = self.split(length)
                    self.cmds.append(f'readv -q -P {value} {off} ' +
                                     ' '.join(map(str, lens)))
                return

    def generate(self, nops):
        r = self.rng
        for _ in range(nops):
            x = r.random()
            if x < 0.45:
                self.serial_write()
            elif x < 0.8:
                self.burst()
            elif x < 0.95:
                self.check_read()
            else:
                self.cmds.append('flush')
        return self.cmds


def run_seed(seed, size, nops, image, reset, read_back, strata_args=(),
             zeroes=True):
    """Generate, run and check one seed; returns None or an error text.

    image: what strata-io opens; reset(): make the image all zeroes;
    read_back(): the image's bytes afterwards; strata_args: options before
    the image."""
    reset()
    gen = Generator(seed, size, zeroes)
    cmds = gen.generate(nops)
    rc, out = iotests.strata_io(*strata_args, image, opts=False,
                                stdin='\n'.join(cmds) + '\nquit\n')
    lines = out.splitlines()
    wrote = sum(1 for l in lines if l.startswith('wrote '))
    bad = [l for l in lines
           if not (l.startswith('wrote ') or l.startswith('read ') or
                   ' ops; ' in l)]
    if bad:
        return f'unexpected output: {bad[0]!r} (exit status {rc})'
    if rc != 0:
        return f'exit status {rc}'
    if wrote != gen.writes:
        return f'{wrote} writes reported, {gen.writes} issued'
    return gen.model.check(read_back())


def run(seeds, size, nops, image, reset, read_back, strata_args=(), label='',
        test='029'):
    """Run every seed; prints one line per seed, returns the failures."""
    failed = 0
    for seed in seeds:
        err = run_seed(seed, size, nops, image, reset, read_back, strata_args)
        if err:
            failed += 1
            iotests.log(f'{label}seed {seed}: FAIL: {err}')
            iotests.log(f'  reproduce: MODEL_SEEDS={seed} MODEL_OPS={nops} '
                        f'tests/iotests/check {test}')
        else:
            iotests.log(f'{label}seed {seed}: OK')
    return failed


def file_image(path, size):
    """reset and read_back functions for a plain file."""
    def reset():
        with open(path, 'wb') as f:
            f.truncate(size)

    def read_back():
        with open(path, 'rb') as f:
            return f.read()
    return reset, read_back


def seeds_from_env(default):
    """MODEL_SEEDS="1 2 3" (or "1-50") overrides the default seeds."""
    import os
    spec = os.environ.get('MODEL_SEEDS')
    if not spec:
        return list(default)
    seeds = []
    for part in spec.replace(',', ' ').split():
        if '-' in part:
            lo, hi = part.split('-', 1)
            seeds.extend(range(int(lo), int(hi) + 1))
        else:
            seeds.append(int(part))
    return seeds


def ops_from_env(default):
    import os
    return int(os.environ.get('MODEL_OPS', default))
