//! What a ref is made of. A value in the ref charset (`A–Z a–z 0–9 _ -`) that matched none
//! of the PHI shapes is judged four ways, each reporting the rule it found:
//!
//! 1. **Decodable text**: a ref whose hex, base32 or base64url decoding reads as text is an
//!    encoded e-mail, name or number (random bytes almost never decode to text).
//! 2. **Segments**: split at `_` and `-`, its all-digit groups are dates, phone numbers, SSNs,
//!    ZIP codes or record numbers, a month name beside digits is a date, `at` or a domain
//!    makes an e-mail address and a street suffix an address, and a whole segment that is a
//!    name (the lexicon, or five or more letters the name model reads easily, or an initial
//!    and such a name) is a name. Random generators almost never cut their output into such
//!    pieces.
//! 3. **Written together**: a street address, an e-mail address, a name and a number, two
//!    names or capitalised words run together without separators.
//! 4. **Randomness**: two explanations of the whole value compete. *Random*: every character
//!    drawn uniformly from the smallest usual alphabet that holds it (hex, base32, base36,
//!    base62, base64url...), the cheapest explanation a random id can have. *Made by a
//!    person*: a sequence of pieces — names and words (the lexicon, or the trigram model),
//!    numbers, dates, years, mail and street words — with noise characters in between at a
//!    small extra cost. When the second is cheaper by more than [`THRESHOLD`] nats (a
//!    likelihood ratio of about 160,000 to one), the value is refused with the rule of the
//!    piece that gained most.
//!
//! A short letter prefix (`p_`, `cus_`, `appt-`) is a type tag: the tags in [`ID_PREFIXES`]
//! and any of one or two letters are neutral; a longer one is judged like any segment.

use super::PhiRule;
use super::model::{self, WordCost};

/// Nats by which the "made by a person" explanation must beat the random one.
pub(crate) const THRESHOLD: f32 = 12.0;
/// Extra cost of each piece (a name, a number) in the "made by a person" explanation.
const PIECE: f32 = 1.5;
/// Extra cost of a noise character in the "made by a person" explanation.
const NOISE: f32 = 0.3;
/// Longest piece of letters the model scores as one name or word.
const MAX_WORD: usize = 20;
/// Longest piece of letters the "made by a person" explanation considers (longer names are
/// two pieces; this bounds the work per position).
const MAX_PIECE: usize = 14;

/// Type tags that may start a ref (before `_` or `-`), whatever they read as.
pub const ID_PREFIXES: &[&str] = &[
    "acc", "acct", "account", "act", "addr", "appt", "apt", "bk", "book", "booking", "card", "ch",
    "charge", "cl", "cli", "client", "cus", "cust", "customer", "ev", "evt", "event", "id", "in",
    "inv", "invoice", "item", "key", "loc", "location", "mbr", "mem", "member", "msg", "obj",
    "ord", "order", "pat", "patient", "pay", "payment", "per", "person", "pi", "pm", "price",
    "prod", "product", "prov", "provider", "pt", "rec", "record", "ref", "res", "resv", "sess",
    "session", "slot", "src", "staff", "sub", "svc", "tok", "token", "tr", "txn", "uid", "user",
    "usr", "visit", "vst",
];

const MONTHS: &[&str] = &[
    "jan",
    "feb",
    "mar",
    "apr",
    "may",
    "jun",
    "jul",
    "aug",
    "sep",
    "sept",
    "oct",
    "nov",
    "dec",
    "january",
    "february",
    "march",
    "april",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

/// Whether `p` (ASCII letters) is a neutral type tag.
fn is_tag(p: &str) -> bool {
    p.len() <= 2 || (p.len() <= 8 && in_list(vocab::TAG, p.as_bytes()))
}

/// A value's prefix and the rest after its separator, as [`split_prefix`] finds them: worked
/// out once per value and handed to each check.
pub(crate) type Prefix<'a> = Option<(&'a str, &'a str)>;

/// The prefix of `v` (letters, at most 8, then `_` or `-`) and the rest, when the rest is at
/// least 8 characters.
pub(crate) fn split_prefix(v: &str) -> Prefix<'_> {
    let i = v.find(['_', '-'])?;
    let (p, rest) = (&v[..i], &v[i + 1..]);
    ((1..=8).contains(&i) && p.bytes().all(|b| b.is_ascii_alphabetic()) && rest.len() >= 8)
        .then_some((p, rest))
}

fn ln(x: f32) -> f32 {
    x.ln()
}

// Costs in nats, precomputed (`f32::ln` is not `const`): ln 3, ln 26, ln 24 (a month name),
// ln 10 (a digit), ln 8 (a number's length), ln(3 × 130 × 366) (a date: three orders, 130
// years, 366 days), ln 260 (a year of 130, in two spellings), ln 4 (a date's separators).
const LN_3: f32 = 1.098_612_3;
const LN_26: f32 = 3.258_096_5;
const LN_MONTH: f32 = 3.178_054;
const LN_DIGIT: f32 = std::f32::consts::LN_10;
const LN_NUMBER_LEN: f32 = 2.079_441_6;
const LN_DATE: f32 = 11.868_78;
const LN_YEAR: f32 = 5.560_682;
const LN_DATE_SEPS: f32 = 1.386_294_4;
/// ln 18: a hex alphabet with both separators, the largest hex alphabet.
const LN_HEX_AND_SEPS: f32 = 2.890_372;

/// The size of the smallest usual alphabet holding every character of `body`.
fn alphabet(body: &[u8]) -> f32 {
    let (mut lower, mut upper, mut digit, mut under, mut dash) =
        (false, false, false, false, false);
    let (mut beyond_hex, mut beyond_b32) = (false, false);
    for &c in body {
        match c {
            b'a'..=b'z' => {
                lower = true;
                beyond_hex |= c > b'f';
            }
            b'A'..=b'Z' => {
                upper = true;
                beyond_hex |= c > b'F';
            }
            b'0'..=b'9' => {
                digit = true;
                beyond_b32 |= !(b'2'..=b'7').contains(&c);
            }
            b'_' => under = true,
            _ => dash = true,
        }
    }
    let letters = lower || upper;
    let base = match (letters, digit, lower && upper) {
        (false, _, _) => 10.0,
        (true, false, true) => 52.0,
        (true, false, false) => 26.0,
        (true, true, true) => 62.0,
        // Hex encodes whole bytes: an odd length is not a hex id.
        (true, true, false) if !beyond_hex && body.len().is_multiple_of(2) => 16.0,
        (true, true, false) if !beyond_b32 => 32.0,
        (true, true, false) => 36.0,
    };
    base + f32::from(u8::from(under)) + f32::from(u8::from(dash))
}

