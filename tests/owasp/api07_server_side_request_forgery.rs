//! TODO: api07_server_side_request_forgery
