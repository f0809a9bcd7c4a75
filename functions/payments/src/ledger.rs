//! The double-entry ledger. Every money movement is one transaction whose
//! entries sum to zero per currency, written with the balances it changes in
//! one database transaction. Wallets (one per user and currency) can never
//! go below zero: the code checks it under a row lock, and a `CHECK`
//! constraint refuses it as well. System accounts (`provider_clearing`,
//! `refunds_pending`) exist once per currency and may go negative: the
//! clearing account's balance is minus what the provider has paid in.

use serde_json::{Value, json};
use shared::ApiError;
use shared::db::{DbError, Statements, Tx};
use shared::params;

pub const WALLET: &str = "wallet";
pub const PROVIDER_CLEARING: &str = "provider_clearing";
pub const REFUNDS_PENDING: &str = "refunds_pending";

/// An account row, locked for the transaction that moves money through it.
struct Account {
    id: String,
    balance: i64,
}

/// Locks an account. A missing one is created at zero first when `create`,
/// and is `None` otherwise. The lock is taken by `SELECT … FOR UPDATE`
/// before any insert: `INSERT IGNORE` on an existing row would take a shared
/// lock that two concurrent movements then both try to upgrade, a deadlock.
async fn lock_account(tx: &Tx<'_>, kind: &str, user_id: &str, currency: &str, create: bool) -> Result<Option<Account>, DbError> {
    const LOCK: &str = "SELECT id, balance FROM accounts WHERE kind = ? AND user_id = ? AND currency = ? FOR UPDATE";
    if let Some(row) = tx.query_one(LOCK, params![kind, user_id, currency]).await? {
        return Ok(Some(Account { id: row.get("id")?, balance: row.get("balance")? }));
    }
    if !create {
        return Ok(None);
    }
    tx.execute(
        "INSERT IGNORE INTO accounts (id, kind, user_id, currency, balance, created_at) VALUES (?, ?, ?, ?, 0, ?)",
        params![shared::ids::uuid_v7(), kind, user_id, currency, shared::time::now_micros()],
    )
    .await?;
    let row = tx
        .query_one(LOCK, params![kind, user_id, currency])
        .await?
        .ok_or_else(|| DbError::decode("the account just written is missing".into()))?;
    Ok(Some(Account { id: row.get("id")?, balance: row.get("balance")? }))
}

/// One side of a movement: which account, by kind and owner.
pub struct Side<'a> {
    pub kind: &'static str,
    pub user_id: &'a str,
}

/// Moves `amount` (minor units, positive) of `currency` from one account to
/// another as one ledger transaction of kind `kind`. The two accounts are
/// locked in a fixed order (by kind, then owner), so two movements between
/// the same accounts cannot deadlock. Returns `Ok(false)`, writing nothing,
/// when the source is a wallet without enough money.
pub async fn transfer(
    tx: &Tx<'_>,
    kind: &str,
    payment_id: &str,
    from: Side<'_>,
    to: Side<'_>,
    amount: i64,
    currency: &str,
) -> Result<bool, ApiError> {
    // A wallet that does not exist has no money, so it is never created to pay.
    let create_source = from.kind != WALLET;
    let from_first = (from.kind, from.user_id) <= (to.kind, to.user_id);
    let (source, target) = if from_first {
        let source = lock_account(tx, from.kind, from.user_id, currency, create_source).await?;
        (source, lock_account(tx, to.kind, to.user_id, currency, true).await?)
    } else {
        let target = lock_account(tx, to.kind, to.user_id, currency, true).await?;
        (lock_account(tx, from.kind, from.user_id, currency, create_source).await?, target)
    };
    let (Some(source), Some(target)) = (source, target) else { return Ok(false) };
    if from.kind == WALLET && source.balance < amount {
        return Ok(false);
    }

    let transaction_id = shared::ids::uuid_v7();
    tx.execute(
        "INSERT INTO ledger_transactions (id, kind, payment_id, created_at) VALUES (?, ?, ?, ?)",
        params![&transaction_id, kind, payment_id, shared::time::now_micros()],
    )
    .await?;
    tx.execute(
        "INSERT INTO ledger_entries (transaction_id, account_id, currency, amount) VALUES (?, ?, ?, ?), (?, ?, ?, ?)",
        params![&transaction_id, &source.id, currency, -amount, &transaction_id, &target.id, currency, amount],
    )
    .await?;
    tx.execute(
        "UPDATE accounts SET balance = balance + IF(id = ?, ?, ?) WHERE id IN (?, ?)",
        params![&source.id, -amount, amount, &source.id, &target.id],
    )
    .await?;
    Ok(true)
}