// ---------------------------------------------------------------------------------------
// Dates and digit groups.

fn num(d: &[u8]) -> u32 {
    d.iter().fold(0u32, |n, c| {
        n.saturating_mul(10).saturating_add(u32::from(c - b'0'))
    })
}

fn valid(y: u32, m: u32, d: u32) -> bool {
    (1900..=2029).contains(&y) && (1..=12).contains(&m) && (1..=31).contains(&d)
}

/// Eight digits that read as a date (YYYYMMDD, MMDDYYYY or DDMMYYYY).
fn date8(d: &[u8]) -> bool {
    valid(num(&d[..4]), num(&d[4..6]), num(&d[6..]))
        || valid(num(&d[4..]), num(&d[..2]), num(&d[2..4]))
        || valid(num(&d[4..]), num(&d[2..4]), num(&d[..2]))
}

/// Six digits that read as a date (MMDDYY, DDMMYY or YYMMDD).
fn date6(d: &[u8]) -> bool {
    let (a, b, c) = (num(&d[..2]), num(&d[2..4]), num(&d[4..]));
    let md = |m: u32, d: u32| (1..=12).contains(&m) && (1..=31).contains(&d);
    md(a, b) || md(b, a) || md(b, c)
}

fn year(d: &[u8]) -> bool {
    d.len() == 4 && (1900..=2029).contains(&num(d))
}

/// The rule for consecutive all-digit segments (`407_555_0142`, `03-14-1985`, `32801`).
fn digit_groups(groups: &[&[u8]]) -> Option<PhiRule> {
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    let total: usize = lens.iter().sum();
    match lens.as_slice() {
        [3, 3, 4] | [1, 3, 3, 4] | [3, 4] | [3, 3, 4, _] => return Some(PhiRule::Phone),
        [3, 2, 4] => return Some(PhiRule::Ssn),
        [a, b, 2 | 4] if *a <= 2 && *b <= 2 => return Some(PhiRule::Date),
        [4, a, b] if *a <= 2 && *b <= 2 => return Some(PhiRule::Date),
        [5, 4] => return Some(PhiRule::PostalAddress),
        [_, _, ..] if total >= 5 => return Some(PhiRule::Mrn),
        _ => {}
    }
    let [g] = groups else { return None };
    match g.len() {
        8 if date8(g) => Some(PhiRule::Date),
        6 if date6(g) => Some(PhiRule::Date),
        4 if year(g) => Some(PhiRule::Date),
        10 | 11 => Some(PhiRule::Phone),
        9 => Some(PhiRule::Ssn),
        5 => Some(PhiRule::PostalAddress),
        n if n >= 5 => Some(PhiRule::Mrn),
        _ => None,
    }
}

/// A body of digits only (after a tag): a date, a phone number, an SSN or a record number.
pub(crate) fn all_digits(d: &[u8]) -> PhiRule {
    digit_groups(&[d]).unwrap_or(PhiRule::Mrn)
}

// ---------------------------------------------------------------------------------------
// Segments.

/// Letters in one case pattern a person writes: `maria`, `MARIA`, `Maria`.
fn case_consistent(w: &[u8]) -> bool {
    let rest_lower = w[1..].iter().all(u8::is_ascii_lowercase);
    let all_upper = w.iter().all(u8::is_ascii_uppercase);
    all_upper || rest_lower
}

/// Mean trigram cost per letter (the end included) at or under which letters read as a name.
const NAME_RATE: f32 = 2.5;
/// The same for six letters or more (random letters that long rarely read this easily).
const LONG_NAME_RATE: f32 = 2.9;

fn lower(w: &[u8]) -> ([u8; MAX_WORD], usize) {
    let mut buf = [0u8; MAX_WORD];
    let n = w.len().min(MAX_WORD);
    for (d, s) in buf.iter_mut().zip(&w[..n]) {
        *d = s.to_ascii_lowercase();
    }
    (buf, n)
}

/// Mean trigram cost per letter of a segment of letters (the end included).
fn letter_rate(seg: &[u8]) -> f32 {
    let (buf, n) = lower(seg);
    let mut c = WordCost::new();
    buf[..n].iter().for_each(|&b| c.push(b));
    c.total() / (n as f32 + 1.0)
}

/// Letter segments read at or under this rate count as words beside another word segment.
const WORDS_RATE: f32 = 3.3;
/// A segment of letters read at or under this rate is evidence beside a number or name.
const READABLE_RATE: f32 = 3.0;

/// How strongly a whole segment reads as a name: 2 alone is enough, 1 needs company.
fn name_strength(seg: &[u8]) -> u8 {
    if seg.len() < 3
        || seg.len() > MAX_WORD
        || !seg.iter().all(u8::is_ascii_alphabetic)
        || !case_consistent(seg)
    {
        return 0;
    }
    let (buf, n) = lower(seg);
    let w = &buf[..n];
    let mut c = WordCost::new();
    w.iter().for_each(|&b| c.push(b));
    let lm = c.total();
    // Known: in the lexicon, and read easily enough for the lexicon to be believed.
    let known = model::is_name(w);
    let rate = || lm / (n as f32 + 1.0);
    match n {
        _ if known && n >= 5 => 2,
        _ if n >= 6 && rate() <= LONG_NAME_RATE => 2,
        _ if known || (n == 5 && rate() <= NAME_RATE) => 1,
        _ => 0,
    }
}

fn is_month(seg: &[u8]) -> bool {
    (3..=9).contains(&seg.len())
        && b"adfjmnosADFJMNOS".contains(&seg[0])
        && in_list(vocab::MONTH, seg)
}

