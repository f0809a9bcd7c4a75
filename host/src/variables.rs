//! Application and component variables, resolved as Spin's environment
//! provider does: `SPIN_VARIABLE_<NAME>` first, then the manifest default.
//! Values of variables marked `secret` never reach a log line.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};

use crate::manifest::Manifest;

/// Resolved application-level variables.
#[derive(Debug, Default)]
pub struct AppVariables {
    values: BTreeMap<String, String>,
}

impl AppVariables {
    /// Resolves every application variable; a required one with no value is an error.
    pub fn resolve(manifest: &Manifest, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut values = BTreeMap::new();
        let mut missing = Vec::new();
        for (name, variable) in &manifest.variables {
            let env_name = env_name(name);
            match env(&env_name).or_else(|| variable.default.clone()) {
                Some(value) => {
                    values.insert(name.clone(), value);
                }
                None => missing.push(format!("`{name}` (set {env_name})")),
            }
        }
        if !missing.is_empty() {
            bail!("required variables have no value: {}", missing.join(", "));
        }
        Ok(Self { values })
    }

    /// Expands `{{ name }}` references to application variables.
    pub fn expand(&self, template: &str) -> Result<String> {
        let mut out = String::with_capacity(template.len());
        let mut rest = template;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .with_context(|| format!("unclosed `{{{{` in {template:?}"))?;
            let name = after[..end].trim();
            let value = self
                .values
                .get(name)
                .with_context(|| format!("template refers to unknown application variable `{name}`"))?;
            out.push_str(value);
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// `api_key` is read from `SPIN_VARIABLE_API_KEY`.
pub fn env_name(name: &str) -> String {
    format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase())
}

/// A component's variables after template expansion.
#[derive(Debug, Default)]
pub struct ComponentVariables {
    values: BTreeMap<String, String>,
}

/// Why `spin:variables/variables.get` failed, mirroring the interface's cases.
#[derive(Debug, PartialEq)]
pub enum LookupError {
    InvalidName(String),
    Undefined(String),
}

impl ComponentVariables {
    pub fn resolve(app: &AppVariables, templates: &BTreeMap<String, String>) -> Result<Self> {
        let values = templates
            .iter()
            .map(|(name, template)| {
                let value = app
                    .expand(template)
                    .with_context(|| format!("component variable `{name}`"))?;
                Ok((name.clone(), value))
            })
            .collect::<Result<_>>()?;
        Ok(Self { values })
    }

    pub fn get(&self, name: &str) -> Result<String, LookupError> {
        if crate::manifest::check_variable_name(name).is_err() {
            return Err(LookupError::InvalidName(format!(
                "{name:?} is not a valid variable name"
            )));
        }
        self.values
            .get(name)
            .cloned()
            .ok_or_else(|| LookupError::Undefined(format!("no variable for {name:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn manifest() -> Manifest {
        Manifest::parse(
            r#"
spin_manifest_version = 2
[application]
name = "vars"
[variables]
db_host = { default = "127.0.0.1" }
api_key = { required = true, secret = true }
"#,
            Path::new("."),
        )
        .unwrap()
    }

    #[test]
    fn environment_wins_over_defaults() {
        let app = AppVariables::resolve(&manifest(), |name| match name {
            "SPIN_VARIABLE_API_KEY" => Some("k".into()),
            "SPIN_VARIABLE_DB_HOST" => Some("db".into()),
            _ => None,
        })
        .unwrap();

        assert_eq!(app.expand("mysql://{{ db_host }}:3306").unwrap(), "mysql://db:3306");
    }

    #[test]
    fn missing_required_variable_names_env_var() {
        let error = AppVariables::resolve(&manifest(), |_| None).unwrap_err();

        assert!(error.to_string().contains("SPIN_VARIABLE_API_KEY"), "{error}");
    }

    #[test]
    fn component_lookups_report_invalid_and_undefined_names() {
        let app = AppVariables::resolve(&manifest(), |_| Some("x".into())).unwrap();
        let templates = BTreeMap::from([("key".to_string(), "{{ api_key }}".to_string())]);
        let vars = ComponentVariables::resolve(&app, &templates).unwrap();

        assert_eq!(vars.get("key").unwrap(), "x");
        assert!(matches!(vars.get("Key"), Err(LookupError::InvalidName(_))));
        assert!(matches!(vars.get("other"), Err(LookupError::Undefined(_))));
    }
}
