//! TODO: api06_business_flows
