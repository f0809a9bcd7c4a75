//! Requests that several test files make: payments calls with a fresh
//! `Idempotency-Key`, a wallet funded through the fake payment provider, and
//! the notification preferences every new user starts with.

use serde_json::{Value, json};

use crate::fake_mollie::FakeMollie;
use crate::{Host, Reply, TestUser, unique_name};

/// Posts JSON as `user` with a new `Idempotency-Key`, as the payments routes require.
pub async fn post_with_new_key(host: &Host, path: &str, user: &TestUser, body: &Value) -> Reply {
    let authorization = format!("Token {}", user.token);
    let key = unique_name("key");
    let headers = [
        ("content-type", "application/json"),
        ("authorization", authorization.as_str()),
        ("idempotency-key", key.as_str()),
    ];
    host.request("POST", path, &headers, body.to_string()).await
}

/// Has the fake provider mark the top-up that `created` (a reply to
/// `POST /api/wallet/top-ups`) started as paid, and delivers its webhook.
/// Returns the top-up's payment id.
pub async fn settle_paid(mollie: &FakeMollie, created: &Reply) -> String {
    assert_eq!(created.status, 201, "the top-up request failed: {}", created.text());
    let payment_id = created.json()["top_up"]["id"].as_str().expect("the top-up has an id").to_string();
    let payments = mollie.payments();
    let provider_payment = payments.iter().find(|payment| payment["metadata"]["payment_id"] == payment_id.as_str());
    let provider_id = provider_payment
        .and_then(|payment| payment["id"].as_str())
        .unwrap_or_else(|| panic!("the provider has no payment for top-up {payment_id}: {payments:?}"));

    mollie.set_payment_status(provider_id, "paid");
    let webhook_status = mollie.send_webhook(provider_id).await;
    assert_eq!(webhook_status, 200, "the webhook for the paid top-up got {webhook_status}");
    payment_id
}

/// Puts `amount_minor` euro cents in the user's wallet: a top-up that the
/// fake provider marks paid, then its webhook. Returns the payment id.
pub async fn fund_wallet(host: &Host, mollie: &FakeMollie, user: &TestUser, amount_minor: i64) -> String {
    let body = json!({"top_up": {"amount_minor": amount_minor, "currency": "EUR"}});
    let created = post_with_new_key(host, "/api/wallet/top-ups", user, &body).await;
    settle_paid(mollie, &created).await
}

/// Returns the notification preferences a new user has: everything in the
/// inbox, and email for comments, tips and top-ups.
pub fn default_preferences() -> Value {
    json!({
        "follow": {"in_app": true, "email": false},
        "comment": {"in_app": true, "email": true},
        "favorite": {"in_app": true, "email": false},
        "tip": {"in_app": true, "email": true},
        "top_up": {"in_app": true, "email": true},
    })
}
