//! TODO: api09_inventory
