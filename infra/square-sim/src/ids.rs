//! Ids shaped like Square's, after the examples in Square's OpenAPI spec (README.md): a
//! location `L9R0X9X5SGDBJ`, a merchant `GQQWA3J6A3AEZ`, a team member `TMXUrsBWWcHTt79t`, a
//! catalog object (service variation) `RU3PBTZTK7DXZDQFCJHOK2MC`, a customer
//! `EX2QSVGTZN4K1E5QE1CBFNVQ8M`, a customer group `2TAT3CMH4Q0A9M87XJZED0WMR3`, a booking
//! `zkras0xv0xwswx` and an event `76193e8a-db85-53c6-b538-1837519cbc12`.

use rand::Rng;

/// Crockford's base32 (no I, L, O, U), the alphabet of the location, merchant, customer and
/// group ids in Square's examples.
const CROCKFORD: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// RFC 4648 base32, the alphabet of catalog object ids.
const BASE32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const LOWER_ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

fn draw(alphabet: &[u8], n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())]))
        .collect()
}

/// `L` and 12 Crockford base32 characters.
pub fn location() -> String {
    format!("L{}", draw(CROCKFORD, 12))
}

/// 13 Crockford base32 characters.
pub fn merchant() -> String {
    draw(CROCKFORD, 13)
}

/// `TM` and 14 letters or digits, mixed case.
pub fn team_member() -> String {
    format!("TM{}", draw(ALNUM, 14))
}

/// 24 RFC 4648 base32 characters (upper case and 2–7).
pub fn catalog_object() -> String {
    draw(BASE32, 24)
}

/// 26 Crockford base32 characters.
pub fn customer() -> String {
    draw(CROCKFORD, 26)
}

/// 26 Crockford base32 characters, like a customer's.
pub fn customer_group() -> String {
    draw(CROCKFORD, 26)
}

/// 14 lower-case letters or digits.
pub fn booking() -> String {
    draw(LOWER_ALNUM, 14)
}

/// A random UUID in its hyphenated lower-case form (Square's `event_id`).
pub fn event() -> String {
    let mut b = [0u8; 16];
    rand::rng().fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_in(s: &str, alphabet: &[u8]) -> bool {
        s.bytes().all(|c| alphabet.contains(&c))
    }

    #[test]
    fn shapes() {
        let l = location();
        assert!(l.len() == 13 && l.starts_with('L') && all_in(&l[1..], CROCKFORD));
        let t = team_member();
        assert!(t.len() == 16 && t.starts_with("TM") && all_in(&t[2..], ALNUM));
        let c = catalog_object();
        assert!(c.len() == 24 && all_in(&c, BASE32));
        let k = customer();
        assert!(k.len() == 26 && all_in(&k, CROCKFORD));
        let b = booking();
        assert!(b.len() == 14 && all_in(&b, LOWER_ALNUM));
        let e = event();
        assert_eq!(e.len(), 36);
        assert_eq!(e.matches('-').count(), 4);
        assert_ne!(event(), e);
    }
}
