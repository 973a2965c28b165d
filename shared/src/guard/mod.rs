//! Value-level PHI guard.
//!
//! Every free-form string that crosses the boundary is an opaque reference. The guard first
//! looks for the shapes of PHI written out (an e-mail, a phone number, a date, a name with
//! spaces...), so the refusal can name a precise rule; then it checks that what is left is an
//! opaque id: 16–64 characters of `[A-Za-z0-9_-]` (or a canonical UUID) that is neither
//! encoded text, nor cut into pieces that read as dates, numbers or names, nor better
//! explained as something a person wrote than as random symbols (`structure`). The rule is
//! reported; the value never is. docs/guard.md explains the model and its measured rates.

use std::sync::LazyLock;

use regex::Regex;

mod model;
mod structure;

pub use structure::ID_PREFIXES;

/// Why a value was refused. `code()` is the stable machine-readable name used on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PhiRule {
    Email,
    Phone,
    Ssn,
    Mrn,
    Date,
    PersonName,
    PostalAddress,
    Url,
    IpAddress,
    /// Hex, base32 or base64 that decodes to text (an encoded e-mail, name or number).
    EncodedText,
    /// Not PHI-shaped, but not an opaque id either (wrong length or charset, or not random-looking).
    RefFormat,
}

impl PhiRule {
    pub fn code(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Phone => "phone",
            Self::Ssn => "ssn",
            Self::Mrn => "mrn",
            Self::Date => "date",
            Self::PersonName => "person_name",
            Self::PostalAddress => "postal_address",
            Self::Url => "url",
            Self::IpAddress => "ip_address",
            Self::EncodedText => "encoded_text",
            Self::RefFormat => "ref_format",
        }
    }

    /// A human sentence for the rule; never includes the value.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Email => "looks like an e-mail address",
            Self::Phone => "looks like a phone number",
            Self::Ssn => "looks like a social security number",
            Self::Mrn => "looks like an all-digit or labelled identifier (MRN-like)",
            Self::Date => "looks like a date",
            Self::PersonName => "looks like a person name",
            Self::PostalAddress => "looks like a postal address",
            Self::Url => "looks like a URL",
            Self::IpAddress => "looks like an IP address",
            Self::EncodedText => "decodes (hex, base32 or base64) to text",
            Self::RefFormat => {
                "is not an opaque reference (16-64 characters of A-Z a-z 0-9 _ -, random-looking, or a UUID)"
            }
        }
    }
}

pub const REF_MIN_LEN: usize = 16;
pub const REF_MAX_LEN: usize = 64;

#[allow(clippy::expect_used)]
fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("static regex compiles")
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| re(r"[^\s@]+@[^\s@]+\.[^\s@]+|^[^\s@]+@[^\s@]+$"));
static URL: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)^[a-z][a-z0-9+.-]*://|(?i)^www\.|(?i)^[a-z0-9-]+(\.[a-z0-9-]+)+/"));
static IPV4: LazyLock<Regex> = LazyLock::new(|| re(r"^\d{1,3}(\.\d{1,3}){3}(:\d+)?$"));
static IPV6: LazyLock<Regex> =
    LazyLock::new(|| re(r"^\[?[0-9A-Fa-f]{0,4}(:[0-9A-Fa-f]{0,4}){2,7}\]?$"));
static SSN: LazyLock<Regex> = LazyLock::new(|| re(r"^\d{3}[- .]\d{2}[- .]\d{4}$"));
static DATE_WORDS: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)^\d{1,2}\s+(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s+\d{2,4}$|^(?i)(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s+\d{1,2},?\s+\d{2,4}$",
    )
});
static PHONE: LazyLock<Regex> = LazyLock::new(|| re(r"^\+?[\d\s().-]{7,24}$"));
static ADDRESS: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)^\d+[a-z]?\s+.*\b(st|street|ave|avenue|rd|road|blvd|boulevard|dr|drive|ln|lane|way|ct|court|pl|place|pkwy|parkway|hwy|highway|suite|ste|apt|unit|terrace|ter|circle|cir)\b|(?i)\bp\.?\s?o\.?\s+box\b",
    )
});
/// One or more words of letters (with name punctuation), separated by white space: a name,
/// a title plus a name, or any phrase. Refs never contain white space.
static WORDS: LazyLock<Regex> =
    LazyLock::new(|| re(r"^[\p{L}][\p{L}'’.-]*(\s+[\p{L}][\p{L}'’.,-]*)+$"));

