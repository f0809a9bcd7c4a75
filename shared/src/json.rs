//! Reading fields out of a parsed JSON body with messages that name the field,
//! so a client learns every problem at once in a 422.

use serde_json::{Map, Value};

use crate::error::{ApiError, FieldErrors};

/// Returns the object under `key` in a body such as `{"user": {...}}`.
pub fn wrapped<'a>(body: &'a Value, key: &str) -> Result<Fields<'a>, ApiError> {
    match body.get(key) {
        Some(Value::Object(map)) => Ok(Fields { map, errors: FieldErrors::new() }),
        Some(_) => Err(ApiError::invalid(key, "must be an object")),
        None => Err(ApiError::invalid(key, "is required")),
    }
}

/// A JSON object being read; problems collect in `errors`.
pub struct Fields<'a> {
    map: &'a Map<String, Value>,
    pub errors: FieldErrors,
}

/// The state of an optional field in a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update<T> {
    /// The field was not sent: leave the value alone.
    Absent,
    /// The field was `null`.
    Null,
    Set(T),
}

impl Fields<'_> {
    /// Reads a string that must be present and not `null`.
    pub fn required_string(&mut self, field: &str) -> Option<String> {
        match self.map.get(field) {
            None | Some(Value::Null) => {
                self.errors.add(field, "can't be blank");
                None
            }
            Some(Value::String(text)) => Some(text.clone()),
            Some(_) => {
                self.errors.add(field, "must be a string");
                None
            }
        }
    }

    /// Reads a string that may be absent or `null`.
    pub fn optional_string(&mut self, field: &str) -> Update<String> {
        match self.map.get(field) {
            None => Update::Absent,
            Some(Value::Null) => Update::Null,
            Some(Value::String(text)) => Update::Set(text.clone()),
            Some(_) => {
                self.errors.add(field, "must be a string");
                Update::Absent
            }
        }
    }

    /// Rejects fields outside `allowed`, so a body cannot set what a route does
    /// not mean to change (roles, ids, balances).
    pub fn reject_unknown(&mut self, allowed: &[&str]) {
        let mut unknown: Vec<&String> = self.map.keys().filter(|k| !allowed.contains(&k.as_str())).collect();
        unknown.sort();
        for field in unknown {
            self.errors.add(field, "is not a known field");
        }
    }

    /// Ends reading: `Err(422)` naming every field at fault, if any.
    pub fn finish(self) -> Result<(), ApiError> {
        self.errors.into_result()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn fields_report_every_problem() {
        let body = json!({"user": {"username": null, "email": 5, "roles": ["admin"], "bio": null}});
        let mut fields = wrapped(&body, "user").unwrap();

        assert_eq!(fields.required_string("username"), None);
        assert_eq!(fields.required_string("email"), None);
        assert_eq!(fields.required_string("password"), None);
        assert_eq!(fields.optional_string("bio"), Update::Null);
        assert_eq!(fields.optional_string("image"), Update::Absent);
        fields.reject_unknown(&["username", "email", "password", "bio", "image"]);

        let ApiError::Validation(errors) = fields.finish().unwrap_err() else { panic!("expected 422") };
        let found: Vec<(&str, &str)> = errors.iter().collect();
        assert_eq!(
            found,
            [
                ("username", "can't be blank"),
                ("email", "must be a string"),
                ("password", "can't be blank"),
                ("roles", "is not a known field"),
            ]
        );
    }

    #[test]
    fn wrapper_object_is_required() {
        assert!(matches!(wrapped(&json!({}), "user"), Err(ApiError::Validation(_))));
        assert!(matches!(wrapped(&json!({"user": "x"}), "user"), Err(ApiError::Validation(_))));
    }
}