/// The segment rules, for a value with at least one `_` or `-`.
pub(crate) fn segments(v: &str) -> Option<PhiRule> {
    // At most 33 segments in 64 characters; kept on the stack.
    let mut store: [&[u8]; 33] = [&[]; 33];
    let mut count = 0;
    for (slot, seg) in store
        .iter_mut()
        .zip(v.as_bytes().split(|&b| b == b'_' || b == b'-'))
    {
        *slot = seg;
        count += 1;
    }
    let segs = &store[..count];
    if segs.len() < 2 {
        return None;
    }
    // Every rule below turns on a segment of digits only or of letters only (past a tag): a
    // tag and random segments that mix them (`appt_Qm8Zr2Lx7Vt4`) are done here.
    let pure = |s: &&[u8]| {
        !s.is_empty() && (s.iter().all(u8::is_ascii_digit) || s.iter().all(u8::is_ascii_alphabetic))
    };
    let tag = segs[0].len() <= 8
        && !segs[0].is_empty()
        && segs[0].iter().all(u8::is_ascii_alphabetic)
        && std::str::from_utf8(segs[0]).is_ok_and(is_tag);
    if !segs[usize::from(tag)..].iter().any(pure) {
        return None;
    }
    let is_digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    let mut weak = 0u8;
    let mut i = 0;
    while i < segs.len() {
        if is_digits(segs[i]) {
            let j = (i..segs.len())
                .find(|&j| !is_digits(segs[j]))
                .unwrap_or(segs.len());
            if let Some(rule) = digit_groups(&segs[i..j]) {
                return Some(rule);
            }
            // A short number on its own (a house number, the last digits of an SSN) is
            // evidence only beside a name; one or two digits are common in random ids.
            if segs[i..j].iter().map(|g| g.len()).sum::<usize>() >= 3 {
                weak += 1;
            }
            i = j;
        } else {
            i += 1;
        }
    }
    for (k, s) in segs.iter().enumerate() {
        // Beside a day or a year: a segment of digits only.
        let near_digits = segs[k.saturating_sub(1)..(k + 2).min(segs.len())]
            .iter()
            .any(|x| is_digits(x));
        if is_month(s) && near_digits {
            return Some(PhiRule::Date);
        }
    }
    // An e-mail address written out in segments: `_at_` between a local part and a domain
    // (`jsimek_AT_komuda`), or a top-level domain ending three or more segments with a word
    // among them (`lmadden67_kusik_pl`).
    let word =
        |x: &[u8]| x.len() >= 3 && x.iter().all(u8::is_ascii_alphabetic) && case_consistent(x);
    if segs.len() >= 3 {
        let last = segs[segs.len() - 1];
        // A local part in one case (`mhale62`), `at`, then a word.
        let local = |x: &[u8]| {
            x.iter().filter(|c| c.is_ascii_alphabetic()).count() >= 3
                && (x.iter().all(|c| !c.is_ascii_uppercase())
                    || x.iter().all(|c| !c.is_ascii_lowercase()))
        };
        let at = (1..segs.len() - 1).any(|k| {
            segs[k].eq_ignore_ascii_case(b"at") && local(segs[k - 1]) && word(segs[k + 1])
        });
        let tld = last.iter().all(u8::is_ascii_lowercase)
            && in_list(vocab::TLD, last)
            && segs[..segs.len() - 1].iter().any(|x| word(x));
        if at || tld {
            return Some(PhiRule::Email);
        }
    }
    // A street suffix as a segment of its own beside a house number, an ordinal or a street
    // name (`47_motuhanga_ct`, `oak_trl_szczytno`).
    let number_like = |x: &[u8]| {
        is_digits(x)
            || (x.len() >= 3 && {
                let d = x.iter().take_while(|c| c.is_ascii_digit()).count();
                (1..=3).contains(&d) && x.len() == d + 2 && x[d..] == *ordinal(&x[..d])
            })
    };
    for k in 0..segs.len() {
        let s = segs[k];
        if s.len() >= 2 && case_consistent(s) && in_list(vocab::STREET, s) {
            // A street name beside it is written in the suffix's case (`oak_trl`, `OAK_TRL`).
            let same_case = |x: &[u8]| {
                word(x)
                    && x[0].is_ascii_uppercase() == s[0].is_ascii_uppercase()
                    && x[x.len() - 1].is_ascii_uppercase() == s[s.len() - 1].is_ascii_uppercase()
            };
            let before = k > 0 && (number_like(segs[k - 1]) || same_case(segs[k - 1]));
            let after = segs
                .get(k + 1)
                .is_some_and(|x| number_like(x) || same_case(x));
            if (before && after) || (k > 0 && number_like(segs[k - 1])) {
                return Some(PhiRule::PostalAddress);
            }
        }
    }
    // Two or more whole segments of letters in one case pattern (`aldonza_knutsson`,
    // `lenn_sanghvi_ctcc`): words, whatever they are. Random generators that use `_` or `-`
    // mix cases and digits, so they almost never cut out two such segments.
    let (words, letters) = segs
        .iter()
        .enumerate()
        .filter(|&(k, s)| !(k == 0 && tag) && s.len() >= 3)
        .map(|(_, s)| s)
        .filter(|s| s.iter().all(u8::is_ascii_alphabetic) && case_consistent(s))
        .filter(|s| letter_rate(s) <= WORDS_RATE)
        .fold((0, 0), |(n, l), s| (n + 1, l + s.len()));
    if words >= 2 && letters >= 7 {
        return Some(PhiRule::PersonName);
    }
    for (k, s) in segs.iter().enumerate() {
        if k == 0 && tag {
            continue;
        }
        let letters = s.len() >= 4 && s.iter().all(u8::is_ascii_alphabetic) && case_consistent(s);
        let readable = letters && letter_rate(s) <= READABLE_RATE;
        // An initial then a surname (`mgonzalez`): the surname judged on its own.
        let initialled =
            s.len() >= 6 && s.iter().all(u8::is_ascii_lowercase) && name_strength(&s[1..]) == 2;
        match name_strength(s) {
            2 => return Some(PhiRule::PersonName),
            _ if initialled => return Some(PhiRule::PersonName),
            1 => weak += 1,
            _ if readable => weak += 1,
            _ => {}
        }
        // Four digits standing alone beside a word (`gonzalez_1120_x7k`): the last four of
        // an SSN or a house number. Random ids almost never cut out four digits alone.
        let short_word =
            |x: &[u8]| x.len() >= 2 && x.iter().all(u8::is_ascii_alphabetic) && case_consistent(x);
        if s.len() == 4
            && is_digits(s)
            && ((k > 0 && !(k == 1 && tag) && short_word(segs[k - 1]))
                || segs.get(k + 1).is_some_and(|x| word(x)))
        {
            return Some(PhiRule::Ssn);
        }
        // A first segment (after a tag) that is a known name (`anna_x7k2…`) is a name with a
        // suffix.
        if k == usize::from(tag) && letters {
            let (buf, n) = lower(s);
            // Four letters only for a frequent name: many short names are random letters.
            if model::is_name(&buf[..n]) && (n >= 5 || model::frequent_name(&buf[..n])) {
                return Some(PhiRule::PersonName);
            }
        }
    }
    (weak >= 2).then_some(PhiRule::PersonName)
}

/// Letters per run, at least, for [`written_words`]' long-run rule.
const LONG_RUN: usize = 12;
/// Mean trigram cost per letter at or under which a long run reads as written words.
const LONG_RUN_RATE: f32 = 2.5;
/// Mean trigram cost per letter at or under which the rest of a run beside a known name reads
/// as a second name ([`two_names`]).
const TWO_NAMES_RATE: f32 = 2.8;
/// The same for the words of a run of capitalised words.
const CAMEL_RATE: f32 = 3.0;
/// The same when one of the capitalised words is a known name of four letters or more.
const KNOWN_CAMEL_RATE: f32 = 3.4;

