#!/usr/bin/env python3
"""Regenerates tests/data/guard/: the word lists behind the PHI guard's accuracy corpus
(infra/pil-local/src/guard_corpus.rs builds the refs from them; docs/guard.md, "How it is
measured").

The lists come from the Faker package (PyPI, MIT licence), not from the US Census name lists
the guard itself draws on, so the benchmark measures the guard on names it was not built from.
Faker's en_US surnames *are* the Census top 1,000, so en_US contributes first names only.

Run it from the repository root with a throwaway venv that has Faker:

    python3 -m venv /tmp/fk && /tmp/fk/bin/pip install faker
    /tmp/fk/bin/python infra/python/guard_test_data.py

The output depends only on the Faker version (recorded in the README it writes) and SEED.
"""

import os
import random
import re
import sys
import unicodedata
from pathlib import Path

import faker
from faker import Faker

SEED = 20_240_601
OUT = Path(__file__).resolve().parents[2] / "tests" / "data" / "guard"

# Latin-script locales, and those whose providers give romanized names.
NAME_LOCALES = [
    "en_US", "en_GB", "en_IE", "en_NZ", "en_IN", "es_ES", "es_MX", "es_CO", "fr_FR",
    "de_DE", "it_IT", "pt_BR", "pt_PT", "nl_NL", "pl_PL", "cs_CZ", "sv_SE", "tr_TR",
    "ro_RO", "vi_VN", "zh_CN", "ja_JP",
]
# Locales whose last names must not be used (they are the Census list).
NO_LAST_NAMES = {"en_US"}
NAMES_PER_LOCALE = 220
# English-speaking locales with their own person lists (en_CA and en_AU reuse en_US's).
STREET_LOCALES = ["en_GB", "en_NZ", "en_IE"]
CITY_LOCALES = ["en_GB", "en_NZ", "en_IE", "en_US", "es_MX", "es_ES", "fr_FR", "de_DE",
                "it_IT", "pt_BR", "nl_NL", "pl_PL", "sv_SE", "cs_CZ"]
DOMAIN_LOCALES = ["en_US", "en_GB", "es_ES", "es_MX", "fr_FR", "de_DE", "it_IT", "pt_BR",
                  "nl_NL", "pl_PL", "cs_CZ", "sv_SE"]

# Letters that do not decompose into a base letter and combining marks.
SPECIAL = {
    "ß": "ss", "ẞ": "SS", "ł": "l", "Ł": "L", "æ": "ae", "Æ": "AE", "ø": "o", "Ø": "O",
    "œ": "oe", "Œ": "OE", "đ": "d", "Đ": "D", "ı": "i", "þ": "th", "Þ": "Th", "ð": "d",
    "Ð": "D", "’": "'",
}
WORD = re.compile(r"^[A-Za-z][A-Za-z' -]*[A-Za-z]$")


def fold(s: str) -> str:
    """ASCII-folds: special letters mapped, accents dropped. '' when something else is left."""
    s = "".join(SPECIAL.get(c, c) for c in s.strip())
    s = unicodedata.normalize("NFKD", s)
    s = "".join(c for c in s if not unicodedata.combining(c))
    s = re.sub(r"\s+", " ", s)
    return s if WORD.match(s) else ""


def collect(make, want: int, tries: int = 40) -> list[str]:
    """Up to `want` distinct folded values from `make()`."""
    out: dict[str, None] = {}
    for _ in range(want * tries):
        v = fold(make())
        if v:
            out.setdefault(v, None)
        if len(out) >= want:
            break
    return list(out)


def fake(locale: str, salt: int) -> Faker:
    f = Faker(locale)
    f.seed_instance(SEED + salt)
    return f


def provider_attr(f: Faker, attr: str):
    """A list a locale's providers declare (Faker exposes their methods, not their data)."""
    for p in f.providers:
        if hasattr(p, attr):
            return getattr(p, attr)
    raise AttributeError(attr)


def first_name(f: Faker):
    return f.first_romanized_name if hasattr(f, "first_romanized_name") else f.first_name


