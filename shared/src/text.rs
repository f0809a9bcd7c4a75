//! Text rules for identifiers people type: usernames and email addresses are
//! kept as entered for display and compared through a normalised key
//! (Unicode NFKC, then lower case, then NFKC again), stored with a binary
//! collation. A `_ci` collation would also equate accents and ignore trailing
//! spaces, so `José` and `jose` would collide. The key keeps them apart, while
//! `JOSE` and `jose` (or full-width `ｊｏｓｅ`) get the same key.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Prepares typed text for storage and display: surrounding white space
/// removed and canonical composition (NFC) applied, so `Jose` followed by a
/// combining acute accent is stored as `José`. Unlike the key, it keeps case
/// and compatibility forms.
pub fn canonical(text: &str) -> String {
    text.trim().nfc().collect()
}

/// Computes the comparison key of a username or email address.
pub fn normalised_key(text: &str) -> String {
    let folded: String = text.nfkc().collect::<String>().to_lowercase();
    folded.nfkc().collect()
}

/// Limits on what users type, in characters.
pub const USERNAME_MAX: usize = 32;
pub const EMAIL_MAX: usize = 254;
pub const PASSWORD_MIN: usize = 8;
pub const PASSWORD_MAX: usize = 128;
pub const BIO_MAX: usize = 2000;
pub const IMAGE_MAX: usize = 2048;

/// Checks a username in [`canonical`] form: letters, digits and combining
/// marks of any script (Devanagari vowel signs, for instance) plus `_`, `-`
/// and `.`, so it can stand in a URL path. Returns the problem, if any.
pub fn username_problem(username: &str) -> Option<String> {
    let length = username.chars().count();
    if length == 0 {
        return Some("can't be blank".into());
    }
    // The key must fit its column too, and NFKC can lengthen text (U+FDFA becomes 18 characters).
    if length > USERNAME_MAX || normalised_key(username).chars().count() > USERNAME_MAX {
        return Some(format!("is too long (maximum is {USERNAME_MAX} characters)"));
    }
    let allowed = |c: char| c.is_alphanumeric() || is_combining_mark(c) || matches!(c, '_' | '-' | '.');
    let starts_with_mark = username.chars().next().is_some_and(is_combining_mark);
    if starts_with_mark || !username.chars().all(allowed) {
        return Some("may contain only letters, digits, '_', '-' and '.'".into());
    }
    None
}

/// Checks the shape of an email address: one `@`, a non-empty local part, a
/// domain with a dot, no spaces or control characters.
pub fn email_problem(email: &str) -> Option<String> {
    if email.is_empty() {
        return Some("can't be blank".into());
    }
    if email.chars().count() > EMAIL_MAX || normalised_key(email).chars().count() > EMAIL_MAX {
        return Some(format!("is too long (maximum is {EMAIL_MAX} characters)"));
    }
    let valid = match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && local.chars().count() <= 64
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    };
    (!valid).then(|| "is invalid".into())
}

pub fn password_problem(password: &str) -> Option<String> {
    let length = password.chars().count();
    if length < PASSWORD_MIN {
        return Some(format!("is too short (minimum is {PASSWORD_MIN} characters)"));
    }
    if length > PASSWORD_MAX {
        return Some(format!("is too long (maximum is {PASSWORD_MAX} characters)"));
    }
    None
}

pub fn bio_problem(bio: &str) -> Option<String> {
    (bio.chars().count() > BIO_MAX).then(|| format!("is too long (maximum is {BIO_MAX} characters)"))
}

/// Checks an image: empty (unset) or an absolute `http`/`https` URL.
pub fn image_problem(image: &str) -> Option<String> {
    if image.is_empty() {
        return None;
    }
    if image.chars().count() > IMAGE_MAX {
        return Some(format!("is too long (maximum is {IMAGE_MAX} characters)"));
    }
    let scheme_ok = ["https://", "http://"].iter().any(|scheme| {
        image.get(..scheme.len()).is_some_and(|prefix| prefix.eq_ignore_ascii_case(scheme))
            && image.len() > scheme.len()
    });
    if !scheme_ok || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("must be an http or https URL".into());
    }
    None
}

/// The maximum length of a [`slug_base`], in characters.
pub const SLUG_BASE_MAX: usize = 80;

