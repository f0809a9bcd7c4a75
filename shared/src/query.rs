//! Query strings: `application/x-www-form-urlencoded` pairs, percent-decoded
//! with `+` read as a space, and the paging parameters list routes share.

use crate::error::ApiError;

/// The parameters of one request's query string. A parameter that appears
/// twice is rejected when it is read, since which value wins would be a guess.
#[derive(Debug, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

/// Offsets beyond this are rejected: the database still reads every skipped
/// row, so a deep offset is a slow query that a client could repeat.
pub const MAX_OFFSET: u64 = 10_000;

impl Query {
    /// Parses a query string; 400 when a name or value is not valid
    /// percent-encoded UTF-8.
    pub fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let mut pairs = Vec::new();
        for pair in query.unwrap_or("").split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            pairs.push((decode(name)?, decode(value)?));
        }
        Ok(Self { pairs })
    }

    /// Returns the value of `name`, `None` when absent, 422 when repeated.
    pub fn get(&self, name: &str) -> Result<Option<&str>, ApiError> {
        let mut values = self.pairs.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str());
        let first = values.next();
        if values.next().is_some() {
            return Err(ApiError::invalid(name, "must be given at most once"));
        }
        Ok(first)
    }

    /// Reads `limit`: `default` when absent, an integer of at least 1
    /// otherwise, lowered to `max` when larger.
    pub fn limit(&self, default: u32, max: u32) -> Result<u32, ApiError> {
        let Some(text) = self.get("limit")? else { return Ok(default) };
        match parse_integer(text) {
            Some(n) if n >= 1 => Ok(n.min(u64::from(max)) as u32),
            _ => Err(ApiError::invalid("limit", "must be a whole number of at least 1")),
        }
    }

    /// Reads `limit` strictly: `default` when absent, an integer from 1 to
    /// `max` otherwise (422 beyond it, for APIs that never promised a cap).
    pub fn bounded_limit(&self, default: u32, max: u32) -> Result<u32, ApiError> {
        let Some(text) = self.get("limit")? else { return Ok(default) };
        match parse_integer(text) {
            Some(n) if (1..=u64::from(max)).contains(&n) => Ok(n as u32),
            _ => Err(ApiError::invalid("limit", format!("must be a whole number from 1 to {max}"))),
        }
    }

    /// Reads `cursor`: `None` when absent, 422 when it is not one [`Cursor::encode`] made.
    pub fn cursor(&self) -> Result<Option<Cursor>, ApiError> {
        self.get("cursor")?
            .map(|text| Cursor::decode(text).ok_or_else(|| ApiError::invalid("cursor", "is not a cursor this API returned")))
            .transpose()
    }

    /// Rejects any parameter not in `known` with a 422 naming it.
    pub fn only(&self, known: &[&str]) -> Result<(), ApiError> {
        match self.pairs.iter().find(|(name, _)| !known.contains(&name.as_str())) {
            Some((name, _)) => Err(ApiError::invalid(name, "is not a known parameter")),
            None => Ok(()),
        }
    }

    /// Reads `offset`: 0 when absent, an integer from 0 to [`MAX_OFFSET`] otherwise.
    pub fn offset(&self) -> Result<u64, ApiError> {
        let Some(text) = self.get("offset")? else { return Ok(0) };
        match parse_integer(text) {
            Some(n) if n <= MAX_OFFSET => Ok(n),
            _ => Err(ApiError::invalid("offset", format!("must be a whole number from 0 to {MAX_OFFSET}"))),
        }
    }
}

/// A position in a list ordered newest first on `(created_at, id)`: the
/// next page starts after it, so pages neither skip nor repeat an item while
/// newer ones arrive. Written `<created_at>.<id>`; clients treat it as opaque.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: i64,
    /// A UUID.
    pub id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        format!("{}.{}", self.created_at, self.id)
    }

    pub fn decode(text: &str) -> Option<Self> {
        let (created_at, id) = text.split_once('.')?;
        let created_at = parse_integer(created_at).and_then(|n| i64::try_from(n).ok())?;
        crate::ids::is_uuid(id).then(|| Self { created_at, id: id.to_string() })
    }
}

