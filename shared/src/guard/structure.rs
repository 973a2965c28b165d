//! What a ref is made of. A value in the ref charset (`A–Z a–z 0–9 _ -`) that matched none
//! of the PHI shapes is judged three ways, each reporting the rule it found:
//!
//! 1. **Decodable text**: a ref whose hex, base32 or base64url decoding reads as text is an
//!    encoded e-mail, name or number (random bytes almost never decode to text).
//! 2. **Segments**: split at `_` and `-`, its all-digit groups are dates, phone numbers, SSNs,
//!    ZIP codes or record numbers, a month name beside digits is a date, and a whole segment
//!    that is a name (the lexicon, or five or more letters the name model reads easily) is a
//!    name. Random generators almost never cut their output into such pieces.
//! 3. **Randomness**: two explanations of the whole value compete. *Random*: every character
//!    drawn uniformly from the smallest usual alphabet that holds it (hex, base32, base36,
//!    base62, base64url...), the cheapest explanation a random id can have. *Made by a
//!    person*: a sequence of pieces — names and words (the lexicon, or the trigram model),
//!    numbers, dates, years — with noise characters in between at a small extra cost. When
//!    the second is cheaper by more than [`THRESHOLD`] nats (a likelihood ratio of about
//!    60,000 to one), the value is refused with the rule of the piece that gained most.
//!
//! A short letter prefix (`p_`, `cus_`, `appt-`) is a type tag: the tags in [`ID_PREFIXES`]
//! and any of one or two letters are neutral; a longer one is judged like any segment.

use super::PhiRule;
use super::model::{self, WordCost};

/// Nats by which the "made by a person" explanation must beat the random one.
pub(crate) const THRESHOLD: f32 = 11.0;
/// Extra cost of each piece (a name, a number) in the "made by a person" explanation.
const PIECE: f32 = 1.5;
/// Extra cost of a noise character in the "made by a person" explanation.
const NOISE: f32 = 0.3;
/// Longest piece of letters the model scores as one name or word.
const MAX_WORD: usize = 20;

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
    p.len() <= 2 || ID_PREFIXES.iter().any(|t| t.eq_ignore_ascii_case(p))
}

/// The prefix of `v` (letters, at most 8, then `_` or `-`) and the rest, when the rest is at
/// least 8 characters.
pub(crate) fn split_prefix(v: &str) -> Option<(&str, &str)> {
    let i = v.find(['_', '-'])?;
    let (p, rest) = (&v[..i], &v[i + 1..]);
    ((1..=8).contains(&i) && p.bytes().all(|b| b.is_ascii_alphabetic()) && rest.len() >= 8)
        .then_some((p, rest))
}

fn ln(x: f32) -> f32 {
    x.ln()
}

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
    let known = model::word_cost(w, lm) < lm;
    let rate = || lm / (n as f32 + 1.0);
    match n {
        _ if known && n >= 5 => 2,
        _ if n >= 6 && rate() <= LONG_NAME_RATE => 2,
        _ if known || (n == 5 && rate() <= NAME_RATE) => 1,
        _ => 0,
    }
}

fn is_month(seg: &[u8]) -> bool {
    MONTHS
        .iter()
        .any(|m| m.as_bytes().eq_ignore_ascii_case(seg))
}

