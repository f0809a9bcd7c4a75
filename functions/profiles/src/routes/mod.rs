//! One module per resource.

pub mod health;
pub mod profiles;
pub mod users;
