//! Money as the application stores it: integer minor units (`BIGINT`) with
//! an ISO 4217 currency code, never floats. Each currency's minor-unit
//! exponent comes from ISO 4217 (2 for the euro, 0 for the yen), so the
//! decimal strings payment providers use convert exactly both ways.

use std::fmt;

/// The supported currencies, with their minor-unit exponents
/// (ISO 4217). A deployment allows a subset of them.
const EXPONENTS: [(&str, u32); 10] = [
    ("EUR", 2),
    ("USD", 2),
    ("GBP", 2),
    ("CHF", 2),
    ("SEK", 2),
    ("DKK", 2),
    ("NOK", 2),
    ("PLN", 2),
    ("JPY", 0),
    ("ISK", 0),
];

/// The largest amount accepted in one movement, in minor units: 10^12,
/// ten billion euros. Sums of many such amounts stay far inside `i64`.
pub const MAX_MINOR: i64 = 1_000_000_000_000;

/// A supported ISO 4217 currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency {
    code: &'static str,
    exponent: u32,
}

impl Currency {
    /// Looks up a currency by its upper-case code.
    pub fn from_code(code: &str) -> Option<Self> {
        EXPONENTS.iter().find(|(c, _)| *c == code).map(|(code, exponent)| Self { code, exponent: *exponent })
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    /// Returns the number of decimal places of the minor unit.
    pub fn exponent(&self) -> u32 {
        self.exponent
    }

    /// Formats minor units as the decimal string providers use:
    /// 1050 EUR gives `10.50`, 1050 JPY gives `1050`.
    pub fn format_decimal(&self, minor: i64) -> String {
        if self.exponent == 0 {
            return minor.to_string();
        }
        let scale = 10_i64.pow(self.exponent);
        let sign = if minor < 0 { "-" } else { "" };
        let abs = minor.unsigned_abs();
        let scale = scale as u64;
        format!("{sign}{}.{:0width$}", abs / scale, abs % scale, width = self.exponent as usize)
    }

    /// Parses a decimal string with exactly this currency's number of
    /// decimals (`10.50` for EUR, `1050` for JPY) into minor units.
    pub fn parse_decimal(&self, text: &str) -> Option<i64> {
        let (whole, fraction) = match text.split_once('.') {
            Some((whole, fraction)) => (whole, fraction),
            None => (text, ""),
        };
        let digits = |s: &str| !s.is_empty() && s.len() <= 15 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || fraction.len() != self.exponent as usize || (self.exponent > 0 && !digits(fraction)) {
            return None;
        }
        let whole: i64 = whole.parse().ok()?;
        let fraction: i64 = if fraction.is_empty() { 0 } else { fraction.parse().ok()? };
        whole.checked_mul(10_i64.pow(self.exponent))?.checked_add(fraction)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

/// Parses an allow-list such as `EUR,USD`: known codes only, at least one.
pub fn parse_allowed(list: &str) -> Option<Vec<Currency>> {
    let currencies: Option<Vec<Currency>> =
        list.split(',').map(str::trim).filter(|c| !c.is_empty()).map(Currency::from_code).collect();
    currencies.filter(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_follow_the_exponent() {
        let eur = Currency::from_code("EUR").unwrap();
        let jpy = Currency::from_code("JPY").unwrap();

        assert_eq!(eur.format_decimal(1050), "10.50");
        assert_eq!(eur.format_decimal(5), "0.05");
        assert_eq!(eur.format_decimal(-5), "-0.05");
        assert_eq!(jpy.format_decimal(1050), "1050");
        assert_eq!(eur.parse_decimal("10.50"), Some(1050));
        assert_eq!(eur.parse_decimal("0.05"), Some(5));
        assert_eq!(jpy.parse_decimal("1050"), Some(1050));
    }

    #[test]
    fn malformed_decimals_are_rejected() {
        let eur = Currency::from_code("EUR").unwrap();
        let jpy = Currency::from_code("JPY").unwrap();

        for bad in ["10", "10.5", "10.500", "-1.00", "1e3", "", ".50", "10.", "1 0.00", "9999999999999999.00"] {
            assert_eq!(eur.parse_decimal(bad), None, "{bad:?}");
        }
        assert_eq!(jpy.parse_decimal("10.00"), None);
    }

    #[test]
    fn allow_lists_name_known_currencies() {
        assert_eq!(parse_allowed("EUR, USD").map(|c| c.len()), Some(2));
        assert_eq!(parse_allowed("EUR,XXX"), None);
        assert_eq!(parse_allowed(""), None);
        assert_eq!(Currency::from_code("eur"), None, "codes are upper case");
    }
}
