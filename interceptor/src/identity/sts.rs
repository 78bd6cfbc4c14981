//! The AWS credentials bound to an identity: AssumeRoleWithWebIdentity with the session's OIDC
//! token, cached per (session, role) until shortly before they expire.
//!
//! The call is unsigned, so the STS client has no credentials provider at all: nothing reads
//! keys from the environment, profiles or instance metadata. HTTP goes through this module's own
//! hyper client (hyper-rustls, ring, webpki roots plus `aws.upstream_ca_file`), plugged into the
//! SDK as its [`HttpClient`]. With `aws.upstream` set, every STS request is sent to that URL
//! while its Host header keeps the real STS name, as the gateway does for all other services.
//!
//! RoleSessionName is `<subject>@<session-id>` (see [`role_session_name`]), so CloudTrail entries
//! of the session name the person and the session. AssumeRoleWithWebIdentity has no
//! SourceIdentity or Tags parameters: STS takes those from the token's
//! `https://aws.amazon.com/source_identity` and `https://aws.amazon.com/tags` claims. Setting them
//! from the daemon needs a chained, signed AssumeRole with these credentials; that would go in
//! [`CredentialBroker::credentials`] after the web-identity call.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use aws_credential_types::Credentials;
use aws_sdk_sts::{
    config::{BehaviorVersion, Region},
    error::{DisplayErrorContext, ProvideErrorMetadata, SdkError},
    operation::assume_role_with_web_identity::{
        AssumeRoleWithWebIdentityError, AssumeRoleWithWebIdentityOutput,
    },
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
/// Provider name recorded in the credentials (shows in SDK debug output).
const PROVIDER_NAME: &str = "interceptor-sts";

/// What to assume, for whom.
#[derive(Debug, Clone)]
pub struct AssumeRequest {
    /// The interceptor session; part of the cache key and of the RoleSessionName.
    pub session_id: String,
    /// The role to assume.
    pub role_arn: String,
    /// The validated identity's subject (`Identity::subject`), named in the RoleSessionName.
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
    #[error("STS refused AssumeRoleWithWebIdentity on {role_arn}: {code}: {message}")]
    Refused { role_arn: String, code: String, message: String },
    /// No answer from STS.
    #[error("STS unreachable at {endpoint}: {cause}")]
    Unreachable { endpoint: String, cause: String },
    /// STS answered something that is not an AssumeRoleWithWebIdentity result.
    #[error("malformed answer from STS at {endpoint}: {reason}")]
    MalformedAnswer { endpoint: String, reason: String },
    /// The SDK refused to build the request (a parameter STS would refuse too).
    #[error("cannot build the AssumeRoleWithWebIdentity request for {role_arn}: {reason}")]
    InvalidRequest { role_arn: String, reason: String },
}

/// Gets and caches each session's role credentials.
#[derive(Debug)]
pub struct CredentialBroker {
    client: aws_sdk_sts::Client,
    duration: Duration,
    /// Where STS calls go, for error messages.
    endpoint: String,
    cache: Mutex<HashMap<CacheKey, Slot>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    session_id: String,
    role_arn: String,
}

/// One (session, role)'s credentials. The async lock is held during the STS call, so concurrent
/// requests of a session wait for that one call instead of making their own.
type Slot = Arc<tokio::sync::Mutex<Option<Credentials>>>;

impl CredentialBroker {
    /// Builds the STS client for `config`; no network is used until the first request.
    pub fn new(config: &AwsConfig) -> Result<Self, StsError> {
        let tls = tls::client_config(config.upstream_ca_file.as_deref())?;
        let http = StsHttpClient { http: HttpClient::new(tls), upstream: config.upstream.clone() };
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
            endpoint,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Credentials for `request`'s session and role: the cached ones while they have more than
    /// [`REFRESH_BEFORE_EXPIRY`] left, else new ones from STS.
    ///
    /// Concurrent calls for one session and role wait for a single STS call. If it fails, each
    /// waiter then tries once itself (an outage costs one timeout per waiting request, not a
    /// cached error). A call in flight when [`forget`](Self::forget) runs still returns its
    /// credentials; the caller checks the session is alive before using them.
    pub async fn credentials(&self, request: &AssumeRequest) -> Result<Credentials, StsError> {
        let slot = self.slot(request);
        let mut cached = slot.lock().await;
        if let Some(credentials) = cached.as_ref().filter(|c| is_fresh(c, SystemTime::now())) {
            return Ok(credentials.clone());
        }
        let credentials = self.assume(request).await?;
        *cached = Some(credentials.clone());
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
        let duration = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
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
            .duration_seconds(duration)
            .send()
            .await
            .map_err(|err| self.sdk_error(&request.role_arn, err))?;
        self.credentials_from(output)
    }

    fn credentials_from(
        &self,
        output: AssumeRoleWithWebIdentityOutput,
    ) -> Result<Credentials, StsError> {
        let malformed = |reason: &str| StsError::MalformedAnswer {
            endpoint: self.endpoint.clone(),
            reason: reason.to_owned(),
        };
        let sts = output.credentials().ok_or_else(|| malformed("it holds no Credentials"))?;
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

    fn sdk_error(&self, role_arn: &str, err: SdkError<AssumeRoleWithWebIdentityError>) -> StsError {
        let endpoint = self.endpoint.clone();
        match err {
            SdkError::ServiceError(service) => {
                let err = service.err();
                StsError::Refused {
                    role_arn: role_arn.to_owned(),
                    code: err.code().unwrap_or("Unknown").to_owned(),
                    message: err.message().unwrap_or("(no message)").to_owned(),
                }
            }
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
                StsError::Unreachable { endpoint, cause: DisplayErrorContext(&err).to_string() }
            }
            SdkError::ConstructionFailure(_) => StsError::InvalidRequest {
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
    use std::sync::atomic::{AtomicUsize, Ordering};

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

    /// A stand-in for STS answering AssumeRoleWithWebIdentity; counts calls and keeps the last
    /// request seen.
    struct FakeSts {
        calls: Arc<AtomicUsize>,
        last: Arc<Mutex<Option<http::Request<bytes::Bytes>>>>,
        server: TestServer,
    }

    impl FakeSts {
        /// `lifetime`: how long the issued credentials live; `None` answers an STS error.
        async fn start(lifetime: Option<Duration>) -> Self {
            let calls = Arc::new(AtomicUsize::new(0));
            let last = Arc::new(Mutex::new(None));
            let (counter, seen) = (calls.clone(), last.clone());
            let server = TestServer::start(Arc::new(move |request| {
                let call = counter.fetch_add(1, Ordering::SeqCst) + 1;
                *seen.lock().unwrap() = Some(request);
                match lifetime {
                    Some(lifetime) => http::Response::new(success_xml(call, lifetime)),
                    None => http::Response::builder().status(400).body(ERROR_XML.into()).unwrap(),
                }
            }))
            .await;
            Self { calls, last, server }
        }

        fn broker(&self) -> CredentialBroker {
            let upstream = url::Url::parse(&self.server.url()).unwrap();
            CredentialBroker::new(&AwsConfig { upstream: Some(upstream), ..AwsConfig::default() })
                .unwrap()
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    fn success_xml(call: usize, lifetime: Duration) -> String {
        let expiry = humantime::format_rfc3339_seconds(SystemTime::now() + lifetime);
        format!(
            r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>alice</SubjectFromWebIdentityToken>
    <Audience>interceptor</Audience>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::111122223333:assumed-role/agent/alice@s-1</Arn>
      <AssumedRoleId>AROAEXAMPLE:alice@s-1</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>token-{call}</SessionToken>
      <SecretAccessKey>secret-{call}</SecretAccessKey>
      <Expiration>{expiry}</Expiration>
      <AccessKeyId>ASIAFAKE{call}</AccessKeyId>
    </Credentials>
    <Provider>idp.test</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>req-{call}</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"#
        )
    }

    const ERROR_XML: &str = r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error>
    <Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>Token is expired</Message>
  </Error>
  <RequestId>req-err</RequestId>
</ErrorResponse>"#;

    fn request(session_id: &str) -> AssumeRequest {
        AssumeRequest {
            session_id: session_id.into(),
            role_arn: ROLE.into(),
            subject: "alice".into(),
            web_identity_token: "header.claims.signature".into(),
        }
    }

    #[tokio::test]
    async fn credentials_come_from_an_unsigned_call_to_the_upstream() {
        let sts = FakeSts::start(Some(Duration::from_secs(3600))).await;

        let credentials = sts.broker().credentials(&request("s-1")).await.unwrap();

        assert_eq!(credentials.access_key_id(), "ASIAFAKE1");
        assert_eq!(credentials.secret_access_key(), "secret-1");
        assert_eq!(credentials.session_token(), Some("token-1"));
        assert!(credentials.expiry().unwrap() > SystemTime::now() + Duration::from_secs(3000));

        let seen = sts.last.lock().unwrap().take().unwrap();
        assert_eq!(seen.headers()["host"], "sts.us-east-1.amazonaws.com");
        assert!(seen.headers().get("authorization").is_none(), "the call must be unsigned");
        let body = String::from_utf8(seen.body().to_vec()).unwrap();
        for part in [
            "Action=AssumeRoleWithWebIdentity",
            "RoleSessionName=alice%40s-1",
            "DurationSeconds=900",
            "WebIdentityToken=header.claims.signature",
        ] {
            assert!(body.contains(part), "{part} missing from {body}");
        }
    }

    #[tokio::test]
    async fn concurrent_requests_of_a_session_make_one_call_until_forgotten() {
        let sts = FakeSts::start(Some(Duration::from_secs(3600))).await;
        let broker = Arc::new(sts.broker());

        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let broker = broker.clone();
                tokio::spawn(async move { broker.credentials(&request("s-1")).await.unwrap() })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().access_key_id(), "ASIAFAKE1");
        }
        assert_eq!(sts.calls(), 1);

        broker.credentials(&request("s-2")).await.unwrap();
        assert_eq!(sts.calls(), 2, "another session has its own credentials");

        broker.forget("s-1");
        let renewed = broker.credentials(&request("s-1")).await.unwrap();
        assert_eq!(sts.calls(), 3);
        assert_eq!(renewed.access_key_id(), "ASIAFAKE3");
    }

    #[tokio::test]
    async fn credentials_near_expiry_are_renewed() {
        let sts = FakeSts::start(Some(REFRESH_BEFORE_EXPIRY / 2)).await;
        let broker = sts.broker();

        broker.credentials(&request("s-1")).await.unwrap();
        broker.credentials(&request("s-1")).await.unwrap();

        assert_eq!(sts.calls(), 2);
    }

    #[tokio::test]
    async fn sts_refusal_carries_its_code_and_message() {
        let sts = FakeSts::start(None).await;

        let err = sts.broker().credentials(&request("s-1")).await.unwrap_err();

        let StsError::Refused { code, message, .. } = &err else { panic!("{err:?}") };
        assert_eq!(code, "InvalidIdentityToken");
        assert_eq!(message, "Token is expired");
        assert!(err.to_string().contains(ROLE), "{err}");
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
