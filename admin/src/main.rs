//! `conduit-admin`: operator commands that need database admin rights.
//!
//! `migrate` gives each component its schema (`<prefix>_<component>`) and its
//! runtime user (same name) with only `SELECT, INSERT, UPDATE, DELETE` on
//! that schema, then applies the component's pending migrations from
//! `infra/mysql/<component>/`. It is safe to run again: what exists is kept,
//! applied migrations are skipped (and checked against their checksums),
//! passwords and grants are reset to the configured values. Runs are
//! serialised by a server lock.
//!
//! `grant-admin` gives an existing user the `admin` role (see `grant.rs`).
//! Registration never grants it, and admins grant it further through the
//! profiles API.
//!
//! `reset` drops the schemas and users of a test prefix, for a fresh test run.
//!
//! `public-key` prints the public half of the user-token key, which the
//! components that only verify tokens get instead of the key itself.
//!
//! Runtime passwords are the components' Spin variables
//! (`<component>_db_password`), read like the host reads them:
//! `SPIN_VARIABLE_<NAME>` from the environment, then the env file.

mod grant;
mod migrations;

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};

use migrations::{Applied, discover, pending};

/// The components that own a schema.
const COMPONENTS: [&str; 4] = ["profiles", "feed", "payments", "notifications"];
/// The rights a runtime user gets on its own schema: data, never DDL.
const RUNTIME_PRIVILEGES: &str = "SELECT, INSERT, UPDATE, DELETE";
const LOCK_NAME: &str = "conduit-admin-migrate";

#[derive(Parser)]
#[command(name = "conduit-admin", about = "Operator commands that need database admin rights")]
struct Cli {
    /// Admin connection (needs CREATE, CREATE USER, GRANT OPTION). Never printed.
    #[arg(
        long,
        global = true,
        env = "CONDUIT_ADMIN_DATABASE_URL",
        default_value = "mysql://root@127.0.0.1:3306",
        hide_env_values = true
    )]
    admin_url: String,
    /// Schema and user names are `<prefix>_<component>`; matches the `database_prefix` variable.
    #[arg(long, global = true, env = "SPIN_VARIABLE_DATABASE_PREFIX", default_value = "conduit")]
    prefix: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create schemas and runtime users, set grants, apply pending migrations.
    Migrate {
        /// Directory of the `<component>/NNNN_name.sql` files.
        #[arg(long, default_value = "infra/mysql")]
        migrations: PathBuf,
        /// Read `SPIN_VARIABLE_*` values not in the environment from this file.
        #[arg(long, default_value = ".env")]
        env_file: PathBuf,
        /// The host part of the runtime users (`'%'` is any host).
        #[arg(long, default_value = "%")]
        user_host: String,
        /// Migrate only this component (repeatable); default: the application's four.
        #[arg(long = "component")]
        components: Vec<String>,
    },
    /// Give an existing user the `admin` role (audited; bumps their token version).
    GrantAdmin {
        /// The user's id, as `users.id` in the profiles schema stores it.
        #[arg(long)]
        user_id: String,
        /// The manifest whose profiles component lists the event consumers.
        #[arg(long, default_value = "spin.toml")]
        manifest: PathBuf,
    },
    /// Print the public key (64 hex digits) that verifies tokens signed with
    /// `user_token_key`: the value of the `user_token_public_key` variable.
    /// Needs no database.
    PublicKey {
        /// Read `SPIN_VARIABLE_USER_TOKEN_KEY` from this file when the environment lacks it.
        #[arg(long, default_value = ".env")]
        env_file: PathBuf,
    },
    /// Drop every schema and runtime user of the prefix. Only for prefixes ending in `_test`.
    Reset {
        #[arg(long, default_value = "%")]
        user_host: String,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("conduit-admin: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    if let Command::PublicKey { env_file } = &cli.command {
        return print_public_key(env_file);
    }
    check_identifier("prefix", &cli.prefix)?;
    let opts = Opts::from_url(&cli.admin_url).map_err(|_| anyhow::anyhow!("--admin-url is not a valid mysql:// URL"))?;
    let target = format!("{}:{}", opts.ip_or_hostname(), opts.tcp_port());
    let mut conn = Conn::new(opts)
        .await
        .with_context(|| format!("cannot connect to the database server at {target} as admin"))?;

    let result = match cli.command {
        Command::Migrate { migrations, env_file, user_host, components } => {
            let components = if components.is_empty() {
                COMPONENTS.iter().map(|c| c.to_string()).collect()
            } else {
                components
            };
            for component in &components {
                check_identifier("component", component)?;
            }
            migrate(&mut conn, &cli.prefix, &components, &migrations, &env_file, &user_host).await
        }
        Command::GrantAdmin { user_id, manifest } => {
            let consumers = grant::event_consumers(&manifest)?;
            grant::grant_admin(&mut conn, &cli.prefix, &user_id, &consumers).await
        }
        Command::Reset { user_host } => reset(&mut conn, &cli.prefix, &user_host).await,
        Command::PublicKey { .. } => unreachable!("handled before connecting"),
    };
    let _ = conn.disconnect().await;
    result
}