/// Words written together without separators: a run of twelve or more letters in one case
/// pattern that reads easily (`DEOLIVEIRABROOKLYN`, `mariagonzalez`), or a value that is
/// two or more capitalised words (`CaglarVanLeeuwen`, `p_HeyvetullahLoos`) with at most a
/// short tail. Random letters that long rarely read this easily, and random mixed case
/// almost never falls into capitalised words.
pub(crate) fn written_words(v: &str, prefix: Prefix<'_>) -> bool {
    let body = prefix.map_or(v, |(_, b)| b).as_bytes();
    if name_then_number(body) {
        return true;
    }
    // Long readable runs.
    let mut i = 0;
    while i < body.len() {
        let mut j = i;
        while j < body.len() && body[j].is_ascii_alphabetic() {
            j += 1;
        }
        let run = &body[i..j];
        // Split a run at each lower-to-upper change: each part is one case pattern.
        let mut start = 0;
        for k in 1..=run.len() {
            let boundary =
                k == run.len() || (run[k - 1].is_ascii_lowercase() && run[k].is_ascii_uppercase());
            if boundary {
                let part = &run[start..k];
                if part.len() >= LONG_RUN
                    && case_consistent(part)
                    && (letter_rate(part) <= LONG_RUN_RATE || two_names(part))
                {
                    return true;
                }
                start = k;
            }
        }
        i = j.max(i + 1);
    }
    // Capitalised words: two or more `Xxx` pieces of three or more letters in a row, with at
    // most six other characters before and after them (`x7_MariaGonzalez`, `MariaLee1985`,
    // `OpreaNilsonHfpbx`: the tail may itself start with a capital). The head is empty or a
    // segment of its own (ends with `_` or `-`).
    (0..body.len().min(5))
        .filter(|&h| h == 0 || matches!(body[h - 1], b'_' | b'-'))
        .any(|head| {
            let (mut words, mut k, mut rates, mut known) = (0, head, 0.0, false);
            while k < body.len() && body[k].is_ascii_uppercase() {
                let end = capitalised_end(body, k);
                if end - k < 3 {
                    break;
                }
                words += 1;
                rates += letter_rate(&body[k..end]);
                let (buf, n) = lower(&body[k..end]);
                known |= n >= 4 && model::is_name(&buf[..n]);
                k = end;
                let rate = if known { KNOWN_CAMEL_RATE } else { CAMEL_RATE };
                if words >= 2 && head + (body.len() - k) <= 6 && rates / words as f32 <= rate {
                    return true;
                }
            }
            false
        })
}

/// Where the capitalised word starting at `k` (a capital, then its lower-case letters) ends.
fn capitalised_end(b: &[u8], k: usize) -> usize {
    k + 1
        + b[k + 1..]
            .iter()
            .take_while(|c| c.is_ascii_lowercase())
            .count()
}

/// A long run of letters in one case (`VANSTRAATENHUSEYIN`) that is a known name of five
/// letters or more at one end and reads easily in the rest: two names run together. A
/// random run of letters is a known name at an end about once in a thousand, and reads
/// easily in the rest almost never.
fn two_names(run: &[u8]) -> bool {
    if !(run.iter().all(u8::is_ascii_uppercase) || run.iter().all(u8::is_ascii_lowercase)) {
        return false;
    }
    let (buf, n) = lower(run);
    let w = &buf[..n];
    (5..=(n - 5).min(12)).any(|k| {
        let (head, tail) = (&w[..k], &w[n - k..]);
        let (rest_of_head, rest_of_tail) = (&w[k..], &w[..n - k]);
        (model::is_name(head)
            && (model::is_name(rest_of_head) || letter_rate(rest_of_head) <= TWO_NAMES_RATE))
            || (model::is_name(tail)
                && (model::is_name(rest_of_tail) || letter_rate(rest_of_tail) <= TWO_NAMES_RATE))
    })
}

/// A street address written together: a house number, capitalised words the last of which
/// is a street suffix, then a ZIP code or the end (`123MainSt32801`, `4629LakeAve`).
pub(crate) fn street_address(body: &[u8]) -> bool {
    let number = body.iter().take_while(|c| c.is_ascii_digit()).count();
    if !(1..=6).contains(&number) {
        return false;
    }
    let (mut k, mut last) = (number, &body[..0]);
    while k < body.len() && body[k].is_ascii_uppercase() {
        let end = capitalised_end(body, k);
        last = &body[k..end];
        k = end;
    }
    let zip = &body[k..];
    last.len() >= 2
        && in_list(vocab::STREET, last)
        && k > number + last.len()
        && (zip.is_empty() || (zip.len() == 5 && zip.iter().all(u8::is_ascii_digit)))
}

/// An e-mail address run together (`mgigli48franzeseeu`, `aylastokes77hajekcom`): lower-case
/// letters and at most two short numbers, ending with a top-level domain after a letter, the
/// letters reading as words (an initial aside). Random letters that long almost never read so.
pub(crate) fn concat_email(body: &[u8]) -> bool {
    if body.len() < 12
        || !body
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    {
        return false;
    }
    let Some(t) = [4, 3, 2].into_iter().find(|&t| {
        body.len() > t + 8
            && body[body.len() - t - 1].is_ascii_lowercase()
            && in_list(vocab::TLD, &body[body.len() - t..])
    }) else {
        return false;
    };
    let rest = &body[..body.len() - t];
    let (mut cost, mut letters, mut numbers) = (0.0, 0usize, 0);
    for (k, run) in rest
        .split(u8::is_ascii_digit)
        .filter(|r| !r.is_empty())
        .enumerate()
    {
        // An initial before a name (`mgigli`): the name read on its own.
        let run = if k == 0 && run.len() >= 5 && letter_rate(&run[1..]) < letter_rate(run) {
            &run[1..]
        } else {
            run
        };
        cost += letter_rate(run) * (run.len() as f32 + 1.0);
        letters += run.len() + 1;
    }
    for num in rest.split(u8::is_ascii_lowercase).filter(|r| !r.is_empty()) {
        numbers += 1;
        if num.len() > 4 {
            return false;
        }
    }
    numbers <= 2 && letters >= 10 && cost / letters as f32 <= READABLE_RATE
}

