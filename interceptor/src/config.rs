//! The daemon's configuration: one TOML file, every key with a documented default, unknown keys
//! refused, parsed once into typed values.
//!
//! Every command finds the file the same way: `--config PATH`, else `INTERCEPTOR_CONFIG`, else
//! [`DEFAULT_CONFIG_PATH`].

use std::{
    fmt, fs,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Deserializer, de};

/// Where the config is read from when neither `--config` nor `INTERCEPTOR_CONFIG` names one.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/interceptor/config.toml";
/// Environment variable naming the config file.
pub const CONFIG_ENV: &str = "INTERCEPTOR_CONFIG";

/// Loopback port the eBPF redirect sends agent connections to.
pub const DEFAULT_GATEWAY_PORT: u16 = 15443;
/// Agent TCP destination ports that are redirected.
pub const DEFAULT_REDIRECT_PORTS: [u16; 2] = [443, 80];
/// Largest non-S3 request body, in bytes, the gateway reads to classify and sign it (API calls
/// carry their parameters in the body and SigV4 needs its hash before the headers are sent).
pub const DEFAULT_MAX_API_BODY_BYTES: u64 = 64 * 1024 * 1024;
/// How long AWS may take to answer once a call has been sent.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// How long STS credentials are asked for.
pub const DEFAULT_SESSION_DURATION: Duration = Duration::from_secs(15 * 60);
/// Whether STS sessions carry SourceIdentity and session tags (a chained AssumeRole).
pub const DEFAULT_TAG_SESSIONS: bool = true;
pub const DEFAULT_AUDIENCE: &str = "interceptor";
pub const DEFAULT_GROUPS_CLAIM: &str = "groups";
pub const DEFAULT_REGION: &str = "us-east-1";
pub const DEFAULT_ROLE_ARN: &str = "arn:aws:iam::111122223333:role/agent";
pub const DEFAULT_POLICY_FILE: &str = "/etc/interceptor/policy.toml";
pub const DEFAULT_RECORDS_DIR: &str = "/var/lib/interceptor";
/// How much of each body a session recording keeps.
pub const DEFAULT_BODY_CAP_BYTES: usize = 64 * 1024;
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/interceptor/control.sock";
pub const DEFAULT_ADMIN_GROUP: &str = "interceptor-admin";
/// Name of the directory under the cgroup v2 mount that holds the session cgroups.
pub const DEFAULT_CGROUP_DIR: &str = "interceptor";

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub gateway: GatewayConfig,
    pub cgroup: CgroupConfig,
    pub oidc: OidcConfig,
    pub aws: AwsConfig,
    pub policy: PolicyConfig,
    pub records: RecordsConfig,
    pub control: ControlConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Loopback port the redirect targets; the gateway listens on 127.0.0.1 and ::1.
    pub port: u16,
    /// Agent TCP destination ports sent to the gateway.
    pub redirect_ports: Vec<u16>,
    /// Largest non-S3 request body read for classification and signing, in bytes.
    pub max_api_body_bytes: u64,
    /// Redirected connections to hosts that are not AWS: "refuse" (close) or "pass" (splice
    /// the bytes, untouched, to where the agent was going).
    pub other_destinations: crate::gateway::OtherDestinations,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            port: DEFAULT_GATEWAY_PORT,
            redirect_ports: DEFAULT_REDIRECT_PORTS.to_vec(),
            max_api_body_bytes: DEFAULT_MAX_API_BODY_BYTES,
            other_destinations: crate::gateway::OtherDestinations::Refuse,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CgroupConfig {
    /// Parent cgroup of the sessions. Empty: `interceptor/` under the cgroup v2 mount.
    #[serde(deserialize_with = "optional_path")]
    pub root: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OidcConfig {
    /// Issuer URL; discovery is read from `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    /// The `aud` a token must carry.
    pub audience: String,
    /// Claim holding the identity's groups (a list of strings, or one string).
    pub groups_claim: String,
    /// Extra CA (PEM) trusted to reach the IdP.
    #[serde(deserialize_with = "optional_path")]
    pub ca_file: Option<PathBuf>,
}

impl Default for OidcConfig {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            audience: DEFAULT_AUDIENCE.to_owned(),
            groups_claim: DEFAULT_GROUPS_CLAIM.to_owned(),
            ca_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsConfig {
    /// Role assumed for a session unless `run --role` names another.
    pub role_arn: String,
    /// Region used for STS and for requests whose region cannot be told otherwise.
    pub region: String,
    /// Lifetime asked of STS for each session's credentials.
    #[serde(deserialize_with = "duration")]
    pub session_duration: Duration,
    /// Tests: all AWS traffic (STS too) goes to this URL, the Host header kept.
    #[serde(deserialize_with = "optional_url")]
    pub upstream: Option<url::Url>,
    /// Extra CA (PEM) trusted for the upstream.
    #[serde(deserialize_with = "optional_path")]
    pub upstream_ca_file: Option<PathBuf>,
    /// How long AWS may take to answer a call once it has been sent in full; then the agent
    /// gets a 502 AWS error. The longest synchronous AWS call (Lambda invoke) runs 15 minutes.
    #[serde(deserialize_with = "duration")]
    pub response_timeout: Duration,
    /// Chain a signed AssumeRole after the web-identity call so the STS session carries
    /// SourceIdentity and session tags (CloudTrail linkage); needs the role's trust policy to
    /// allow the role itself sts:AssumeRole, sts:SetSourceIdentity and sts:TagSession.
    pub tag_sessions: bool,
}

impl Default for AwsConfig {
    fn default() -> Self {
        Self {
            role_arn: DEFAULT_ROLE_ARN.to_owned(),
            region: DEFAULT_REGION.to_owned(),
            session_duration: DEFAULT_SESSION_DURATION,
            upstream: None,
            upstream_ca_file: None,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            tag_sessions: DEFAULT_TAG_SESSIONS,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    pub file: PathBuf,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self { file: PathBuf::from(DEFAULT_POLICY_FILE) }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordsConfig {
    /// Holds the gateway CA, the audit log and the session recordings.
    pub dir: PathBuf,
    /// How much of each request and response body a recording keeps, in bytes.
    pub body_cap_bytes: usize,
}

impl Default for RecordsConfig {
    fn default() -> Self {
        Self { dir: PathBuf::from(DEFAULT_RECORDS_DIR), body_cap_bytes: DEFAULT_BODY_CAP_BYTES }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    pub socket: PathBuf,
    /// Members of this group may use the admin commands, besides root.
    pub admin_group: String,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(DEFAULT_CONTROL_SOCKET),
            admin_group: DEFAULT_ADMIN_GROUP.to_owned(),
        }
    }
}

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The TOML is malformed, a key is unknown, or a value has the wrong type.
    #[error("invalid config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// Values parsed but do not make sense together; every problem is listed.
    #[error("invalid config {path}:\n  {}", problems.join("\n  "))]
    Invalid { path: PathBuf, problems: Vec<String> },
}

impl Config {
    /// Which file to read: the flag, else the environment, else the default.
    pub fn locate(flag: Option<&Path>) -> PathBuf {
        if let Some(path) = flag {
            return path.to_owned();
        }
        match std::env::var_os(CONFIG_ENV) {
            Some(path) if !path.is_empty() => PathBuf::from(path),
            _ => PathBuf::from(DEFAULT_CONFIG_PATH),
        }
    }

    /// Reads and validates the file. A missing file at the default path yields the defaults, so
    /// client commands work on a host that only set the socket path; any other missing file is
    /// an error.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound
                && path == Path::new(DEFAULT_CONFIG_PATH) =>
            {
                String::new()
            }
            Err(source) => return Err(ConfigError::Read { path: path.to_owned(), source }),
        };
        Self::parse(&text, path)
    }

    /// Parses config text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|err| ConfigError::Parse {
            path: path.to_owned(),
            message: err.to_string().trim_end().to_owned(),
        })?;
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(ConfigError::Invalid { path: path.to_owned(), problems });
        }
        Ok(config)
    }

    /// Every inconsistency, reported in one pass.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.gateway.port == 0 {
            problems.push("gateway.port: must not be 0 (the redirect needs a fixed port)".into());
        }
        if self.gateway.redirect_ports.is_empty() {
            problems.push("gateway.redirect_ports: must name at least one port".into());
        }
        if self.gateway.redirect_ports.contains(&0) {
            problems.push("gateway.redirect_ports: 0 is not a port".into());
        }
        if self.gateway.redirect_ports.len() > interceptor_common::MAX_REDIRECT_PORTS as usize {
            problems.push(format!(
                "gateway.redirect_ports: at most {} ports",
                interceptor_common::MAX_REDIRECT_PORTS
            ));
        }
        if self.oidc.audience.is_empty() {
            problems.push("oidc.audience: must not be empty".into());
        }
        if !self.oidc.issuer.is_empty() && url::Url::parse(&self.oidc.issuer).is_err() {
            problems.push(format!("oidc.issuer: {:?} is not a URL", self.oidc.issuer));
        }
        if !self.aws.role_arn.starts_with("arn:") {
            problems.push(format!("aws.role_arn: {:?} is not an ARN", self.aws.role_arn));
        }
        if self.aws.region.is_empty() {
            problems.push("aws.region: must not be empty".into());
        }
        let duration = self.aws.session_duration.as_secs();
        if !(900..=43_200).contains(&duration) {
            problems.push(format!(
                "aws.session_duration: {} is outside what STS accepts (15m to 12h)",
                humantime::format_duration(self.aws.session_duration)
            ));
        }
        if let Some(upstream) = &self.aws.upstream
            && !matches!(upstream.scheme(), "http" | "https")
        {
            problems.push(format!("aws.upstream: scheme {:?} is not http or https", upstream.scheme()));
        }
        problems
    }

    /// The parent cgroup of all sessions, given the cgroup v2 mount point.
    pub fn cgroup_root(&self, cgroup2_mount: &Path) -> PathBuf {
        match &self.cgroup.root {
            Some(root) if root.is_absolute() => root.clone(),
            Some(root) => cgroup2_mount.join(root),
            None => cgroup2_mount.join(DEFAULT_CGROUP_DIR),
        }
    }

    /// The gateway's CA certificate and key live here.
    pub fn ca_dir(&self) -> PathBuf {
        self.records.dir.join("ca")
    }

    /// One JSON line per request.
    pub fn audit_log_path(&self) -> PathBuf {
        self.records.dir.join("audit.log")
    }
}

