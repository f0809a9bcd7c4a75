//! The subset of Spin's manifest v2 (`spin.toml`) that this host runs: the
//! application, its variables, HTTP triggers and components. Anything the host
//! cannot honour is refused at start-up rather than silently ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// A parsed and validated application manifest.
#[derive(Debug)]
pub struct Manifest {
    pub name: String,
    pub version: Option<String>,
    /// Directory the manifest lives in; relative paths resolve against it.
    pub base_dir: PathBuf,
    pub variables: BTreeMap<String, AppVariable>,
    pub triggers: Vec<HttpTrigger>,
    pub components: BTreeMap<String, Component>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppVariable {
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub required: bool,
    /// Secret values are never logged; the host logs no variable values at all.
    #[serde(default, rename = "secret")]
    pub _secret: bool,
    #[serde(default, rename = "description")]
    pub _description: Option<String>,
}

#[derive(Debug, Clone)]
pub struct HttpTrigger {
    /// `None` for `route = { private = true }`: reachable only by chaining.
    pub route: Option<String>,
    pub component: String,
}

#[derive(Debug)]
pub struct Component {
    pub id: String,
    pub source: PathBuf,
    pub allowed_outbound_hosts: Vec<String>,
    pub key_value_stores: Vec<String>,
    /// Component variables: name to template (may contain `{{ app_var }}`).
    pub variables: BTreeMap<String, String>,
    pub environment: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    spin_manifest_version: u32,
    application: RawApplication,
    #[serde(default)]
    variables: BTreeMap<String, AppVariable>,
    #[serde(default)]
    trigger: RawTriggers,
    #[serde(default)]
    component: BTreeMap<String, RawComponent>,
}

#[derive(Deserialize)]
struct RawApplication {
    name: String,
    #[serde(default)]
    version: Option<String>,
    // authors, description and the rest are informational here.
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTriggers {
    #[serde(default)]
    http: Vec<RawHttpTrigger>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpTrigger {
    #[serde(default)]
    id: Option<String>,
    route: RawRoute,
    component: String,
    #[serde(default)]
    executor: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawRoute {
    Pattern(String),
    Private { private: bool },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponent {
    source: toml::Value,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    key_value_stores: Vec<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    #[serde(default)]
    files: Vec<toml::Value>,
    #[serde(default)]
    build: Option<toml::Value>,
    #[serde(default)]
    dependencies: Option<toml::Value>,
}

impl Manifest {
    /// Reads and validates `path`. Component sources must exist.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read manifest {}", path.display()))?;
        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let manifest = Self::parse(&text, &base_dir)
            .with_context(|| format!("invalid manifest {}", path.display()))?;
        for component in manifest.components.values() {
            if !component.source.is_file() {
                bail!(
                    "component `{}`: source {} does not exist; build the components first",
                    component.id,
                    component.source.display()
                );
            }
        }
        Ok(manifest)
    }

    /// Parses manifest text; sources resolve against `base_dir` but are not checked.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Self> {
        let raw: RawManifest = toml::from_str(text)?;
        if raw.spin_manifest_version != 2 {
            bail!(
                "spin_manifest_version {} is not supported; this host runs manifest version 2",
                raw.spin_manifest_version
            );
        }

        for (name, variable) in &raw.variables {
            check_variable_name(name).with_context(|| format!("application variable `{name}`"))?;
            if variable.required && variable.default.is_some() {
                bail!("application variable `{name}` cannot be both required and have a default");
            }
            if !variable.required && variable.default.is_none() {
                bail!("application variable `{name}` needs either `required = true` or a default");
            }
        }

        let mut components = BTreeMap::new();
        for (id, raw_component) in raw.component {
            let component = Component::from_raw(&id, raw_component, base_dir)
                .with_context(|| format!("component `{id}`"))?;
            components.insert(id, component);
        }

        let mut triggers = Vec::new();
        for trigger in raw.trigger.http {
            if trigger.executor.is_some() {
                bail!(
                    "trigger for `{}`: only the default wasi:http executor is supported",
                    trigger.component
                );
            }
            let _ = trigger.id;
            if !components.contains_key(&trigger.component) {
                bail!(
                    "an HTTP trigger names component `{}`, which the manifest does not define",
                    trigger.component
                );
            }
            let route = match trigger.route {
                RawRoute::Pattern(route) => Some(route),
                RawRoute::Private { private: true } => None,
                RawRoute::Private { private: false } => bail!(
                    "trigger for `{}`: route must be a pattern or `{{ private = true }}`",
                    trigger.component
                ),
            };
            triggers.push(HttpTrigger {
                route,
                component: trigger.component,
            });
        }

        for component in components.values() {
            component.check_chaining_targets(&components)?;
        }

        Ok(Self {
            name: raw.application.name,
            version: raw.application.version,
            base_dir: base_dir.to_path_buf(),
            variables: raw.variables,
            triggers,
            components,
        })
    }
}

impl Component {
    fn from_raw(id: &str, raw: RawComponent, base_dir: &Path) -> Result<Self> {
        check_component_id(id)?;
        let source = match raw.source {
            toml::Value::String(path) => base_dir.join(path),
            _ => bail!("only a local file path is supported as `source`"),
        };
        if !raw.files.is_empty() {
            bail!("`files` is not supported by this host");
        }
        if raw.dependencies.is_some() {
            bail!("component dependencies are not supported by this host");
        }
        let _ = (raw.description, raw.build);
        for name in raw.variables.keys() {
            check_variable_name(name).with_context(|| format!("variable `{name}`"))?;
        }
        for host in &raw.allowed_outbound_hosts {
            crate::allowed_hosts::validate_entry(host)
                .with_context(|| format!("allowed_outbound_hosts entry {host:?}"))?;
        }
        Ok(Self {
            id: id.to_string(),
            source,
            allowed_outbound_hosts: raw.allowed_outbound_hosts,
            key_value_stores: raw.key_value_stores,
            variables: raw.variables,
            environment: raw.environment,
        })
    }

    /// Literal `http://<id>.spin.internal` entries must name a component of the app.
    fn check_chaining_targets(&self, components: &BTreeMap<String, Component>) -> Result<()> {
        for entry in &self.allowed_outbound_hosts {
            if let Some(target) = crate::allowed_hosts::chaining_target_of_entry(entry)
                && !components.contains_key(&target)
            {
                bail!(
                    "component `{}` allows service chaining to `{target}`, which is not a component of this application",
                    self.id
                );
            }
        }
        Ok(())
    }
}

/// Component ids follow Spin's rule: lowercase words of letters and digits
/// joined by single dashes, starting with a letter.
fn check_component_id(id: &str) -> Result<()> {
    let valid = id
        .split('-')
        .all(|word| !word.is_empty() && word.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()))
        && id.starts_with(|c: char| c.is_ascii_lowercase());
    if !valid {
        bail!("component id {id:?} must be lowercase letters and digits in dash-separated words, starting with a letter");
    }
    Ok(())
}

/// Variable names follow Spin's rule: lowercase letters, digits and single
/// underscores, starting with a letter.
pub fn check_variable_name(name: &str) -> Result<()> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.contains("__")
        && !name.ends_with('_');
    if !valid {
        bail!(
            "{name:?} must be lowercase letters, digits and single underscores, starting with a letter"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
spin_manifest_version = 2
[application]
name = "demo"
[variables]
token = { required = true, secret = true }
[[trigger.http]]
route = "/a/..."
component = "alpha"
[[trigger.http]]
route = { private = true }
component = "beta"
[component.alpha]
source = "alpha.wasm"
allowed_outbound_hosts = ["http://beta.spin.internal"]
[component.alpha.variables]
token = "{{ token }}"
[component.beta]
source = "beta.wasm"
"#;

    #[test]
    fn manifest_parses_routes_and_variables() {
        let manifest = Manifest::parse(MINIMAL, Path::new("/app")).unwrap();

        assert_eq!(manifest.name, "demo");
        assert_eq!(manifest.triggers.len(), 2);
        assert_eq!(manifest.triggers[0].route.as_deref(), Some("/a/..."));
        assert_eq!(manifest.triggers[1].route, None);
        assert_eq!(manifest.components["alpha"].source, Path::new("/app/alpha.wasm"));
        assert!(manifest.variables["token"].required);
    }

    #[test]
    fn manifest_rejects_unknown_trigger_component() {
        let text = MINIMAL.replace("component = \"beta\"", "component = \"gamma\"");

        let error = Manifest::parse(&text, Path::new("/app")).unwrap_err();

        assert!(format!("{error:#}").contains("`gamma`"), "{error:#}");
    }

    #[test]
    fn manifest_rejects_unknown_chaining_target() {
        let text = MINIMAL.replace("http://beta.spin.internal", "http://gamma.spin.internal");

        let error = Manifest::parse(&text, Path::new("/app")).unwrap_err();

        assert!(format!("{error:#}").contains("not a component of this application"), "{error:#}");
    }

    #[test]
    fn manifest_rejects_variable_without_value() {
        let text = MINIMAL.replace("{ required = true, secret = true }", "{ secret = true }");

        assert!(Manifest::parse(&text, Path::new("/app")).is_err());
    }

    #[test]
    fn manifest_rejects_unknown_fields() {
        let text = MINIMAL.replace("[component.beta]", "[component.beta]\nexecutable = true");

        assert!(Manifest::parse(&text, Path::new("/app")).is_err());
    }
}
