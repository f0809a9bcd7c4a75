//! TODO: api08_security_misconfiguration
