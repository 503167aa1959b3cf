//! The fault-injecting TCP proxy as its own process, for tests driven from shell (the VM
//! test `tests/vm/test-netfault.sh` puts it between netgpu-vdev and the backend). Prints
//! `listening <addr>` once it accepts connections, then reads one command a line on stdin:
//!
//! - `pass`: forward everything;
//! - `stall`: forward nothing and keep every connection open (a partition: no FIN, no RST);
//! - `reset`: reset every connection, open and new;
//! - `refuse`: reset new connections, open ones carry on;
//! - `delay <ms>`: hold each chunk this long in each direction.
//!
//! Each command is answered `ok <command>` (or `error <why>`) on stdout. End of input stops
//! the proxy.
//!
//! `netfault-proxy <listen-addr> <upstream-addr>`

use std::io::{BufRead, Write};
use std::time::Duration;

use netgpu_netfault::proxy::{Fault, FaultProxy};

fn parse(line: &str) -> Result<Fault, String> {
    let mut w = line.split_whitespace();
    match (w.next(), w.next()) {
        (Some("pass"), None) => Ok(Fault::Pass),
        (Some("stall"), None) => Ok(Fault::Stall),
        (Some("reset"), None) => Ok(Fault::Reset),
        (Some("refuse"), None) => Ok(Fault::Refuse),
        (Some("delay"), Some(ms)) => ms
            .parse()
            .map(|ms| Fault::Delay(Duration::from_millis(ms)))
            .map_err(|e| format!("delay takes milliseconds: {e}")),
        _ => Err(format!(
            "unknown command {line:?}: pass, stall, reset, refuse or delay <ms>"
        )),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        return Err("usage: netfault-proxy <listen-addr> <upstream-addr>".into());
    };
    let proxy = FaultProxy::start(listen.parse()?, upstream.parse()?)?;
    let mut out = std::io::stdout();
    writeln!(out, "listening {}", proxy.addr())?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match parse(&line) {
            Ok(f) => {
                proxy.set(f);
                writeln!(out, "ok {}", line.trim())?;
            }
            Err(e) => writeln!(out, "error {e}")?,
        }
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_bad_ones_say_what_is_accepted() {
        assert_eq!(parse("stall"), Ok(Fault::Stall));
        assert_eq!(parse(" pass "), Ok(Fault::Pass));
        assert_eq!(
            parse("delay 25"),
            Ok(Fault::Delay(Duration::from_millis(25)))
        );
        assert!(parse("delay x").unwrap_err().contains("milliseconds"));
        assert!(parse("cut").unwrap_err().contains("pass, stall"));
    }
}