/// Parses decimal digits only: no sign, no fraction, no exponent. Values
/// beyond `u64` read as `u64::MAX`, so a huge limit is capped, not rejected.
fn parse_integer(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 40 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse().unwrap_or(u64::MAX))
}

fn decode(text: &str) -> Result<String, ApiError> {
    crate::http::decode_percent(text, true)
        .ok_or_else(|| ApiError::BadRequest("the query string is not valid percent-encoded UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_others() {
        let cursor = Cursor { created_at: 1_733_000_000_000_000, id: "0190a0b1-0000-7000-8000-000000000001".into() };
        assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
        for bad in ["", "12", "x.0190a0b1-0000-7000-8000-000000000001", "-1.0190a0b1-0000-7000-8000-000000000001", "12.not-a-uuid"] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn bounded_limits_and_unknown_parameters_are_422() {
        let parse = |q: &str| Query::parse(Some(q)).unwrap();
        assert_eq!(parse("").bounded_limit(20, 100).unwrap(), 20);
        assert_eq!(parse("limit=100").bounded_limit(20, 100).unwrap(), 100);
        for bad in ["limit=0", "limit=101", "limit=x", "limit=1&limit=2"] {
            assert!(parse(bad).bounded_limit(20, 100).is_err(), "{bad}");
        }
        assert!(parse("limit=1&unread=true").only(&["limit", "unread"]).is_ok());
        assert!(parse("limit=1&offset=2").only(&["limit", "unread"]).is_err());
    }

    fn field_of(error: ApiError) -> String {
        match error {
            ApiError::Validation(fields) => fields.iter().map(|(field, _)| field.to_string()).collect(),
            other => panic!("expected a 422, got {other:?}"),
        }
    }

    #[test]
    fn values_are_percent_decoded() {
        let query = Query::parse(Some("tag=r%C3%A9sum%C3%A9&author=Ann+Lee&empty=&flag")).unwrap();

        assert_eq!(query.get("tag").unwrap(), Some("résumé"));
        assert_eq!(query.get("author").unwrap(), Some("Ann Lee"));
        assert_eq!(query.get("empty").unwrap(), Some(""));
        assert_eq!(query.get("flag").unwrap(), Some(""));
        assert_eq!(query.get("missing").unwrap(), None);
        assert!(matches!(Query::parse(Some("tag=%E9")), Err(ApiError::BadRequest(_))));
        assert!(matches!(Query::parse(Some("tag=%zz")), Err(ApiError::BadRequest(_))));
    }

    #[test]
    fn repeated_parameter_is_rejected() {
        let query = Query::parse(Some("tag=a&tag=b")).unwrap();

        assert_eq!(field_of(query.get("tag").unwrap_err()), "tag");
    }

    #[test]
    fn limit_is_checked_and_capped() {
        let limit = |text: &str| Query::parse(Some(text)).unwrap().limit(20, 100);

        assert_eq!(limit("").unwrap(), 20);
        assert_eq!(limit("limit=1").unwrap(), 1);
        assert_eq!(limit("limit=1000").unwrap(), 100);
        assert_eq!(limit("limit=99999999999999999999999").unwrap(), 100);
        for bad in ["limit=0", "limit=-1", "limit=1.5", "limit=abc", "limit=", "limit=1e3"] {
            assert_eq!(field_of(limit(bad).unwrap_err()), "limit", "{bad}");
        }
    }

    #[test]
    fn offset_is_bounded() {
        let offset = |text: &str| Query::parse(Some(text)).unwrap().offset();

        assert_eq!(offset("").unwrap(), 0);
        assert_eq!(offset("offset=10000").unwrap(), 10_000);
        for bad in ["offset=10001", "offset=-1", "offset=x"] {
            assert_eq!(field_of(offset(bad).unwrap_err()), "offset", "{bad}");
        }
    }
}
