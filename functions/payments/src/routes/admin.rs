//! `GET /api/admin/ledger/check` (admin): verifies the ledger's invariants
//! (see `ledger::check`).

use serde_json::json;
use shared::ApiError;
use shared::auth::{ROLE_ADMIN, require_role};
use shared::http::{Response, json as json_response, no_store};
use spin_sdk::http::{Request, StatusCode};

use crate::app::App;
use crate::ledger;

pub async fn check_ledger(app: &App<'_>, request: Request) -> Result<Response, ApiError> {
    let caller = app.caller(request.headers()).await?;
    require_role(&caller, ROLE_ADMIN)?;
    let report = ledger::check(&app.db).await?;
    Ok(no_store(json_response(StatusCode::OK, &json!({ "ledger": report }))))
}
