//! The OWASP API Security Top 10 (2023), one module per category, each
//! proving through the real components that a protection holds.

mod common;

mod api01_object_level_authorization;
mod api02_authentication;
mod api03_property_level_authorization;
mod api04_resource_consumption;
mod api05_function_level_authorization;
mod api06_business_flows;
mod api07_server_side_request_forgery;
mod api08_security_misconfiguration;
mod api09_inventory;
mod api10_unsafe_consumption;
