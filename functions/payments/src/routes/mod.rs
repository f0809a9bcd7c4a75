//! One module per resource, plus the admin and operations routes.

pub mod admin;
pub mod history;
pub mod ops;
pub mod refunds;
pub mod tips;
pub mod wallet;
pub mod webhooks;