async fn migrate(
    conn: &mut Conn,
    prefix: &str,
    components: &[String],
    dir: &std::path::Path,
    env_file: &std::path::Path,
    user_host: &str,
) -> Result<()> {
    let env_file_values = read_env_file(env_file)?;
    let locked: Option<i64> = conn.exec_first("SELECT GET_LOCK(?, 60)", (LOCK_NAME,)).await?;
    if locked != Some(1) {
        bail!("timed out after 60 s waiting for the lock `{LOCK_NAME}` held by another migration run; retry when it ends");
    }

    let mut outcome = Ok(());
    for component in components {
        let password = runtime_password(component, &env_file_values)?;
        outcome = migrate_component(conn, prefix, component, &password, &dir.join(component), user_host).await;
        if outcome.is_err() {
            break;
        }
    }
    conn.exec_drop("SELECT RELEASE_LOCK(?)", (LOCK_NAME,)).await?;
    outcome
}

async fn migrate_component(
    conn: &mut Conn,
    prefix: &str,
    component: &str,
    password: &str,
    dir: &std::path::Path,
    user_host: &str,
) -> Result<()> {
    let schema = format!("{prefix}_{component}");
    let user = format!("'{schema}'@'{}'", quote_host(user_host)?);
    let statements = [
        format!("CREATE DATABASE IF NOT EXISTS `{schema}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"),
        format!("CREATE USER IF NOT EXISTS {user} IDENTIFIED BY '{password}'"),
        format!("ALTER USER {user} IDENTIFIED BY '{password}'"),
        format!("REVOKE ALL PRIVILEGES, GRANT OPTION FROM {user}"),
        format!("GRANT {RUNTIME_PRIVILEGES} ON `{schema}`.* TO {user}"),
        format!(
            "CREATE TABLE IF NOT EXISTS `{schema}`.schema_migrations (
               version INT UNSIGNED NOT NULL PRIMARY KEY,
               name VARCHAR(255) NOT NULL,
               checksum CHAR(64) CHARACTER SET ascii NOT NULL,
               applied_at BIGINT NOT NULL
             ) ENGINE = InnoDB"
        ),
        format!("USE `{schema}`"),
    ];
    for statement in &statements {
        // The statements carry a password: errors name the schema, never the statement.
        conn.query_drop(statement)
            .await
            .map_err(|e| anyhow::anyhow!("setting up `{schema}` failed: {}", server_code(&e)))?;
    }

    let applied: Vec<Applied> = conn
        .query_map(format!("SELECT version, checksum FROM `{schema}`.schema_migrations ORDER BY version"), |(version, checksum)| {
            Applied { version, checksum }
        })
        .await?;
    let available = discover(dir)?;
    let to_apply = pending(&available, &applied).with_context(|| format!("schema `{schema}`"))?;
    println!("{schema}: runtime user `{schema}` and its grants set");
    if to_apply.is_empty() {
        let count = match applied.len() {
            0 if available.is_empty() => "no migrations exist yet".to_string(),
            1 => "1 migration applied earlier".to_string(),
            n => format!("{n} migrations applied earlier"),
        };
        println!("{schema}: nothing to apply ({count})");
    }
    for migration in to_apply {
        conn.query_drop(&migration.sql)
            .await
            .with_context(|| format!("{schema}: migration {:04}_{} failed", migration.version, migration.name))?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_micros() as i64;
        // Named with its schema: a prepared statement keeps the schema that was
        // current when it was first prepared, and the connection caches it.
        conn.exec_drop(
            format!("INSERT INTO `{schema}`.schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)"),
            (migration.version, &migration.name, &migration.checksum, now),
        )
        .await?;
        println!("{schema}: applied {:04}_{}", migration.version, migration.name);
    }
    Ok(())
}

