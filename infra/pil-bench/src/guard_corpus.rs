//! Corpora for measuring the PHI guard (`make bench-guard`, `tests/guard_accuracy.rs`;
//! docs/guard.md, "How it is measured"). Built apart from the guard: nothing here reads it or
//! its word lists. Both families are deterministic from a seed (ChaCha8, one stream per
//! generator or spelling, so adding one changes no other).
//!
//! - **Valid ids** ([`id_generators`]): what real systems hand out as ids, from the real
//!   generator crates where one exists (uuid, ulid, svix-ksuid, nanoid) fed the seeded RNG.
//!   Every one must be accepted.
//! - **PHI-derived refs** ([`phi_corpus`]): what a careless integrator builds a "ref" from —
//!   names, e-mails, phone numbers, SSNs, dates of birth, street addresses, MRNs — in named
//!   spellings, each also with a `p_` prefix. Every one must be refused. Only values that fit
//!   the wire contract (16–64 of `[A-Za-z0-9_-]`) are kept: anything else is refused by
//!   its shape alone and would only inflate the rate.
//!
//! Names, streets, cities and e-mail domains come from tests/data/guard/ (Faker's locale
//! lists, not the Census lists the guard uses; that folder's README says which).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use rand::seq::IndexedRandom;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::Sha256;

/// The seed `make bench-guard` and the test use unless told otherwise.
pub const DEFAULT_SEED: u64 = 20_240_601;
pub const WIRE_MIN_LEN: usize = 16;
pub const WIRE_MAX_LEN: usize = 64;

/// The wire contract for a ref: 16–64 characters of `[A-Za-z0-9_-]`.
pub fn fits_wire(v: &str) -> bool {
    (WIRE_MIN_LEN..=WIRE_MAX_LEN).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// One RNG stream per named generator or spelling (FNV-1a of the name mixed into the seed).
fn stream(seed: u64, name: &str) -> ChaCha8Rng {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    ChaCha8Rng::seed_from_u64(seed ^ h)
}

type R = ChaCha8Rng;

// ---------------------------------------------------------------------------------------
// Valid ids
// ---------------------------------------------------------------------------------------

/// A generator of valid ids.
pub struct IdGenerator {
    pub name: &'static str,
    /// What it is, for the report.
    pub about: &'static str,
    make: fn(&mut R) -> String,
}

impl IdGenerator {
    /// `n` ids from this generator's stream of `seed`. Panics if one breaks the wire contract
    /// (a fault of the generator, not a finding about the guard).
    pub fn generate(&self, seed: u64, n: usize) -> Vec<String> {
        let mut rng = stream(seed, self.name);
        (0..n)
            .map(|_| {
                let v = (self.make)(&mut rng);
                assert!(
                    fits_wire(&v),
                    "{}: {v:?} is outside the wire contract",
                    self.name
                );
                v
            })
            .collect()
    }
}

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const UPPER_ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const LETTERS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
const LOWER_ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const DIGITS: &[u8] = b"0123456789";

/// `n` characters drawn uniformly from `alphabet`.
fn chars(rng: &mut R, alphabet: &[u8], n: usize) -> String {
    (0..n)
        .map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())]))
        .collect()
}

