//! TODO: api01_object_level_authorization
