//! The runtime config file (`--runtime-config-file`), in Spin's format. Only
//! the sections this host implements are accepted; others are refused by name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

#[derive(Debug, Default)]
pub struct RuntimeConfig {
    pub key_value_stores: BTreeMap<String, KvStoreConfig>,
    /// Extra `type = "env"` providers, consulted after the default one.
    pub env_providers: Vec<EnvProvider>,
}

/// Spin's environment variables provider: `<PREFIX>_<NAME>` from the process
/// environment, then from a dotenv file.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvProvider {
    pub prefix: String,
    pub dotenv_path: Option<PathBuf>,
}

impl Default for EnvProvider {
    /// `SPIN_VARIABLE_<NAME>`, then `.env` in the working directory, as in Spin.
    fn default() -> Self {
        Self {
            prefix: "SPIN_VARIABLE".to_string(),
            dotenv_path: Some(PathBuf::from(".env")),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum KvStoreConfig {
    /// Spin's SQLite store; `None` means the default file in the state directory.
    Spin { path: Option<PathBuf> },
    Redis { url: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    key_value_store: BTreeMap<String, RawKvStore>,
    #[serde(default)]
    variables_provider: Vec<RawVariablesProvider>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVariablesProvider {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    dotenv_path: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum RawKvStore {
    Spin {
        #[serde(default)]
        path: Option<PathBuf>,
    },
    Redis {
        url: String,
    },
}

impl RuntimeConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read runtime config {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).with_context(|| format!("invalid runtime config {}", path.display()))
    }

    pub fn parse(text: &str, base: &Path) -> Result<Self> {
        let table: toml::Table = toml::from_str(text)?;
        for key in table.keys() {
            if key != "key_value_store" && key != "variables_provider" {
                bail!("section `{key}` is not supported by this host (supported: key_value_store, variables_provider)");
            }
        }
        let raw: RawConfig = toml::from_str(text)?;
        let key_value_stores = raw
            .key_value_store
            .into_iter()
            .map(|(label, store)| {
                let config = match store {
                    RawKvStore::Spin { path } => KvStoreConfig::Spin {
                        path: path.map(|p| base.join(p)),
                    },
                    RawKvStore::Redis { url } => KvStoreConfig::Redis { url },
                };
                (label, config)
            })
            .collect();
        let env_providers = raw
            .variables_provider
            .into_iter()
            .map(|provider| match provider.kind.as_str() {
                "env" => Ok(EnvProvider {
                    prefix: provider.prefix.unwrap_or_else(|| "SPIN_VARIABLE".to_string()),
                    dotenv_path: provider.dotenv_path.map(|p| base.join(p)),
                }),
                other => bail!(
                    "variables provider `{other}` is not supported by this host (supported: env); \
                     set SPIN_VARIABLE_<NAME> instead"
                ),
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            key_value_stores,
            env_providers,
        })
    }

    /// Returns the store for `label`. As in Spin, `default` falls back to SQLite.
    pub fn store_for(&self, label: &str) -> Option<KvStoreConfig> {
        match self.key_value_stores.get(label) {
            Some(config) => Some(config.clone()),
            None if label == "default" => Some(KvStoreConfig::Spin { path: None }),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_spin_and_redis_stores() {
        let config = RuntimeConfig::parse(
            r#"
[key_value_store.cache]
type = "redis"
url = "redis://127.0.0.1:6379/1"

[key_value_store.local]
type = "spin"
path = "data/kv.db"
"#,
            Path::new("/app"),
        )
        .unwrap();

        assert_eq!(
            config.store_for("cache"),
            Some(KvStoreConfig::Redis { url: "redis://127.0.0.1:6379/1".into() })
        );
        assert_eq!(
            config.store_for("local"),
            Some(KvStoreConfig::Spin { path: Some("/app/data/kv.db".into()) })
        );
        assert_eq!(config.store_for("default"), Some(KvStoreConfig::Spin { path: None }));
        assert_eq!(config.store_for("other"), None);
    }

    #[test]
    fn unsupported_sections_are_named() {
        let error = RuntimeConfig::parse("[[config_provider]]\ntype = \"vault\"\n", Path::new(".")).unwrap_err();

        assert!(error.to_string().contains("config_provider"), "{error}");
    }

    #[test]
    fn env_providers_parse_and_vault_is_rejected() {
        let config = RuntimeConfig::parse(
            "[[variables_provider]]\ntype = \"env\"\nprefix = \"APP\"\ndotenv_path = \"local.env\"\n",
            Path::new("/app"),
        )
        .unwrap();
        let vault = RuntimeConfig::parse("[[variables_provider]]\ntype = \"vault\"\nurl = \"x\"\n", Path::new("."));

        assert_eq!(
            config.env_providers,
            [EnvProvider { prefix: "APP".into(), dotenv_path: Some("/app/local.env".into()) }]
        );
        assert!(vault.is_err());
    }
}
