//! TODO: api02_authentication