fn bytes(rng: &mut R, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    rng.fill_bytes(&mut b);
    b
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Unix milliseconds between 2020-01-01 and 2030-01-01: the ids' embedded clocks.
fn millis(rng: &mut R) -> u64 {
    rng.random_range(1_577_836_800_000..1_893_456_000_000)
}

/// HMAC-SHA256 of a PMS's own id (an integer, as most PMSs number their records) under a
/// random key: what the integration guide tells a PMS to send.
fn hmac_ref(rng: &mut R) -> [u8; 32] {
    let key = bytes(rng, 32);
    let pms_id = rng.random_range(1..50_000_000u32).to_string();
    #[allow(clippy::expect_used)]
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(pms_id.as_bytes());
    mac.finalize().into_bytes().into()
}

/// cuid2's recipe (the `cuid2` crate, the reference implementation): a random letter `a-z`,
/// then the first 23 base-36 digits of a SHA3-512 digest of time, entropy, a counter and a
/// host fingerprint. The digest is modelled by 64 random bytes (the crate reads the clock
/// and the OS RNG, so it cannot be seeded).
fn cuid2(rng: &mut R) -> String {
    let first = char::from(LOWER[rng.random_range(0..26)]);
    let mut n = bytes(rng, 64);
    let mut digits = Vec::new();
    while n.iter().any(|&b| b != 0) {
        let mut rem = 0u32;
        for b in n.iter_mut() {
            let cur = (rem << 8) | u32::from(*b);
            *b = (cur / 36) as u8;
            rem = cur % 36;
        }
        digits.push(LOWER_ALNUM[if rem < 10 { 26 + rem } else { rem - 10 } as usize]);
    }
    digits.reverse();
    let body: String = digits.iter().take(23).map(|&d| char::from(d)).collect();
    format!("{first}{body}")
}

/// Every valid-id generator, in report order.
pub fn id_generators() -> Vec<IdGenerator> {
    vec![
        IdGenerator {
            name: "uuid-v4",
            about: "canonical UUID v4 (uuid crate)",
            make: |r| {
                uuid::Builder::from_random_bytes(r.random())
                    .into_uuid()
                    .to_string()
            },
        },
        IdGenerator {
            name: "uuid-v7",
            about: "canonical UUID v7, 2020-2030 clock (uuid crate)",
            make: |r| {
                let ms = millis(r);
                uuid::Builder::from_unix_timestamp_millis(ms, &r.random())
                    .into_uuid()
                    .to_string()
            },
        },
        IdGenerator {
            name: "uuid-v4-simple",
            about: "UUID v4 as 32 hex digits, no hyphens (uuid crate)",
            make: |r| {
                uuid::Builder::from_random_bytes(r.random())
                    .into_uuid()
                    .simple()
                    .to_string()
            },
        },
        IdGenerator {
            name: "ulid",
            about: "ULID, 26 Crockford base32 (ulid crate)",
            make: |r| {
                let ms = millis(r);
                ulid::Ulid::from_parts(ms, r.random()).to_string()
            },
        },
        IdGenerator {
            name: "ulid-lower",
            about: "ULID lowercased, as some stores keep it",
            make: |r| {
                let ms = millis(r);
                ulid::Ulid::from_parts(ms, r.random())
                    .to_string()
                    .to_ascii_lowercase()
            },
        },
        IdGenerator {
            name: "ksuid",
            about: "KSUID, 27 base62 (svix-ksuid crate)",
            make: |r| {
                let ts = (millis(r) / 1000 - 1_400_000_000) as u32;
                svix_ksuid::Ksuid::new_raw(ts, Some(&r.random::<[u8; 16]>())).to_string()
            },
        },
        IdGenerator {
            name: "nanoid",
            about: "nanoid, 21 of A-Za-z0-9_- (nanoid crate)",
            make: |r| nanoid::format(|n| bytes(r, n), &nanoid::alphabet::SAFE, 21),
        },
        IdGenerator {
            name: "cuid2",
            about: "cuid2, 24: a-z then base36 (the cuid2 recipe)",
            make: cuid2,
        },
        IdGenerator {
            name: "hmac-hex32",
            about: "HMAC-SHA256 of the PMS id, first 16 bytes, lowercase hex",
            make: |r| hex(&hmac_ref(r)[..16]),
        },
        IdGenerator {
            name: "hmac-hex64",
            about: "HMAC-SHA256 of the PMS id, lowercase hex",
            make: |r| hex(&hmac_ref(r)),
        },
        IdGenerator {
            name: "hmac-HEX32",
            about: "HMAC-SHA256 of the PMS id, first 16 bytes, uppercase hex",
            make: |r| hex(&hmac_ref(r)[..16]).to_ascii_uppercase(),
        },
        IdGenerator {
            name: "hmac-HEX64",
            about: "HMAC-SHA256 of the PMS id, uppercase hex",
            make: |r| hex(&hmac_ref(r)).to_ascii_uppercase(),
        },
        IdGenerator {
            name: "p_hmac128",
            about: "p_ + hex of HMAC-SHA256 truncated to 128 bits (the recommended recipe)",
            make: |r| format!("p_{}", hex(&hmac_ref(r)[..16])),
        },
        IdGenerator {
            name: "base32-upper",
            about: "RFC 4648 base32, no padding, of 10-20 random bytes",
            make: |r| {
                let n = r.random_range(10..=20);
                data_encoding::BASE32_NOPAD.encode(&bytes(r, n))
            },
        },
        IdGenerator {
            name: "base32-lower",
            about: "RFC 4648 base32 lowercased, no padding, of 10-20 random bytes",
            make: |r| {
                let n = r.random_range(10..=20);
                data_encoding::BASE32_NOPAD
                    .encode(&bytes(r, n))
                    .to_ascii_lowercase()
            },
        },
        IdGenerator {
            name: "base64url",
            about: "base64url, no padding, of 12-32 random bytes",
            make: |r| {
                let n = r.random_range(12..=32);
                URL_SAFE_NO_PAD.encode(bytes(r, n))
            },
        },
        IdGenerator {
            name: "stripe-cus",
            about: "Stripe-style cus_ + 14-24 base62",
            make: |r| {
                let n = r.random_range(14..=24);
                format!("cus_{}", chars(r, BASE62, n))
            },
        },
        IdGenerator {
            name: "square-customer",
            about: "Square-style customer id, 26 of A-Z0-9",
            make: |r| chars(r, UPPER_ALNUM, 26),
        },
        IdGenerator {
            name: "letters20",
            about: "20 random letters a-zA-Z",
            make: |r| chars(r, LETTERS, 20),
        },
        IdGenerator {
            name: "letters20-lower",
            about: "20 random letters a-z",
            make: |r| chars(r, LOWER, 20),
        },
        IdGenerator {
            name: "base62-20",
            about: "20 random base62",
            make: |r| chars(r, BASE62, 20),
        },
    ]
}

// ---------------------------------------------------------------------------------------
// PHI-derived refs
// ---------------------------------------------------------------------------------------

struct Words {
    first: Vec<&'static str>,
    last: Vec<&'static str>,
    streets: Vec<&'static str>,
    suffixes: Vec<&'static str>,
    cities: Vec<&'static str>,
    domains: Vec<&'static str>,
}

fn lines(s: &'static str) -> Vec<&'static str> {
    s.lines().map(str::trim).filter(|l| !l.is_empty()).collect()
}

static WORDS: LazyLock<Words> = LazyLock::new(|| Words {
    first: lines(include_str!("../../../tests/data/guard/first_names.txt")),
    last: lines(include_str!("../../../tests/data/guard/last_names.txt")),
    streets: lines(include_str!("../../../tests/data/guard/street_names.txt")),
    suffixes: lines(include_str!(
        "../../../tests/data/guard/street_suffixes.txt"
    )),
    cities: lines(include_str!("../../../tests/data/guard/cities.txt")),
    domains: lines(include_str!("../../../tests/data/guard/email_domains.txt")),
});

/// Sizes of the word lists, for the report.
pub fn word_list_sizes() -> [(&'static str, usize); 6] {
    let w = &*WORDS;
    [
        ("first names", w.first.len()),
        ("last names", w.last.len()),
        ("street names", w.streets.len()),
        ("street suffixes", w.suffixes.len()),
        ("cities", w.cities.len()),
        ("e-mail domains", w.domains.len()),
    ]
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const STATES: [&str; 51] = [
    "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "DC", "FL", "GA", "HI", "ID", "IL", "IN", "IA",
    "KS", "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ", "NM",
    "NY", "NC", "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT", "VT", "VA", "WA",
    "WV", "WI", "WY",
];
/// The most common US street names (not in the English-locale lists, which are names).
const COMMON_STREETS: [&str; 16] = [
    "Main",
    "Oak",
    "Maple",
    "Park",
    "Pine",
    "Cedar",
    "Elm",
    "Washington",
    "Lake",
    "Hill",
    "Church",
    "Walnut",
    "Sunset",
    "Highland",
    "Ridge",
    "Forest",
];
/// (spelled out, USPS abbreviation) of the suffixes most addresses use.
const COMMON_SUFFIXES: [(&str, &str); 16] = [
    ("Street", "St"),
    ("Avenue", "Ave"),
    ("Road", "Rd"),
    ("Drive", "Dr"),
    ("Lane", "Ln"),
    ("Boulevard", "Blvd"),
    ("Court", "Ct"),
    ("Place", "Pl"),
    ("Way", "Way"),
    ("Terrace", "Ter"),
    ("Circle", "Cir"),
    ("Parkway", "Pkwy"),
    ("Highway", "Hwy"),
    ("Trail", "Trl"),
    ("Square", "Sq"),
    ("Loop", "Loop"),
];

struct Address {
    number: u32,
    street: String,
    suffix: &'static str,
    city: &'static str,
    state: &'static str,
    zip: u32,
    zip4: u16,
    unit: String,
}

/// One synthetic person. Every spelling reads the fields it needs.
struct Person {
    first: &'static str,
    middle: &'static str,
    last: &'static str,
    /// (year, month, day), 1930–2010.
    dob: (u16, u8, u8),
    /// (area, group, serial) in the assigned ranges.
    ssn: (u16, u8, u16),
    /// NANP (area, exchange, line).
    phone: (u16, u16, u16),
    /// 6–10 digits, leading zeros kept.
    mrn: String,
    email: String,
    addr: Address,
}

fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

#[allow(clippy::expect_used)]
fn pick<T: Copy>(rng: &mut R, v: &[T]) -> T {
    *v.choose(rng).expect("word lists are not empty")
}

impl Person {
    fn random(rng: &mut R) -> Self {
        let w = &*WORDS;
        let first = pick(rng, &w.first);
        let last = pick(rng, &w.last);
        let year = rng.random_range(1930..=2010u16);
        let month = rng.random_range(1..=12u8);
        let days = match month {
            2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let day = rng.random_range(1..=days);
        let ssn_area = loop {
            let a = rng.random_range(1..=899u16);
            if a != 666 {
                break a;
            }
        };
        // NANP: area and exchange are [2-9]XX, not N11; area's middle digit is not 9.
        let nxx = |rng: &mut R, middle_max: u16| loop {
            let v = rng.random_range(2..=9u16) * 100
                + rng.random_range(0..=middle_max) * 10
                + rng.random_range(0..=9u16);
            if v % 100 != 11 {
                break v;
            }
        };
        let phone = (nxx(rng, 8), nxx(rng, 9), rng.random_range(0..=9999u16));
        let mrn_len = rng.random_range(6..=10);
        let mrn = if rng.random_bool(0.4) {
            // Zero-filled, as chart numbers often are.
            let zeros = rng.random_range(1..=3.min(mrn_len - 3));
            format!(
                "{}{}",
                "0".repeat(zeros),
                chars(rng, DIGITS, mrn_len - zeros)
            )
        } else {
            format!(
                "{}{}",
                rng.random_range(1..=9),
                chars(rng, DIGITS, mrn_len - 1)
            )
        };
        let (fl, ll) = (lower_compact(first), lower_compact(last));
        let local = match rng.random_range(0..7) {
            0 => format!("{fl}.{ll}"),
            1 => format!("{}{ll}", &fl[..1]),
            2 => format!("{fl}{ll}"),
            3 => format!("{fl}_{ll}"),
            4 => format!("{fl}.{ll}{}", rng.random_range(1..=99)),
            5 => format!("{}{ll}{}", &fl[..1], year % 100),
            _ => format!("{fl}{}", year),
        };
        let email = format!("{local}@{}", pick(rng, &w.domains));
        let street = match rng.random_range(0..20) {
            0..=2 => ordinal(rng.random_range(1..=120)),
            3..=7 => pick(rng, &COMMON_STREETS).to_owned(),
            _ => pick(rng, &w.streets).to_owned(),
        };
        let suffix = match rng.random_range(0..10) {
            0..=3 => pick(rng, &COMMON_SUFFIXES).1,
            4..=6 => pick(rng, &COMMON_SUFFIXES).0,
            _ => pick(rng, &w.suffixes),
        };
        let number = match rng.random_range(0..10) {
            0 => rng.random_range(1..=99),
            1..=6 => rng.random_range(100..=9999),
            _ => rng.random_range(10_000..=99_999),
        };
        let unit = if rng.random_bool(0.5) {
            rng.random_range(1..=999).to_string()
        } else {
            format!("{}{}", rng.random_range(1..=30), chars(rng, b"ABCDEF", 1))
        };
        Self {
            first,
            middle: pick(rng, &w.first),
            last,
            dob: (year, month, day),
            ssn: (
                ssn_area,
                rng.random_range(1..=99),
                rng.random_range(1..=9999),
            ),
            phone,
            mrn,
            email,
            addr: Address {
                number,
                street,
                suffix,
                city: pick(rng, &w.cities),
                state: pick(rng, &STATES),
                zip: rng.random_range(1001..=99950),
                zip4: rng.random_range(1..=9999),
                unit,
            },
        }
    }

    fn phone_digits(&self) -> String {
        let (a, e, l) = self.phone;
        format!("{a:03}{e:03}{l:04}")
    }
    fn ssn_digits(&self) -> String {
        let (a, g, s) = self.ssn;
        format!("{a:03}{g:02}{s:04}")
    }
    fn ssn_dashed(&self) -> String {
        let (a, g, s) = self.ssn;
        format!("{a:03}-{g:02}-{s:04}")
    }
    fn initials(&self) -> String {
        format!(
            "{}{}",
            &lower_compact(self.first)[..1],
            &lower_compact(self.last)[..1]
        )
    }
    fn mm_dd_yyyy(&self, sep: &str) -> String {
        let (y, m, d) = self.dob;
        format!("{m:02}{sep}{d:02}{sep}{y}")
    }
    fn iso(&self, sep: &str) -> String {
        let (y, m, d) = self.dob;
        format!("{y}{sep}{m:02}{sep}{d:02}")
    }
    fn month_name(&self) -> &'static str {
        MONTHS[usize::from(self.dob.1) - 1]
    }
    fn zip(&self) -> String {
        format!("{:05}", self.addr.zip)
    }
}

/// Letters and digits only, lowercased: `O'Brien` → `obrien`, `de la Rosa` → `delarosa`.
fn lower_compact(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}
/// Words joined by `sep`, lowercased: `de la Rosa` → `de_la_rosa`, `O'Brien` → `obrien`.
fn joined(s: &str, sep: &str) -> String {
    s.split([' ', '-'])
        .map(lower_compact)
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(sep)
}
fn snake(s: &str) -> String {
    joined(s, "_")
}
/// Each word capitalised, run together: `de la Rosa` → `DeLaRosa`.
fn camel(s: &str) -> String {
    s.split([' ', '-'])
        .map(|w| {
            let w = lower_compact(w);
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}
fn rand_lower(rng: &mut R, lo: usize, hi: usize) -> String {
    let n = rng.random_range(lo..=hi);
    chars(rng, LOWER_ALNUM, n)
}
/// A short value padded with `sep` and random characters to 16–18, as a PMS would to pass
/// the length check; longer values are returned as they are.
fn pad(rng: &mut R, v: String, sep: char) -> String {
    if v.len() >= WIRE_MIN_LEN {
        return v;
    }
    let n = WIRE_MIN_LEN - v.len() - 1 + rng.random_range(0..=2);
    format!("{v}{sep}{}", chars(rng, LOWER_ALNUM, n.max(1)))
}

/// A spelling: how a careless integrator turns a person into a ref.
struct Spelling {
    family: &'static str,
    name: &'static str,
    example: &'static str,
    make: Make,
}

enum Make {
    Plain(fn(&Person, &mut R) -> String),
    /// A payload (text about the person) in an encoding.
    Encoded(Payload, Encoding),
}

#[derive(Clone, Copy)]
enum Payload {
    Name,
    Email,
    Phone,
    Dob,
    NameDob,
    Ssn,
    Address,
    Mrn,
}

impl Payload {
    const ALL: [Payload; 8] = [
        Self::Name,
        Self::Email,
        Self::Phone,
        Self::Dob,
        Self::NameDob,
        Self::Ssn,
        Self::Address,
        Self::Mrn,
    ];
    fn key(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Email => "email",
            Self::Phone => "phone",
            Self::Dob => "dob",
            Self::NameDob => "name+dob",
            Self::Ssn => "ssn",
            Self::Address => "address",
            Self::Mrn => "mrn",
        }
    }
    fn example(self) -> &'static str {
        match self {
            Self::Name => "Maria Gonzalez",
            Self::Email => "maria.gonzalez@gmail.com",
            Self::Phone => "(407) 555-0142",
            Self::Dob => "03/14/1985",
            Self::NameDob => "Maria Gonzalez|1985-03-14",
            Self::Ssn => "078-05-1120",
            Self::Address => "123 Main St, Orlando, FL 32801",
            Self::Mrn => "MRN0048213",
        }
    }
    fn text(self, p: &Person, rng: &mut R) -> String {
        let (y, m, d) = p.dob;
        let (a, e, l) = p.phone;
        let ad = &p.addr;
        let v = rng.random_range(0..4);
        match self {
            Self::Name => match v {
                0 => format!("{} {}", p.first, p.last),
                1 => format!("{}, {}", p.last, p.first),
                2 => format!("{} {}", p.first, p.last).to_uppercase(),
                _ => format!("{} {} {}", p.first, p.middle, p.last),
            },
            Self::Email => p.email.clone(),
            Self::Phone => match v {
                0 => format!("({a:03}) {e:03}-{l:04}"),
                1 => format!("{a:03}-{e:03}-{l:04}"),
                2 => format!("+1{}", p.phone_digits()),
                _ => p.phone_digits(),
            },
            Self::Dob => match v {
                0 => p.iso("-"),
                1 => p.mm_dd_yyyy("/"),
                2 => p.iso(""),
                _ => format!("{} {d}, {y}", p.month_name()),
            },
            Self::NameDob => match v {
                0 => format!("{} {}|{}", p.first, p.last, p.iso("-")),
                1 => format!(
                    "{}:{}:{}",
                    lower_compact(p.last),
                    lower_compact(p.first),
                    p.iso("")
                ),
                2 => format!("{}, {} {}", p.last, p.first, p.mm_dd_yyyy("/")),
                _ => format!("{}{}{m:02}{d:02}{y}", p.first, p.last),
            },
            Self::Ssn => match v {
                0 => p.ssn_dashed(),
                1 => p.ssn_digits(),
                2 => format!("SSN {}", p.ssn_dashed()),
                _ => format!("ssn:{}", p.ssn_digits()),
            },
            Self::Address => match v {
                0 => format!(
                    "{} {} {}, {}, {} {}",
                    ad.number,
                    ad.street,
                    ad.suffix,
                    ad.city,
                    ad.state,
                    p.zip()
                ),
                1 => format!("{} {} {}", ad.number, ad.street, ad.suffix),
                2 => format!("{} {} {} {}", ad.number, ad.street, ad.suffix, p.zip()),
                _ => format!(
                    "{} {} {} Apt {}, {}",
                    ad.number,
                    ad.street,
                    ad.suffix,
                    ad.unit,
                    p.zip()
                ),
            },
            Self::Mrn => match v {
                0 => format!("MRN{}", p.mrn),
                1 => p.mrn.clone(),
                2 => format!("MRN: {}", p.mrn),
                _ => format!("{}|{}", p.mrn, p.last),
            },
        }
    }
}

#[derive(Clone, Copy)]
enum Encoding {
    Base64,
    Base64Url,
    Base32,
    Base32Lower,
    Hex,
}

impl Encoding {
    const ALL: [Encoding; 5] = [
        Self::Base64,
        Self::Base64Url,
        Self::Base32,
        Self::Base32Lower,
        Self::Hex,
    ];
    fn key(self) -> &'static str {
        match self {
            Self::Base64 => "base64",
            Self::Base64Url => "base64url",
            Self::Base32 => "base32",
            Self::Base32Lower => "base32-lower",
            Self::Hex => "hex",
        }
    }
    fn encode(self, b: &[u8]) -> String {
        match self {
            Self::Base64 => STANDARD_NO_PAD.encode(b),
            Self::Base64Url => URL_SAFE_NO_PAD.encode(b),
            Self::Base32 => data_encoding::BASE32_NOPAD.encode(b),
            Self::Base32Lower => data_encoding::BASE32_NOPAD.encode(b).to_ascii_lowercase(),
            Self::Hex => hex(b),
        }
    }
}

const TITLES: [&str; 6] = ["mr", "mrs", "ms", "miss", "dr", "mx"];
const PERSON_LABELS: [&str; 6] = ["patient", "pt", "client", "member", "person", "contact"];
const PHONE_LABELS: [&str; 6] = ["tel", "ph", "phone", "cell", "mobile", "home"];
const SSN_LABELS: [&str; 6] = ["ssn", "pt", "patient", "member", "sn", "tin"];
const MRN_LABELS: [&str; 4] = ["mrn", "MRN", "Mrn", "mrn"];
const ACCOUNT_LABELS: [&str; 4] = ["chart", "acct", "account", "CHART"];
/// Labels a PMS might use that are not the usual few.
const OTHER_LABELS: [&str; 11] = [
    "pid", "patid", "ptid", "emr", "ehr", "mr", "medrec", "chartno", "patno", "clientid", "recno",
];

macro_rules! plain {
    ($family:literal, $name:literal, $example:literal, $make:expr) => {
        Spelling {
            family: $family,
            name: $name,
            example: $example,
            make: Make::Plain($make),
        }
    };
}

/// The base spellings (each also appears with a `p_` prefix).
fn spellings() -> Vec<Spelling> {
    let mut v = vec![
        // Names.
        plain!("name", "first_last", "maria_gonzalez", |p, _| format!(
            "{}_{}",
            snake(p.first),
            snake(p.last)
        )),
        plain!("name", "first_last_rand", "maria_gonzalez_x7k2", |p, r| {
            let s = rand_lower(r, 3, 6);
            format!("{}_{}_{s}", snake(p.first), snake(p.last))
        }),
        plain!("name", "LAST-FIRST-YEAR", "GONZALEZ-MARIA-1985", |p, _| {
            format!(
                "{}-{}-{}",
                joined(p.last, "-"),
                joined(p.first, "-"),
                p.dob.0
            )
            .to_uppercase()
        }),
        plain!(
            "name",
            "firstlastyear",
            "mariagonzalez1985",
            |p, _| format!(
                "{}{}{}",
                lower_compact(p.first),
                lower_compact(p.last),
                p.dob.0
            )
        ),
        plain!("name", "FirstLast", "MariaGonzalez", |p, _| format!(
            "{}{}",
            camel(p.first),
            camel(p.last)
        )),
        plain!(
            "name",
            "FirstMiddleLast",
            "MariaElenaGonzalez",
            |p, _| format!("{}{}{}", camel(p.first), camel(p.middle), camel(p.last))
        ),
        plain!("name", "first-last", "maria-gonzalez", |p, _| format!(
            "{}-{}",
            joined(p.first, "-"),
            joined(p.last, "-")
        )),
        plain!("name", "last_first", "gonzalez_maria", |p, _| format!(
            "{}_{}",
            snake(p.last),
            snake(p.first)
        )),
        plain!("name", "LAST_FIRST", "GONZALEZ_MARIA", |p, _| format!(
            "{}_{}",
            snake(p.last),
            snake(p.first)
        )
        .to_uppercase()),
        plain!("name", "LASTFIRST", "GONZALEZMARIA", |p, _| format!(
            "{}{}",
            lower_compact(p.last),
            lower_compact(p.first)
        )
        .to_uppercase()),
        plain!(
            "name",
            "first_middle_last",
            "maria_elena_gonzalez",
            |p, _| { format!("{}_{}_{}", snake(p.first), snake(p.middle), snake(p.last)) }
        ),
        plain!("name", "flast_rand", "mgonzalez_4k2j9", |p, r| {
            let s = rand_lower(r, 4, 6);
            format!(
                "{}{}_{s}",
                &lower_compact(p.first)[..1],
                lower_compact(p.last)
            )
        }),
        plain!("name", "flast_digits", "mgonzalez48213", |p, r| {
            let n = r.random_range(2..=6);
            let d = chars(r, DIGITS, n);
            format!(
                "{}{}{d}",
                &lower_compact(p.first)[..1],
                lower_compact(p.last)
            )
        }),
        plain!("name", "rand_first_last", "x7k2_maria_gonzalez", |p, r| {
            let s = rand_lower(r, 3, 6);
            format!("{s}_{}_{}", snake(p.first), snake(p.last))
        }),
        plain!("name", "title_first_last", "mrs_maria_gonzalez", |p, r| {
            let t = pick(r, &TITLES);
            format!("{t}_{}_{}", snake(p.first), snake(p.last))
        }),
        plain!(
            "name",
            "label-last-first",
            "patient-gonzalez-maria",
            |p, r| {
                let l = pick(r, &PERSON_LABELS);
                format!("{l}-{}-{}", joined(p.last, "-"), joined(p.first, "-"))
            }
        ),
        plain!("name", "last_rand", "gonzalez_x7k2q9", |p, r| {
            let s = rand_lower(r, 6, 10);
            format!("{}_{s}", snake(p.last))
        }),
        plain!("name", "first_rand", "maria_x7k2q9ab", |p, r| {
            let s = rand_lower(r, 6, 10);
            format!("{}_{s}", snake(p.first))
        }),
        plain!("name", "last_first_mi", "gonzalez_maria_e", |p, _| format!(
            "{}_{}_{}",
            snake(p.last),
            snake(p.first),
            &lower_compact(p.middle)[..1]
        )),
        plain!("name", "first_last_seq", "maria_gonzalez_2", |p, r| {
            let n = r.random_range(1..=99);
            format!("{}_{}_{n}", snake(p.first), snake(p.last))
        }),
        plain!("name", "LastFirstRand", "GonzalezMaria7kQ2", |p, r| {
            let n = r.random_range(3..=6);
            let s = chars(r, BASE62, n);
            format!("{}{}{s}", camel(p.last), camel(p.first))
        }),
        // E-mail addresses, squeezed into the charset.
        plain!(
            "email",
            "at_dot_words",
            "maria_gonzalez_at_gmail_com",
            |p, _| p.email.replace('@', "_at_").replace('.', "_")
        ),
        plain!("email", "dashes", "maria-gonzalez-gmail-com", |p, _| p
            .email
            .replace(['@', '.'], "-")),
        plain!(
            "email",
            "underscores",
            "maria_gonzalez_gmail_com",
            |p, _| p.email.replace(['@', '.'], "_")
        ),
        plain!("email", "concat", "mariagonzalezgmailcom", |p, _| p
            .email
            .replace(['@', '.'], "")),
        plain!("email", "local_AT_domain", "mgonzalez_AT_gmail", |p, _| {
            let (local, domain) = p.email.split_once('@').unwrap_or_default();
            let host = domain.split('.').next().unwrap_or_default();
            format!("{}_AT_{host}", local.replace('.', "_"))
        }),
        // Phone numbers.
        plain!("phone", "flast_phone", "jsmith_4075550142", |p, _| format!(
            "{}{}_{}",
            &lower_compact(p.first)[..1],
            lower_compact(p.last),
            p.phone_digits()
        )),
        plain!("phone", "underscored_rand", "407_555_0142_abx", |p, r| {
            let (a, e, l) = p.phone;
            let s = rand_lower(r, 3, 5);
            format!("{a:03}_{e:03}_{l:04}_{s}")
        }),
        plain!("phone", "dashed_rand", "407-555-0142-xk2m", |p, r| {
            let (a, e, l) = p.phone;
            let s = rand_lower(r, 3, 5);
            format!("{a:03}-{e:03}-{l:04}-{s}")
        }),
        plain!("phone", "digits_last", "4075550142_smith", |p, _| format!(
            "{}_{}",
            p.phone_digits(),
            snake(p.last)
        )),
        plain!("phone", "label_digits", "cell_4075550142", |p, r| {
            let l = pick(r, &PHONE_LABELS);
            let v = format!("{l}_{}", p.phone_digits());
            pad(r, v, '_')
        }),
        plain!("phone", "e164_first", "14075550142_maria", |p, _| format!(
            "1{}_{}",
            p.phone_digits(),
            snake(p.first)
        )),
        // Social security numbers.
        plain!("ssn", "label-dashed", "patient-078-05-1120", |p, r| {
            let l = pick(r, &SSN_LABELS);
            let v = format!("{l}-{}", p.ssn_dashed());
            pad(r, v, '-')
        }),
        plain!("ssn", "last-dashed", "smith-078-05-1120", |p, _| format!(
            "{}-{}",
            joined(p.last, "-"),
            p.ssn_dashed()
        )),
        plain!("ssn", "last_last4", "gonzalez_1120_x7k", |p, r| {
            let v = format!("{}_{:04}", snake(p.last), p.ssn.2);
            pad(r, v, '_')
        }),
        plain!("ssn", "digits_last", "078051120_smith", |p, _| format!(
            "{}_{}",
            p.ssn_digits(),
            snake(p.last)
        )),
        plain!(
            "ssn",
            "underscored_last",
            "078_05_1120_smith",
            |p, _| format!("{}_{}", p.ssn_dashed().replace('-', "_"), snake(p.last))
        ),
        // Dates of birth.
        plain!(
            "dob",
            "label_mm_dd_yyyy_rand",
            "dob_03_14_1985_xk",
            |p, r| {
                let s = rand_lower(r, 2, 4);
                format!("dob_{}_{s}", p.mm_dd_yyyy("_"))
            }
        ),
        plain!(
            "dob",
            "mmddyyyy_flast",
            "03141985_mgonzalez",
            |p, _| format!(
                "{}_{}{}",
                p.mm_dd_yyyy(""),
                &lower_compact(p.first)[..1],
                lower_compact(p.last)
            )
        ),
        plain!(
            "dob",
            "dMonthyyyy_first",
            "14March1985_maria",
            |p, _| format!(
                "{}{}{}_{}",
                p.dob.2,
                p.month_name(),
                p.dob.0,
                snake(p.first)
            )
        ),
        plain!(
            "dob",
            "dd-mon-yyyy-last",
            "14-mar-1985-gonzalez",
            |p, _| format!(
                "{:02}-{}-{}-{}",
                p.dob.2,
                p.month_name()[..3].to_lowercase(),
                p.dob.0,
                joined(p.last, "-")
            )
        ),
        plain!("dob", "iso-last", "1985-03-14-gonzalez", |p, _| format!(
            "{}-{}",
            p.iso("-"),
            joined(p.last, "-")
        )),
        plain!("dob", "INITIALSmmddyyyy", "MG03141985_x7k2q", |p, r| {
            let v = format!("{}{}", p.initials().to_uppercase(), p.mm_dd_yyyy(""));
            pad(r, v, '_')
        }),
        plain!("dob", "yyyymmdd_last", "19850314_gonzalez", |p, _| format!(
            "{}_{}",
            p.iso(""),
            snake(p.last)
        )),
        plain!(
            "dob",
            "ddmmyy_last_first",
            "140385_gonzalez_maria",
            |p, _| {
                let (y, m, d) = p.dob;
                format!(
                    "{d:02}{m:02}{:02}_{}_{}",
                    y % 100,
                    snake(p.last),
                    snake(p.first)
                )
            }
        ),
        plain!(
            "dob",
            "last_first_yyyymm",
            "gonzalez_maria_198503",
            |p, _| format!(
                "{}_{}_{}{:02}",
                snake(p.last),
                snake(p.first),
                p.dob.0,
                p.dob.1
            )
        ),
        plain!(
            "dob",
            "first_last_mm_dd_yyyy",
            "maria_gonzalez_03_14_1985",
            |p, _| format!("{}_{}_{}", snake(p.first), snake(p.last), p.mm_dd_yyyy("_"))
        ),
        plain!(
            "dob",
            "lastfirstmmddyyyy",
            "gonzalezmaria03141985",
            |p, _| format!(
                "{}{}{}",
                lower_compact(p.last),
                lower_compact(p.first),
                p.mm_dd_yyyy("")
            )
        ),
        plain!(
            "dob",
            "Monddyyyy_Last",
            "Mar141985_Gonzalez",
            |p, _| format!(
                "{}{:02}{}_{}",
                &p.month_name()[..3],
                p.dob.2,
                p.dob.0,
                camel(p.last)
            )
        ),
        plain!(
            "dob",
            "last_first_yyyy_mm_dd",
            "gonzalez_maria_1985_03_14",
            |p, _| format!("{}_{}_{}", snake(p.last), snake(p.first), p.iso("_"))
        ),
        plain!("dob", "first_mmddyy_rand", "maria_031485_x7k", |p, r| {
            let (y, m, d) = p.dob;
            let s = rand_lower(r, 3, 5);
            format!("{}_{m:02}{d:02}{:02}_{s}", snake(p.first), y % 100)
        }),
        // US street addresses.
        plain!(
            "address",
            "zip_number_street",
            "32801_123_main_st",
            |p, _| {
                let a = &p.addr;
                format!(
                    "{}_{}_{}_{}",
                    p.zip(),
                    a.number,
                    snake(&a.street),
                    snake(a.suffix)
                )
            }
        ),
        plain!(
            "address",
            "Number-StreetCamel-City-zip",
            "123-MainStreet-Orlando-32801",
            |p, _| {
                let a = &p.addr;
                format!(
                    "{}-{}{}-{}-{}",
                    a.number,
                    camel(&a.street),
                    camel(a.suffix),
                    camel(a.city),
                    p.zip()
                )
            }
        ),
        plain!(
            "address",
            "snake_full",
            "123_main_st_orlando_fl_32801",
            |p, _| {
                let a = &p.addr;
                format!(
                    "{}_{}_{}_{}_{}_{}",
                    a.number,
                    snake(&a.street),
                    snake(a.suffix),
                    snake(a.city),
                    a.state.to_lowercase(),
                    p.zip()
                )
            }
        ),
        plain!(
            "address",
            "number_street_suffix",
            "1234_oak_ridge_avenue",
            |p, _| {
                let a = &p.addr;
                format!("{}_{}_{}", a.number, snake(&a.street), snake(a.suffix))
            }
        ),
        plain!(
            "address",
            "NumberStreetSuffixZip",
            "123MainSt32801",
            |p, _| {
                let a = &p.addr;
                format!(
                    "{}{}{}{}",
                    a.number,
                    camel(&a.street),
                    camel(a.suffix),
                    p.zip()
                )
            }
        ),
        plain!(
            "address",
            "zip4_number_street",
            "32801-1234_123_main",
            |p, _| {
                let a = &p.addr;
                format!(
                    "{}-{:04}_{}_{}",
                    p.zip(),
                    a.zip4,
                    a.number,
                    snake(&a.street)
                )
            }
        ),
        plain!(
            "address",
            "number_street_apt",
            "123_main_st_apt_4b",
            |p, _| {
                let a = &p.addr;
                format!(
                    "{}_{}_{}_apt_{}",
                    a.number,
                    snake(&a.street),
                    snake(a.suffix),
                    a.unit.to_lowercase()
                )
            }
        ),
        plain!(
            "address",
            "po_box_city_zip",
            "po_box_1234_orlando_32801",
            |p, _| {
                format!(
                    "po_box_{}_{}_{}",
                    p.addr.number,
                    snake(p.addr.city),
                    p.zip()
                )
            }
        ),
        plain!("address", "last_zip_rand", "gonzalez_32801_x7k", |p, r| {
            let s = rand_lower(r, 3, 5);
            format!("{}_{}_{s}", snake(p.last), p.zip())
        }),
        plain!(
            "address",
            "street_suffix_city_state",
            "main_street_orlando_fl",
            |p, _| {
                let a = &p.addr;
                format!(
                    "{}_{}_{}_{}",
                    snake(&a.street),
                    snake(a.suffix),
                    snake(a.city),
                    a.state.to_lowercase()
                )
            }
        ),
        // Medical record numbers, labelled and bare.
        plain!("mrn", "label_digits_last", "mrn_0048213_smith", |p, r| {
            let l = pick(r, &MRN_LABELS);
            format!("{l}_{}_{}", p.mrn, snake(p.last))
        }),
        plain!("mrn", "LABEL-digits-rand", "MRN-00482137-xk", |p, r| {
            let s = rand_lower(r, 2, 4);
            pad(r, format!("MRN-{}-{s}", p.mrn), '-')
        }),
        plain!(
            "mrn",
            "account_digits_last",
            "chart_48213_gonzalez",
            |p, r| {
                let l = pick(r, &ACCOUNT_LABELS);
                format!("{l}_{}_{}", p.mrn, snake(p.last))
            }
        ),
        plain!(
            "mrn",
            "digits_last_initial",
            "0048213_smith_j",
            |p, _| format!(
                "{}_{}_{}",
                p.mrn,
                snake(p.last),
                &lower_compact(p.first)[..1]
            )
        ),
        plain!("mrn", "last_digits", "smith_0048213", |p, r| {
            let v = format!("{}_{}", snake(p.last), p.mrn);
            pad(r, v, '_')
        }),
        plain!("mrn", "digits_rand", "0048213_x7k2m9ab", |p, r| {
            let v = format!("{}_{}", p.mrn, rand_lower(r, 3, 6));
            pad(r, v, '_')
        }),
        plain!("mrn", "zero_filled", "0000000000048213", |p, r| {
            let n = r.random_range(16..=20);
            format!("{:0>n$}", p.mrn)
        }),
        plain!("mrn", "other_label", "pid_0048213_smith", |p, r| {
            let l = pick(r, &OTHER_LABELS);
            let v = format!("{l}_{}_{}", p.mrn, snake(p.last));
            pad(r, v, '_')
        }),
    ];
    for payload in Payload::ALL {
        for enc in Encoding::ALL {
            v.push(Spelling {
                family: "encoded",
                name: "",
                example: payload.example(),
                make: Make::Encoded(payload, enc),
            });
        }
    }
    v
}

/// One named spelling's values.
pub struct PhiSpelling {
    /// `family/spelling`, with a `p_/` in front for the prefixed twin.
    pub name: String,
    pub family: &'static str,
    /// What a value looks like (an illustration, not a generated value).
    pub example: String,
    pub values: Vec<String>,
}

/// Tries per value before a spelling is declared unable to fit the wire (a fault of the
/// spelling, not a finding about the guard).
const MAX_TRIES: usize = 20_000;

/// `per_spelling` values of every spelling and of its `p_`-prefixed twin, each a fresh
/// person, all fitting the wire contract.
pub fn phi_corpus(seed: u64, per_spelling: usize) -> Vec<PhiSpelling> {
    let mut out = Vec::new();
    for s in spellings() {
        let base = match &s.make {
            Make::Plain(_) => format!("{}/{}", s.family, s.name),
            Make::Encoded(p, e) => format!("{}/{}.{}", s.family, p.key(), e.key()),
        };
        for prefix in ["", "p_"] {
            let name = if prefix.is_empty() {
                base.clone()
            } else {
                format!("p_/{base}")
            };
            let mut rng = stream(seed, &name);
            let mut values = Vec::with_capacity(per_spelling);
            let mut tries = 0usize;
            while values.len() < per_spelling {
                tries += 1;
                assert!(
                    tries <= MAX_TRIES * per_spelling.max(1),
                    "{name}: too few values fit the wire contract"
                );
                let p = Person::random(&mut rng);
                let raw = match &s.make {
                    Make::Plain(f) => f(&p, &mut rng),
                    Make::Encoded(payload, enc) => {
                        enc.encode(payload.text(&p, &mut rng).as_bytes())
                    }
                };
                let v = format!("{prefix}{raw}");
                if fits_wire(&v) {
                    values.push(v);
                }
            }
            let example = match &s.make {
                Make::Plain(_) => format!("{prefix}{}", s.example),
                Make::Encoded(_, enc) => {
                    format!("{prefix}{}({})", enc.key(), s.example)
                }
            };
            out.push(PhiSpelling {
                name,
                family: s.family,
                example,
                values,
            });
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Scoring (guard-agnostic: the caller passes the check)
// ---------------------------------------------------------------------------------------

/// How one generator or spelling fared.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub name: String,
    pub n: usize,
    pub refused: usize,
    /// Refusals by rule code.
    pub rules: BTreeMap<String, usize>,
    /// The first few values that went the wrong way (refused valid ids, accepted PHI).
    pub wrong: Vec<String>,
}

impl Tally {
    /// Runs `values` through `check` (`Err(rule code)` for a refusal), keeping up to `keep`
    /// examples of the wrong outcome (`want_refused` says which outcome is right).
    pub fn of<'a>(
        name: &str,
        values: impl IntoIterator<Item = &'a String>,
        check: impl Fn(&str) -> Result<(), &'static str>,
        want_refused: bool,
        keep: usize,
    ) -> Self {
        let mut t = Tally {
            name: name.to_owned(),
            ..Tally::default()
        };
        for v in values {
            t.n += 1;
            let refused = match check(v) {
                Ok(()) => false,
                Err(code) => {
                    *t.rules.entry(code.to_owned()).or_default() += 1;
                    t.refused += 1;
                    true
                }
            };
            if refused != want_refused && t.wrong.len() < keep {
                t.wrong.push(v.clone());
            }
        }
        t
    }
    pub fn accepted(&self) -> usize {
        self.n - self.refused
    }
    pub fn refusal_rate(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.refused as f64 / self.n as f64
        }
    }
    /// The rule histogram as `code n, code n`.
    pub fn rules_line(&self) -> String {
        let mut r: Vec<(&String, &usize)> = self.rules.iter().collect();
        r.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        r.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