async fn reset(conn: &mut Conn, prefix: &str, user_host: &str) -> Result<()> {
    if !prefix.ends_with("_test") {
        bail!("reset drops data; it only accepts prefixes ending in `_test`, not `{prefix}`");
    }
    // Every schema of the prefix, the test-only ones included.
    let pattern = format!("{}\\_%", prefix.replace('_', "\\_"));
    let schemas: Vec<String> = conn
        .exec("SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE ?", (pattern,))
        .await?;
    for schema in schemas {
        conn.query_drop(format!("DROP DATABASE IF EXISTS `{schema}`")).await?;
        conn.query_drop(format!("DROP USER IF EXISTS '{schema}'@'{}'", quote_host(user_host)?)).await?;
        println!("{schema}: dropped");
    }
    Ok(())
}

/// Describes a server error by its code, any other by its kind, never by the server's text.
fn server_code(error: &mysql_async::Error) -> String {
    match error {
        mysql_async::Error::Server(server) => format!("server error {}", server.code),
        mysql_async::Error::Io(_) => "connection error".into(),
        _ => "driver error".into(),
    }
}

fn print_public_key(env_file: &std::path::Path) -> Result<()> {
    const NAME: &str = "SPIN_VARIABLE_USER_TOKEN_KEY";
    let seed = match std::env::var(NAME) {
        Ok(seed) => seed,
        Err(_) => read_env_file(env_file)?
            .remove(NAME)
            .with_context(|| format!("{NAME} is not set (in the environment or the env file)"))?,
    };
    let public = shared::auth::public_key_hex("user_token_key", &shared::config::Secret::new(seed))?;
    println!("{public}");
    Ok(())
}

fn runtime_password(component: &str, env_file: &HashMap<String, String>) -> Result<String> {
    let name = format!("SPIN_VARIABLE_{}_DB_PASSWORD", component.to_ascii_uppercase());
    let password = std::env::var(&name)
        .ok()
        .or_else(|| env_file.get(&name).cloned())
        .with_context(|| format!("{name} is not set (in the environment or the env file)"))?;
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~');
    if password.len() < 16 || !password.chars().all(allowed) {
        bail!("{name} must be at least 16 characters of A-Z, a-z, 0-9, '-', '_', '.', '~' (it goes into a URL)");
    }
    Ok(password)
}

fn read_env_file(path: &std::path::Path) -> Result<HashMap<String, String>> {
    if !path.exists() {
        return Ok(HashMap::new());
    }
    dotenvy::from_path_iter(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .map(|item| item.with_context(|| format!("invalid line in {}", path.display())))
        .collect()
}

fn check_identifier(option: &str, value: &str) -> Result<()> {
    let valid = !value.is_empty()
        && value.len() <= 20
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid {
        bail!("--{option} must be 1 to 20 characters of a-z, 0-9 and '_', not `{value}`");
    }
    Ok(())
}

fn quote_host(host: &str) -> Result<&str> {
    if host.is_empty() || !host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '%' | '.' | '-' | ':' | '_')) {
        bail!("the user host `{host}` has characters outside a-z, 0-9, '%', '.', '-', ':', '_'");
    }
    Ok(host)
}