/// The segment rules, for a value with at least one `_` or `-`.
pub(crate) fn segments(v: &str) -> Option<PhiRule> {
    let segs: Vec<&[u8]> = v.as_bytes().split(|&b| b == b'_' || b == b'-').collect();
    if segs.len() < 2 {
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
            weak += 1;
            i = j;
        } else {
            i += 1;
        }
    }
    for (k, s) in segs.iter().enumerate() {
        let near_digits = segs[k.saturating_sub(1)..(k + 2).min(segs.len())]
            .iter()
            .any(|x| {
                x.first().is_some_and(u8::is_ascii_digit)
                    || x.last().is_some_and(u8::is_ascii_digit)
            });
        if is_month(s) && near_digits {
            return Some(PhiRule::Date);
        }
    }
    let tag = segs[0].len() <= 8
        && std::str::from_utf8(segs[0])
            .is_ok_and(|p| p.bytes().all(|b| b.is_ascii_alphabetic()) && is_tag(p));
    // Two or more whole segments of letters in one case pattern (`aldonza_knutsson`,
    // `lenn_sanghvi_ctcc`): words, whatever they are. Random generators that use `_` or `-`
    // mix cases and digits, so they almost never cut out two such segments.
    let wordlike: Vec<&&[u8]> = segs
        .iter()
        .enumerate()
        .filter(|&(k, s)| !(k == 0 && tag) && s.len() >= 3)
        .map(|(_, s)| s)
        .filter(|s| s.iter().all(u8::is_ascii_alphabetic) && case_consistent(s))
        .collect();
    if wordlike.len() >= 2 && wordlike.iter().map(|s| s.len()).sum::<usize>() >= 7 {
        return Some(PhiRule::PersonName);
    }
    for (k, s) in segs.iter().enumerate() {
        if k == 0 && tag {
            continue;
        }
        let letters = s.len() >= 4 && s.iter().all(u8::is_ascii_alphabetic) && case_consistent(s);
        match name_strength(s) {
            2 => return Some(PhiRule::PersonName),
            1 => weak += 1,
            _ if letters => weak += 1,
            _ => {}
        }
        // A first segment that is a known name (`anna_x7k2…`) is a name with a suffix.
        if k == 0 && letters {
            let (buf, n) = lower(s);
            if model::is_name(&buf[..n]) {
                return Some(PhiRule::PersonName);
            }
        }
    }
    (weak >= 2).then_some(PhiRule::PersonName)
}

// ---------------------------------------------------------------------------------------
// Decodable text.

fn texty(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b" .@_+-',()/:#|;&=".contains(&b)
}

/// Whether decoded bytes read as text a person wrote.
fn reads_as_text(d: &[u8]) -> bool {
    let n = d.len();
    if n < 8 {
        return false;
    }
    let texty_count = d.iter().filter(|&&b| texty(b)).count();
    if texty_count == n {
        if n >= 10 {
            return true;
        }
        // Eight or nine characters: only with the marks of PHI (digits of a date or phone,
        // an `@`, a space between names, a dot).
        let digits = d.iter().filter(|b| b.is_ascii_digit()).count();
        return digits >= 4 || d.iter().any(|b| b" @.".contains(b));
    }
    n >= 16 && texty_count * 10 >= n * 9
}

fn decode_hex(s: &[u8]) -> Option<Vec<u8>> {
    let same_case = s
        .iter()
        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
        || s.iter()
            .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c));
    if !same_case || !s.len().is_multiple_of(2) {
        return None;
    }
    let h = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
    Some(s.chunks(2).map(|p| h(p[0]) << 4 | h(p[1])).collect())
}

