//! `interceptor replay SESSION`: the recorded exchanges of a session, in order; with `--policy`,
//! each call re-evaluated against a candidate policy, showing which decisions would change.
//!
//! Replay reads the recording file itself, so it works while the daemon is down (after a
//! crash, say); the file's permissions (0640 in a 0750 directory) keep it to root and the
//! records directory's group.

use std::{collections::BTreeMap, io::Write, path::Path};

use anyhow::Context as _;

use super::recording::{self, Entry, Exchange};
use crate::policy::{Call, Policy};

/// Prints the session's recording to `out`.
pub fn run(
    records_dir: &Path,
    session: &str,
    json: bool,
    candidate: Option<&Path>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let recording = recording::read(records_dir, session)?;
    if let Some(path) = candidate {
        let policy = Policy::load(path)?;
        return what_would_change(&recording.entries, &policy, path, out);
    }
    if json {
        serde_json::to_writer_pretty(&mut *out, &recording.entries)?;
        writeln!(out)?;
        return Ok(());
    }
    for entry in &recording.entries {
        print_entry(entry, out)?;
    }
    if recording.torn_tail {
        writeln!(out, "(one incomplete line at the end of the recording was ignored)")?;
    }
    Ok(())
}

fn print_entry(entry: &Entry, out: &mut dyn Write) -> std::io::Result<()> {
    match entry {
        Entry::SessionOpened { time, session, subject, groups, role_arn, pid } => writeln!(
            out,
            "{time}  session {session} opened for {subject} [{}] as {role_arn}, pid {pid}",
            groups.join(",")
        ),
        Entry::SessionKilled { time, by } => writeln!(out, "{time}  session killed by {by}"),
        Entry::SessionEnded { time } => writeln!(out, "{time}  session ended"),
        Entry::Exchange(exchange) => print_exchange(exchange, out),
    }
}

fn print_exchange(x: &Exchange, out: &mut dyn Write) -> std::io::Result<()> {
    let rule = x.rule.as_deref().map(|r| format!(" (rule {r:?})")).unwrap_or_default();
    writeln!(
        out,
        "#{} {}  {}  {}{}  -> {}{} in {} ms  request id {}",
        x.seq,
        x.time,
        x.action.as_deref().unwrap_or("(unclassified)"),
        x.decision,
        rule,
        x.response.status,
        if x.response.complete { "" } else { " (incomplete)" },
        x.duration_ms,
        x.request_id.as_deref().unwrap_or("-"),
    )?;
    writeln!(out, "    {} https://{}{}", x.request.method, x.request.host, x.request.target)?;
    if let Some(reason) = &x.reason {
        writeln!(out, "    reason: {reason}")?;
    }
    for (label, body) in [("request", &x.request.body), ("response", &x.response.body)] {
        if body.size == 0 {
            continue;
        }
        let shown = body.display();
        let more = if body.truncated { format!(" ... ({} bytes in all)", body.size) } else { String::new() };
        writeln!(out, "    {label}: {}{more}", shown.replace('\n', "\n      "))?;
    }
    Ok(())
}

/// Re-evaluates every recorded call against `policy`.
fn what_would_change(
    entries: &[Entry],
    policy: &Policy,
    path: &Path,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut changed = 0;
    let mut total = 0;
    for entry in entries {
        let Entry::Exchange(x) = entry else { continue };
        // Refusals that were not the policy's (no session, malformed, upstream down) say nothing
        // about what a policy would decide.
        if x.decision == "error" {
            continue;
        }
        total += 1;
        let mut params: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in &x.params {
            params.entry(name.clone()).or_default().push(value.clone());
        }
        let decision = policy.evaluate(&Call {
            subject: &x.subject,
            groups: &x.groups,
            action: x.action.as_deref(),
            region: x.region.as_deref().unwrap_or_default(),
            params: &params,
        });
        let recorded = match x.decision.as_str() {
            "approved" => "approve",
            other => other,
        };
        let now = decision.effect.as_str();
        if recorded != now {
            changed += 1;
            writeln!(
                out,
                "#{} {}: {} -> {} ({})",
                x.seq,
                x.action.as_deref().unwrap_or("(unclassified)"),
                recorded,
                now,
                decision.rule.as_deref().map_or("default".to_owned(), |r| format!("rule {r:?}")),
            )?;
        }
    }
    writeln!(out, "{changed} of {total} recorded calls would be decided differently under {}", path.display())
        .context("writing the summary")?;
    Ok(())
}
