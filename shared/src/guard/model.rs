//! The guard's language data: a character trigram model of names and English words, and a
//! lexicon of names in three frequency classes (Bloom filters). Built by
//! `infra/python/guard_model.py` from the US Census name-frequency lists and a public word
//! list; the layout is described there. The bytes are a static: nothing is parsed or
//! allocated at start-up, each lookup reads the table in place.

static MODEL: &[u8] = include_bytes!("../../data/guard-model.bin");

#[cfg(test)]
const MAGIC: &[u8; 8] = b"PILGUARD";
const HEADER: usize = 12;
const TRIGRAMS: usize = 27 * 27 * 27;
/// Cost in nats of a lexicon name of each class (about −ln of its share of people); the
/// model builder's `CLASS_COST`.
const CLASS_COST: [f32; 3] = [7.0, 10.5, 13.0];
/// Lengths the lexicon holds.
const LEXICON_LEN: std::ops::RangeInclusive<usize> = 3..=12;

/// One Bloom filter of the lexicon.
struct Bloom {
    bits: &'static [u8],
    m: u64,
    k: u32,
}

fn u32_at(at: usize) -> u32 {
    let b: [u8; 4] = MODEL
        .get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .unwrap_or([0; 4]);
    u32::from_le_bytes(b)
}

fn bloom_at(at: usize) -> (Bloom, usize) {
    let m = u32_at(at) as usize;
    let k = u32_at(at + 4);
    let start = at + 8;
    let bits = MODEL.get(start..start + m / 8).unwrap_or(&[]);
    (
        Bloom {
            bits,
            m: m as u64,
            k,
        },
        start + m / 8,
    )
}

#[cfg(test)]
fn fnv1a(tag: u8, word: &[u8]) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for &b in std::iter::once(&tag).chain(word) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01B3);
    }
    h
}

impl Bloom {
    fn contains(&self, h1: u64, h2: u64) -> bool {
        if self.m == 0 {
            return false;
        }
        (0..u64::from(self.k)).all(|i| {
            // Lemire's reduction, as the builder places bits: a multiply, not a division.
            let x = h1.wrapping_add(i.wrapping_mul(h2));
            let bit = ((u128::from(x) * u128::from(self.m)) >> 64) as u64;
            self.bits
                .get((bit / 8) as usize)
                .is_some_and(|byte| byte & (1 << (bit % 8)) != 0)
        })
    }
}

/// The three lexicon classes, located once (three header reads, no allocation).
struct Lexicon([Bloom; 3]);

static LEXICON: std::sync::LazyLock<Lexicon> = std::sync::LazyLock::new(|| {
    let start = HEADER + TRIGRAMS;
    let (a, next) = bloom_at(start);
    let (b, next) = bloom_at(next);
    let (c, _) = bloom_at(next);
    Lexicon([a, b, c])
});

fn lexicon() -> &'static Lexicon {
    &LEXICON
}

/// Whether the model file is the one this code reads (a test checks it).
#[cfg(test)]
pub(crate) fn well_formed() -> bool {
    MODEL.starts_with(MAGIC) && u32_at(8) == 2 && {
        let l = lexicon();
        l.0.iter()
            .all(|b| b.m % 64 == 0 && b.k > 0 && b.bits.len() as u64 * 8 == b.m)
    }
}

/// Letter index for the trigram table: 1..=26 for `a..z` (either case), 0 for a boundary.
fn idx(c: u8) -> usize {
    usize::from(c.to_ascii_lowercase() - b'a' + 1)
}

/// The cost in nats of one step of the trigram model (`a`, `b`, `c` are indexes).
fn step(a: usize, b: usize, c: usize) -> f32 {
    f32::from(MODEL[HEADER + (a * 27 + b) * 27 + c]) / 16.0
}

/// −ln P(word) under the trigram model, the end of the word included. `word` is ASCII letters.
#[cfg(test)]
pub(crate) fn lm_cost(word: &[u8]) -> f32 {
    let mut w = WordCost::new();
    for &c in word {
        w.push(c);
    }
    w.total()
}

/// The trigram cost of a word grown one letter at a time (the DP extends a piece letter by
/// letter, so each extension costs one table read).
#[derive(Clone, Copy)]
pub(crate) struct WordCost {
    a: usize,
    b: usize,
    sum: f32,
}

impl WordCost {
    pub(crate) fn new() -> Self {
        Self {
            a: 0,
            b: 0,
            sum: 0.0,
        }
    }
    pub(crate) fn push(&mut self, c: u8) {
        let c = idx(c);
        self.sum += step(self.a, self.b, c);
        self.a = self.b;
        self.b = c;
    }
    /// The cost of the word so far, ended here.
    pub(crate) fn total(&self) -> f32 {
        self.sum + step(self.a, self.b, 0)
    }
}

/// How much cheaper than the character model the lexicon may make a word, in nats. A Bloom
/// filter answers "yes" falsely about once in 60,000 lookups; bounded like this, a false
/// "yes" on random letters cannot make them read as a name.
pub(crate) const LEXICON_BONUS: f32 = 8.0;
/// Mean model cost per letter above which a word is not looked up (names are read easily;
/// this skips most lookups on random letters).
const LOOKUP_RATE: f32 = 3.2;

/// A word's lexicon hashes, grown a letter at a time (either case; hashed lower-case).
#[derive(Clone, Copy)]
pub(crate) struct LexKey {
    h1: u64,
    h2: u64,
    len: usize,
}

const FNV_OFFSET: u64 = 0xCBF2_9CE4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01B3;

