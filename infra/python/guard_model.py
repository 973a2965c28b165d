"""Builds the PHI guard's model, shared/data/guard-model.bin, from public-domain name data.

Sources (facts, not code):
- the US Census Bureau's 1990 name-frequency lists (surnames, female and male first names), as
  shipped by the PyPI package `names` (0.3.0);
- the word list of Debian's `wamerican` package (/usr/share/dict/american-english), lower-case
  words only, to teach the character model what English reads like.

The lexicon holds every first name and the 15,000 most frequent surnames (3 to 12 letters); rarer
names are left to the character model. The Bloom filters are sized so that a false hit is
rarer than one in 60,000 lookups: a false hit makes random letters read as a name.

Nothing the guard is tested against is read here: the accuracy benchmark draws its names from
other lists (tests/data/guard/).

Run: make guard-model (installs `names` into .venv-guard and `wamerican` when missing).

Layout (little-endian), read by shared/src/guard/model.rs:
  b"PILGUARD" | u32 version
  trigram costs: 27*27*27 u8, cost in nats = byte / 16, index (a*27 + b)*27 + c with
    0 the word boundary and 1..=26 the letters a..z
  3 lexicon classes, each: u32 m (bits, a power of two), u32 k (probes), m/8 bytes of a Bloom filter over the
    lower-case name, probe i at ((h1 + i*h2) mod 2^64) & (m - 1) with h1 = fnv1a64(b"\\x01" + name),
    h2 = fnv1a64(b"\\x02" + name) | 1
"""
import math
import os
import re
import struct
import sys
from collections import Counter

VERSION = 1
ALPHA = "abcdefghijklmnopqrstuvwxyz"
IDX = {c: i + 1 for i, c in enumerate(ALPHA)}
# Cost in nats of a name of each class (about -ln of its share of people), read by the guard.
CLASS_COST = (7.0, 10.5, 13.0)
# Labels and address words a careless integrator writes next to PHI.
EXTRA_WORDS = (
    "dob mrn ssn tel phone cell mobile email mail zip zipcode street st ave avenue road rd blvd "
    "boulevard drive dr lane ln court ct way apt suite ste main oak pine maple cedar elm park "
    "lake hill view birth born birthday mr mrs ms miss dr jr sr "
    "gmail yahoo hotmail outlook icloud aol live msn comcast verizon att protonmail mail "
    "com net org edu gov info biz"
).split()


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def bloom(words, bits_per_entry=24, k=16):
    # A power of two: the guard reduces a probe with a mask, not a division.
    m = 64
    while m < len(words) * bits_per_entry:
        m *= 2
    arr = bytearray(m // 8)
    for w in words:
        b = w.encode()
        h1 = fnv1a64(b"\x01" + b)
        h2 = fnv1a64(b"\x02" + b) | 1
        for i in range(k):
            bit = ((h1 + i * h2) & 0xFFFFFFFFFFFFFFFF) & (m - 1)
            arr[bit // 8] |= 1 << (bit % 8)
    return struct.pack("<II", m, k) + bytes(arr)


def load(path):
    out = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if parts and re.fullmatch(r"[A-Z]+", parts[0]):
                out.append((parts[0].lower(), float(parts[1])))
    return out


def main(names_dir, words_path, out_path):
    last = load(os.path.join(names_dir, "dist.all.last"))
    female = load(os.path.join(names_dir, "dist.female.first"))
    male = load(os.path.join(names_dir, "dist.male.first"))
    with open(words_path) as f:
        words = [w.strip() for w in f if re.fullmatch(r"[a-z]+", w.strip())]

    # Character trigrams, counted over distinct names (first names weighted up: there are
    # few of them and they carry most of a person's name) and words.
    counts, ctx = Counter(), Counter()

    def add(w, weight):
        s = [0, 0] + [IDX[c] for c in w] + [0]
        for i in range(2, len(s)):
            counts[(s[i - 2], s[i - 1], s[i])] += weight
            ctx[(s[i - 2], s[i - 1])] += weight

    for w, _ in last:
        add(w, 1.0)
    for w, _ in female + male:
        add(w, 3.0)
    for w in words:
        add(w, 0.5)
    k = 0.1
    tri = bytearray(27 * 27 * 27)
    for a in range(27):
        for b in range(27):
            for c in range(27):
                p = (counts[(a, b, c)] + k) / (ctx[(a, b)] + k * 27)
                tri[(a * 27 + b) * 27 + c] = min(255, round(-math.log(p) * 16))

    firsts = sorted(female + male, key=lambda x: -x[1])
    classes = ([], [], [])
    seen = set()

    def put(w, c):
        if 3 <= len(w) <= 12 and w not in seen:
            seen.add(w)
            classes[c].append(w)

    for i, (w, _) in enumerate(firsts):
        put(w, 0 if i < 300 else 1)
    for i, (w, _) in enumerate(last):
        if i < 15000:
            put(w, 0 if i < 300 else 1 if i < 5000 else 2)
    for w in EXTRA_WORDS:
        put(w, 1)

    out = bytearray(b"PILGUARD") + struct.pack("<I", VERSION) + tri
    for c in classes:
        out += bloom(c)
    with open(out_path, "wb") as f:
        f.write(out)
    sizes = ", ".join(str(len(c)) for c in classes)
    print(f"wrote {out_path}: {len(out)} bytes; lexicon classes {sizes}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
