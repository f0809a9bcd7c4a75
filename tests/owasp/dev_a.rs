#[path = "api01_object_level_authorization.rs"]
mod api01_object_level_authorization;
#[path = "api03_property_level_authorization.rs"]
mod api03_property_level_authorization;
#[path = "api05_function_level_authorization.rs"]
mod api05_function_level_authorization;