/// A body that is one run of letters in one case pattern then one run of digits
/// (`mgonzalez48213`, `sprochazkova62859`), the letters (or all but an initial) reading as a
/// name. A random id of 16 characters or more is almost never cut into two such runs; hex
/// letters alone (`a`–`f`) are left to chance.
fn name_then_number(body: &[u8]) -> bool {
    let letters = body.iter().take_while(|c| c.is_ascii_alphabetic()).count();
    let (w, digits) = body.split_at(letters);
    if letters < 6
        || digits.len() < 2
        || !digits.iter().all(u8::is_ascii_digit)
        || !case_consistent(w)
        || w.iter()
            .all(|c| matches!(c.to_ascii_lowercase(), b'a'..=b'f'))
    {
        return false;
    }
    let reads = |x: &[u8]| {
        let (buf, n) = lower(x);
        letter_rate(x) <= WORDS_RATE || model::is_name(&buf[..n])
    };
    reads(w) || reads(&w[1..])
}

// ---------------------------------------------------------------------------------------
// Decodable text.

fn texty(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b" .@_+-',()/:#|;&=".contains(&b)
}

/// Whether `s`, read as `bits`-bit symbols (`val` maps a character to its symbol, `None`
/// outside the alphabet), decodes to bytes that read as text a person wrote: ten bytes or
/// more all text-like, or eight or nine with the marks of PHI (four digits, an `@`, a space,
/// a dot), or sixteen or more at least 90 % text-like. Decoding stops at the first byte that
/// settles it, so random bytes (non-text within a byte or two) cost almost nothing.
fn decodes_to_text(s: &[u8], bits: u32, val: impl Fn(u8) -> Option<u8>) -> bool {
    let n = s.len() * bits as usize / 8;
    if n < 8 {
        return false;
    }
    let allowed = if n >= 16 { n / 10 } else { 0 };
    let (mut acc, mut have) = (0u32, 0u32);
    let (mut bad, mut digits, mut marks) = (0usize, 0usize, false);
    for &c in s {
        let Some(v) = val(c) else { return false };
        acc = (acc << bits) | u32::from(v);
        have += bits;
        if have >= 8 {
            have -= 8;
            let byte = (acc >> have) as u8;
            if !texty(byte) {
                bad += 1;
                if bad > allowed {
                    return false;
                }
            }
            digits += usize::from(byte.is_ascii_digit());
            marks |= b" @.".contains(&byte);
        }
        acc &= (1 << have) - 1;
    }
    n >= 10 || digits >= 4 || marks
}

fn hex_text(s: &[u8]) -> bool {
    let lower = s
        .iter()
        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c));
    let upper = s
        .iter()
        .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c));
    (lower || upper)
        && s.len().is_multiple_of(2)
        && decodes_to_text(s, 4, |c| (c as char).to_digit(16).map(|d| d as u8))
}

fn base32_text(s: &[u8]) -> bool {
    let upper = s
        .iter()
        .all(|c| c.is_ascii_uppercase() || (b'2'..=b'7').contains(c));
    let lower = s
        .iter()
        .all(|c| c.is_ascii_lowercase() || (b'2'..=b'7').contains(c));
    (upper || lower)
        && !matches!(s.len() % 8, 1 | 3 | 6)
        && decodes_to_text(s, 5, |c| match c {
            b'a'..=b'z' => Some(c - b'a'),
            b'A'..=b'Z' => Some(c - b'A'),
            b'2'..=b'7' => Some(c - b'2' + 26),
            _ => None,
        })
}

fn base64url_text(s: &[u8]) -> bool {
    s.len() % 4 != 1
        && decodes_to_text(s, 6, |c| match c {
            b'A'..=b'Z' => Some(c - b'A'),
            b'a'..=b'z' => Some(c - b'a' + 26),
            b'0'..=b'9' => Some(c - b'0' + 52),
            b'-' => Some(62),
            b'_' => Some(63),
            _ => None,
        })
}

/// Whether `v` (or its body after a tag) decodes, as hex, base32 or base64url, to text.
pub(crate) fn encoded_text(v: &str, prefix: Prefix<'_>) -> bool {
    let body = prefix.map(|(_, b)| b);
    [Some(v), body].into_iter().flatten().any(|s| {
        let b = s.as_bytes();
        hex_text(b) || base32_text(b) || base64url_text(b)
    })
}

// ---------------------------------------------------------------------------------------
// Randomness: the two explanations.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Piece {
    Noise,
    Tag,
    Word,
    Number,
    Date,
    /// A mail provider, a domain word or a top-level domain (`gmail`, `com`, `de`).
    Mail,
    /// A street suffix or an ordinal (`Ave`, `St`, `65th`).
    Street,
}

/// Free-mail providers of North America, Europe and Latin America, four letters or more: a
/// word of an e-mail address's domain wherever it stands.
const MAIL_WORDS: &[&str] = &[
    "gmail",
    "googlemail",
    "yahoo",
    "ymail",
    "rocketmail",
    "hotmail",
    "outlook",
    "live",
    "icloud",
    "proton",
    "protonmail",
    "mail",
    "email",
    "wanadoo",
    "orange",
    "free",
    "laposte",
    "seznam",
    "centrum",
    "atlas",
    "onet",
    "interia",
    "poczta",
    "libero",
    "virgilio",
    "tiscali",
    "alice",
    "terra",
    "yandex",
    "rambler",
    "comcast",
    "verizon",
    "sbcglobal",
    "bellsouth",
    "charter",
    "shaw",
    "rogers",
    "telus",
    "btinternet",
    "virgin",
    "bigpond",
    "optusnet",
    "xtra",
    "eircom",
    "telenet",
    "skynet",
    "ziggo",
    "chello",
    "tele",
    "telia",
    "bredband",
    "freemail",
    "online",
    "arcor",
];
/// Top-level domains (generic and by country, and `co`), recognised where a value or one of
/// its segments ends.
const TLDS: &[&str] = &[
    "com", "net", "org", "edu", "gov", "info", "biz", "co", "uk", "de", "fr", "it", "es", "pl",
    "cz", "sk", "nl", "be", "se", "no", "dk", "fi", "pt", "br", "mx", "ar", "cl", "ie", "at", "ch",
    "in", "au", "nz", "ca", "us", "ru", "tr", "ro", "hu", "gr", "jp", "cn", "io", "eu",
];
/// USPS street suffixes and unit words, abbreviated and spelled out.
const STREET_WORDS: &[&str] = &[
    "st",
    "ave",
    "av",
    "blvd",
    "rd",
    "dr",
    "ln",
    "ct",
    "pl",
    "pkwy",
    "hwy",
    "cir",
    "trl",
    "ter",
    "way",
    "sq",
    "ste",
    "apt",
    "street",
    "avenue",
    "road",
    "drive",
    "lane",
    "court",
    "place",
    "parkway",
    "highway",
    "circle",
    "trail",
    "terrace",
    "boulevard",
    "suite",
];
/// ln of each list's length (`f32::ln` is not `const`): ln 54, ln 44, ln 32.
const LN_MAIL_WORDS: f32 = 3.988_984;
const LN_TLDS: f32 = 3.784_19;
const LN_STREET_WORDS: f32 = 3.465_736;

