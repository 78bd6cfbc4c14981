//! `interceptor sessions watch [ID]`: a live stream of calls and decisions, one line each,
//! coloured by decision on a terminal and plain when piped; Ctrl-C ends it cleanly.

use std::{
    io::{IsTerminal as _, Write as _},
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::bail;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

use crate::{
    config::Config,
    control::{Reply, Request, client},
    records::audit::{AuditRecord, Event},
};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Streams until the daemon closes the stream or the user presses Ctrl-C.
pub fn run(config: &Config, session: Option<String>, json: bool) -> anyhow::Result<()> {
    // Without SA_RESTART the blocked read returns EINTR, and the loop sees the flag.
    let action = SigAction::new(SigHandler::Handler(on_interrupt), SaFlags::empty(), SigSet::empty());
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe { sigaction(Signal::SIGINT, &action) }?;

    let colour = std::io::stdout().is_terminal();
    let mut out = std::io::stdout().lock();
    let mut refused = None;
    client::stream(
        &config.control.socket,
        &Request::Watch { session },
        &|| INTERRUPTED.load(Ordering::SeqCst),
        &mut |line| {
            if let Ok(reply) = serde_json::from_str::<Reply>(line) {
                match reply {
                    Reply::Watching { session: None } => {
                        writeln!(out, "watching all sessions (Ctrl-C to stop)")?
                    }
                    Reply::Watching { session: Some(id) } => {
                        writeln!(out, "watching session {id} (Ctrl-C to stop)")?
                    }
                    Reply::Error { message } => refused = Some(message),
                    _ => {}
                }
                return out.flush();
            }
            if json {
                writeln!(out, "{line}")?;
            } else {
                match serde_json::from_str::<AuditRecord>(line) {
                    Ok(record) => writeln!(out, "{}", format_record(&record, colour))?,
                    Err(_) => writeln!(out, "{line}")?,
                }
            }
            out.flush()
        },
    )?;
    if let Some(message) = refused {
        bail!("{message}");
    }
    Ok(())
}

/// One line per record: time, session, who, what, decision, status, and why when refused.
pub fn format_record(record: &AuditRecord, colour: bool) -> String {
    let time = record.time.get(11..23).unwrap_or(&record.time);
    let session = record.session.as_deref().unwrap_or("-");
    let who = record.identity.as_ref().map_or("-", |i| i.subject.as_str());
    if record.event != Event::Request {
        let event = serde_json::to_value(record.event)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let reason = record.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
        return format!("{time} {session:<16} {who:<20} {event}{reason}");
    }
    let decision = record.decision.as_deref().unwrap_or("-");
    let painted = if colour {
        let code = match decision {
            "allow" | "approved" => "32",
            "deny" => "31",
            _ => "33",
        };
        format!("\x1b[{code}m{decision:<8}\x1b[0m")
    } else {
        format!("{decision:<8}")
    };
    let action = record.action.as_deref().unwrap_or("(unclassified)");
    let status = record.status.map_or("-".to_owned(), |s| s.to_string());
    let mut line = format!("{time} {session:<16} {who:<20} {action:<36} {painted} {status}");
    if let Some(reason) = &record.reason {
        line.push(' ');
        line.push_str(reason);
    }
    line
}
