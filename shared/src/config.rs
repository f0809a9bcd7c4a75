//! Configuration from Spin variables. Components declare their variables in
//! `spin.toml`; these helpers read them and fail with a message that names the
//! variable, never its value.

use std::fmt;
use std::str::FromStr;

/// A configuration value that must not appear in logs or error messages.
/// `Debug` and `Display` print `[redacted]`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Returns the value itself, for the one place that needs it (a connection, a key).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A variable that could not be read or parsed. The message names the
/// variable and never quotes its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: String,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "variable `{}` {}", self.variable, self.problem)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    pub fn new(variable: &str, problem: impl Into<String>) -> Self {
        Self { variable: variable.to_string(), problem: problem.into() }
    }
}

/// Reads a variable that must be set, trimmed. Empty counts as unset.
pub async fn required(name: &str) -> Result<String, ConfigError> {
    match spin_sdk::variables::get(name).await {
        Ok(value) if !value.trim().is_empty() => Ok(value.trim().to_string()),
        Ok(_) => Err(ConfigError::new(name, "is required but empty")),
        Err(error) => Err(ConfigError::new(name, describe(&error))),
    }
}

/// Reads a variable that must be declared but may be empty (a list that
/// can have no entries), trimmed.
pub async fn declared(name: &str) -> Result<String, ConfigError> {
    match spin_sdk::variables::get(name).await {
        Ok(value) => Ok(value.trim().to_string()),
        Err(error) => Err(ConfigError::new(name, describe(&error))),
    }
}

/// Reads a variable that must be set and contains a secret.
pub async fn required_secret(name: &str) -> Result<Secret, ConfigError> {
    required(name).await.map(Secret::new)
}

/// Reads a required variable and parses it.
pub async fn parsed<T: FromStr>(name: &str) -> Result<T, ConfigError> {
    parse(name, &required(name).await?)
}

/// Parses a variable's text; the error names the variable and the expected type only.
pub fn parse<T: FromStr>(name: &str, value: &str) -> Result<T, ConfigError> {
    value
        .parse()
        .map_err(|_| ConfigError::new(name, format!("is not a valid {}", short_type_name::<T>())))
}

fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

/// Spin's variable errors name the problem; provider errors may carry a
/// provider's text, which is reduced to its kind.
fn describe(error: &spin_sdk::variables::Error) -> &'static str {
    use spin_sdk::variables::Error;
    match error {
        Error::Undefined(_) => "is required but not set",
        Error::InvalidName(_) => "has an invalid name",
        Error::Provider(_) => "could not be read from its provider",
        Error::Other(_) => "could not be read",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print_their_value() {
        let secret = Secret::new("hunter2");

        assert_eq!(format!("{secret:?} {secret}"), "[redacted] [redacted]");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn parse_error_hides_value() {
        let error = parse::<u32>("access_token_ttl_seconds", "ten minutes").unwrap_err();

        assert_eq!(error.to_string(), "variable `access_token_ttl_seconds` is not a valid u32");
    }
}
