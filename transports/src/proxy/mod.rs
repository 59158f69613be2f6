//! The PROXY protocol (versions 1 and 2, as HAProxy specifies it): behind
//! a load balancer (HAProxy's `send-proxy`, nginx's `proxy_protocol on` in
//! its stream module, a cloud load balancer), the first bytes of each
//! connection name the real client. This module parses those bytes.

mod header;
mod net;

pub use header::{parse_header, Origin, Parsed, ProxyError, ProxyHeader, V1_MAX_LEN, V2_SIGNATURE};
pub use net::{BadIpNet, IpNet};
