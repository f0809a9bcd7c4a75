//! TODO: api03_property_level_authorization
