//! TODO: api05_function_level_authorization