/// The English ordinal suffix of a number written in digits (`1` → `st`, `12` → `th`).
fn ordinal(d: &[u8]) -> &'static [u8] {
    let n = num(d);
    match (n % 10, n % 100) {
        (_, 11..=13) => b"th",
        (1, _) => b"st",
        (2, _) => b"nd",
        (3, _) => b"rd",
        _ => b"th",
    }
}

/// The kinds of a word in the guard's small vocabularies (months, mail providers, top-level
/// domains, street suffixes), looked up by the word's hash: one probe of a small table
/// instead of a scan of each list.
mod vocab {
    use std::sync::LazyLock;

    pub(super) const MONTH: u8 = 1;
    pub(super) const MAIL: u8 = 2;
    pub(super) const TLD: u8 = 4;
    pub(super) const STREET: u8 = 8;
    pub(super) const TAG: u8 = 16;

    const SLOTS: usize = 512;

    struct Table([(u64, u8); SLOTS]);

    static TABLE: LazyLock<Table> = LazyLock::new(|| {
        let mut t = Table([(0, 0); SLOTS]);
        for (list, kind) in [
            (super::MONTHS, MONTH),
            (super::MAIL_WORDS, MAIL),
            (super::TLDS, TLD),
            (super::STREET_WORDS, STREET),
            (super::ID_PREFIXES, TAG),
        ] {
            for w in list {
                let h = hash(w.as_bytes());
                let mut i = slot(h);
                while t.0[i].0 != 0 && t.0[i].0 != h {
                    i = (i + 1) % SLOTS;
                }
                t.0[i] = (h, t.0[i].1 | kind);
            }
        }
        t
    });

    /// The high bits of FNV-1a barely depend on a short word's last letters: mixed first.
    fn slot(h: u64) -> usize {
        (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 55) as usize % SLOTS
    }

    /// The hash the lexicon's keys use ([`super::model::LexKey`]), of the lower-cased word.
    pub(super) fn hash(w: &[u8]) -> u64 {
        let mut k = super::model::LexKey::new();
        w.iter().for_each(|&c| k.push(c));
        k.hash()
    }

    /// The kinds of the word whose hash is `h` (0 when it is in no list).
    pub(super) fn kinds(h: u64) -> u8 {
        let t = &TABLE.0;
        let mut i = slot(h);
        loop {
            match t[i] {
                (0, _) => return 0,
                (x, kinds) if x == h => return kinds,
                _ => i = (i + 1) % SLOTS,
            }
        }
    }

    /// The kinds of `w` (letters, either case).
    pub(super) fn of(w: &[u8]) -> u8 {
        kinds(hash(w))
    }
}

/// Whether `w` is a street word: the two-letter suffixes matched directly (they are met at
/// every capital of a mixed-case id), longer ones in the vocabulary.
fn street_word(w: &[u8]) -> bool {
    match w {
        [a, b] => matches!(
            [a.to_ascii_lowercase(), b.to_ascii_lowercase()],
            [b's', b't']
                | [b'a', b'v']
                | [b'r', b'd']
                | [b'd', b'r']
                | [b'l', b'n']
                | [b'c', b't']
                | [b'p', b'l']
                | [b's', b'q']
        ),
        _ => in_list(vocab::STREET, w),
    }
}

fn in_list(kind: u8, w: &[u8]) -> bool {
    vocab::of(w) & kind != 0
}

