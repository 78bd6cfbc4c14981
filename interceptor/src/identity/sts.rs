//! The AWS credentials bound to an identity: AssumeRoleWithWebIdentity with the session's OIDC
//! token, then (with `aws.tag_sessions`) a chained AssumeRole that stamps the person and the
//! session onto the STS session; cached per (session, role) until shortly before they expire.
//!
//! The web-identity call is unsigned, so the STS client has no credentials provider at all:
//! nothing reads keys from the environment, profiles or instance metadata. The chained call is
//! signed with the web-identity credentials just received, handed to the SDK for that one call as
//! static credentials. HTTP goes through this module's own hyper client (hyper-rustls, ring,
//! webpki roots plus `aws.upstream_ca_file`), plugged into the SDK as its [`HttpClient`]. With
//! `aws.upstream` set, every STS request is sent to that URL while its Host header keeps the real
//! STS name, as the gateway does for all other services.
//!
//! CloudTrail linkage. RoleSessionName is `<subject>@<session-id>` (see [`role_session_name`]),
//! so the assumed-role ARN names the person and the session. AssumeRoleWithWebIdentity has no
//! SourceIdentity or Tags parameters: STS takes those from the token's
//! `https://aws.amazon.com/source_identity` and `https://aws.amazon.com/tags` claims, which the
//! daemon cannot set, and the session id does not exist yet when the token is minted. So the
//! daemon assumes the same role once more with the web-identity credentials (role chaining),
//! passing SourceIdentity = subject (see [`source_identity`]) and the transitive session tags
//! [`SESSION_TAG`] and [`SUBJECT_TAG`]. STS keeps SourceIdentity and transitive tags on every
//! session chained from there, so an agent assuming further roles cannot shed them. AWS caps a
//! chained session at one hour ([`MAX_CHAINED_DURATION`]), so those credentials are renewed
//! hourly even when `aws.session_duration` is longer.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use aws_credential_types::Credentials;
use aws_sdk_sts::{
    config::{BehaviorVersion, Region},
    error::{DisplayErrorContext, ProvideErrorMetadata, SdkError},
    types::Tag,
};
use aws_smithy_runtime_api::client::{
    http::{
        HttpClient as SmithyHttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings,
        SharedHttpConnector,
    },
    orchestrator::{HttpRequest, HttpResponse},
    result::ConnectorError,
    runtime_components::RuntimeComponents,
};
use aws_smithy_types::body::SdkBody;
use http_body_util::{BodyExt, Full};

use super::http::{FetchError, HttpClient};
use crate::{config::AwsConfig, tls};

/// Cached credentials are renewed when they have less than this left, so a request signed with
/// them still reaches AWS before they expire.
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(2 * 60);
/// Longest RoleSessionName STS accepts.
pub const MAX_ROLE_SESSION_NAME: usize = 64;
/// Longest SourceIdentity STS accepts (and the shortest is 2).
pub const MAX_SOURCE_IDENTITY: usize = 64;
/// Longest session tag value STS accepts.
pub const MAX_TAG_VALUE: usize = 256;
/// Longest session AWS grants to a role assumed with role-session credentials (role chaining).
pub const MAX_CHAINED_DURATION: Duration = Duration::from_secs(60 * 60);
/// Session tag holding the interceptor session id.
pub const SESSION_TAG: &str = "interceptor:session";
/// Session tag holding the identity's subject.
pub const SUBJECT_TAG: &str = "interceptor:subject";
/// Provider name recorded in the credentials (shows in SDK debug output).
const PROVIDER_NAME: &str = "interceptor-sts";
const WEB_IDENTITY_ACTION: &str = "AssumeRoleWithWebIdentity";
const CHAINED_ACTION: &str = "AssumeRole";
/// Told with a refused chained AssumeRole: the usual cause is the trust policy.
const CHAIN_HINT: &str = "the role's trust policy must allow the role itself sts:AssumeRole, \
                          sts:SetSourceIdentity and sts:TagSession (or set aws.tag_sessions = \
                          false)";

/// What to assume, for whom.
#[derive(Debug, Clone)]
pub struct AssumeRequest {
    /// The interceptor session; part of the cache key, the RoleSessionName and a session tag.
    pub session_id: String,
    /// The role to assume.
    pub role_arn: String,
    /// The validated identity's subject (`Identity::subject`), named in the RoleSessionName,
    /// the SourceIdentity and a session tag.
    pub subject: String,
    /// The raw OIDC token, sent to STS as WebIdentityToken.
    pub web_identity_token: String,
}

