//! twistor-protocols (crate docs written below).
#![warn(missing_docs)]

mod control;
mod line;
mod netstring;
mod prefixed;
mod string;

pub use control::{Control, FramingState};
pub use line::{LineControl, LineHandler, LineReceiver, LineState, DEFAULT_MAX_LINE_LENGTH};
pub use netstring::{Netstring, NetstringReceiver};
pub use prefixed::{Int16StringReceiver, Int32StringReceiver, Int8StringReceiver, Prefixed};
pub use services::{Chargen, Daytime, Discard, Echo, Qotd};
pub use string::{Framing, Parse, StringControl, StringHandler, StringReceiver, StringState, StringTooLong};
mod services;
pub use limit::{ConnectionCounter, LimitConnections};
pub use ratelimit::{LimitConnectionRate, RateLimiter, DEFAULT_MAX_TRACKED};
pub use timeout::{IdleTimeout, Timeout, TimeoutMixin};
mod limit;
mod ratelimit;
mod timeout;
