//! TODO: api04_resource_consumption