/// Checks one opaque-reference value. `Ok(())` means it may be stored.
pub fn check_ref(value: &str) -> Result<(), PhiRule> {
    if let Some(rule) = phi_shape(value) {
        return Err(rule);
    }
    if is_uuid(value) {
        return Ok(());
    }
    opaque_shape(value)
}

/// How far the randomness test's "made by a person" explanation beats the random one for
/// `v`, in nats, against the threshold above which a value is refused: `(ratio, threshold)`.
/// For the accuracy benchmark's margin report; `check_ref` is the decision.
#[doc(hidden)]
pub fn randomness_ratio(v: &str) -> (f32, f32) {
    let prefix = structure::split_prefix(v);
    (structure::person_made(v, prefix).0, structure::THRESHOLD)
}

/// The PHI shapes, most specific first. `None` when the value looks like none of them.
/// Each regex runs only when the value has the characters its shape needs (an e-mail has an
/// `@`, a name or address has white space...), so a well-formed ref costs a byte scan.
fn phi_shape(v: &str) -> Option<PhiRule> {
    let t = v.trim();
    let b = t.as_bytes();
    let (
        mut has_at,
        mut has_space,
        mut has_dot,
        mut has_colon,
        mut has_slash,
        mut has_alpha,
        mut other_punct,
    ) = (false, false, false, false, false, false, false);
    let mut digits = 0usize;
    for &c in b {
        match c {
            b'0'..=b'9' => digits += 1,
            b'a'..=b'z' | b'A'..=b'Z' => has_alpha = true,
            b'@' => has_at = true,
            b'.' => has_dot = true,
            b':' => has_colon = true,
            b'/' => has_slash = true,
            b'-' | b'_' => {}
            c if c.is_ascii_whitespace() => has_space = true,
            _ => other_punct = true,
        }
    }
    let non_ascii = !t.is_ascii();
    if has_at && EMAIL.is_match(t) {
        return Some(PhiRule::Email);
    }
    if (has_colon || has_dot || has_slash) && URL.is_match(t) {
        return Some(PhiRule::Url);
    }
    if (has_dot && IPV4.is_match(t)) || (has_colon && digits > 0 && IPV6.is_match(t)) {
        return Some(PhiRule::IpAddress);
    }
    if !has_alpha && (9..=11).contains(&b.len()) && SSN.is_match(t) {
        return Some(PhiRule::Ssn);
    }
    // A date in figures starts with a digit; in words it has white space.
    let digit_first = b.first().is_some_and(u8::is_ascii_digit);
    if digits >= 3 && ((digit_first && is_numeric_date(t)) || (has_space && DATE_WORDS.is_match(t)))
    {
        return Some(PhiRule::Date);
    }
    if !b.is_empty() && digits == b.len() {
        // Eight digits that read as YYYYMMDD are a date; any other all-digit value is an
        // identifier from some other system (MRN, account, chart number).
        if t.len() == 8 && is_compact_date(t) {
            return Some(PhiRule::Date);
        }
        return Some(PhiRule::Mrn);
    }
    if !has_alpha && (7..=15).contains(&digits) && PHONE.is_match(t) {
        return Some(PhiRule::Phone);
    }
    // Every label starts with one of these pairs of letters (`mrn`, `med rec`, `chart`,
    // `acct`, `patient`, `pt`, `dob`, `ssn`).
    let label_first = b.get(..2).is_some_and(|p| {
        matches!(
            [p[0].to_ascii_lowercase(), p[1].to_ascii_lowercase()],
            [b'm', b'r' | b'e']
                | [b'c', b'h']
                | [b'a', b'c']
                | [b'p', b'a' | b't']
                | [b'd', b'o']
                | [b's', b's']
        )
    });
    if has_alpha && digits > 0 && label_first && is_mrn_label(t) && labelled_number(t) {
        return Some(PhiRule::Mrn);
    }
    if (has_space || other_punct) && ADDRESS.is_match(t) {
        return Some(PhiRule::PostalAddress);
    }
    if (has_space || non_ascii) && WORDS.is_match(t) {
        return Some(PhiRule::PersonName);
    }
    None
}