/// Reads a user's wallet balances, by currency.
pub async fn wallet(db: &impl Statements, user_id: &str) -> Result<Vec<(String, i64)>, DbError> {
    let rows = db
        .query(
            "SELECT currency, balance FROM accounts WHERE kind = 'wallet' AND user_id = ? ORDER BY currency",
            params![user_id],
        )
        .await?;
    rows.iter().map(|row| Ok((row.get("currency")?, row.get("balance")?))).collect()
}

/// The maximum number of problems of each kind a check lists.
const LISTED: u32 = 100;

/// Verifies the ledger's invariants: every transaction's entries sum to zero
/// per currency, every account's balance equals the sum of its entries, no
/// wallet is negative, and all entries together sum to zero per currency.
/// Five statements, each a scan of its table.
// NOTE: full scans; past a few million entries this belongs in a batch job.
pub async fn check(db: &impl Statements) -> Result<Value, ApiError> {
    let unbalanced = db
        .query(
            "SELECT transaction_id, currency, CAST(SUM(amount) AS SIGNED) AS total FROM ledger_entries
             GROUP BY transaction_id, currency HAVING total <> 0 LIMIT ?",
            params![LISTED],
        )
        .await?;
    let mismatched = db
        .query(
            "SELECT a.id, a.balance, CAST(COALESCE(SUM(e.amount), 0) AS SIGNED) AS total
             FROM accounts a LEFT JOIN ledger_entries e ON e.account_id = a.id
             GROUP BY a.id, a.balance HAVING total <> a.balance LIMIT ?",
            params![LISTED],
        )
        .await?;
    let negative = db
        .query("SELECT id FROM accounts WHERE kind = 'wallet' AND balance < 0 LIMIT ?", params![LISTED])
        .await?;
    let sums = db
        .query("SELECT currency, CAST(SUM(amount) AS SIGNED) AS total FROM ledger_entries GROUP BY currency", Vec::new())
        .await?;
    let transactions: i64 = db
        .query_one("SELECT COUNT(*) AS n FROM ledger_transactions", Vec::new())
        .await?
        .map(|row| row.get("n"))
        .transpose()?
        .unwrap_or(0);

    let unbalanced: Vec<Value> = unbalanced
        .iter()
        .map(|row| Ok(json!({ "transaction_id": row.get::<String>("transaction_id")?, "currency": row.get::<String>("currency")?, "sum": row.get::<i64>("total")? })))
        .collect::<Result<_, DbError>>()?;
    let mismatched: Vec<Value> = mismatched
        .iter()
        .map(|row| Ok(json!({ "account_id": row.get::<String>("id")?, "balance": row.get::<i64>("balance")?, "entries_sum": row.get::<i64>("total")? })))
        .collect::<Result<_, DbError>>()?;
    let negative: Vec<String> = negative.iter().map(|row| row.get("id")).collect::<Result<_, DbError>>()?;
    let mut sums_by_currency = serde_json::Map::new();
    let mut totals_zero = true;
    for row in &sums {
        let total: i64 = row.get("total")?;
        totals_zero &= total == 0;
        sums_by_currency.insert(row.get("currency")?, total.into());
    }
    let balanced = unbalanced.is_empty() && mismatched.is_empty() && negative.is_empty() && totals_zero;
    Ok(json!({
        "balanced": balanced,
        "transactions": transactions,
        "entries_sum_by_currency": sums_by_currency,
        "unbalanced_transactions": unbalanced,
        "mismatched_accounts": mismatched,
        "negative_wallets": negative,
    }))
}
