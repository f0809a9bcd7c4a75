#[path = "api07_server_side_request_forgery.rs"]
mod api07_server_side_request_forgery;
#[path = "api08_security_misconfiguration.rs"]
mod api08_security_misconfiguration;
#[path = "api09_inventory.rs"]
mod api09_inventory;
#[path = "api10_unsafe_consumption.rs"]
mod api10_unsafe_consumption;
