//! `interceptor run`: open a session with the daemon, then become the agent.
//!
//! The daemon validates the token and moves this very process into the session's cgroup; this
//! process then sets the agent's environment, drops to `--user` if asked, and execs the command,
//! so the command's exit code is the exit code of `run`.

use std::{
    convert::Infallible,
    ffi::OsString,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::Args;

use crate::{
    cli::{ask, describe_command},
    config::Config,
    control::{OpenedSession, Reply, Request},
};

/// Environment variable naming the token file when `--token-file` is not given.
pub const TOKEN_FILE_ENV: &str = "INTERCEPTOR_TOKEN_FILE";
/// The placeholder key pair agents hold: syntactically an AWS key, worthless anywhere but the
/// gateway, which strips the signature made with it.
pub const PLACEHOLDER_ACCESS_KEY_ID: &str = "AKIAINTERCEPTORAGENT";
pub const PLACEHOLDER_SECRET_ACCESS_KEY: &str = "interceptor-placeholder-not-a-secret";

/// Variables removed from the agent's environment: any of them could lead an SDK to real
/// credentials (a profile, a container endpoint, a web identity of its own).
const CREDENTIAL_VARIABLES: [&str; 10] = [
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
];

#[derive(Debug, Args)]
pub struct RunArgs {
    /// File holding the agent's OIDC token (JWT) [default: $INTERCEPTOR_TOKEN_FILE]
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Role to assume instead of aws.role_arn.
    #[arg(long, value_name = "ARN")]
    role: Option<String>,
    /// A name for the session, shown by `interceptor sessions`.
    #[arg(long)]
    name: Option<String>,
    /// Run the command as this user (name or uid); needs root.
    #[arg(long)]
    user: Option<String>,
    /// The agent command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<OsString>,
}

/// Opens the session and execs the command; returns only on failure.
pub fn run(config: &Config, args: RunArgs) -> anyhow::Result<Infallible> {
    let token_file = match args.token_file.clone().or_else(|| std::env::var_os(TOKEN_FILE_ENV).map(Into::into)) {
        Some(path) => path,
        None => bail!("no token: pass --token-file FILE or set {TOKEN_FILE_ENV}"),
    };
    let token = std::fs::read_to_string(&token_file)
        .with_context(|| format!("reading the token file {}", token_file.display()))?;
    if token.trim().is_empty() {
        bail!("the token file {} is empty", token_file.display());
    }
    // Resolve the user before the session exists, so a typo costs nothing.
    let user = args.user.as_deref().map(lookup_user).transpose()?;

    let request = Request::OpenSession {
        token,
        token_file: Some(absolute(&token_file).display().to_string()),
        role_arn: args.role.clone(),
        name: args.name.clone(),
    };
    let session = match ask(config, &request).context("the session was not opened")? {
        Reply::SessionOpened(session) => session,
        _ => bail!("the daemon answered a session request with something else"),
    };

    let mut command = Command::new(&args.command[0]);
    command.args(&args.command[1..]);
    agent_environment(&mut command, &session);
    if let Some(user) = &user {
        command.env("HOME", &user.dir).env("USER", &user.name).env("LOGNAME", &user.name);
        drop_privileges(user)?;
    }
    let err = command.exec();
    bail!("cannot start {}: {err}", describe_command(&args.command))
}

/// What stock AWS clients need to go through the gateway unchanged.
fn agent_environment(command: &mut Command, session: &OpenedSession) {
    for name in CREDENTIAL_VARIABLES {
        command.env_remove(name);
    }
    command
        .env("AWS_ACCESS_KEY_ID", PLACEHOLDER_ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", PLACEHOLDER_SECRET_ACCESS_KEY)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        // Python (botocore, requests) and OpenSSL replace their roots with the bundle file,
        // so it holds the system roots plus the gateway CA; Node adds the extra CA to its own.
        .env("AWS_CA_BUNDLE", &session.ca_bundle)
        .env("REQUESTS_CA_BUNDLE", &session.ca_bundle)
        .env("SSL_CERT_FILE", &session.ca_bundle)
        .env("CURL_CA_BUNDLE", &session.ca_bundle)
        .env("NODE_EXTRA_CA_CERTS", &session.ca_file)
        .env("INTERCEPTOR_SESSION", &session.id);
}

/// Becomes `user` for good: supplementary groups, group, then user, in the order that leaves
/// no way back (this process is about to exec the agent, and stays in the session's cgroup).
fn drop_privileges(user: &nix::unistd::User) -> anyhow::Result<()> {
    let name = std::ffi::CString::new(user.name.clone()).context("user name")?;
    nix::unistd::initgroups(&name, user.gid)
        .with_context(|| format!("setting the groups of {}", user.name))?;
    nix::unistd::setgid(user.gid).with_context(|| format!("setting gid {}", user.gid))?;
    nix::unistd::setuid(user.uid).with_context(|| format!("setting uid {}", user.uid))?;
    Ok(())
}

fn lookup_user(user: &str) -> anyhow::Result<nix::unistd::User> {
    let found = match user.parse::<u32>() {
        Ok(uid) => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)),
        Err(_) => nix::unistd::User::from_name(user),
    };
    match found.with_context(|| format!("looking up user {user}"))? {
        Some(found) => Ok(found),
        None => bail!("no such user: {user}"),
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}