/// Why no credentials could be had.
#[derive(Debug, thiserror::Error)]
pub enum StsError {
    /// The TLS client for STS could not be built (bad `aws.upstream_ca_file`).
    #[error("cannot set up TLS to STS: {0}")]
    Tls(#[from] tls::TlsError),
    /// STS answered with an error: InvalidIdentityToken, ExpiredTokenException, AccessDenied...
    /// `action` is AssumeRoleWithWebIdentity or the chained AssumeRole; `hint` says what to
    /// check when the cause is known.
    #[error("STS refused {action} on {role_arn}: {code}: {message}{}", hint_suffix(*.hint))]
    Refused {
        action: &'static str,
        role_arn: String,
        code: String,
        message: String,
        hint: Option<&'static str>,
    },
    /// No answer from STS.
    #[error("STS unreachable at {endpoint}: {cause}")]
    Unreachable { endpoint: String, cause: String },
    /// STS answered something that is not a result of the call made.
    #[error("malformed answer from STS at {endpoint}: {reason}")]
    MalformedAnswer { endpoint: String, reason: String },
    /// The SDK refused to build the request (a parameter STS would refuse too).
    #[error("cannot build the {action} request for {role_arn}: {reason}")]
    InvalidRequest { action: &'static str, role_arn: String, reason: String },
}

fn hint_suffix(hint: Option<&str>) -> String {
    hint.map(|hint| format!(" ({hint})")).unwrap_or_default()
}

/// Gets and caches each session's role credentials.
#[derive(Debug)]
pub struct CredentialBroker {
    client: aws_sdk_sts::Client,
    duration: Duration,
    /// `aws.tag_sessions`: chain an AssumeRole carrying SourceIdentity and session tags.
    tag_sessions: bool,
    /// Where STS calls go, for error messages.
    endpoint: String,
    cache: Mutex<HashMap<CacheKey, Slot>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    session_id: String,
    role_arn: String,
}

/// One (session, role)'s credentials.
///
/// Every call of a session reads them, from every connection and gateway worker at once, so
/// reading takes only a short synchronous lock that is never held across an await. The async
/// `refreshing` lock is held during the STS calls, so that when the credentials are missing or
/// near expiry, concurrent calls of the session wait for one refresh instead of each making
/// their own. (Taking the async lock on every call made it the one point all of a session's
/// calls passed through, and woke tasks across gateway workers.)
#[derive(Debug, Default)]
struct CredentialSlot {
    current: Mutex<Option<Credentials>>,
    refreshing: tokio::sync::Mutex<()>,
}

impl CredentialSlot {
    fn fresh(&self) -> Option<Credentials> {
        let current = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        current.as_ref().filter(|c| is_fresh(c, SystemTime::now())).cloned()
    }

    fn store(&self, credentials: Credentials) {
        *self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(credentials);
    }
}

type Slot = Arc<CredentialSlot>;

impl CredentialBroker {
    /// Builds the STS client for `config`; no network is used until the first request.
    pub fn new(config: &AwsConfig) -> Result<Self, StsError> {
        let tls = tls::client_config(config.upstream_ca_file.as_deref())?;
        let http = StsHttpClient { http: HttpClient::new(tls), upstream: config.upstream.clone() };
        // No credentials provider: the one call that is signed gets its keys per call.
        let sts_config = aws_sdk_sts::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .http_client(http)
            .build();
        let endpoint = match &config.upstream {
            Some(upstream) => upstream.to_string(),
            None => format!("sts.{}.amazonaws.com", config.region),
        };
        Ok(Self {
            client: aws_sdk_sts::Client::from_conf(sts_config),
            duration: config.session_duration,
            tag_sessions: config.tag_sessions,
            endpoint,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Credentials for `request`'s session and role: the cached ones while they have more than
    /// [`REFRESH_BEFORE_EXPIRY`] left, else new ones from STS.
    ///
    /// Concurrent calls for one session and role wait for a single round of STS calls. If it
    /// fails, each waiter then tries once itself (an outage costs one timeout per waiting
    /// request, not a cached error). A call in flight when [`forget`](Self::forget) runs still
    /// returns its credentials; the caller checks the session is alive before using them.
    pub async fn credentials(&self, request: &AssumeRequest) -> Result<Credentials, StsError> {
        let slot = self.slot(request);
        if let Some(credentials) = slot.fresh() {
            return Ok(credentials);
        }
        let _refreshing = slot.refreshing.lock().await;
        // Another call may have refreshed them while this one waited.
        if let Some(credentials) = slot.fresh() {
            return Ok(credentials);
        }
        let credentials = self.assume(request).await?;
        slot.store(credentials.clone());
        Ok(credentials)
    }

    /// Drops every cached credential of `session_id` (session ended or killed).
    pub fn forget(&self, session_id: &str) {
        self.lock_cache().retain(|key, _| key.session_id != session_id);
    }

    fn slot(&self, request: &AssumeRequest) -> Slot {
        let key =
            CacheKey { session_id: request.session_id.clone(), role_arn: request.role_arn.clone() };
        self.lock_cache().entry(key).or_default().clone()
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, Slot>> {
        // Poisoning means a panic while inserting or removing a whole entry; the map is intact.
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn assume(&self, request: &AssumeRequest) -> Result<Credentials, StsError> {
        let session_name = role_session_name(&request.subject, &request.session_id);
        let web_identity = self.assume_with_web_identity(request, &session_name).await?;
        if !self.tag_sessions {
            return Ok(web_identity);
        }
        self.assume_chained(request, &session_name, web_identity).await
    }

    async fn assume_with_web_identity(
        &self,
        request: &AssumeRequest,
        session_name: &str,
    ) -> Result<Credentials, StsError> {
        tracing::debug!(
            session = %request.session_id,
            role = %request.role_arn,
            session_name,
            "AssumeRoleWithWebIdentity"
        );
        let output = self
            .client
            .assume_role_with_web_identity()
            .role_arn(&request.role_arn)
            .role_session_name(session_name)
            .web_identity_token(&request.web_identity_token)
            .duration_seconds(duration_seconds(self.duration))
            .send()
            .await
            .map_err(|err| self.sdk_error(WEB_IDENTITY_ACTION, &request.role_arn, err))?;
        self.credentials_from(output.credentials())
    }

    /// AssumeRole on the same role, signed with the web-identity credentials, carrying
    /// SourceIdentity and the transitive session tags.
    async fn assume_chained(
        &self,
        request: &AssumeRequest,
        session_name: &str,
        web_identity: Credentials,
    ) -> Result<Credentials, StsError> {
        let source_identity = source_identity(&request.subject);
        tracing::debug!(
            session = %request.session_id,
            role = %request.role_arn,
            session_name,
            source_identity,
            "AssumeRole (chained, tagged)"
        );
        let mut call = self
            .client
            .assume_role()
            .role_arn(&request.role_arn)
            .role_session_name(session_name)
            .source_identity(source_identity)
            .duration_seconds(duration_seconds(self.duration.min(MAX_CHAINED_DURATION)));
        for tag in session_tags(request)? {
            call = call.transitive_tag_keys(tag.key()).tags(tag);
        }
        let signer = aws_sdk_sts::config::Builder::default().credentials_provider(web_identity);
        let output = call
            .customize()
            .config_override(signer)
            .send()
            .await
            .map_err(|err| self.sdk_error(CHAINED_ACTION, &request.role_arn, err))?;
        self.credentials_from(output.credentials())
    }

    fn credentials_from(
        &self,
        sts: Option<&aws_sdk_sts::types::Credentials>,
    ) -> Result<Credentials, StsError> {
        let malformed = |reason: &str| StsError::MalformedAnswer {
            endpoint: self.endpoint.clone(),
            reason: reason.to_owned(),
        };
        let sts = sts.ok_or_else(|| malformed("it holds no Credentials"))?;
        let expires = SystemTime::try_from(*sts.expiration())
            .map_err(|_| malformed("its Expiration is not a representable time"))?;
        if sts.access_key_id().is_empty() || sts.secret_access_key().is_empty() {
            return Err(malformed("its Credentials have an empty key"));
        }
        Ok(Credentials::new(
            sts.access_key_id(),
            sts.secret_access_key(),
            Some(sts.session_token().to_owned()),
            Some(expires),
            PROVIDER_NAME,
        ))
    }

    fn sdk_error<E>(
        &self,
        action: &'static str,
        role_arn: &str,
        err: SdkError<E, HttpResponse>,
    ) -> StsError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let endpoint = self.endpoint.clone();
        match err {
            SdkError::ServiceError(service) => {
                let (err, raw) = (service.err(), service.raw());
                // AWS's message names the permission the trust policy lacks; say where to fix it.
                let denied_chain = action == CHAINED_ACTION && raw.status().as_u16() == 403;
                StsError::Refused {
                    action,
                    role_arn: role_arn.to_owned(),
                    code: err.code().unwrap_or("Unknown").to_owned(),
                    message: err.message().map_or_else(|| unparsed_answer(raw), str::to_owned),
                    hint: denied_chain.then_some(CHAIN_HINT),
                }
            }
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
                StsError::Unreachable { endpoint, cause: DisplayErrorContext(&err).to_string() }
            }
            SdkError::ConstructionFailure(_) => StsError::InvalidRequest {
                action,
                role_arn: role_arn.to_owned(),
                reason: DisplayErrorContext(&err).to_string(),
            },
            _ => StsError::MalformedAnswer {
                endpoint,
                reason: DisplayErrorContext(&err).to_string(),
            },
        }
    }
}

/// An error answer the SDK could not read (not STS's `<ErrorResponse><Error>` shape): its status
/// and the start of its body, so the operator still sees what the server said.
fn unparsed_answer(raw: &HttpResponse) -> String {
    const SHOWN: usize = 400;
    let body = raw.body().bytes().map(String::from_utf8_lossy).unwrap_or_default();
    let body: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    let cut: String = body.chars().take(SHOWN).collect();
    format!("HTTP {}, unreadable error answer: {cut}", raw.status().as_u16())
}

fn duration_seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs()).unwrap_or(i32::MAX)
}

/// The session tags of the chained AssumeRole: the session id and the subject.
fn session_tags(request: &AssumeRequest) -> Result<[Tag; 2], StsError> {
    let tag = |key: &str, value: &str| {
        Tag::builder().key(key).value(tag_value(value)).build().map_err(|err| {
            StsError::InvalidRequest {
                action: CHAINED_ACTION,
                role_arn: request.role_arn.clone(),
                reason: format!("session tag {key}: {err}"),
            }
        })
    };
    Ok([tag(SESSION_TAG, &request.session_id)?, tag(SUBJECT_TAG, &request.subject)?])
}

fn is_fresh(credentials: &Credentials, now: SystemTime) -> bool {
    credentials.expiry().is_some_and(|expiry| expiry > now + REFRESH_BEFORE_EXPIRY)
}

/// The RoleSessionName for a session: `<subject>@<session-id>`, at most
/// [`MAX_ROLE_SESSION_NAME`] characters of `[A-Za-z0-9_+=,.@-]` as STS requires.
///
/// Other characters become `_`. The session id is kept whole (up to 62 characters) and has no
/// `@`, so the part after the last `@` is always the session; the subject is cut to fit.
pub fn role_session_name(subject: &str, session_id: &str) -> String {
    let session: String =
        sanitize(session_id, false).chars().take(MAX_ROLE_SESSION_NAME - 2).collect();
    let room = MAX_ROLE_SESSION_NAME - 1 - session.len();
    let mut subject: String = sanitize(subject, true).chars().take(room).collect();
    if subject.is_empty() {
        // STS needs at least two characters; "_@" keeps the shape readable.
        subject.push('_');
    }
    format!("{subject}@{session}")
}

/// The SourceIdentity for a subject: 2 to [`MAX_SOURCE_IDENTITY`] characters of
/// `[A-Za-z0-9_+=,.@-]` as STS requires; other characters become `_`, a longer subject is cut
/// and a shorter one padded with `_`.
pub fn source_identity(subject: &str) -> String {
    let mut identity: String = sanitize(subject, true).chars().take(MAX_SOURCE_IDENTITY).collect();
    while identity.len() < 2 {
        identity.push('_');
    }
    identity
}

/// A session tag value STS accepts: at most [`MAX_TAG_VALUE`] characters of
/// `[A-Za-z0-9 _.:/=+@-]`. STS also takes other Unicode letters, but `_` keeps the packed size
/// predictable and the value greppable.
fn tag_value(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() || " _.:/=+@-".contains(c) { c } else { '_' })
        .take(MAX_TAG_VALUE)
        .collect()
}

fn sanitize(text: &str, keep_at: bool) -> String {
    text.chars()
        .map(|c| {
            let allowed =
                c.is_ascii_alphanumeric() || "_+=,.-".contains(c) || (keep_at && c == '@');
            if allowed { c } else { '_' }
        })
        .collect()
}

/// The SDK's HTTP client: this module's hyper client, with the `aws.upstream` override.
#[derive(Debug, Clone)]
struct StsHttpClient {
    http: HttpClient,
    upstream: Option<url::Url>,
}

impl SmithyHttpClient for StsHttpClient {
    fn http_connector(
        &self,
        _settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        // Timeouts are the hyper client's own (identity::http), so the settings are not needed.
        SharedHttpConnector::new(self.clone())
    }
}

impl HttpConnector for StsHttpClient {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let this = self.clone();
        HttpConnectorFuture::new(async move { this.send(request).await })
    }
}

impl StsHttpClient {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, ConnectorError> {
        let request = request.try_into_http1x().map_err(|err| ConnectorError::user(err.into()))?;
        let (mut parts, body) = request.into_parts();
        let body = body.collect().await.map_err(ConnectorError::user)?.to_bytes();
        if let Some(upstream) = &self.upstream {
            redirect_to(&mut parts, upstream).map_err(|err| ConnectorError::user(err.into()))?;
        }
        let response = self
            .http
            .send(http::Request::from_parts(parts, Full::new(body)))
            .await
            .map_err(connector_error)?;
        let response = response.map(SdkBody::from);
        HttpResponse::try_from(response).map_err(|err| ConnectorError::other(err.into(), None))
    }
}

/// Sends the request to `upstream` (its scheme, host and port), keeping the original authority
/// in the Host header.
fn redirect_to(parts: &mut http::request::Parts, upstream: &url::Url) -> Result<(), String> {
    let original = parts.uri.authority().cloned().ok_or("request URI has no host")?;
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let target = format!("{}://{}{}", upstream.scheme(), upstream_authority(upstream)?, path);
    parts.uri = target.parse().map_err(|err| format!("upstream URI {target:?}: {err}"))?;
    let host = http::HeaderValue::from_str(original.as_str()).map_err(|err| err.to_string())?;
    parts.headers.insert(http::header::HOST, host);
    Ok(())
}

fn upstream_authority(upstream: &url::Url) -> Result<String, String> {
    let host = upstream.host_str().ok_or_else(|| format!("aws.upstream {upstream} has no host"))?;
    Ok(match upstream.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    })
}