def last_name(f: Faker):
    return f.last_romanized_name if hasattr(f, "last_romanized_name") else f.last_name


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    lists: dict[str, list[str]] = {}
    per_locale: dict[str, tuple[int, int]] = {}
    firsts: dict[str, None] = {}
    lasts: dict[str, None] = {}
    for i, loc in enumerate(NAME_LOCALES):
        f = fake(loc, i)
        fn = collect(first_name(f), NAMES_PER_LOCALE)
        ln = [] if loc in NO_LAST_NAMES else collect(last_name(f), NAMES_PER_LOCALE)
        per_locale[loc] = (len(fn), len(ln))
        for v in fn:
            firsts.setdefault(v, None)
        for v in ln:
            lasts.setdefault(v, None)
    lists["first_names"] = sorted(firsts)
    lists["last_names"] = sorted(lasts)

    # Street names without their suffix (the corpus adds a suffix, spelled out or abbreviated).
    suffixes = sorted({fold(s) for s in provider_attr(fake("en_US", 0), "street_suffixes")} - {""})
    lists["street_suffixes"] = suffixes
    suffix_set = {s.lower() for s in suffixes} | {"street", "road", "close", "crescent"}
    stems: dict[str, None] = {}
    for i, loc in enumerate(STREET_LOCALES):
        f = fake(loc, 100 + i)
        for name in collect(f.street_name, 300):
            words = name.split(" ")
            if len(words) > 1 and words[-1].lower() in suffix_set:
                stems.setdefault(" ".join(words[:-1]), None)
    lists["street_names"] = sorted(stems)

    cities: dict[str, None] = {}
    for i, loc in enumerate(CITY_LOCALES):
        for c in collect(fake(loc, 200 + i).city, 60):
            cities.setdefault(c, None)
    lists["cities"] = sorted(cities)

    domains: dict[str, None] = {}
    for i, loc in enumerate(DOMAIN_LOCALES):
        f = fake(loc, 300 + i)
        for d in provider_attr(f, "free_email_domains"):
            domains.setdefault(d.lower(), None)
        for _ in range(25):
            d = f.domain_name().lower()
            if re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)+", d):
                domains.setdefault(d, None)
    lists["email_domains"] = sorted(domains)

    for name, values in lists.items():
        (OUT / f"{name}.txt").write_text("".join(v + "\n" for v in values), encoding="ascii")

    rng = random.Random(SEED)
    example = ", ".join(rng.sample(lists["last_names"], 6))
    locales = "; ".join(f"{loc} {a}/{b}" for loc, (a, b) in per_locale.items())
    readme = f"""# PHI guard accuracy data

Word lists for the PHI guard's accuracy benchmark (`make bench-guard`, the
`guard_accuracy` test; docs/guard.md, "How it is measured"). One item per line,
ASCII-folded (accents dropped, ß → ss, ł → l, ...). Generated by
`infra/python/guard_test_data.py` with **Faker {faker.VERSION}** (seed {SEED}); do not edit by
hand, rerun the script.

Source and licence: the Faker package (PyPI), MIT licence
(Copyright (c) 2012 Daniele Faraglia). Faker's lists are its locale providers' own,
compiled from national statistics offices, Wikipedia/Wiktionary and baby-name sites. They are
deliberately *not* the US Census name lists the guard itself draws on; Faker's en_US
surnames are the Census top 1,000, so en_US gives first names only.

| file | items | what |
|---|---|---|
| first_names.txt | {len(lists["first_names"])} | given names, up to {NAMES_PER_LOCALE} per locale |
| last_names.txt | {len(lists["last_names"])} | surnames, up to {NAMES_PER_LOCALE} per locale (e.g. {example}) |
| street_names.txt | {len(lists["street_names"])} | street names without their suffix ({", ".join(STREET_LOCALES)}) |
| street_suffixes.txt | {len(lists["street_suffixes"])} | the USPS street suffixes, spelled out (Faker en_US) |
| cities.txt | {len(lists["cities"])} | city names ({", ".join(CITY_LOCALES)}) |
| email_domains.txt | {len(lists["email_domains"])} | free-mail domains and generated company domains ({", ".join(DOMAIN_LOCALES)}) |

Names per locale (first/last, after folding and de-duplication within the locale): {locales}.
zh_CN and ja_JP give romanized names. Names keep their inner spaces, hyphens and
apostrophes (`De la Cruz`, `Jean-Pierre`, `O'Brien`); the corpus decides how each spelling
joins them.
"""
    (OUT / "README.md").write_text(readme, encoding="utf-8")
    for name, values in lists.items():
        print(f"{name}: {len(values)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    # Some of Faker's providers draw from sets, whose order follows Python's string hashing:
    # a fixed hash seed makes the output depend only on SEED and the Faker version.
    if os.environ.get("PYTHONHASHSEED") != "0":
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    sys.exit(main())
