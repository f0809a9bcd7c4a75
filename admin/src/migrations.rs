//! Migration files and the plan of what to apply. A component's migrations
//! live in `infra/mysql/<component>/` as `NNNN_description.sql`, applied in
//! version order and recorded in the component's `schema_migrations` table
//! with a SHA-256 checksum, so an edited or removed migration is caught.

use std::path::Path;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    pub version: u32,
    pub name: String,
    pub sql: String,
    pub checksum: String,
}

/// A migration recorded as applied in `schema_migrations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub version: u32,
    pub checksum: String,
}

pub fn checksum(sql: &str) -> String {
    Sha256::digest(sql.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads the migrations of one directory, sorted by version. A missing
/// directory has none. Files that are not `.sql` are ignored; a `.sql` file
/// without a `NNNN_` version, or two files with one version, is an error.
pub fn discover(dir: &Path) -> Result<Vec<Migration>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut migrations = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        let Some(stem) = file_name.strip_suffix(".sql") else { continue };
        let sql = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        migrations.push(parse(stem, sql).with_context(|| format!("bad migration file {}", path.display()))?);
    }
    migrations.sort_by_key(|m| m.version);
    if let Some(pair) = migrations.windows(2).find(|pair| pair[0].version == pair[1].version) {
        bail!("two migrations in {} have version {}", dir.display(), pair[0].version);
    }
    Ok(migrations)
}

fn parse(stem: &str, sql: String) -> Result<Migration> {
    let (version, name) = stem
        .split_once('_')
        .filter(|(v, n)| v.len() == 4 && v.bytes().all(|b| b.is_ascii_digit()) && !n.is_empty())
        .context("the name must be NNNN_description.sql")?;
    let checksum = checksum(&sql);
    Ok(Migration { version: version.parse()?, name: name.to_string(), sql, checksum })
}

/// Lists what to apply, in order. Fails when an applied migration's file is
/// gone or changed, because applied migrations are history and are never edited.
pub fn pending<'a>(available: &'a [Migration], applied: &[Applied]) -> Result<Vec<&'a Migration>> {
    for done in applied {
        match available.iter().find(|m| m.version == done.version) {
            None => bail!("migration {:04} is recorded as applied but its file is missing", done.version),
            Some(m) if m.checksum != done.checksum => {
                bail!("migration {:04}_{} was changed after it was applied; add a new migration instead", m.version, m.name)
            }
            Some(_) => {}
        }
    }
    Ok(available.iter().filter(|m| !applied.iter().any(|a| a.version == m.version)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn migration(version: u32, sql: &str) -> Migration {
        Migration { version, name: format!("step{version}"), sql: sql.into(), checksum: checksum(sql) }
    }

    #[test]
    fn pending_keeps_version_order() {
        let available = [migration(1, "a"), migration(2, "b"), migration(3, "c")];
        let applied = [Applied { version: 1, checksum: checksum("a") }];

        let versions: Vec<u32> = pending(&available, &applied).unwrap().iter().map(|m| m.version).collect();

        assert_eq!(versions, [2, 3]);
    }

    #[test]
    fn pending_rejects_edited_history() {
        let available = [migration(1, "a changed")];

        let changed = pending(&available, &[Applied { version: 1, checksum: checksum("a") }]).unwrap_err();
        let missing = pending(&available, &[Applied { version: 2, checksum: checksum("b") }]).unwrap_err();

        assert!(changed.to_string().contains("was changed"), "{changed}");
        assert!(missing.to_string().contains("file is missing"), "{missing}");
    }

    #[test]
    fn file_name_needs_version() {
        assert_eq!(parse("0007_add_index", String::new()).unwrap().version, 7);
        assert!(parse("7_add_index", String::new()).is_err());
        assert!(parse("0007", String::new()).is_err());
        assert!(parse("abcd_x", String::new()).is_err());
    }

    #[test]
    fn repository_migrations_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/mysql/profiles");

        let migrations = discover(&root).unwrap();

        assert_eq!(migrations.first().map(|m| m.version), Some(1));
    }
}