/// Makes the readable part of a URL slug from a title: accents stripped
/// (`Crème` gives `creme`), lower-case ASCII letters and digits, every other
/// run of characters one `-`, at most [`SLUG_BASE_MAX`] characters cut at a
/// hyphen. A title with no Latin letters or digits gives an empty string.
pub fn slug_base(title: &str) -> String {
    let mut slug = String::new();
    let mut pending_hyphen = false;
    for c in title.nfkd().filter(|c| !is_combining_mark(*c)) {
        let replacement = match c {
            'ß' => "ss",
            'æ' | 'Æ' => "ae",
            'œ' | 'Œ' => "oe",
            'ø' | 'Ø' => "o",
            'đ' | 'Đ' => "d",
            'ł' | 'Ł' => "l",
            'þ' | 'Þ' => "th",
            _ => "",
        };
        let mut push = |text: &str| {
            if pending_hyphen && !slug.is_empty() {
                slug.push('-');
            }
            pending_hyphen = false;
            slug.push_str(text);
        };
        if c.is_ascii_alphanumeric() {
            push(&c.to_ascii_lowercase().to_string());
        } else if !replacement.is_empty() {
            push(replacement);
        } else {
            pending_hyphen = true;
        }
    }
    if slug.len() > SLUG_BASE_MAX {
        let cut = slug[..=SLUG_BASE_MAX].rfind('-').filter(|&i| i > 0).unwrap_or(SLUG_BASE_MAX);
        slug.truncate(cut);
    }
    slug
}

/// Checks whether `text` has the shape every slug has: lower-case ASCII
/// letters and digits in runs joined by single hyphens.
pub fn is_slug(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 100
        && text.split('-').all(|run| !run.is_empty() && run.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_fold_case_not_accents() {
        assert_eq!(normalised_key("JOSE"), "jose");
        assert_eq!(normalised_key("ｊｏｓｅ"), "jose");
        assert_eq!(normalised_key("José"), "josé");
        assert_ne!(normalised_key("José"), normalised_key("jose"));
        // Composed and decomposed forms of é meet.
        assert_eq!(normalised_key("Jose\u{301}"), normalised_key("Jos\u{e9}"));
        assert_eq!(normalised_key("Alice@Example.COM"), "alice@example.com");
    }

    #[test]
    fn username_characters() {
        assert_eq!(username_problem("José_1.x-y"), None);
        assert_eq!(username_problem("Дмитрий"), None);
        assert_eq!(username_problem("अनुज"), None, "Devanagari vowel signs are combining marks");
        assert!(username_problem("\u{301}x").is_some(), "a name cannot start with a combining mark");
        assert!(username_problem("").is_some());
        assert!(username_problem("a b").is_some());
        assert!(username_problem("a/b").is_some());
        assert!(username_problem("a?b").is_some());
        assert!(username_problem(&"x".repeat(33)).is_some());
        assert_eq!(username_problem("\u{fdfa}\u{fdfa}").as_deref(), Some("is too long (maximum is 32 characters)"));
    }

    #[test]
    fn canonical_form_composes_and_trims() {
        assert_eq!(canonical(" Jose\u{301} "), "José");
        assert_eq!(canonical("ＪＯＳＥ"), "ＪＯＳＥ", "compatibility forms stay for display");
    }

    #[test]
    fn email_shapes() {
        assert_eq!(email_problem("alice@example.com"), None);
        for bad in ["", "alice", "@example.com", "alice@example", "alice@.com", "a b@example.com", "a@b@example.com"] {
            assert!(email_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn image_urls() {
        assert_eq!(image_problem(""), None);
        assert_eq!(image_problem("https://example.com/a.png"), None);
        assert!(image_problem("javascript:alert(1)").is_some());
        assert!(image_problem("https://").is_some());
    }

    #[test]
    fn password_length_bounds() {
        assert!(password_problem("short").is_some());
        assert_eq!(password_problem("long enough"), None);
        assert!(password_problem(&"p".repeat(129)).is_some());
    }

    #[test]
    fn slug_bases_are_url_safe() {
        assert_eq!(slug_base("How to Train Your Dragon"), "how-to-train-your-dragon");
        assert_eq!(slug_base("  Crème Brûlée!! "), "creme-brulee");
        assert_eq!(slug_base("Straße & Smørrebrød"), "strasse-smorrebrod");
        assert_eq!(slug_base("C++ in 2026: what's new?"), "c-in-2026-what-s-new");
        assert_eq!(slug_base("你好"), "");
        assert_eq!(slug_base("!!!"), "");
        assert_eq!(slug_base("ｆｕｌｌ width"), "full-width");
        for title in ["How to Train Your Dragon", "Crème Brûlée", "C++ in 2026"] {
            assert!(is_slug(&slug_base(title)), "{title}");
        }
    }

    #[test]
    fn long_slug_bases_are_cut_at_a_hyphen() {
        let title = "word ".repeat(40);

        let slug = slug_base(&title);

        assert!(slug.len() <= SLUG_BASE_MAX, "{}", slug.len());
        assert!(slug.ends_with("word"), "{slug}");
        assert!(is_slug(&slug));
        assert_eq!(slug_base(&"x".repeat(200)).len(), SLUG_BASE_MAX);
    }

    #[test]
    fn slug_shape() {
        assert!(is_slug("a-b-1"));
        assert!(!is_slug("a--b"));
        assert!(!is_slug("-a"));
        assert!(!is_slug("A"));
        assert!(!is_slug(""));
    }
}
