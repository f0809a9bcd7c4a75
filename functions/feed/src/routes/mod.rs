//! One module per resource, plus the operations routes.

pub mod articles;
pub mod comments;
pub mod favorites;
pub mod lists;
pub mod ops;
pub mod tags;
