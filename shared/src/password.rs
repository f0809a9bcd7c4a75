//! Password hashing with Argon2id.
//!
//! Parameters: 19 MiB of memory, 2 passes, 1 lane, OWASP's current minimum for
//! Argon2id (Password Storage Cheat Sheet). They are stored in each hash (PHC
//! string format), so raising them later leaves existing hashes verifiable.
//! A hash takes tens of milliseconds and never awaits, so the other requests
//! of its instance wait that long (docs/architecture.md).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

pub const MEMORY_KIB: u32 = 19 * 1024;
pub const PASSES: u32 = 2;
pub const LANES: u32 = 1;

fn hasher() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, PASSES, LANES, None).expect("the parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password with a fresh random salt, in PHC string form.
pub fn hash(password: &str) -> Result<String, anyhow::Error> {
    let mut salt = [0u8; 16];
    crate::ids::random_bytes(&mut salt);
    hash_with_salt(password, &salt)
}

fn hash_with_salt(password: &str, salt: &[u8]) -> Result<String, anyhow::Error> {
    let salt = SaltString::encode_b64(salt).map_err(|e| anyhow::anyhow!("cannot encode a salt: {e}"))?;
    let hash = hasher()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("cannot hash a password: {e}"))?;
    Ok(hash.to_string())
}

/// Checks whether `password` matches `stored`. A malformed stored hash never matches.
pub fn verify(password: &str, stored: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(parsed) => hasher().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// Spends the time of one verification without a stored hash, so a login for
/// an unknown email takes as long as one with a wrong password.
pub fn verify_nothing(password: &str) {
    let _ = hash_with_salt(password, b"constant-salt-16");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_uses_documented_parameters() {
        let stored = hash("correct horse").unwrap();

        assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{stored}");
        assert!(verify("correct horse", &stored));
        assert!(!verify("wrong horse", &stored));
        assert!(!verify("correct horse", "not a hash"));
    }

    #[test]
    fn salts_differ() {
        assert_ne!(hash("same").unwrap(), hash("same").unwrap());
    }
}