/// The likelihood ratio (in nats) of "made by a person" over "random", and the rule of the
/// piece that gained most.
pub(crate) fn person_made(v: &str, prefix: Prefix<'_>) -> (f32, PhiRule) {
    let b = v.as_bytes();
    let n = b.len();
    let body = prefix.map_or(b, |(_, r)| r.as_bytes());
    // In a hex body, random bytes carry no structure to find and a date among hex digits
    // cannot be told from chance (encoded text is `encoded_text`'s).
    let ln_a = ln(alphabet(body));
    // Where no piece can start (no three letters in one case pattern, no three digits, no
    // date in groups), every character is noise and the person-made explanation can only
    // cost more than the random one.
    // A neutral tag costs nothing in either explanation, and no piece crosses its separator:
    // the person-made explanation starts after it.
    let tag_len = prefix.filter(|(p, _)| is_tag(p)).map(|(p, _)| p.len());
    let start = tag_len.map_or(0, |len| len + 1);
    if ln_a <= LN_HEX_AND_SEPS
        || !(start..n).any(|i| word_start(b, i) || number_start(b, i) || grouped_date_start(b, i))
    {
        return (-NOISE, PhiRule::RefFormat);
    }
    let mixed_case = b.iter().any(u8::is_ascii_lowercase) && b.iter().any(u8::is_ascii_uppercase);
    let case_cost = if mixed_case { LN_3 } else { 0.0 };

    // Random: a tag costs nothing; any other prefix is letters then a separator.
    let random = match prefix {
        Some((_, rest)) if tag_len.is_some() => rest.len() as f32 * ln_a,
        Some((p, rest)) => p.len() as f32 * LN_26 + (rest.len() + 1) as f32 * ln_a,
        None => n as f32 * ln_a,
    };

    // The runs of letters, lower-case and upper-case letters starting at each position.
    let (mut alpha_run, mut lower_runs, mut upper_runs) = ([0u8; 65], [0u8; 65], [0u8; 65]);
    for i in (0..n).rev() {
        let c = b[i];
        let next = |r: &[u8; 65]| if i + 1 < n { r[i + 1] + 1 } else { 1 };
        alpha_run[i] = if c.is_ascii_alphabetic() {
            next(&alpha_run)
        } else {
            0
        };
        lower_runs[i] = if c.is_ascii_lowercase() {
            next(&lower_runs)
        } else {
            0
        };
        upper_runs[i] = if c.is_ascii_uppercase() {
            next(&upper_runs)
        } else {
            0
        };
    }

    // Made by a person: cheapest sequence of pieces (dynamic programming over positions).
    const INF: f32 = f32::INFINITY;
    let mut best = [INF; 65];
    let mut from = [(0usize, Piece::Noise); 65];
    best[start] = 0.0;
    from[start] = (0, Piece::Tag);
    for i in start..n {
        let here = best[i];
        if here == INF {
            continue;
        }
        let mut relax = |j: usize, cost: f32, piece: Piece| {
            if here + cost < best[j] {
                best[j] = here + cost;
                from[j] = (i, piece);
            }
        };
        let c = b[i];
        let sep = c == b'_' || c == b'-';
        relax(i + 1, ln_a + if sep { 0.0 } else { NOISE }, Piece::Noise);
        // A piece of letters is three or more in one case pattern (shorter ones gain nothing
        // worth their piece cost); most positions of a random id start none.
        if word_start(b, i) {
            let mut wc = WordCost::new();
            let mut key = model::LexKey::new();
            let mut j = i;
            // The case pattern so far: all lower after the first letter, or all upper.
            let mut rest_lower = true;
            let mut all_upper = c.is_ascii_uppercase();
            while j < n && j - i < MAX_PIECE && b[j].is_ascii_alphabetic() {
                wc.push(b[j]);
                key.push(b[j]);
                if j > i {
                    rest_lower &= b[j].is_ascii_lowercase();
                    all_upper &= b[j].is_ascii_uppercase();
                }
                j += 1;
                let w = &b[i..j];
                if !(rest_lower || all_upper) {
                    break;
                }
                if w.len() < 3 {
                    continue;
                }
                let mut cost = key.word_cost(wc.total());
                let kinds = if w.len() <= 10 {
                    vocab::kinds(key.hash())
                } else {
                    0
                };
                if kinds & vocab::MONTH != 0 {
                    cost = cost.min(LN_MONTH);
                }
                relax(j, cost + PIECE + case_cost, Piece::Word);
                if kinds & vocab::MAIL != 0 {
                    relax(j, LN_MAIL_WORDS + PIECE + case_cost, Piece::Mail);
                }
            }
        }
        // A top-level domain where the value or a segment ends (`gmailcom`, `webde`, `_co_uk`),
        // and a street suffix standing as a word of its own: capitalised after a word
        // (`MainSt32801`), or between separators and digits (`_st_`, `_Ave`), followed by
        // a digit, a separator, a capital or the end.
        if b[i].is_ascii_alphabetic() {
            let (letters, lower_run) = (usize::from(alpha_run[i]), usize::from(lower_runs[i]));
            // A domain: the rest of a lower-case run that ends the value or a segment.
            if lower_run == letters
                && (2..=4).contains(&letters)
                && b.get(i + letters).is_none_or(|&c| c == b'_' || c == b'-')
                && in_list(vocab::TLD, &b[i..i + letters])
            {
                relax(i + letters, LN_TLDS + PIECE + case_cost, Piece::Mail);
            }
            // A street word: `St` (a capital and its lower-case run), `ST` or `st`.
            let len = if b[i].is_ascii_uppercase() {
                match lower_runs.get(i + 1).copied().unwrap_or(0) {
                    0 => usize::from(upper_runs[i]),
                    lower => 1 + usize::from(lower),
                }
            } else {
                lower_run
            };
            let capitalised = len > 1 && b[i].is_ascii_uppercase() && b[i + 1].is_ascii_lowercase();
            let starts = i == 0
                || !b[i - 1].is_ascii_alphabetic()
                || (capitalised && b[i - 1].is_ascii_lowercase());
            if starts
                && (2..=9).contains(&len)
                && b.get(i + len).is_none_or(|c| !c.is_ascii_lowercase())
                && street_word(&b[i..i + len])
            {
                relax(i + len, LN_STREET_WORDS + PIECE + case_cost, Piece::Street);
            }
        }
        // An ordinal (`65th`, `3rd`, spelled as English spells it): a street's number.
        if b[i].is_ascii_digit() {
            let run = b[i..]
                .iter()
                .take(4)
                .take_while(|c| c.is_ascii_digit())
                .count();
            if (1..=3).contains(&run)
                && let Some(sfx) = b.get(i + run..i + run + 2)
                && sfx == ordinal(&b[i..i + run])
                && b.get(i + run + 2).is_none_or(|c| !c.is_ascii_lowercase())
            {
                relax(
                    i + run + 2,
                    run as f32 * LN_DIGIT + LN_DATE_SEPS + PIECE,
                    Piece::Street,
                );
            }
        }
        // Numbers of three digits or more (shorter ones gain nothing worth their piece cost),
        // and dates written in groups (`3-14-85`).
        if number_start(b, i) {
            let mut j = i + 2;
            while j < n && b[j].is_ascii_digit() {
                j += 1;
                let d = &b[i..j];
                let k = d.len() as f32;
                let mut cost = k * LN_DIGIT + LN_NUMBER_LEN;
                let mut piece = Piece::Number;
                let date_cost = LN_DATE;
                if (d.len() == 8 && date8(d)) || (d.len() == 6 && date6(d) && date_cost < cost) {
                    cost = date_cost;
                    piece = Piece::Date;
                }
                if year(d) {
                    cost = LN_YEAR;
                    piece = Piece::Date;
                }
                relax(j, cost + PIECE, piece);
            }
        }
        if grouped_date_start(b, i)
            && let Some(len) = separated_date(&b[i..])
        {
            relax(i + len, LN_DATE + LN_DATE_SEPS + PIECE, Piece::Date);
        }
    }
    let made = best[n];
    // The rule: the piece that gained most over the random explanation of its characters.
    let mut gain_best = (f32::MIN, PhiRule::RefFormat);
    let mut j = n;
    while j > 0 {
        let (i, piece) = from[j];
        let cost = best[j] - best[i];
        let gain = (j - i) as f32 * ln_a - cost;
        let rule = match piece {
            Piece::Word => Some(PhiRule::PersonName),
            Piece::Date => Some(PhiRule::Date),
            Piece::Number => Some(match j - i {
                10 | 11 => PhiRule::Phone,
                9 => PhiRule::Ssn,
                _ => PhiRule::Mrn,
            }),
            Piece::Mail => Some(PhiRule::Email),
            Piece::Street => Some(PhiRule::PostalAddress),
            Piece::Noise | Piece::Tag => None,
        };
        if let Some(rule) = rule
            && gain > gain_best.0
        {
            gain_best = (gain, rule);
        }
        j = i;
    }
    (random - made, gain_best.1)
}

/// The fewest nats a character costs in any piece other than a word (a date in groups,
/// `1985-03-14`: ln(3 × 130 × 366) + ln 4 + 1.5 over ten characters, is the cheapest; then an
/// eight-digit date, 1.67, an ordinal, 1.73, a year, 1.77).
const MIN_CHAR_COST: f32 = 1.45;