// The three shapes a well-formed ref can reach (a ref that starts with a digit and has three
// of them, a ref that starts with a label's letter, a UUID) are matched by hand: no regex is
// compiled in the receiver's init or on its first clean request (docs/performance.md). Each
// is the regex beside it, exactly; the `hand_matchers_are_their_regexes` proptest holds them
// to it.

/// `^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$`
fn is_uuid(v: &str) -> bool {
    v.len() == 36
        && v.bytes().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// `^([0-9]{4}[-/.][0-9]{1,2}[-/.][0-9]{1,2}|[0-9]{1,2}[-/.][0-9]{1,2}[-/.][0-9]{2,4})([T ].*)?$`
/// (`.` is any character but a line feed).
fn is_numeric_date(v: &str) -> bool {
    /// Digit groups (fewest, most digits) separated by one of `-/.`, then the tail.
    fn groups(b: &[u8], counts: &[(usize, usize)]) -> bool {
        let Some((&(lo, hi), rest)) = counts.split_first() else {
            return match b.split_first() {
                None => true,
                Some((b'T' | b' ', tail)) => !tail.contains(&b'\n'),
                Some(_) => false,
            };
        };
        let run = b.iter().take_while(|c| c.is_ascii_digit()).count();
        (lo..=hi.min(run)).any(|n| {
            let after = &b[n..];
            if rest.is_empty() {
                groups(after, rest)
            } else {
                matches!(after.split_first(), Some((b'-' | b'/' | b'.', next)) if groups(next, rest))
            }
        })
    }
    let b = v.as_bytes();
    groups(b, &[(4, 4), (1, 2), (1, 2)]) || groups(b, &[(1, 2), (1, 2), (2, 4)])
}

/// `(?i-u)^(mrn|med\s*rec|chart|acct|account|patient|pt|dob|ssn)[\s#:._-]*[0-9]`
fn is_mrn_label(v: &str) -> bool {
    // `\s` without Unicode: tab, line feed, vertical tab, form feed, carriage return, space.
    let space = |c: &u8| matches!(c, b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b' ');
    let strip = |b: &'static str, s: &[u8]| -> Option<usize> {
        (s.len() >= b.len() && s[..b.len()].eq_ignore_ascii_case(b.as_bytes())).then_some(b.len())
    };
    let digit_after = |s: &[u8]| {
        let n = s
            .iter()
            .take_while(|c| space(c) || b"#:._-".contains(c))
            .count();
        s.get(n).is_some_and(u8::is_ascii_digit)
    };
    let b = v.as_bytes();
    let labelled = [
        "mrn", "chart", "acct", "account", "patient", "pt", "dob", "ssn",
    ]
    .into_iter()
    .any(|l| strip(l, b).is_some_and(|n| digit_after(&b[n..])));
    labelled
        || strip("med", b).is_some_and(|n| {
            let rest = &b[n..];
            let gap = rest.iter().take_while(|c| space(c)).count();
            strip("rec", &rest[gap..]).is_some_and(|m| digit_after(&rest[gap + m..]))
        })
}

