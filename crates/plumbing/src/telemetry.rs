//! Structured logging. Filter with `RUST_LOG` (default `info`); `NATTER_LOG_JSON=1` switches
//! to JSON lines for log shippers. Colours only on a terminal, and never with `NO_COLOR` set:
//! a log file or a journal gets plain text.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("NATTER_LOG_JSON").is_ok_and(|v| v == "1");
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_target(false);
    // A second init (tests, all-in-one) is harmless; ignore it.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