/// An empty string means "not set".
fn optional_path<'de, D: Deserializer<'de>>(de: D) -> Result<Option<PathBuf>, D::Error> {
    let text = String::deserialize(de)?;
    Ok((!text.is_empty()).then(|| PathBuf::from(text)))
}

fn optional_url<'de, D: Deserializer<'de>>(de: D) -> Result<Option<url::Url>, D::Error> {
    let text = String::deserialize(de)?;
    if text.is_empty() {
        return Ok(None);
    }
    url::Url::parse(&text)
        .map(Some)
        .map_err(|err| de::Error::custom(format!("{text:?} is not a URL: {err}")))
}

/// Durations are written as `"15m"`, `"90s"`, `"1h 30m"`.
pub fn duration<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    struct Visitor;
    impl de::Visitor<'_> for Visitor {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as \"15m\" or \"90s\"")
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            humantime::parse_duration(text)
                .map_err(|err| E::custom(format!("{text:?} is not a duration: {err}")))
        }
    }
    de.deserialize_str(Visitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn empty_file_gives_documented_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config.gateway.port, DEFAULT_GATEWAY_PORT);
        assert_eq!(config.gateway.redirect_ports, vec![443, 80]);
        assert_eq!(config.aws.session_duration, Duration::from_secs(900));
        assert_eq!(config.control.socket, PathBuf::from(DEFAULT_CONTROL_SOCKET));
        assert!(config.aws.upstream.is_none());
        assert!(config.aws.tag_sessions, "CloudTrail linkage is on unless turned off");
    }

    #[test]
    fn unknown_key_is_refused_by_name() {
        let err = parse("[gateway]\nprot = 1\n").unwrap_err().to_string();
        assert!(err.contains("prot"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = parse("[gateway]\nredirect_ports = []\n[aws]\nrole_arn = \"x\"\nsession_duration = \"1m\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("redirect_ports"), "{err}");
        assert!(err.contains("role_arn"), "{err}");
        assert!(err.contains("session_duration"), "{err}");
    }

    #[test]
    fn bad_duration_names_the_value() {
        let err = parse("[aws]\nsession_duration = \"soon\"\n").unwrap_err().to_string();
        assert!(err.contains("soon"), "{err}");
    }

    #[test]
    fn relative_cgroup_root_is_under_the_mount() {
        let config = parse("[cgroup]\nroot = \"ci/agents\"\n").unwrap();
        assert_eq!(
            config.cgroup_root(Path::new("/sys/fs/cgroup/unified")),
            PathBuf::from("/sys/fs/cgroup/unified/ci/agents")
        );
    }
}
