//! One module per resource, plus the admin and operations routes.

pub mod admin;
pub mod email;
pub mod health;
pub mod ops;
pub mod profiles;
pub mod users;