/// After the label `is_mrn_label` found: a number of four or more digits, or one that ends the
/// value or a segment (`MRN-0048213`, `pt_48213_x`). A random id that merely starts with the
/// letters of a label (`PT3xK9…`) is not labelled.
fn labelled_number(v: &str) -> bool {
    let b = v.as_bytes();
    let start = b.iter().position(u8::is_ascii_digit).unwrap_or(b.len());
    // The label as a person types it: `mrn`, `MRN` or `Mrn`, not `mRn`.
    let label: Vec<u8> = b[..start]
        .iter()
        .copied()
        .take_while(u8::is_ascii_alphabetic)
        .collect();
    let consistent = label.get(1..).is_none_or(|rest| {
        rest.iter().all(u8::is_ascii_lowercase) || label.iter().all(u8::is_ascii_uppercase)
    });
    if !consistent {
        return false;
    }
    let run = b[start..].iter().take_while(|c| c.is_ascii_digit()).count();
    let after = b.get(start + run);
    run >= 4 || after.is_none() || after.is_some_and(|c| !c.is_ascii_alphanumeric())
}

fn is_compact_date(s: &str) -> bool {
    let n = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<u32>().ok());
    matches!((n(0..4), n(4..6), n(6..8)), (Some(y), Some(m), Some(d))
        if (1900..=2099).contains(&y) && (1..=12).contains(&m) && (1..=31).contains(&d))
}

