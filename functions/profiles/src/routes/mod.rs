//! One module per resource, plus the admin and operations routes.

pub mod admin;
pub mod health;
pub mod ops;
pub mod profiles;
pub mod users;
