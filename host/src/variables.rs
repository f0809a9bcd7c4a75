//! Application and component variables, resolved as Spin's environment
//! provider does: `SPIN_VARIABLE_<NAME>` from the process environment, then
//! from `.env`, then the manifest default. The host logs no variable values,
//! so values of variables marked `secret` never reach a log line.

use std::collections::BTreeMap;

use std::collections::HashMap;

use anyhow::{Context, Result, bail};

use crate::manifest::Manifest;
use crate::runtime_config::EnvProvider;

/// Looks variables up through Spin's environment providers, in order.
pub struct EnvLookup {
    providers: Vec<(EnvProvider, HashMap<String, String>)>,
}

impl EnvLookup {
    /// Reads each provider's dotenv file once; a missing file is empty, as in Spin.
    pub fn new(providers: Vec<EnvProvider>) -> Result<Self> {
        let providers = providers
            .into_iter()
            .map(|provider| {
                let dotenv = match &provider.dotenv_path {
                    Some(path) if path.exists() => dotenvy::from_path_iter(path)
                        .and_then(|lines| lines.collect::<Result<HashMap<_, _>, _>>())
                        .with_context(|| format!("invalid dotenv file {}", path.display()))?,
                    _ => HashMap::new(),
                };
                Ok((provider, dotenv))
            })
            .collect::<Result<_>>()?;
        Ok(Self { providers })
    }

    /// Returns the first value any provider has for `name`, and where to set it otherwise.
    pub fn get(&self, name: &str, env: &impl Fn(&str) -> Option<String>) -> (Option<String>, String) {
        let mut first_key = None;
        for (provider, dotenv) in &self.providers {
            let key = format!("{}_{}", provider.prefix, name.to_ascii_uppercase());
            if let Some(value) = env(&key).or_else(|| dotenv.get(&key).cloned()) {
                return (Some(value), key);
            }
            first_key.get_or_insert(key);
        }
        (None, first_key.unwrap_or_else(|| env_name(name)))
    }
}

/// Resolved application-level variables.
#[derive(Debug, Default)]
pub struct AppVariables {
    values: BTreeMap<String, String>,
}

impl AppVariables {
    /// Resolves every application variable; a required one with no value is an error.
    pub fn resolve(manifest: &Manifest, lookup: &EnvLookup, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut values = BTreeMap::new();
        let mut missing = Vec::new();
        for (name, variable) in &manifest.variables {
            let (found, env_name) = lookup.get(name, &env);
            match found.or_else(|| variable.default.clone()) {
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

    /// Returns an application variable's resolved value, if the manifest declares it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
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

    fn default_lookup() -> EnvLookup {
        EnvLookup::new(vec![EnvProvider { prefix: "SPIN_VARIABLE".into(), dotenv_path: None }]).unwrap()
    }

    #[test]
    fn environment_wins_over_defaults() {
        let app = AppVariables::resolve(&manifest(), &default_lookup(), |name| match name {
            "SPIN_VARIABLE_API_KEY" => Some("k".into()),
            "SPIN_VARIABLE_DB_HOST" => Some("db".into()),
            _ => None,
        })
        .unwrap();

        assert_eq!(app.expand("mysql://{{ db_host }}:3306").unwrap(), "mysql://db:3306");
    }

    #[test]
    fn missing_required_variable_names_env_var() {
        let error = AppVariables::resolve(&manifest(), &default_lookup(), |_| None).unwrap_err();

        assert!(error.to_string().contains("SPIN_VARIABLE_API_KEY"), "{error}");
    }

    #[test]
    fn component_lookups_report_invalid_and_undefined_names() {
        let app = AppVariables::resolve(&manifest(), &default_lookup(), |_| Some("x".into())).unwrap();
        let templates = BTreeMap::from([("key".to_string(), "{{ api_key }}".to_string())]);
        let vars = ComponentVariables::resolve(&app, &templates).unwrap();

        assert_eq!(vars.get("key").unwrap(), "x");
        assert!(matches!(vars.get("Key"), Err(LookupError::InvalidName(_))));
        assert!(matches!(vars.get("other"), Err(LookupError::Undefined(_))));
    }

    #[test]
    fn dotenv_values_fill_in_after_the_environment() {
        let dir = std::env::temp_dir().join(format!("dotenv-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(".env");
        std::fs::write(&path, "# local secrets\nSPIN_VARIABLE_API_KEY=from-file\nSPIN_VARIABLE_DB_HOST=\"file-db\"\n").unwrap();
        let lookup = EnvLookup::new(vec![EnvProvider { prefix: "SPIN_VARIABLE".into(), dotenv_path: Some(path) }]).unwrap();

        let app = AppVariables::resolve(&manifest(), &lookup, |name| {
            (name == "SPIN_VARIABLE_DB_HOST").then(|| "env-db".to_string())
        })
        .unwrap();

        assert_eq!(app.expand("{{ api_key }}").unwrap(), "from-file");
        assert_eq!(app.expand("{{ db_host }}").unwrap(), "env-db");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