fn decode_base32(s: &[u8]) -> Option<Vec<u8>> {
    let upper = s
        .iter()
        .all(|c| c.is_ascii_uppercase() || (b'2'..=b'7').contains(c));
    let lower = s
        .iter()
        .all(|c| c.is_ascii_lowercase() || (b'2'..=b'7').contains(c));
    if !(upper || lower) || matches!(s.len() % 8, 1 | 3 | 6) {
        return None;
    }
    let val = |c: u8| match c {
        b'a'..=b'z' => c - b'a',
        b'A'..=b'Z' => c - b'A',
        _ => c - b'2' + 26,
    };
    let (mut acc, mut bits, mut out) = (0u32, 0u32, Vec::with_capacity(s.len() * 5 / 8));
    for &c in s {
        acc = (acc << 5) | u32::from(val(c));
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

fn decode_base64url(s: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    if s.len() % 4 == 1 {
        return None;
    }
    LENIENT.decode(s).ok()
}

/// Whether `v` (or its body after a tag) decodes, as hex, base32 or base64url, to text.
pub(crate) fn encoded_text(v: &str) -> bool {
    let body = split_prefix(v).map(|(_, b)| b);
    [Some(v), body].into_iter().flatten().any(|s| {
        let b = s.as_bytes();
        [decode_hex(b), decode_base32(b), decode_base64url(b)]
            .into_iter()
            .flatten()
            .any(|d| reads_as_text(&d))
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
}

/// The likelihood ratio (in nats) of "made by a person" over "random", and the rule of the
/// piece that gained most.
pub(crate) fn person_made(v: &str) -> (f32, PhiRule) {
    let b = v.as_bytes();
    let n = b.len();
    let prefix = split_prefix(v);
    let body = prefix.map_or(b, |(_, r)| r.as_bytes());
    let ln_a = ln(alphabet(body));
    let mixed_case = b.iter().any(u8::is_ascii_lowercase) && b.iter().any(u8::is_ascii_uppercase);
    let case_cost = if mixed_case { ln(3.0) } else { 0.0 };

    // Random: a tag costs nothing; any other prefix is letters then a separator.
    let random = match prefix {
        Some((p, rest)) if is_tag(p) => rest.len() as f32 * ln_a,
        Some((p, rest)) => p.len() as f32 * ln(26.0) + (rest.len() + 1) as f32 * ln_a,
        None => n as f32 * ln_a,
    };

    // Made by a person: cheapest sequence of pieces (dynamic programming over positions).
    const INF: f32 = f32::INFINITY;
    let mut best = [INF; 65];
    let mut from = [(0usize, Piece::Noise); 65];
    best[0] = 0.0;
    for i in 0..n {
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
        if i == 0
            && let Some((p, _)) = prefix
            && is_tag(p)
        {
            relax(p.len() + 1, 0.0, Piece::Tag);
        }
        if c.is_ascii_alphabetic() {
            let mut wc = WordCost::new();
            let mut j = i;
            while j < n && j - i < MAX_WORD && b[j].is_ascii_alphabetic() {
                wc.push(b[j]);
                j += 1;
                let w = &b[i..j];
                if w.len() < 2 {
                    continue;
                }
                if !case_consistent(w) {
                    break;
                }
                let mut cost = wc.total();
                if w.len() >= 3 {
                    let (buf, m) = lower(w);
                    cost = model::word_cost(&buf[..m], cost);
                    if is_month(w) {
                        cost = cost.min(ln(24.0));
                    }
                }
                relax(j, cost + PIECE + case_cost, Piece::Word);
            }
        }
        if c.is_ascii_digit() {
            let mut j = i;
            while j < n && b[j].is_ascii_digit() {
                j += 1;
                let d = &b[i..j];
                let k = d.len() as f32;
                let mut cost = k * ln(10.0) + ln(8.0);
                let mut piece = Piece::Number;
                let date_cost = ln(3.0 * 130.0 * 366.0);
                if (d.len() == 8 && date8(d)) || (d.len() == 6 && date6(d) && date_cost < cost) {
                    cost = date_cost;
                    piece = Piece::Date;
                }
                if year(d) {
                    cost = ln(260.0);
                    piece = Piece::Date;
                }
                relax(j, cost + PIECE, piece);
            }
            if let Some(len) = separated_date(&b[i..]) {
                relax(
                    i + len,
                    ln(3.0 * 130.0 * 366.0) + ln(4.0) + PIECE,
                    Piece::Date,
                );
            }
        }
    }
    let made = best[n];
    #[cfg(test)]
    if std::env::var("GUARD_DEBUG").is_ok() {
        let mut j = n;
        let mut parts = Vec::new();
        while j > 0 {
            let (i, piece) = from[j];
            parts.push(format!("{}:{:?}:{:.1}", &v[i..j], piece, best[j] - best[i]));
            j = i;
        }
        parts.reverse();
        eprintln!("  {v} random={random:.1} lnA={ln_a:.2} {parts:?}");
    }

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

/// `d{1,2}[-_]d{1,2}[-_](d{2}|d{4})` or `d{4}[-_]d{1,2}[-_]d{1,2}` at the start of `b`, not
/// followed by a digit: its length.
fn separated_date(b: &[u8]) -> Option<usize> {
    fn group(b: &[u8], at: usize, lo: usize, hi: usize) -> Vec<usize> {
        let run = b[at.min(b.len())..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        (lo..=hi.min(run)).map(|k| at + k).collect()
    }
    let sep = |at: usize| b.get(at).is_some_and(|&c| c == b'_' || c == b'-');
    let end = |at: usize| !b.get(at).is_some_and(u8::is_ascii_digit);
    for (g1, g2, g3) in [
        ((1, 2), (1, 2), (2, 2)),
        ((1, 2), (1, 2), (4, 4)),
        ((4, 4), (1, 2), (1, 2)),
    ] {
        for e1 in group(b, 0, g1.0, g1.1) {
            if !sep(e1) {
                continue;
            }
            for e2 in group(b, e1 + 1, g2.0, g2.1) {
                if !sep(e2) {
                    continue;
                }
                for e3 in group(b, e2 + 1, g3.0, g3.1) {
                    if end(e3) {
                        return Some(e3);
                    }
                }
            }
        }
    }
    None
}
