//! Helpers the OWASP modules share: the application with the fake payment
//! provider, payments requests, and reading replies and rows.

use conduit_tests::fake_mollie::FakeMollie;
use conduit_tests::{Host, Reply, TestUser, admin_db, app_options, fund_wallet};

pub use conduit_tests::post_with_new_key;
use mysql_async::prelude::{FromRow, Queryable};

/// The host and the fake provider its payments component calls. The host
/// drops first, so it stops before the fake closes its connections.
pub struct App {
    pub host: Host,
    pub mollie: FakeMollie,
}

impl App {
    pub fn start() -> Self {
        let mollie = FakeMollie::start();
        let options = app_options()
            .env("SPIN_VARIABLE_PAYMENT_PROVIDER_URL", mollie.base_url())
            .env("SPIN_VARIABLE_PAYMENT_PROVIDER_API_KEY", mollie.api_key());
        let host = Host::start(options);
        mollie.set_webhook_target(&host.url(""));
        App { host, mollie }
    }

    /// Puts `amount_minor` euro cents in the user's wallet through the fake
    /// provider. Returns the payment id.
    pub async fn fund(&self, user: &TestUser, amount_minor: i64) -> String {
        fund_wallet(&self.host, &self.mollie, user, amount_minor).await
    }
}

/// Reads the user's EUR balance in minor units; a wallet without one reads 0.
pub async fn eur_balance(host: &Host, user: &TestUser) -> i64 {
    let reply = host.send("GET", "/api/wallet", Some(&user.token)).await;
    assert_eq!(
        reply.status,
        200,
        "reading the wallet of {} failed: {}",
        user.username,
        reply.text()
    );
    let body = reply.json();
    let balances = body["wallet"]["balances"].as_array().cloned().unwrap_or_default();
    let eur = balances.iter().find(|balance| balance["currency"] == "EUR");
    match eur {
        Some(balance) => balance["amount_minor"]
            .as_i64()
            .unwrap_or_else(|| panic!("the EUR balance is not an integer: {body}")),
        None => 0,
    }
}

/// Returns the messages of `errors.<field>` in the error envelope.
pub fn field_errors(reply: &Reply, field: &str) -> Vec<String> {
    serde_json::from_value(reply.json()["errors"][field].clone()).unwrap_or_default()
}

/// Runs a statement as MariaDB's root user and returns its rows.
pub async fn query<T: FromRow + Send + 'static>(statement: &str, params: Vec<String>) -> Vec<T> {
    let mut db = admin_db().await;
    let rows = db.exec(statement, params).await.unwrap();
    db.disconnect().await.unwrap();
    rows
}

/// Serialises the tests that queue emails with the ones that run
/// notifications' dispatch. A dispatch run sends every due email of the
/// shared test schema, so it could send another test's email, and clear the
/// token from its row, while that test still reads it.
pub async fn email_dispatch_lock() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// Waits for the next fixed window of `window` seconds unless at least
/// `needed` seconds are left in the current one, so a test's requests share
/// one rate-limit window.
pub async fn wait_for_room_in_window(window: u64, needed: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let left = window - now % window;
    if left < needed {
        tokio::time::sleep(std::time::Duration::from_millis(left * 1000 + 100)).await;
    }
}
