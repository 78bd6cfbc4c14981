//! The `interceptor` command line: one binary, one subcommand per job.

use std::{
    ffi::OsString,
    io::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};

use crate::{
    config::Config,
    control::{Reply, Request, client},
    run,
};

/// Exit code for a bad config, as sysexits' EX_CONFIG.
const EXIT_CONFIG: u8 = 78;

#[derive(Debug, Parser)]
#[command(name = "interceptor", version, about = "Identity, policy and audit between AI agents and AWS")]
struct Cli {
    /// Config file [default: $INTERCEPTOR_CONFIG, else /etc/interceptor/config.toml]
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load the eBPF redirect and serve the gateway and the control socket (root).
    Daemon {
        /// Detach the redirect, remove its bpffs pins and the empty session cgroups, then exit.
        #[arg(long)]
        uninstall: bool,
    },
    /// Start CMD as an agent session under the identity of an OIDC token.
    Run(run::RunArgs),
    /// List live sessions, or watch or kill one.
    Sessions(SessionsArgs),
    /// Calls held for a human's approval.
    Approvals {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Release a held call.
    Approve {
        /// The held call's id, from `interceptor approvals`.
        id: String,
    },
    /// Refuse a held call; the agent sees the reason.
    Deny {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// The recorded exchanges of a session, in order (reads the recording; no daemon needed).
    Replay {
        session: String,
        /// Print the entries as JSON.
        #[arg(long)]
        json: bool,
        /// Re-evaluate every call against this candidate policy and show what would change.
        #[arg(long, value_name = "P")]
        policy: Option<PathBuf>,
    },
    /// Check a policy file, or dry-run a request against it.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// The gateway's CA certificate.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
}

#[derive(Debug, Args)]
struct SessionsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: Option<SessionsCommand>,
}

#[derive(Debug, Subcommand)]
enum SessionsCommand {
    /// A live stream of calls and decisions, of all sessions or one; Ctrl-C ends it.
    Watch { id: Option<String> },
    /// Refuse every further call of the session and kill its processes.
    Kill { id: String },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Validate a policy file [default: policy.file from the config]; with --request, show the
    /// decision and the deciding rule for that request.
    Check {
        #[arg(long, value_name = "P")]
        policy: Option<PathBuf>,
        /// A request to dry-run: raw HTTP (request line, headers, body) or JSON
        /// {"subject", "groups", "action", "region", "params"}.
        #[arg(long, value_name = "FILE")]
        request: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Print the CA certificate (PEM), for clients that must trust the gateway.
    Export,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(matches!(cli.command, Command::Daemon { .. }));
    let config_path = Config::locate(cli.config.as_deref());
    let config = match Config::load(&config_path) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("interceptor: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let result = match cli.command {
        Command::Daemon { uninstall: true } => crate::daemon::uninstall(&config),
        Command::Daemon { uninstall: false } => run_daemon(config, &config_path),
        // On success `run` never returns: it becomes the agent.
        Command::Run(args) => run::run(&config, args).map(|never| match never {}),
        Command::Sessions(args) => sessions(&config, args),
        Command::Ca { command: CaCommand::Export } => ca_export(&config),
        Command::Approvals { json } => approvals(&config, json),
        Command::Replay { session, json, policy } => crate::records::replay::run(
            &config.records.dir,
            &session,
            json,
            policy.as_deref(),
            &mut std::io::stdout().lock(),
        ),
        Command::Approve { id } => {
            ask(&config, &Request::Approve { id: id.clone() }).map(|_| println!("{id} approved"))
        }
        Command::Deny { id, reason } => ask(&config, &Request::Deny { id: id.clone(), reason })
            .map(|_| println!("{id} denied")),
        Command::Policy { command: PolicyCommand::Check { policy, request } } => {
            let path = policy.unwrap_or_else(|| config.policy.file.clone());
            crate::policy::check::run(&path, request.as_deref())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("interceptor: {}", describe_error(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each cause once: many of our error messages already
/// name their cause, which the chain would otherwise print a second time.
fn describe_error(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

fn run_daemon(config: Config, path: &Path) -> anyhow::Result<()> {
    tracing::info!(config = %path.display(), "config loaded");
    crate::memory::tune_for_daemon();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(crate::daemon::run(config))
}

fn init_logging(daemon: bool) {
    // The daemon logs life-cycle events by default; client commands only warnings.
    let default = if daemon { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("INTERCEPTOR_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only on a terminal: a daemon's stderr usually goes to a log file or the journal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

/// Sends one request; a refusal from the daemon becomes an error with its message.
pub fn ask(config: &Config, request: &Request) -> anyhow::Result<Reply> {
    match client::call(&config.control.socket, request)? {
        Reply::Error { message } => bail!("{message}"),
        reply => Ok(reply),
    }
}

fn sessions(config: &Config, args: SessionsArgs) -> anyhow::Result<()> {
    match args.command {
        Some(SessionsCommand::Kill { id }) => {
            ask(config, &Request::KillSession { id: id.clone() })?;
            println!("session {id} killed");
            return Ok(());
        }
        Some(SessionsCommand::Watch { id }) => return crate::watch::run(config, id, args.json),
        None => {}
    }
    let Reply::Sessions { sessions } = ask(config, &Request::ListSessions)? else {
        bail!("the daemon answered a session list request with something else");
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &sessions)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "{:<16} {:<16} {:<24} {:<20} {:<12} {:>8} {:>6} {:>4}  STARTED  ROLE",
        "ID", "NAME", "IDENTITY", "GROUPS", "PIDS", "REQUESTS", "DENIED", "HELD")?;
    for s in sessions {
        let pids: Vec<String> = s.pids.iter().map(u32::to_string).collect();
        writeln!(out, "{:<16} {:<16} {:<24} {:<20} {:<12} {:>8} {:>6} {:>4}  {}  {}",
            s.id, s.name.as_deref().unwrap_or("-"), s.subject, s.groups.join(","), pids.join(","),
            s.requests, s.denied, s.held, format_started(s.started), s.role_arn)?;
    }
    Ok(())
}

fn approvals(config: &Config, json: bool) -> anyhow::Result<()> {
    let Reply::Approvals { calls } = ask(config, &Request::ListApprovals)? else {
        bail!("the daemon answered an approvals request with something else");
    };
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &calls)?;
        writeln!(out)?;
        return Ok(());
    }
    if calls.is_empty() {
        writeln!(out, "no calls waiting for approval")?;
        return Ok(());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    writeln!(out, "{:<12} {:<20} {:<28} {:>6} {:>8}  {:<16} PARAMETERS",
        "ID", "IDENTITY", "ACTION", "AGE", "EXPIRES", "SESSION")?;
    for call in calls {
        writeln!(out, "{:<12} {:<20} {:<28} {:>5}s {:>7}s  {:<16} {}",
            call.id, call.subject, call.action, now.saturating_sub(call.held_since),
            call.expires_in, call.session, call.params.join(" "))?;
    }
    Ok(())
}

fn format_started(epoch_secs: u64) -> String {
    let format = time::macros::format_description!("[hour]:[minute]:[second]");
    time::OffsetDateTime::from_unix_timestamp(epoch_secs as i64)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| epoch_secs.to_string())
}

fn ca_export(config: &Config) -> anyhow::Result<()> {
    // Read from the file when this user can (no daemon needed), else ask the daemon.
    let path = config.ca_dir().join("ca.pem");
    let pem = match std::fs::read_to_string(&path) {
        Ok(pem) => pem,
        Err(_) => match ask(config, &Request::CaCertificate)? {
            Reply::CaCertificate { pem } => pem,
            _ => bail!("the daemon answered a CA request with something else"),
        },
    };
    print!("{pem}");
    Ok(())
}

/// The program and its arguments, for error messages.
pub fn describe_command(command: &[OsString]) -> String {
    command.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
}
