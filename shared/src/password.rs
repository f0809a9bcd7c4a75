//! Password hashing with Argon2id.
//!
//! Parameters: 7 MiB of memory, 5 passes, 1 lane. OWASP's Password Storage
//! Cheat Sheet lists five Argon2id settings of equal strength, from 46 MiB
//! with 1 pass to 7 MiB with 5 passes. In Wasm the 7 MiB one was the
//! fastest: 28 ms against 33 ms for 19 MiB with 2 passes. Memory decided it,
//! because every busy instance keeps the memory it grew to: 16 hashes at
//! once grew the host by 116 MiB against 308 MiB (docs/benchmarks.md,
//! `cargo xtask bench`). The parameters are stored in each hash (PHC string
//! format), so hashes made with other ones stay verifiable, and login
//! replaces a hash for which [`needs_rehash`] returns true.
//! A hash never awaits, so the other requests of its instance wait while it runs.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

pub const MEMORY_KIB: u32 = 7 * 1024;
pub const PASSES: u32 = 5;
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

/// Checks whether `stored` was made with other parameters or another
/// algorithm than [`hash`] uses now, so a successful login should store a new
/// hash. A malformed stored hash needs one too.
pub fn needs_rehash(stored: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else { return true };
    let current = hasher();
    let Ok(params) = Params::try_from(&parsed) else { return true };
    parsed.algorithm != Algorithm::Argon2id.ident()
        || parsed.version != Some(Version::V0x13 as u32)
        || params.m_cost() != current.params().m_cost()
        || params.t_cost() != current.params().t_cost()
        || params.p_cost() != current.params().p_cost()
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

        assert!(stored.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{stored}");
        assert!(verify("correct horse", &stored));
        assert!(!verify("wrong horse", &stored));
        assert!(!verify("correct horse", "not a hash"));
    }

    #[test]
    fn older_parameters_need_rehash() {
        let older = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(19 * 1024, 2, 1, None).unwrap());
        let salt = SaltString::encode_b64(b"sixteen byte sal").unwrap();
        let stored = older.hash_password(b"correct horse", &salt).unwrap().to_string();

        assert!(verify("correct horse", &stored));
        assert!(needs_rehash(&stored));
        assert!(!needs_rehash(&hash("correct horse").unwrap()));
        assert!(needs_rehash("not a hash"));
    }

    #[test]
    fn salts_differ() {
        assert_ne!(hash("same").unwrap(), hash("same").unwrap());
    }
}
