//! Identifiers made by the application (the MySQL interface returns no insert
//! id, and `AUTO_INCREMENT` read back would race).

/// Fills `buffer` from the operating system's random source (`wasi:random` in a component).
pub fn random_bytes(buffer: &mut [u8]) {
    getrandom::fill(buffer).expect("the platform's random source is available");
}

pub fn random_u32() -> u32 {
    let mut bytes = [0; 4];
    random_bytes(&mut bytes);
    u32::from_le_bytes(bytes)
}

/// `bytes` as lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random token of `len` bytes, hex-encoded (for version keys and request ids).
pub fn random_hex(len: usize) -> String {
    let mut bytes = vec![0; len];
    random_bytes(&mut bytes);
    hex(&bytes)
}

/// Makes a random token of `len` bytes in unpadded base64url (RFC 4648 §5), for
/// links sent by email: 32 bytes give 43 characters of `A-Z a-z 0-9 - _`.
pub fn random_token(len: usize) -> String {
    let mut bytes = vec![0; len];
    random_bytes(&mut bytes);
    base64url(&bytes)
}

/// `bytes` in unpadded base64url.
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// Makes a UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then random bits,
/// so ids sort by creation time and index well.
pub fn uuid_v7() -> String {
    uuid_v7_at(crate::time::now_micros() / 1000)
}

fn uuid_v7_at(unix_millis: i64) -> String {
    let mut bytes = [0u8; 16];
    random_bytes(&mut bytes[6..]);
    bytes[..6].copy_from_slice(&unix_millis.to_be_bytes()[2..]);
    bytes[6] = 0x70 | (bytes[6] & 0x0f);
    bytes[8] = 0x80 | (bytes[8] & 0x3f);
    let h = hex(&bytes);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// The start of [`small_id`]'s clock: 2025-01-01T00:00:00Z in Unix milliseconds.
const SMALL_ID_EPOCH_MILLIS: i64 = 1_735_689_600_000;
/// Random bits below the milliseconds in a [`small_id`].
const SMALL_ID_RANDOM_BITS: u32 = 12;
/// Every [`small_id`] is below 2^53, so JavaScript clients read it exactly.
pub const SMALL_ID_LIMIT: u64 = 1 << 53;

/// Makes a time-ordered integer id below 2^53, for ids a public contract
/// fixes as JSON integers (comment ids): milliseconds since 2025 shifted
/// left by 12 bits, plus 12 random bits. Ids stay time-ordered until about
/// 2094, when the shifted milliseconds reach 2^53 and wrap. Two ids made in the same millisecond collide with probability
/// 1/4096, so the caller retries on a duplicate key.
pub fn small_id() -> u64 {
    small_id_at(crate::time::now_micros() / 1000)
}

fn small_id_at(unix_millis: i64) -> u64 {
    let millis = u64::try_from(unix_millis - SMALL_ID_EPOCH_MILLIS).unwrap_or(0);
    let random = u64::from(random_u32()) & ((1 << SMALL_ID_RANDOM_BITS) - 1);
    ((millis << SMALL_ID_RANDOM_BITS) | random) % SMALL_ID_LIMIT
}

/// Checks whether `text` is a UUID in the canonical lower-case form this module writes.
pub fn is_uuid(text: &str) -> bool {
    text.len() == 36
        && text.char_indices().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) { c == '-' } else { c.is_ascii_digit() || ('a'..='f').contains(&c) }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_the_rfc_vectors() {
        // RFC 4648 §10, without padding.
        let cases = [("", ""), ("f", "Zg"), ("fo", "Zm8"), ("foo", "Zm9v"), ("foob", "Zm9vYg"), ("fooba", "Zm9vYmE"), ("foobar", "Zm9vYmFy")];
        for (input, expected) in cases {
            assert_eq!(base64url(input.as_bytes()), expected);
        }
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
        let token = random_token(32);
        assert_eq!(token.len(), 43);
        assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }

    #[test]
    fn uuid_v7_carries_version_variant_and_time_order() {
        let earlier = uuid_v7_at(1_700_000_000_000);
        let later = uuid_v7_at(1_700_000_000_001);

        assert!(is_uuid(&earlier), "{earlier}");
        assert_eq!(&earlier[14..15], "7");
        assert!(matches!(&earlier[19..20], "8" | "9" | "a" | "b"));
        assert!(earlier < later);
        assert_eq!(&earlier[..13], "018bcfe5-6800");
    }

    #[test]
    fn small_ids_ordered_below_2_pow_53() {
        let first = small_id_at(1_764_892_800_000);
        let next_millisecond = small_id_at(1_764_892_800_001);
        let in_2090 = small_id_at(3_786_825_600_000);

        assert!(first < next_millisecond);
        assert_eq!(first >> 12, 1_764_892_800_000 - SMALL_ID_EPOCH_MILLIS as u64);
        assert!(in_2090 < SMALL_ID_LIMIT);
        assert!(small_id() < SMALL_ID_LIMIT);
    }

    #[test]
    fn is_uuid_rejects_other_shapes() {
        assert!(!is_uuid("018bcfe5-6800-7000-8000-00000000000G"));
        assert!(!is_uuid("not a uuid"));
        assert!(!is_uuid("018BCFE5-6800-7000-8000-000000000000"));
    }
}
