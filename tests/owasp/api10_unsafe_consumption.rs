//! TODO: api10_unsafe_consumption
