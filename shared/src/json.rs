//! Reading fields out of a parsed JSON body with messages that name the field,
//! so a client learns every problem at once in a 422.

use serde_json::{Map, Value};

use crate::error::{ApiError, FieldErrors};

/// Returns the object under `key` in a body such as `{"user": {...}}`. Any
/// other key beside the wrapper is a 422, as unknown keys inside it are once
/// [`Fields::reject_unknown`] runs, so a misplaced field is never ignored.
pub fn wrapped<'a>(body: &'a Value, key: &str) -> Result<Fields<'a>, ApiError> {
    if let Some(object) = body.as_object() {
        let mut others: Vec<&String> = object.keys().filter(|other| *other != key).collect();
        others.sort();
        if !others.is_empty() {
            let mut errors = FieldErrors::new();
            for other in others {
                errors.add(other, format!("is not a known field (the body holds only `{key}`)"));
            }
            return Err(ApiError::Validation(errors));
        }
    }
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

    /// Reads a list of strings that may be absent or `null`.
    pub fn optional_string_list(&mut self, field: &str) -> Update<Vec<String>> {
        match self.map.get(field) {
            None => Update::Absent,
            Some(Value::Null) => Update::Null,
            Some(Value::Array(items)) => {
                let strings: Option<Vec<String>> = items.iter().map(|item| item.as_str().map(str::to_string)).collect();
                match strings {
                    Some(strings) => Update::Set(strings),
                    None => {
                        self.errors.add(field, "must be a list of strings");
                        Update::Absent
                    }
                }
            }
            Some(_) => {
                self.errors.add(field, "must be a list of strings");
                Update::Absent
            }
        }
    }

    /// Checks whether the body has `field` at all, whatever its value.
    pub fn contains(&self, field: &str) -> bool {
        self.map.contains_key(field)
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
    fn string_lists_reject_other_values() {
        let body = json!({"article": {"tags": ["a", "b"], "mixed": ["a", 1], "text": "a", "empty": null}});
        let mut fields = wrapped(&body, "article").unwrap();

        assert_eq!(fields.optional_string_list("tags"), Update::Set(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(fields.optional_string_list("mixed"), Update::Absent);
        assert_eq!(fields.optional_string_list("text"), Update::Absent);
        assert_eq!(fields.optional_string_list("empty"), Update::Null);
        assert_eq!(fields.optional_string_list("missing"), Update::Absent);
        assert!(fields.contains("empty"));

        let ApiError::Validation(errors) = fields.finish().unwrap_err() else { panic!("expected 422") };
        let fields: Vec<&str> = errors.iter().map(|(field, _)| field).collect();
        assert_eq!(fields, ["mixed", "text"]);
    }

    #[test]
    fn keys_beside_wrapper_are_rejected() {
        let body = json!({"user": {"username": "a"}, "roles": ["admin"], "balance": 5});

        let Err(ApiError::Validation(errors)) = wrapped(&body, "user") else { panic!("expected 422") };
        let fields: Vec<&str> = errors.iter().map(|(field, _)| field).collect();
        assert_eq!(fields, ["balance", "roles"]);
    }

    #[test]
    fn wrapper_object_is_required() {
        assert!(matches!(wrapped(&json!({}), "user"), Err(ApiError::Validation(_))));
        assert!(matches!(wrapped(&json!({"user": "x"}), "user"), Err(ApiError::Validation(_))));
    }
}
