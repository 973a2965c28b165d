"""Builds the PHI guard's model, shared/data/guard-model.bin, from public-domain name data.

Sources (facts, not code):
- the US Census Bureau's 1990 name-frequency lists (surnames, female and male first names), as
  shipped by the PyPI package `names` (0.3.0);
- the first names and surnames of mimesis' person data (PyPI `mimesis` 22.2.0, MIT licence),
  every locale written in Latin script (about 30: European, Latin American, Turkish...),
  ASCII-folded;
- the given names of gender-guesser's name dictionary (PyPI `gender-guesser` 0.4.0; Jörg
  Michael's list of about 48,000 names from 54 countries, GNU FDL), ASCII-folded;
- the word list of Debian's `wamerican` package (/usr/share/dict/american-english), lower-case
  words only, to teach the character model what English reads like.

The lexicon holds every census first name, the 15,000 most frequent census surnames and every
name of the other two lists not in the census (3 to 12 letters; the last in the rarest class);
rarer census surnames are left to the character model. The Bloom filters are sized so that a false hit is
rarer than one in 60,000 lookups: a false hit makes random letters read as a name.

Nothing the guard is tested against is read here: the accuracy benchmark draws its names from
other lists (Faker's, tests/data/guard/).

Run: make guard-model (installs the three packages, pinned in requirements-guard.txt, into
.venv-guard; needs Debian's wamerican).

Layout (little-endian), read by shared/src/guard/model.rs:
  b"PILGUARD" | u32 version
  trigram costs: 27*27*27 u8, cost in nats = byte / 16, index (a*27 + b)*27 + c with
    0 the word boundary and 1..=26 the letters a..z
  3 lexicon classes, each: u32 m (bits, a multiple of 64), u32 k (probes), m/8 bytes of a Bloom
    filter over the lower-case name, probe i at (x * m) >> 64 with x = (h1 + i*h2) mod 2^64,
    h1 = fnv1a64(b"\\x01" + name), h2 = fnv1a64(b"\\x02" + name) | 1
"""
import json
import math
import os
import re
import struct
import sys
import unicodedata
from collections import Counter

VERSION = 2
# Weight of a name of mimesis or gender-guesser in the character model (a census name is 1,
# a census first name 3).
INTL_WEIGHT = 1.0
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
    # m bits, a multiple of 64; a probe lands at floor(x * m / 2^64) (Lemire's reduction:
    # a multiply, no division, any m).
    m = max(64, (len(words) * bits_per_entry + 63) // 64 * 64)
    arr = bytearray(m // 8)
    for w in words:
        b = w.encode()
        h1 = fnv1a64(b"\x01" + b)
        h2 = fnv1a64(b"\x02" + b) | 1
        for i in range(k):
            x = (h1 + i * h2) & 0xFFFFFFFFFFFFFFFF
            bit = (x * m) >> 64
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


FOLD = str.maketrans({"ß": "ss", "ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE",
                      "đ": "d", "Đ": "D", "ı": "i", "œ": "oe", "þ": "th", "ð": "d"})


def fold_words(s):
    """The ASCII letter words of a name: accents dropped, split at spaces and punctuation."""
    s = unicodedata.normalize("NFKD", s.translate(FOLD))
    s = "".join(c for c in s if not unicodedata.combining(c)).lower()
    return [w for w in re.split(r"[^a-z]+", s) if w]


def flat(x):
    if isinstance(x, dict):
        return [i for v in x.values() for i in flat(v)]
    if isinstance(x, list):
        return [i for i in x if isinstance(i, str)]
    return []


def load_mimesis(datasets_dir):
    """First names and surnames of every Latin-script locale of mimesis' person data."""
    first, last = set(), set()
    for loc in sorted(os.listdir(datasets_dir)):
        path = os.path.join(datasets_dir, loc, "person.json")
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        for target, key in ((first, "names"), (last, "surnames"), (last, "last_names")):
            for n in flat(d.get(key, {})):
                # Latin script only: other scripts fold to nothing a ref can hold.
                if all(unicodedata.name(c, "").startswith(("LATIN", "SPACE", "HYPHEN", "APOSTROPHE"))
                       or c in " -'’." for c in n):
                    target.update(w for w in fold_words(n) if len(w) >= 3)
    return sorted(first), sorted(last)


def load_nam_dict(path):
    """The given names of gender-guesser's name dictionary (every country it covers)."""
    out = set()
    with open(path, encoding="iso-8859-1") as f:
        for line in f:
            if line.startswith("#") or len(line) < 30:
                continue
            out.update(w for w in fold_words(line[3:29].replace("+", " ")) if len(w) >= 3)
    return sorted(out)


def main(names_dir, words_path, mimesis_dir, nam_dict_path, out_path):
    last = load(os.path.join(names_dir, "dist.all.last"))
    female = load(os.path.join(names_dir, "dist.female.first"))
    male = load(os.path.join(names_dir, "dist.male.first"))
    with open(words_path) as f:
        words = [w.strip() for w in f if re.fullmatch(r"[a-z]+", w.strip())]
    intl_first, intl_last = load_mimesis(mimesis_dir)
    nam_first = load_nam_dict(nam_dict_path)
    census = {w for w, _ in last + female + male}
    intl = sorted((set(intl_first) | set(intl_last) | set(nam_first)) - census)

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
    for w in intl:
        add(w, INTL_WEIGHT)
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
    for w in intl:
        put(w, 2)

    out = bytearray(b"PILGUARD") + struct.pack("<I", VERSION) + tri
    # The rarest class is the largest: 22 bits and 15 probes an entry (a false "yes" about
    # once in 38,000 lookups) keep the webhook receiver's bootstrap under its size goal.
    for c, (bits, k) in zip(classes, ((24, 16), (24, 16), (22, 15))):
        out += bloom(c, bits, k)
    with open(out_path, "wb") as f:
        f.write(out)
    sizes = ", ".join(str(len(c)) for c in classes)
    print(f"wrote {out_path}: {len(out)} bytes; lexicon classes {sizes}", file=sys.stderr)


if __name__ == "__main__":
    main(*sys.argv[1:6])