/// The positive shape of an opaque ref, for values that matched no PHI shape.
fn opaque_shape(v: &str) -> Result<(), PhiRule> {
    let len = v.len();
    if !(REF_MIN_LEN..=REF_MAX_LEN).contains(&len)
        || !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(PhiRule::RefFormat);
    }
    let prefix = structure::split_prefix(v);
    // A tag then digits only: another system's number (MRN, phone, date).
    if let Some((_, body)) = prefix
        && body.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(structure::all_digits(body.as_bytes()));
    }
    if structure::encoded_text(v, prefix) {
        return Err(PhiRule::EncodedText);
    }
    if v.contains(['_', '-'])
        && let Some(rule) = structure::segments(v)
    {
        return Err(rule);
    }
    // The rules for words written together need a word: three letters, the last two
    // lower-case or all three upper-case. Most random ids after their tag have none.
    let body = prefix.map_or(v, |(_, b)| b).as_bytes();
    if structure::has_word(body) {
        if structure::street_address(body) {
            return Err(PhiRule::PostalAddress);
        }
        if structure::concat_email(body) {
            return Err(PhiRule::Email);
        }
        if structure::written_words(v, prefix) {
            return Err(PhiRule::PersonName);
        }
    }
    if !structure::may_be_person_made(v, prefix) {
        return Ok(());
    }
    let (ratio, rule) = structure::person_made(v, prefix);
    if ratio > structure::THRESHOLD {
        return Err(rule);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The regexes the hand matchers replaced, verbatim.
    const UUID_RE: &str =
        r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$";
    const DATE_RE: &str = r"^([0-9]{4}[-/.][0-9]{1,2}[-/.][0-9]{1,2}|[0-9]{1,2}[-/.][0-9]{1,2}[-/.][0-9]{2,4})([T ].*)?$";
    const MRN_LABEL_RE: &str =
        r"(?i-u)^(mrn|med\s*rec|chart|acct|account|patient|pt|dob|ssn)[\s#:._-]*[0-9]";

    /// Strings made of the pieces each pattern turns on (digits, separators, label words in
    /// either case, white space including a line feed and a vertical tab, hex letters and a
    /// few characters none of the patterns accept), so most cases land near a boundary.
    static REGEXES: LazyLock<[Regex; 3]> =
        LazyLock::new(|| [re(UUID_RE), re(DATE_RE), re(MRN_LABEL_RE)]);

    fn near_miss() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            "[0-9]{1,5}",
            "[-/.T :#_]",
            "[ \t\n\x0B\x0C\r]{1,2}",
            "(mrn|MRN|med|Med|rec|REC|chart|acct|account|Account|patient|pt|PT|dob|ssn|Ssn)",
            "[a-fA-F0-9]{4,12}",
            "[gZé@]",
        ];
        proptest::collection::vec(piece, 0..9).prop_map(|v| v.concat())
    }

    /// Three digit groups of one to five digits, separated by a date's separators (or not),
    /// then a tail.
    fn date_like() -> impl Strategy<Value = String> {
        (
            proptest::collection::vec(("[0-9]{1,5}", "[-/._]"), 3),
            "(|T|T09:30|T0\n|  1| |x|0)",
        )
            .prop_map(|(groups, tail)| {
                let mut v: String = groups.into_iter().map(|(d, sep)| d + &sep).collect();
                v.pop();
                v + &tail
            })
    }

    /// A label (or a near one) in any case, separators and white space, then a digit or not.
    fn label_like() -> impl Strategy<Value = String> {
        (
            "(mrn|med|medrec|med  rec|med\x0Brec|chart|acct|account|patient|pt|dob|ssn|mr|dobb|ptx)",
            any::<bool>(),
            "[ \t\n\x0B\x0C\r#:._/-]{0,3}",
            "[0-9a-z]{0,2}",
        )
            .prop_map(|(l, upper, sep, rest)| {
                let l = if upper { l.to_ascii_uppercase() } else { l };
                l + &sep + &rest
            })
    }

    fn uuid_like() -> impl Strategy<Value = String> {
        ("[0-9a-fA-F]{32}", 0usize..36, "[0-9a-gA-G-]").prop_map(|(hex, at, c)| {
            let mut u = format!(
                "{}-{}-{}-{}-{}",
                &hex[..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..]
            );
            // One character replaced by anything nearby: a hex digit, a `g`, a hyphen.
            u.replace_range(at..=at, &c);
            u
        })
    }

    proptest! {
        #![proptest_config(fixed_seed_config(4000))]
        #[test]
        fn hand_matchers_are_their_regexes(v in prop_oneof![near_miss(), date_like(), label_like(), uuid_like(), any::<String>()]) {
            prop_assert_eq!(is_uuid(&v), REGEXES[0].is_match(&v), "uuid");
            prop_assert_eq!(is_numeric_date(&v), REGEXES[1].is_match(&v), "date");
            prop_assert_eq!(is_mrn_label(&v), REGEXES[2].is_match(&v), "mrn label");
        }
    }

    #[test]
    fn hand_matchers_on_their_edges() {
        let cases: [(&str, bool, bool, bool); 12] = [
            // (value, uuid, date, mrn label)
            ("3f6c2a9e-8b1d-4e57-a0c4-9d2b7e1f5a38", true, false, false),
            ("3f6c2a9e-8b1d-4e57-a0c4-9d2b7e1f5a3g", false, false, false),
            ("3f6c2a9e8b1d-4e57-a0c4-9d2b7e1f5a38-", false, false, false),
            ("1985-03-14", false, true, false),
            ("1985-03-14T09:30", false, true, false),
            ("1985-03-14T09\n30", false, false, false),
            ("3/4/85", false, true, false),
            ("3/4/8", false, false, false),
            ("12345-03-14", false, false, false),
            ("Med \x0B Rec#:_ 7", false, false, true),
            ("accountX1", false, false, false),
            ("PT--9abc", false, false, true),
        ];
        for (v, uuid, date, mrn) in cases {
            assert_eq!(
                (is_uuid(v), is_numeric_date(v), is_mrn_label(v)),
                (uuid, date, mrn),
                "{v:?}"
            );
            assert_eq!(REGEXES[0].is_match(v), uuid, "{v:?}");
            assert_eq!(REGEXES[1].is_match(v), date, "{v:?}");
            assert_eq!(REGEXES[2].is_match(v), mrn, "{v:?}");
        }
    }

    /// Ids of every format the contract always accepts (docs/contracts.md, "Refs"). The seed
    /// is fixed, so a run is repeatable; `PROPTEST_CASES` raises the number of cases (the
    /// accuracy benchmark measures these formats on 10,000 ids each).
    fn formats() -> impl Strategy<Value = String> {
        // Each character drawn uniformly from its format's alphabet, as the generators do
        // (a regex strategy would pick a range first and over-weight digits).
        fn of(alphabet: &'static str, n: usize) -> impl Strategy<Value = String> {
            proptest::collection::vec(proptest::sample::select(alphabet.as_bytes().to_vec()), n)
                .prop_map(|b| String::from_utf8(b).unwrap_or_default())
        }
        const LOWER36: &str = "abcdefghijklmnopqrstuvwxyz0123456789";
        const B62: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        const B64URL: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
        const CROCKFORD: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
        const HEX: &str = "0123456789abcdef";
        prop_oneof![
            of(HEX, 32).prop_map(|h| format!(
                "{}-{}-4{}-a{}-{}",
                &h[..8],
                &h[8..12],
                &h[13..16],
                &h[17..20],
                &h[20..]
            )),
            of(CROCKFORD, 24).prop_map(|t| format!("01{t}")),
            of(B62, 27),
            of(B64URL, 21),
            ("[a-z]", of(LOWER36, 23)).prop_map(|(a, b)| a + &b),
            of(HEX, 32),
            of(HEX, 64),
            of(HEX, 32).prop_map(|h| h.to_ascii_uppercase()),
            of(HEX, 32).prop_map(|h| format!("p_{h}")),
            of("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 26),
            of("abcdefghijklmnopqrstuvwxyz234567", 26),
            of(B64URL, 22),
            (14usize..=24)
                .prop_flat_map(|n| of(B62, n))
                .prop_map(|b| format!("cus_{b}")),
            of("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 26),
        ]
    }

    fn fixed_seed_config(default_cases: u32) -> ProptestConfig {
        let cases = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(default_cases);
        ProptestConfig {
            cases,
            rng_seed: proptest::test_runner::RngSeed::Fixed(20_240_601),
            // A failure's seed is kept (and replayed first) in a committed file.
            failure_persistence: Some(Box::new(
                proptest::test_runner::FileFailurePersistence::Direct(
                    "src/guard/guard.proptest-regressions",
                ),
            )),
            max_shrink_iters: 0,
            ..ProptestConfig::default()
        }
    }

    proptest! {
        #![proptest_config(fixed_seed_config(3000))]
        #[test]
        fn ids_of_every_supported_format_are_accepted(v in formats()) {
            prop_assert_eq!(check_ref(&v), Ok(()), "{}", v);
        }
    }

    /// Each value is refused with its rule (compared by code: the rule the wire names).
    fn assert_refused(cases: &[(&str, PhiRule)]) {
        for &(value, rule) in cases {
            assert_eq!(
                check_ref(value).map_err(|r| r.code()),
                Err(rule.code()),
                "{value}"
            );
        }
    }

    #[test]
    fn refuses_people_in_every_spelling_family() {
        let cases = [
            ("maria_gonzalez_x7k2", PhiRule::PersonName),
            ("GONZALEZ-MARIA-1985", PhiRule::Date),
            ("aldonza_knutsson", PhiRule::PersonName),
            ("CaglarVanLeeuwen", PhiRule::PersonName),
            ("407_555_0142_abx", PhiRule::Phone),
            ("pt-078-05-1120-x2", PhiRule::Mrn),
            ("dob_03_14_1985_xk", PhiRule::Mrn),
            ("14-mar-1985-gonzalez", PhiRule::Date),
            ("32801_123_main_st", PhiRule::Mrn),
            ("mrn_0048213_smith", PhiRule::Mrn),
            ("amFuZS5kb2VAZXhhbXBsZS5jb20", PhiRule::EncodedText),
            ("NJQW4ZJOMRXWKQDFPBQW24DMMUXGG33N", PhiRule::EncodedText),
            (
                "6a616e652e646f65406578616d706c652e636f6d",
                PhiRule::EncodedText,
            ),
        ];
        assert_refused(&cases);
    }

    /// The rules that judge how a person runs PHI together: an initial before a surname, a
    /// name then a number, two names in one run, the last four digits beside a name, an
    /// address or an e-mail address written without its punctuation.
    #[test]
    fn refuses_phi_run_together() {
        let cases = [
            ("jthompson_q8v2kd", PhiRule::PersonName),
            ("p_rwilliams_7fx2d9", PhiRule::PersonName),
            ("kpatterson731904", PhiRule::PersonName),
            ("HARRISONMARGARET", PhiRule::PersonName),
            ("p_JenkinsMargaretQz7", PhiRule::PersonName),
            ("p_margaret_x9q2vb7z", PhiRule::PersonName),
            ("harrison_4417_qz8", PhiRule::PersonName),
            ("lee_4417_qz8vbn2k", PhiRule::Ssn),
            ("88PeachtreeBlvd30309", PhiRule::PostalAddress),
            ("p_1415_12th_pkwy_x", PhiRule::PostalAddress),
            ("elm_trl_springfield_oh", PhiRule::PostalAddress),
            ("ethompson64yahoocom", PhiRule::Email),
            ("rjenkinsharrisonnet", PhiRule::Email),
            ("thompson_AT_example", PhiRule::Email),
            ("kjenkins71_harrison_uk", PhiRule::Email),
        ];
        assert_refused(&cases);
    }

    /// Names cut into segments where no one segment is enough: short words that add up,
    /// two pieces of weak evidence together, a frequent four-letter first name before a
    /// suffix.
    #[test]
    fn refuses_names_cut_into_weak_segments() {
        assert_refused(&[
            ("vor_tam_kilb_x9Q2", PhiRule::PersonName),
            ("lee_kim_Qm8Zr2Lx7V", PhiRule::PersonName),
            ("ann_482_Qm8Zr2Lx7V", PhiRule::PersonName),
            ("anna_x7k2q9vbm3zt", PhiRule::PersonName),
            ("john_k3v9x2m7q8w4", PhiRule::PersonName),
        ]);
    }

    /// Words written together that only the written-words rule sees: capitalised names
    /// with a short tail, a known name run into a readable one.
    #[test]
    fn refuses_names_written_together() {
        assert_refused(&[
            ("OpreaNilsonHfpbx", PhiRule::PersonName),
            ("p_HeyvetullahLoos", PhiRule::PersonName),
            ("elizabethvorkaly", PhiRule::PersonName),
        ]);
    }

    /// An e-mail address run together after an initial: the name is read without it.
    #[test]
    fn refuses_e_mail_addresses_run_together_after_an_initial() {
        assert_refused(&[
            ("mgigli48franzeseeu", PhiRule::Email),
            ("dlorimer62aolcom", PhiRule::Email),
            ("qthompson7yahoocom", PhiRule::Email),
        ]);
    }

    /// PHI that only the randomness test sees: a date or a name after a prefix that is not
    /// a type tag (the prefix is paid for as random letters), a date in groups joined by
    /// hyphens inside a run.
    #[test]
    fn refuses_phi_only_the_randomness_test_sees() {
        assert_refused(&[
            ("xqv_19850314k7q2", PhiRule::Date),
            ("bzt_maria1985x7k2", PhiRule::PersonName),
            ("Qm8Zr2x03-14-85Lx7Vt4", PhiRule::Date),
            ("xQ7v03-14-1985Kz8Lm2", PhiRule::Date),
        ]);
    }

    /// What those rules must not take for PHI: random ids cut at `_` or `-` beside a word,
    /// ending in letters that spell a domain, or holding a street suffix or four digits.
    #[test]
    fn random_ids_near_those_rules_are_accepted() {
        for v in [
            "dCc-nmkj-CT_wgAkSQCRc",
            "rHABR_5p4_AT-W2YEr6C1",
            "cus_olOfxK9287zMctindaNL",
            "Xq7kP2mWv9RtLb4Z_st_8K",
            "q7x2kzv9wm4tp8rbnlcom",
            "k3v9x2m7q8w4z5t1_4417",
        ] {
            assert_eq!(check_ref(v), Ok(()), "{v}");
        }
    }

    #[test]
    fn a_long_digit_run_in_a_hash_or_letters_only_are_not_refused_for_their_looks() {
        for v in [
            "4075550142983317a2b4c6d8e0f1a3b5",
            "p_19850314887766554433221100aabbcc",
            "qwhzkfbnaeolrtxcmpvd",
            "XKQZVBNMWPLRTGHJDFSY",
        ] {
            assert_eq!(check_ref(v), Ok(()), "{v}");
        }
    }

    /// An all-digit value is a date only when it is eight digits that read as YYYYMMDD;
    /// any other is another system's number.
    #[test]
    fn all_digit_values_are_dates_only_as_eight_digit_dates() {
        assert_refused(&[
            ("19850314", PhiRule::Date),
            ("12345678", PhiRule::Mrn),
            ("198503141234", PhiRule::Mrn),
        ]);
    }

    /// The type tags a ref may start with are neutral, those that read as words too.
    #[test]
    fn ids_with_a_tag_that_reads_as_a_word_are_accepted() {
        for v in [
            "booking_Qm8Zr2Lx7Vt4Nw9K",
            "customer_7Hq2kX9mZ4rT1vB8",
            "location_Xq7kP2mWv9RtLb4Z",
            "session_k3v9x2m7q8w4z5t1",
            "payment_9dKq2LmX7vRt4WbN",
            "provider_Qm8Zr2Lx7Vt4Nw9K",
            "invoice_7Hq2kX9mZ4rT1vB8y",
            "member_q7x2kzv9wm4tp8rb",
        ] {
            assert_eq!(check_ref(v), Ok(()), "{v}");
        }
    }

    #[test]
    fn accepts_the_reference_examples() {
        for r in [
            "p_7Hq2kX9mZ4rT1vB8yW3n",
            "3f6c2a9e-8b1d-4e57-a0c4-9d2b7e1f5a38",
            "01JD4R8Q6W9ZB3K7M2N5P8T1VX",
            "appt_Qm8Zr2Lx7Vt4Nw9Kc1Pb",
            "12345678-1234-4234-8234-123456789012",
        ] {
            assert_eq!(check_ref(r), Ok(()), "{r}");
        }
    }

    #[test]
    fn refuses_each_phi_shape_with_its_rule() {
        let cases = [
            ("jane.doe@example.com", PhiRule::Email),
            ("mgonzalez@example.org", PhiRule::Email),
            ("+1 (407) 555-0142", PhiRule::Phone),
            ("407-555-0142", PhiRule::Phone),
            ("4075550142", PhiRule::Mrn),
            ("078-05-1120", PhiRule::Ssn),
            ("004821377", PhiRule::Mrn),
            ("1985-03-14", PhiRule::Date),
            ("03/14/1985", PhiRule::Date),
            ("19850314", PhiRule::Date),
            ("March 14, 1985", PhiRule::Date),
            ("Maria Gonzalez", PhiRule::PersonName),
            ("Dr. Sarah Lee", PhiRule::PersonName),
            ("https://pms.example.com/clients/4821", PhiRule::Url),
            ("www.example.com", PhiRule::Url),
            ("192.168.10.4", PhiRule::IpAddress),
            ("2001:db8::1", PhiRule::IpAddress),
            ("123 Main Street, Orlando", PhiRule::PostalAddress),
            ("MRN-0048213", PhiRule::Mrn),
            ("mrn:48213", PhiRule::Mrn),
            ("p_mariagonzalez19850314x", PhiRule::PersonName),
            ("p_40755501420000abc", PhiRule::Ssn),
            ("short", PhiRule::RefFormat),
            ("mariagonzalezsmith", PhiRule::PersonName),
            ("p_abc def ghi jkl mno", PhiRule::RefFormat),
            (&"a1".repeat(40), PhiRule::RefFormat),
        ];
        for (value, rule) in cases {
            assert_eq!(check_ref(value), Err(rule), "{value}");
        }
    }
}