impl LexKey {
    pub(crate) fn new() -> Self {
        Self {
            h1: (FNV_OFFSET ^ 1).wrapping_mul(FNV_PRIME),
            h2: (FNV_OFFSET ^ 2).wrapping_mul(FNV_PRIME),
            len: 0,
        }
    }
    pub(crate) fn push(&mut self, c: u8) {
        let c = u64::from(c.to_ascii_lowercase());
        self.h1 = (self.h1 ^ c).wrapping_mul(FNV_PRIME);
        self.h2 = (self.h2 ^ c).wrapping_mul(FNV_PRIME);
        self.len += 1;
    }
    /// The word's hash (FNV-1a of its lower-cased letters), as the lexicon keys it.
    pub(crate) fn hash(&self) -> u64 {
        self.h1
    }
    /// The word's cost given its character-model cost `lm`: lowered by the lexicon when the
    /// word is a known name, by at most [`LEXICON_BONUS`].
    pub(crate) fn word_cost(&self, lm: f32) -> f32 {
        if lm > LOOKUP_RATE * (self.len as f32 + 1.0) {
            return lm;
        }
        match self.lexicon_cost() {
            Some(lex) => lm.min(lex.max(lm - LEXICON_BONUS)),
            None => lm,
        }
    }
    fn lexicon_cost(&self) -> Option<f32> {
        if !LEXICON_LEN.contains(&self.len) {
            return None;
        }
        let (h1, h2) = (self.h1, self.h2 | 1);
        lexicon()
            .0
            .iter()
            .zip(CLASS_COST)
            .find(|(b, _)| b.contains(h1, h2))
            .map(|(_, c)| c)
    }
}

/// The cost of `word` (lower-case ASCII letters, 3 or more) as a lexicon name, if it is one.
#[cfg(test)]
pub(crate) fn lexicon_cost(word: &[u8]) -> Option<f32> {
    if !LEXICON_LEN.contains(&word.len()) {
        return None;
    }
    let h1 = fnv1a(1, word);
    let h2 = fnv1a(2, word) | 1;
    let lex = lexicon();
    lex.0
        .iter()
        .zip(CLASS_COST)
        .find(|(b, _)| b.contains(h1, h2))
        .map(|(_, c)| c)
}

/// The lexicon class cost of `word` (letters, either case) when it is a lexicon name the
/// character model also reads (mean cost per letter at most [`LOOKUP_RATE`]): a false
/// "yes" of the Bloom filters on letters that read like noise is not believed.
fn known_cost(word: &[u8]) -> Option<f32> {
    let mut key = LexKey::new();
    let mut c = WordCost::new();
    for &b in word {
        key.push(b);
        c.push(b);
    }
    if c.total() > LOOKUP_RATE * (word.len() as f32 + 1.0) {
        return None;
    }
    key.lexicon_cost()
}

/// Whether `word` is a lexicon name the character model also reads.
pub(crate) fn is_name(word: &[u8]) -> bool {
    known_cost(word).is_some()
}

/// Whether `word` is a name of the lexicon's two frequent classes (the most common first
/// names and surnames) that the character model also reads.
pub(crate) fn frequent_name(word: &[u8]) -> bool {
    known_cost(word).is_some_and(|cost| cost <= CLASS_COST[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_file_is_well_formed() {
        assert!(well_formed());
    }

    #[test]
    fn names_are_in_the_lexicon_and_noise_is_not() {
        for n in [
            "smith", "maria", "gonzalez", "johnson", "patricia", "nguyen",
        ] {
            assert!(lexicon_cost(n.as_bytes()).is_some(), "{n}");
        }
        for n in ["xqzvkw", "hqkxzt", "zzqpvb"] {
            assert!(lexicon_cost(n.as_bytes()).is_none(), "{n}");
        }
    }

    #[test]
    fn the_incremental_key_hashes_as_the_builder_does() {
        for w in ["smith", "Maria", "GONZALEZ", "xqzvkw"] {
            let mut k = LexKey::new();
            w.bytes().for_each(|c| k.push(c));
            let lower = w.to_ascii_lowercase();
            assert_eq!(k.h1, fnv1a(1, lower.as_bytes()), "{w}");
            assert_eq!(k.h2, fnv1a(2, lower.as_bytes()), "{w}");
            assert_eq!(k.lexicon_cost(), lexicon_cost(lower.as_bytes()), "{w}");
        }
    }

    /// The lexicon lowers a name's cost by at most [`LEXICON_BONUS`], however cheap its
    /// class: long names hit that bound.
    #[test]
    fn the_lexicon_lowers_a_name_by_at_most_its_bonus() {
        let mut bounded = 0;
        for w in [
            "smith",
            "maria",
            "gonzalez",
            "johnson",
            "patricia",
            "nguyen",
            "christopher",
            "elizabeth",
            "margaret",
            "washington",
        ] {
            let (mut key, mut c) = (LexKey::new(), WordCost::new());
            w.bytes().for_each(|b| {
                key.push(b);
                c.push(b);
            });
            let lm = c.total();
            let cost = key.word_cost(lm);
            assert!(
                cost <= lm && cost >= lm - LEXICON_BONUS,
                "{w}: {cost} from {lm}"
            );
            if lexicon_cost(w.as_bytes()).is_some_and(|lex| lex < cost) {
                bounded += 1;
            }
        }
        assert!(bounded > 0, "no name reached the bound");
    }

    #[test]
    fn names_read_cheaper_than_noise() {
        assert!(lm_cost(b"marianne") < lm_cost(b"xqzvkwjh") - 8.0);
    }
}