fn connector_error(err: FetchError) -> ConnectorError {
    match err {
        FetchError::Timeout => ConnectorError::timeout(err.into()),
        FetchError::Transport(_) => ConnectorError::io(err.into()),
        FetchError::Body(_) => ConnectorError::other(err.into(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::test_server::TestServer;

    const ROLE: &str = "arn:aws:iam::111122223333:role/agent";

    #[test]
    fn role_session_name_is_subject_at_session() {
        assert_eq!(role_session_name("alice@example.com", "s-1"), "alice@example.com@s-1");
        assert_eq!(role_session_name("ci bot/main:job", "s-1"), "ci_bot_main_job@s-1");
        assert_eq!(role_session_name("", "s-1"), "_@s-1");
        assert_eq!(role_session_name("zoë", "a@b"), "zo_@a_b");
    }

    #[test]
    fn long_subject_is_cut_and_the_session_kept() {
        let name = role_session_name(&"x".repeat(100), "0123456789abcdef");

        assert_eq!(name.len(), MAX_ROLE_SESSION_NAME);
        assert!(name.ends_with("@0123456789abcdef"), "{name}");
    }

    #[test]
    fn long_session_id_still_fits() {
        let name = role_session_name("alice", &"s".repeat(100));

        assert_eq!(name.len(), MAX_ROLE_SESSION_NAME);
        assert!(name.starts_with("a@s"), "{name}");
    }

    #[test]
    fn source_identity_fits_sts_rules() {
        assert_eq!(source_identity("alice@example.com"), "alice@example.com");
        assert_eq!(source_identity("ci bot/main:job"), "ci_bot_main_job");
        assert_eq!(source_identity(""), "__");
        assert_eq!(source_identity("a"), "a_");
        assert_eq!(source_identity(&"x".repeat(100)).len(), MAX_SOURCE_IDENTITY);
    }

    #[test]
    fn tag_values_and_keys_fit_sts_rules() {
        assert_eq!(tag_value("alice@example.com"), "alice@example.com");
        assert_eq!(tag_value("zoë <x>"), "zo_ _x_");
        assert_eq!(tag_value(&"x".repeat(300)).len(), MAX_TAG_VALUE);
        for key in [SESSION_TAG, SUBJECT_TAG] {
            assert!(key.len() <= 128 && !key.starts_with("aws:"), "{key}");
            assert_eq!(tag_value(key), key, "a tag key uses only allowed characters");
        }
    }

    /// How the fake STS answers.
    #[derive(Clone, Copy)]
    enum Answer {
        /// Credentials living this long, for both actions.
        Issue(Duration),
        /// AssumeRoleWithWebIdentity fails (an expired token).
        RefuseWebIdentity,
        /// AssumeRoleWithWebIdentity succeeds, the chained AssumeRole is denied.
        RefuseChain,
        /// As `RefuseChain`, in a shape the SDK cannot read (moto's `<Errors><Error>`).
        RefuseChainNested,
    }

    /// A stand-in for STS answering AssumeRoleWithWebIdentity and AssumeRole; keeps every
    /// request seen, in order.
    struct FakeSts {
        seen: Arc<Mutex<Vec<http::Request<bytes::Bytes>>>>,
        server: TestServer,
    }

    impl FakeSts {
        async fn start(answer: Answer) -> Self {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let log = seen.clone();
            let server = TestServer::start(Arc::new(move |request: http::Request<bytes::Bytes>| {
                let body = String::from_utf8_lossy(request.body()).into_owned();
                let mut log = log.lock().unwrap();
                log.push(request);
                let call = log.len();
                let chained = !body.contains("Action=AssumeRoleWithWebIdentity");
                let error = |status: u16, xml: &str| {
                    http::Response::builder().status(status).body(xml.to_owned()).unwrap()
                };
                match (answer, chained) {
                    (Answer::RefuseWebIdentity, false) => error(400, WEB_IDENTITY_ERROR_XML),
                    (Answer::RefuseChain, true) => error(403, CHAIN_ERROR_XML),
                    (Answer::RefuseChainNested, true) => error(403, NESTED_ERROR_XML),
                    (Answer::Issue(lifetime), _) => {
                        http::Response::new(success_xml(chained, call, lifetime))
                    }
                    (_, chained) => {
                        http::Response::new(success_xml(chained, call, Duration::from_secs(3600)))
                    }
                }
            }))
            .await;
            Self { seen, server }
        }

        fn broker(&self) -> CredentialBroker {
            self.broker_with(AwsConfig::default())
        }

        fn broker_with(&self, config: AwsConfig) -> CredentialBroker {
            let upstream = url::Url::parse(&self.server.url()).unwrap();
            CredentialBroker::new(&AwsConfig { upstream: Some(upstream), ..config }).unwrap()
        }

        /// Bodies of the requests seen, in order.
        fn bodies(&self) -> Vec<String> {
            let seen = self.seen.lock().unwrap();
            seen.iter().map(|r| String::from_utf8_lossy(r.body()).into_owned()).collect()
        }

        /// How many times credentials were fetched (web-identity calls).
        fn fetches(&self) -> usize {
            self.bodies().iter().filter(|b| b.contains("Action=AssumeRoleWithWebIdentity")).count()
        }

        fn header(&self, index: usize, name: &str) -> Option<String> {
            let seen = self.seen.lock().unwrap();
            seen[index].headers().get(name).map(|v| v.to_str().unwrap().to_owned())
        }
    }

    /// Web-identity calls issue `ASIAWEB<n>`, chained ones `ASIACHAIN<n>` (n: the call number).
    fn success_xml(chained: bool, call: usize, lifetime: Duration) -> String {
        let expiry = humantime::format_rfc3339_seconds(SystemTime::now() + lifetime);
        let (action, key) = if chained {
            ("AssumeRole", format!("ASIACHAIN{call}"))
        } else {
            ("AssumeRoleWithWebIdentity", format!("ASIAWEB{call}"))
        };
        format!(
            r#"<{action}Response xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <{action}Result>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::111122223333:assumed-role/agent/alice@s-1</Arn>
      <AssumedRoleId>AROAEXAMPLE:alice@s-1</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>token-{call}</SessionToken>
      <SecretAccessKey>secret-{call}</SecretAccessKey>
      <Expiration>{expiry}</Expiration>
      <AccessKeyId>{key}</AccessKeyId>
    </Credentials>
  </{action}Result>
  <ResponseMetadata><RequestId>req-{call}</RequestId></ResponseMetadata>
</{action}Response>"#
        )
    }

    const WEB_IDENTITY_ERROR_XML: &str = concat!(
        r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error>"#,
        "<Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>Token is expired</Message>",
        "</Error><RequestId>req-err</RequestId></ErrorResponse>"
    );

    /// What STS answers when the trust policy lacks sts:TagSession.
    const CHAIN_ERROR_XML: &str = concat!(
        r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error>"#,
        "<Type>Sender</Type><Code>AccessDenied</Code><Message>User: ",
        "arn:aws:sts::111122223333:assumed-role/agent/alice@s-1 is not authorized to perform: ",
        "sts:TagSession on resource: arn:aws:iam::111122223333:role/agent</Message>",
        "</Error><RequestId>req-err</RequestId></ErrorResponse>"
    );

    const NESTED_ERROR_XML: &str = concat!(
        r#"<?xml version="1.0" encoding="utf-8"?>"#,
        "<ErrorResponse><Errors><Error><Code>AccessDenied</Code><Message>User: ",
        "arn:aws:sts::111122223333:assumed-role/agent/alice@s-1 is not authorized to perform: ",
        "sts:AssumeRole</Message><Type>Sender</Type></Error></Errors></ErrorResponse>"
    );

    fn request(session_id: &str) -> AssumeRequest {
        AssumeRequest {
            session_id: session_id.into(),
            role_arn: ROLE.into(),
            subject: "alice".into(),
            web_identity_token: "header.claims.signature".into(),
        }
    }

    fn form_param(body: &str, name: &str) -> Option<String> {
        url::form_urlencoded::parse(body.as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    }

    fn assert_contains_all(body: &str, parts: &[&str]) {
        for part in parts {
            assert!(body.contains(part), "{part} missing from {body}");
        }
    }

    #[tokio::test]
    async fn web_identity_call_is_unsigned_and_sent_to_the_upstream() {
        let sts = FakeSts::start(Answer::Issue(Duration::from_secs(3600))).await;

        sts.broker().credentials(&request("s-1")).await.unwrap();

        assert_eq!(sts.header(0, "host").as_deref(), Some("sts.us-east-1.amazonaws.com"));
        assert!(sts.header(0, "authorization").is_none(), "the call must be unsigned");
        assert_contains_all(&sts.bodies()[0], &[
            "Action=AssumeRoleWithWebIdentity",
            "RoleSessionName=alice%40s-1",
            "DurationSeconds=900",
            "WebIdentityToken=header.claims.signature",
        ]);
    }

    #[tokio::test]
    async fn chained_call_is_signed_with_the_web_identity_key_and_tags_the_session() {
        let sts = FakeSts::start(Answer::Issue(Duration::from_secs(3600))).await;
        let request = AssumeRequest { subject: "alice@example.com".into(), ..request("s-1") };

        let credentials = sts.broker().credentials(&request).await.unwrap();

        assert_eq!(sts.bodies().len(), 2);
        let authorization = sts.header(1, "authorization").expect("the chained call is signed");
        assert!(
            authorization.starts_with("AWS4-HMAC-SHA256 Credential=ASIAWEB1/"),
            "signed with the web-identity key: {authorization}"
        );
        assert!(authorization.contains("/us-east-1/sts/aws4_request"), "{authorization}");
        assert_eq!(sts.header(1, "x-amz-security-token").as_deref(), Some("token-1"));
        assert_eq!(sts.header(1, "host").as_deref(), Some("sts.us-east-1.amazonaws.com"));
        assert_contains_all(&sts.bodies()[1], &[
            "Action=AssumeRole&",
            "RoleArn=arn%3Aaws%3Aiam%3A%3A111122223333%3Arole%2Fagent",
            "RoleSessionName=alice%40example.com%40s-1",
            "SourceIdentity=alice%40example.com",
            "Tags.member.1.Key=interceptor%3Asession",
            "Tags.member.1.Value=s-1",
            "Tags.member.2.Key=interceptor%3Asubject",
            "Tags.member.2.Value=alice%40example.com",
            "TransitiveTagKeys.member.1=interceptor%3Asession",
            "TransitiveTagKeys.member.2=interceptor%3Asubject",
            "DurationSeconds=900",
        ]);

        assert_eq!(credentials.access_key_id(), "ASIACHAIN2");
        assert_eq!(credentials.secret_access_key(), "secret-2");
        assert_eq!(credentials.session_token(), Some("token-2"));
        assert!(credentials.expiry().unwrap() > SystemTime::now() + Duration::from_secs(3000));
    }

    #[tokio::test]
    async fn chained_duration_is_capped_at_one_hour() {
        let sts = FakeSts::start(Answer::Issue(Duration::from_secs(3600))).await;
        let config =
            AwsConfig { session_duration: Duration::from_secs(8 * 3600), ..AwsConfig::default() };

        sts.broker_with(config).credentials(&request("s-1")).await.unwrap();

        let bodies = sts.bodies();
        assert_eq!(form_param(&bodies[0], "DurationSeconds").as_deref(), Some("28800"));
        assert_eq!(form_param(&bodies[1], "DurationSeconds").as_deref(), Some("3600"));
    }

    #[tokio::test]
    async fn without_tag_sessions_only_the_web_identity_call_is_made() {
        let sts = FakeSts::start(Answer::Issue(Duration::from_secs(3600))).await;
        let config = AwsConfig { tag_sessions: false, ..AwsConfig::default() };

        let credentials = sts.broker_with(config).credentials(&request("s-1")).await.unwrap();

        assert_eq!(sts.bodies().len(), 1);
        assert_eq!(credentials.access_key_id(), "ASIAWEB1");
        assert_eq!(credentials.session_token(), Some("token-1"));
    }

    #[tokio::test]
    async fn concurrent_requests_of_a_session_make_one_fetch_until_forgotten() {
        let sts = FakeSts::start(Answer::Issue(Duration::from_secs(3600))).await;
        let broker = Arc::new(sts.broker());

        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let broker = broker.clone();
                tokio::spawn(async move { broker.credentials(&request("s-1")).await.unwrap() })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().access_key_id(), "ASIACHAIN2");
        }
        assert_eq!(sts.bodies().len(), 2, "one web-identity call and one chained call");

        broker.credentials(&request("s-2")).await.unwrap();
        assert_eq!(sts.fetches(), 2, "another session has its own credentials");

        broker.forget("s-1");
        let renewed = broker.credentials(&request("s-1")).await.unwrap();
        assert_eq!(sts.fetches(), 3);
        assert_eq!(renewed.access_key_id(), "ASIACHAIN6");
    }

    #[tokio::test]
    async fn credentials_near_expiry_are_renewed() {
        let sts = FakeSts::start(Answer::Issue(REFRESH_BEFORE_EXPIRY / 2)).await;
        let broker = sts.broker();

        broker.credentials(&request("s-1")).await.unwrap();
        broker.credentials(&request("s-1")).await.unwrap();

        assert_eq!(sts.fetches(), 2);
    }

    #[tokio::test]
    async fn sts_refusal_carries_its_code_and_message() {
        let sts = FakeSts::start(Answer::RefuseWebIdentity).await;

        let err = sts.broker().credentials(&request("s-1")).await.unwrap_err();

        let StsError::Refused { code, message, .. } = &err else { panic!("{err:?}") };
        assert_eq!(code, "InvalidIdentityToken");
        assert_eq!(message, "Token is expired");
        assert!(err.to_string().contains(ROLE), "{err}");
        assert_eq!(sts.bodies().len(), 1, "no chained call without web-identity credentials");
    }

    #[tokio::test]
    async fn refused_chain_names_the_missing_permission_and_the_fix() {
        let sts = FakeSts::start(Answer::RefuseChain).await;

        let err = sts.broker().credentials(&request("s-1")).await.unwrap_err();

        let StsError::Refused { action, code, .. } = &err else { panic!("{err:?}") };
        assert_eq!((*action, code.as_str()), ("AssumeRole", "AccessDenied"));
        let text = err.to_string();
        assert!(text.contains("STS refused AssumeRole on"), "{text}");
        assert!(text.contains("not authorized to perform: sts:TagSession"), "{text}");
        assert!(text.contains("aws.tag_sessions = false"), "{text}");
    }

    #[tokio::test]
    async fn unreadable_refusal_still_shows_what_sts_said() {
        let sts = FakeSts::start(Answer::RefuseChainNested).await;

        let err = sts.broker().credentials(&request("s-1")).await.unwrap_err();

        assert!(matches!(err, StsError::Refused { action: "AssumeRole", .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("HTTP 403"), "{text}");
        assert!(text.contains("not authorized to perform: sts:AssumeRole"), "{text}");
        assert!(text.contains("aws.tag_sessions = false"), "{text}");
    }

    #[tokio::test]
    async fn unreachable_sts_names_the_endpoint() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let upstream = url::Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let broker =
            CredentialBroker::new(&AwsConfig { upstream: Some(upstream), ..AwsConfig::default() })
                .unwrap();

        let err = broker.credentials(&request("s-1")).await.unwrap_err();

        assert!(matches!(err, StsError::Unreachable { .. }), "{err:?}");
        assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");
    }
}
