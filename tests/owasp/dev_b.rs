#[path = "api02_authentication.rs"]
mod api02_authentication;
#[path = "api04_resource_consumption.rs"]
mod api04_resource_consumption;
#[path = "api06_business_flows.rs"]
mod api06_business_flows;
