//! The scheduler: every interval, a `POST` to each component's
//! `/ops/<component>/dispatch` route with the `scheduler_token` variable as
//! its bearer token, as the Kubernetes CronJob in `infra/` does in
//! production. Spin has no timer trigger, so this replaces one locally.
//!
//! Runs go through the normal router, one component after the other, and a
//! run is skipped while the previous one of the same tick is still going.

use std::sync::Arc;
use std::time::Duration;

use crate::manifest::Manifest;
use crate::server::{App, log_event};
use crate::variables::AppVariables;

/// Lists the dispatch paths the manifest routes, as `(component, path)`:
/// only the exact `/ops/<component>/dispatch` route of the component it names.
pub fn dispatch_routes(manifest: &Manifest) -> Vec<(String, String)> {
    manifest
        .triggers
        .iter()
        .filter_map(|trigger| {
            let path = format!("/ops/{}/dispatch", trigger.component);
            (trigger.route.as_deref() == Some(path.as_str())).then(|| (trigger.component.clone(), path))
        })
        .collect()
}

/// Starts the timer, unless the interval is zero, no component has a
/// dispatch route, or the application declares no `scheduler_token`.
pub fn start(app: Arc<App>, manifest: &Manifest, variables: &AppVariables, interval: Duration) {
    let routes = dispatch_routes(manifest);
    if interval.is_zero() || routes.is_empty() {
        return;
    }
    let Some(token) = variables.get("scheduler_token") else {
        log_event(serde_json::json!({
            "level": "warn",
            "event": "scheduler_off",
            "reason": "the application declares no `scheduler_token` variable",
        }));
        return;
    };
    let token = token.to_string();
    log_event(serde_json::json!({
        "level": "info",
        "event": "scheduler_on",
        "interval_ms": interval.as_millis() as u64,
        "components": routes.iter().map(|(component, _)| component.as_str()).collect::<Vec<_>>(),
    }));
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick fires at once; the application has just started, so wait one interval.
        ticks.tick().await;
        loop {
            ticks.tick().await;
            for (_, path) in &routes {
                app.dispatch_scheduled(path, &token).await;
            }
        }
    });
}