/// Whether the randomness test can refuse `v` at all. Without three letters in one case
/// pattern after the tag no word piece exists, and the other pieces (numbers, dates,
/// ordinals, two-letter street and domain words) each gain at most `ln a − MIN_CHAR_COST`
/// nats a character over the random explanation: when the characters that can be in one
/// cannot gain [`THRESHOLD`] together, the value is accepted without the full comparison.
/// Most random ids end here (a trailing number of up to four digits included).
pub(crate) fn may_be_person_made(v: &str, prefix: Prefix<'_>) -> bool {
    let b = v.as_bytes();
    let n = b.len();
    let start = prefix
        .filter(|(p, _)| is_tag(p))
        .map_or(0, |(p, _)| p.len() + 1);
    if has_word(&b[start..]) {
        return true;
    }
    let sep = |at: usize| b.get(at).is_some_and(|&c| c == b'_' || c == b'-');
    let digit = |at: usize| b.get(at).is_some_and(u8::is_ascii_digit);
    let mut chars = 0usize;
    let mut i = start;
    while i < n {
        let c = b[i];
        if c.is_ascii_digit() {
            let run = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
            let end = i + run;
            // A group of a date: a separator between it and another group of digits.
            let grouped = (sep(end) && digit(end + 1)) || (i >= 2 && sep(i - 1) && digit(i - 2));
            let ordinal = run <= 3
                && b.get(end..end + 2).is_some_and(|s| {
                    [b"st", b"nd", b"rd", b"th"]
                        .iter()
                        .any(|o| o.eq_ignore_ascii_case(s))
                });
            if run >= 3 || grouped || ordinal {
                chars += run + usize::from(grouped) + 2 * usize::from(ordinal);
            }
            i = end;
            continue;
        }
        // A street word (`St`), or a domain: two lower-case letters that end the value or a
        // segment after a letter (`webde`).
        if c.is_ascii_alphabetic()
            && let Some(&d) = b.get(i + 1)
            && d.is_ascii_alphabetic()
        {
            let w = &b[i..i + 2];
            let tld = c.is_ascii_lowercase()
                && d.is_ascii_lowercase()
                && (i + 2 == n || sep(i + 2))
                && in_list(vocab::TLD, w);
            if tld || street_word(w) {
                chars += 2;
            }
        }
        i += 1;
    }
    // The largest alphabet first (ln 64): most values end here without reading theirs.
    const LN_64: f32 = 4.158_883;
    if chars as f32 * (LN_64 - MIN_CHAR_COST) <= THRESHOLD {
        return false;
    }
    let body = prefix.map_or(b, |(_, r)| r.as_bytes());
    chars as f32 * (ln(alphabet(body)) - MIN_CHAR_COST) > THRESHOLD
}

/// Whether `b` holds a word: three letters, the last two lower-case or all three upper-case
/// (where a piece of letters can start, [`word_start`]).
pub(crate) fn has_word(b: &[u8]) -> bool {
    let (mut alpha, mut lower, mut upper) = (0u8, 0u8, 0u8);
    for &c in b {
        if c.is_ascii_alphabetic() {
            alpha = alpha.saturating_add(1);
            (lower, upper) = if c.is_ascii_lowercase() {
                (lower.saturating_add(1), 0)
            } else {
                (0, upper.saturating_add(1))
            };
            if (alpha >= 3 && lower >= 2) || upper >= 3 {
                return true;
            }
        } else {
            (alpha, lower, upper) = (0, 0, 0);
        }
    }
    false
}

/// Whether a piece of letters starts at `i`: three letters in one case pattern.
fn word_start(b: &[u8], i: usize) -> bool {
    b.get(i..i + 3).is_some_and(|w| {
        w.iter().all(u8::is_ascii_alphabetic)
            && (w[1..].iter().all(u8::is_ascii_lowercase) || w.iter().all(u8::is_ascii_uppercase))
    })
}

/// Whether a number starts at `i`: three digits.
fn number_start(b: &[u8], i: usize) -> bool {
    b.get(i..i + 3)
        .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
}

/// Whether a date in groups may start at `i`: a digit with a separator in the next three.
fn grouped_date_start(b: &[u8], i: usize) -> bool {
    b[i].is_ascii_digit() && b[i + 1..].iter().take(3).any(|&x| x == b'_' || x == b'-')
}

/// `d{1,2}[-_]d{1,2}[-_](d{2}|d{4})` or `d{4}[-_]d{1,2}[-_]d{1,2}` at the start of `b`, not
/// followed by a digit: its length.
fn separated_date(b: &[u8]) -> Option<usize> {
    let run = |at: usize| {
        b.get(at..)
            .map_or(0, |r| r.iter().take_while(|c| c.is_ascii_digit()).count())
    };
    let sep = |at: usize| b.get(at).is_some_and(|&c| c == b'_' || c == b'-');
    // Each group: fewest and most digits, and it must end exactly where the next part starts.
    let shapes: [[(usize, usize); 3]; 3] = [
        [(1, 2), (1, 2), (2, 2)],
        [(1, 2), (1, 2), (4, 4)],
        [(4, 4), (1, 2), (1, 2)],
    ];
    shapes.iter().find_map(|shape| {
        // A group is a whole digit run: `03-14-1985` but not `03-14-19851`.
        let mut at = 0;
        for (k, &(lo, hi)) in shape.iter().enumerate() {
            let n = run(at);
            if n < lo || n > hi {
                return None;
            }
            at += n;
            if k < 2 {
                if !sep(at) {
                    return None;
                }
                at += 1;
            }
        }
        Some(at)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alphabet_is_the_smallest_usual_one() {
        for (body, size) in [
            ("19850314", 10.0),
            ("qwhzkfbnaeolrtxc", 26.0),
            ("XKQZVBNMwplrtghj", 52.0),
            ("3f6c2a9e8b1d4e57", 16.0),
            ("3f6c2a9e8b1d4e5", 36.0),
            ("NJQW4ZJOMRXWKQDF", 32.0),
            ("q7x2kzv9wm4tp8rb", 36.0),
            ("Q7X2KZV9WM4TP8RB", 36.0),
            ("7Hq2kX9mZ4rT1vB8", 62.0),
            ("7Hq2kX9m_Z4rT-1vB8", 64.0),
        ] {
            assert_eq!(alphabet(body.as_bytes()), size, "{body}");
        }
    }

    /// A segment that reads easily as a name of six letters or more is strong evidence
    /// alone, listed in the lexicon or not; noise is none.
    #[test]
    fn readable_names_outside_the_lexicon_are_strong() {
        for w in ["wexford", "thistle", "delmont", "tormund"] {
            assert!(!model::is_name(w.as_bytes()), "{w} is not in the lexicon");
            assert_eq!(name_strength(w.as_bytes()), 2, "{w}");
        }
        for w in ["xqzvkw", "hqkxzt", "zzqpvb"] {
            assert_eq!(name_strength(w.as_bytes()), 0, "{w}");
        }
    }
}
