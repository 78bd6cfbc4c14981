//! OIDC token validation: who is behind a session.
//!
//! The issuer's keys come from OIDC discovery (`{issuer}/.well-known/openid-configuration`, whose
//! `issuer` must be the configured one) and its `jwks_uri`. The key set is cached; a token whose
//! `kid` is not in it makes one refetch (at most every [`JWKS_REFETCH_INTERVAL`]), so an IdP's key
//! rotation is picked up without a restart and a flood of made-up key ids cannot hammer the IdP.
//!
//! jsonwebtoken checks only the signature here; the claims (iss, aud, exp, nbf, sub, groups) are
//! checked by this module so that each refusal says what the token held and what was expected.

use std::{
    str::FromStr,
    sync::{Arc, RwLock},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use base64::Engine as _;
use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse},
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use url::Url;

use super::http::{FetchError, HttpClient, is_loopback};
use crate::{config::OidcConfig, tls};

/// Clock skew tolerated on `exp` and `nbf`, between this host and the IdP.
pub const CLOCK_LEEWAY: Duration = Duration::from_secs(30);
/// Shortest time between two fetches of the key set caused by unknown key ids.
pub const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// Age after which the cached key set is fetched again before use, so a key the IdP withdrew
/// stops being accepted. If that refresh fails, the cached keys stay in use (with a warning).
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(60 * 60);

/// Path of the discovery document under the issuer URL.
const DISCOVERY_PATH: &str = ".well-known/openid-configuration";

/// A validated token's identity: what sessions, policy and audit know about a person or workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    /// The `sub` claim; for client-credentials tokens, the client id.
    pub subject: String,
    /// From the configured groups claim; empty when the token has none.
    pub groups: Vec<String>,
    /// The `iss` claim (equal to the configured issuer).
    pub issuer: String,
    /// The token's `exp`: after this the identity gets denials.
    pub expires_at: SystemTime,
    /// Every claim of the token, for policy and the audit trail.
    pub claims: Map<String, Value>,
}

/// Why a token was refused, or could not be checked. The messages are shown to the person who ran
/// `interceptor run` and to operators, so each names the value at fault.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// `oidc.issuer` is empty: no token can be accepted.
    #[error("no OIDC issuer is configured (oidc.issuer), so no token can be accepted")]
    NotConfigured,
    /// The issuer or `jwks_uri` is not a URL this daemon will fetch.
    #[error("refusing to fetch {url}: {reason}")]
    InsecureUrl { url: String, reason: &'static str },
    /// The TLS client for the IdP could not be built (bad `oidc.ca_file`).
    #[error("cannot set up TLS to the IdP: {0}")]
    Tls(#[from] tls::TlsError),
    /// The token is not a JWS compact serialisation with JSON header and claims.
    #[error("malformed token: {reason}")]
    Malformed { reason: String },
    /// The token is signed with `none`, an HMAC secret, or an algorithm this daemon does not know.
    #[error(
        "token algorithm {alg:?} is not accepted (only RS*, PS*, ES256, ES384 and EdDSA \
         signatures from the issuer's published keys are)"
    )]
    UnsupportedAlgorithm { alg: String },
    /// No key of the issuer's key set has the token's `kid`, even after refetching it.
    #[error("token key id {kid:?} is not in the issuer's key set {jwks_uri}")]
    UnknownKeyId { kid: String, jwks_uri: String },
    /// The signature does not verify with the issuer's key: forged or altered token.
    #[error("token signature does not verify with the issuer's key {kid:?} ({alg:?})")]
    BadSignature { kid: Option<String>, alg: Algorithm },
    /// The token's `exp` has passed.
    #[error("token expired at {} ({}s ago)", rfc3339(*.expired_at), ago(*.expired_at))]
    Expired { expired_at: SystemTime },
    /// The token's `nbf` is in the future.
    #[error(
        "token is not valid before {} ({}s from now)",
        rfc3339(*.not_before),
        ahead(*.not_before)
    )]
    NotYetValid { not_before: SystemTime },
    /// The token was issued for another audience.
    #[error("token audience {found:?} does not include {expected:?} (oidc.audience)")]
    WrongAudience { found: Vec<String>, expected: String },
    /// The token comes from another issuer.
    #[error("token issuer {found:?} is not {expected:?} (oidc.issuer)")]
    WrongIssuer { found: String, expected: String },
    /// A claim this daemon needs is absent.
    #[error("token has no {claim:?} claim")]
    MissingClaim { claim: &'static str },
    /// A claim has the wrong type.
    #[error("token claim {claim:?} is invalid: {reason}")]
    InvalidClaim { claim: String, reason: &'static str },
    /// The IdP could not be reached or gave no usable answer.
    #[error("IdP unreachable at {url}: {cause}")]
    IdpUnreachable { url: String, cause: String },
    /// The discovery document or key set is not what OIDC specifies.
    #[error("invalid OIDC document at {url}: {reason}")]
    DiscoveryInvalid { url: String, reason: String },
}

impl IdentityError {
    /// Whether the token itself is at fault (the holder must get a new one), as opposed to the
    /// daemon's configuration or the IdP being down.
    pub fn is_token_fault(&self) -> bool {
        !matches!(
            self,
            Self::NotConfigured
                | Self::InsecureUrl { .. }
                | Self::Tls(_)
                | Self::IdpUnreachable { .. }
                | Self::DiscoveryInvalid { .. }
        )
    }
}

/// Validates tokens of one issuer for one audience. Cheap to share behind an `Arc`; the key set
/// is fetched on first use (or by [`OidcValidator::prefetch`]) and cached.
#[derive(Debug)]
pub struct OidcValidator {
    issuer: String,
    audience: String,
    groups_claim: String,
    discovery_url: Url,
    http: HttpClient,
    refetch_interval: Duration,
    /// The current key set; replaced whole, read without waiting for a fetch.
    keys: RwLock<Option<Arc<KeySet>>>,
    /// Held while fetching, so concurrent callers make one fetch between them.
    fetching: tokio::sync::Mutex<FetchState>,
}

#[derive(Debug, Default)]
struct FetchState {
    jwks_uri: Option<Url>,
    last_fetch: Option<Instant>,
    /// Number of key-set fetches so far; lets a waiter see that another caller already refetched.
    generation: u64,
}

#[derive(Debug)]
struct KeySet {
    jwks_uri: Url,
    keys: Vec<VerifyingKey>,
    fetched_at: Instant,
    generation: u64,
}

struct VerifyingKey {
    kid: Option<String>,
    /// The `alg` the key is published for, when the IdP says.
    alg: Option<Algorithm>,
    shape: KeyShape,
    key: DecodingKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey").field("kid", &self.kid).field("shape", &self.shape).finish()
    }
}

/// The kind of public key an algorithm needs; a key of another kind never verifies the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyShape {
    Rsa,
    P256,
    P384,
    Ed25519,
}

/// The parts of the JOSE header this module reads.
#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

impl OidcValidator {
    /// Builds a validator for `config`; no network is used until the first token (or
    /// [`prefetch`](Self::prefetch)).
    pub fn new(config: &OidcConfig) -> Result<Self, IdentityError> {
        if config.issuer.is_empty() {
            return Err(IdentityError::NotConfigured);
        }
        let issuer_url = Url::parse(&config.issuer).map_err(|err| IdentityError::InsecureUrl {
            url: config.issuer.clone(),
            reason: if err == url::ParseError::RelativeUrlWithoutBase {
                "not an absolute URL"
            } else {
                "not a URL"
            },
        })?;
        check_fetchable(&issuer_url)?;
        let tls = tls::client_config(config.ca_file.as_deref())?;
        Ok(Self {
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            groups_claim: config.groups_claim.clone(),
            discovery_url: discovery_url(&issuer_url),
            http: HttpClient::new(tls),
            refetch_interval: JWKS_REFETCH_INTERVAL,
            keys: RwLock::new(None),
            fetching: tokio::sync::Mutex::new(FetchState::default()),
        })
    }

    /// Sets the shortest time between refetches for unknown key ids (default
    /// [`JWKS_REFETCH_INTERVAL`]).
    #[must_use]
    pub fn with_refetch_interval(mut self, interval: Duration) -> Self {
        self.refetch_interval = interval;
        self
    }

    /// Fetches discovery and the key set now, so the daemon can report an unreachable or
    /// misconfigured IdP at start-up rather than at the first session.
    pub async fn prefetch(&self) -> Result<(), IdentityError> {
        self.fetch_keys(None).await.map(drop)
    }

    /// Checks `token` (a compact JWS) and returns the identity it proves.
    pub async fn validate(&self, token: &str) -> Result<Identity, IdentityError> {
        let token = token.trim();
        let header = parse_header(token)?;
        let alg = accepted_algorithm(&header.alg)?;
        let keys = self.keys_for(header.kid.as_deref()).await?;
        let claims = verify_signature(token, alg, header.kid.as_deref(), &keys)?;
        self.identity_from(claims, SystemTime::now())
    }

    /// The key set to verify a token with key id `kid`: the cached one, refreshed when too old,
    /// or refetched once when it does not hold `kid`.
    async fn keys_for(&self, kid: Option<&str>) -> Result<Arc<KeySet>, IdentityError> {
        let keys = match self.cached() {
            Some(keys) if keys.fetched_at.elapsed() < JWKS_MAX_AGE => keys,
            Some(stale) => self.refresh_stale(stale).await,
            // Generation 0 is "nothing fetched yet": callers that queued behind the first
            // fetch take its result.
            None => self.fetch_keys(Some(0)).await?,
        };
        let Some(kid) = kid else { return Ok(keys) };
        if keys.has_kid(kid) {
            return Ok(keys);
        }
        let keys = self.refetch_for_unknown_kid(&keys).await?;
        if keys.has_kid(kid) {
            return Ok(keys);
        }
        Err(IdentityError::UnknownKeyId {
            kid: kid.to_owned(),
            jwks_uri: keys.jwks_uri.to_string(),
        })
    }

    fn cached(&self) -> Option<Arc<KeySet>> {
        // A poisoned lock only means a writer panicked between two whole-Arc stores; the value
        // is still a complete key set or None.
        self.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    async fn refresh_stale(&self, stale: Arc<KeySet>) -> Arc<KeySet> {
        match self.fetch_keys(Some(stale.generation)).await {
            Ok(keys) => keys,
            Err(err) => {
                tracing::warn!(
                    error = %err,
                    "cannot refresh the IdP key set; keeping the cached one"
                );
                stale
            }
        }
    }

    /// One refetch for an unknown key id, unless another caller refetched since `seen` was
    /// read, or the last fetch is more recent than the refetch interval.
    async fn refetch_for_unknown_kid(
        &self,
        seen: &Arc<KeySet>,
    ) -> Result<Arc<KeySet>, IdentityError> {
        let state = self.fetching.lock().await;
        let refetched_meanwhile = state.generation != seen.generation;
        let recent = state.last_fetch.is_some_and(|at| at.elapsed() < self.refetch_interval);
        drop(state);
        if refetched_meanwhile {
            return Ok(self.cached().unwrap_or_else(|| seen.clone()));
        }
        if recent {
            tracing::debug!(jwks_uri = %seen.jwks_uri, "unknown key id; key set fetched just now");
            return Ok(seen.clone());
        }
        self.fetch_keys(Some(seen.generation)).await
    }

    /// Fetches discovery (first time only) and the key set, and caches it. With
    /// `after = Some(g)`, a caller that waited while another fetched generation > g takes that
    /// result instead of fetching again.
    async fn fetch_keys(&self, after: Option<u64>) -> Result<Arc<KeySet>, IdentityError> {
        let mut state = self.fetching.lock().await;
        if let (Some(after), Some(current)) = (after, self.cached())
            && current.generation > after
        {
            return Ok(current);
        }
        let jwks_uri = match &state.jwks_uri {
            Some(uri) => uri.clone(),
            None => self.discover().await?,
        };
        state.jwks_uri = Some(jwks_uri.clone());
        state.last_fetch = Some(Instant::now());
        let keys = self.fetch_jwks(&jwks_uri).await?;
        state.generation += 1;
        let set = Arc::new(KeySet {
            jwks_uri,
            keys,
            fetched_at: Instant::now(),
            generation: state.generation,
        });
        tracing::info!(jwks_uri = %set.jwks_uri, keys = set.keys.len(), "fetched the IdP key set");
        *self.keys.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(set.clone());
        Ok(set)
    }

    async fn discover(&self) -> Result<Url, IdentityError> {
        let body = self.fetch_document(&self.discovery_url).await?;
        let invalid = |reason: String| IdentityError::DiscoveryInvalid {
            url: self.discovery_url.to_string(),
            reason,
        };
        let discovery: Discovery = serde_json::from_slice(&body)
            .map_err(|err| invalid(format!("not a discovery document: {err}")))?;
        if discovery.issuer != self.issuer {
            return Err(invalid(format!(
                "it names issuer {:?}, not the configured {:?}",
                discovery.issuer, self.issuer
            )));
        }
        let jwks_uri = Url::parse(&discovery.jwks_uri).map_err(|err| {
            invalid(format!("jwks_uri {:?} is not a URL: {err}", discovery.jwks_uri))
        })?;
        check_fetchable(&jwks_uri)?;
        Ok(jwks_uri)
    }

    async fn fetch_jwks(&self, url: &Url) -> Result<Vec<VerifyingKey>, IdentityError> {
        let body = self.fetch_document(url).await?;
        let set: JwksDocument =
            serde_json::from_slice(&body).map_err(|err| IdentityError::DiscoveryInvalid {
                url: url.to_string(),
                reason: format!("not a JWK set: {err}"),
            })?;
        let keys: Vec<_> = set.keys.iter().filter_map(verifying_key).collect();
        if keys.is_empty() {
            return Err(IdentityError::DiscoveryInvalid {
                url: url.to_string(),
                reason: format!("none of its {} keys is a usable signing key", set.keys.len()),
            });
        }
        Ok(keys)
    }

    /// GETs a JSON document; anything but 200 is an unusable answer.
    async fn fetch_document(&self, url: &Url) -> Result<bytes::Bytes, IdentityError> {
        let response = self.http.get_json(url).await.map_err(|err| fetch_error(url, err))?;
        if response.status() != http::StatusCode::OK {
            return Err(IdentityError::IdpUnreachable {
                url: url.to_string(),
                cause: format!("answered HTTP {}", response.status()),
            });
        }
        Ok(response.into_body())
    }

    /// Checks the claims of a token whose signature verified, at time `now`.
    fn identity_from(
        &self,
        claims: Map<String, Value>,
        now: SystemTime,
    ) -> Result<Identity, IdentityError> {
        let issuer = string_claim(&claims, "iss")?;
        if issuer != self.issuer {
            return Err(IdentityError::WrongIssuer {
                found: issuer,
                expected: self.issuer.clone(),
            });
        }
        check_audience(&claims, &self.audience)?;
        let expires_at = check_times(&claims, now)?;
        let subject = string_claim(&claims, "sub")?;
        if subject.is_empty() {
            return Err(IdentityError::InvalidClaim { claim: "sub".into(), reason: "it is empty" });
        }
        let groups = groups(&claims, &self.groups_claim)?;
        Ok(Identity { subject, groups, issuer, expires_at, claims })
    }
}

impl KeySet {
    fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|key| key.kid.as_deref() == Some(kid))
    }
}

#[derive(Deserialize)]
struct JwksDocument {
    keys: Vec<Value>,
}

fn discovery_url(issuer: &Url) -> Url {
    let mut url = issuer.clone();
    let path = format!("{}/{DISCOVERY_PATH}", issuer.path().trim_end_matches('/'));
    url.set_path(&path);
    url
}

/// Keys and documents are fetched over HTTPS, or plain HTTP from a loopback peer (tests).
fn check_fetchable(url: &Url) -> Result<(), IdentityError> {
    let reason = match url.scheme() {
        "https" => return Ok(()),
        "http" if is_loopback(url) => return Ok(()),
        "http" => "plain http is only allowed to a loopback host; use https",
        _ => "only https URLs are fetched",
    };
    Err(IdentityError::InsecureUrl { url: url.to_string(), reason })
}

fn fetch_error(url: &Url, err: FetchError) -> IdentityError {
    let url = url.to_string();
    if err.is_transport() {
        return IdentityError::IdpUnreachable { url, cause: err.to_string() };
    }
    IdentityError::DiscoveryInvalid { url, reason: err.to_string() }
}

/// A JWK this module can verify with, or None for keys it skips: encryption keys, symmetric
/// keys, curves it does not support, and entries it cannot parse (an IdP may publish key types
/// newer than this crate; one such key must not make the whole set unusable).
fn verifying_key(value: &Value) -> Option<VerifyingKey> {
    let jwk: Jwk = serde_json::from_value(value.clone()).ok()?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let shape = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyShape::Rsa,
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => KeyShape::P256,
            EllipticCurve::P384 => KeyShape::P384,
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            KeyShape::Ed25519
        }
        _ => return None,
    };
    let alg = match jwk.common.key_algorithm {
        None => None,
        // Encryption algorithms (RSA-OAEP, ...) do not parse as signing algorithms: skip the key.
        Some(alg) => Some(Algorithm::from_str(&alg.to_string()).ok()?),
    };
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some(VerifyingKey { kid: jwk.common.key_id, alg, shape, key })
}

fn parse_header(token: &str) -> Result<JoseHeader, IdentityError> {
    let malformed = |reason: &str| IdentityError::Malformed { reason: reason.to_owned() };
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("expected three dot-separated parts (a signed JWT)"));
    };
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| malformed("the header is not base64url"))?;
    serde_json::from_slice(&json)
        .map_err(|_| malformed("the header is not a JSON object with \"alg\""))
}

/// The algorithms accepted: asymmetric signatures only. `none` and HMAC are refused, since an
/// HMAC "key" from a public key set would let anyone forge tokens.
fn accepted_algorithm(alg: &str) -> Result<Algorithm, IdentityError> {
    let refused = || IdentityError::UnsupportedAlgorithm { alg: alg.to_owned() };
    let algorithm = Algorithm::from_str(alg).map_err(|_| refused())?;
    shape_for(algorithm).map(|_| algorithm).ok_or_else(refused)
}

fn shape_for(alg: Algorithm) -> Option<KeyShape> {
    use Algorithm as A;
    match alg {
        A::RS256 | A::RS384 | A::RS512 | A::PS256 | A::PS384 | A::PS512 => Some(KeyShape::Rsa),
        A::ES256 => Some(KeyShape::P256),
        A::ES384 => Some(KeyShape::P384),
        A::EdDSA => Some(KeyShape::Ed25519),
        A::HS256 | A::HS384 | A::HS512 => None,
    }
}

/// Verifies the signature with the key named by `kid` (or, without a `kid`, any key of the
/// right kind) and returns the claims. Only the signature is checked here.
fn verify_signature(
    token: &str,
    alg: Algorithm,
    kid: Option<&str>,
    keys: &KeySet,
) -> Result<Map<String, Value>, IdentityError> {
    let mut validation = Validation::new(alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;

    let shape = shape_for(alg);
    let candidates = keys.keys.iter().filter(|key| {
        kid.is_none_or(|kid| key.kid.as_deref() == Some(kid))
            && Some(key.shape) == shape
            && key.alg.is_none_or(|published| published == alg)
    });
    let mut last = None;
    for key in candidates {
        match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
            Ok(data) => return Ok(data.claims),
            Err(err) => last = Some(err),
        }
    }
    Err(signature_error(last.as_ref(), kid, alg))
}

fn signature_error(
    err: Option<&jsonwebtoken::errors::Error>,
    kid: Option<&str>,
    alg: Algorithm,
) -> IdentityError {
    use jsonwebtoken::errors::ErrorKind;
    match err.map(jsonwebtoken::errors::Error::kind) {
        Some(
            ErrorKind::Base64(_)
            | ErrorKind::Json(_)
            | ErrorKind::Utf8(_)
            | ErrorKind::InvalidToken,
        ) => {
            IdentityError::Malformed { reason: "the claims are not base64url-encoded JSON".into() }
        }
        // No key of the right kind (None), or the key refused the signature.
        _ => IdentityError::BadSignature { kid: kid.map(str::to_owned), alg },
    }
}

fn string_claim(claims: &Map<String, Value>, claim: &'static str) -> Result<String, IdentityError> {
    match claims.get(claim) {
        None | Some(Value::Null) => Err(IdentityError::MissingClaim { claim }),
        Some(Value::String(value)) => Ok(value.clone()),
        Some(_) => {
            Err(IdentityError::InvalidClaim { claim: claim.into(), reason: "it is not a string" })
        }
    }
}

/// `aud` is one string or a list of strings (RFC 7519 4.1.3); one of them must be ours.
fn check_audience(claims: &Map<String, Value>, expected: &str) -> Result<(), IdentityError> {
    let found: Vec<String> = match claims.get("aud") {
        None | Some(Value::Null) => return Err(IdentityError::MissingClaim { claim: "aud" }),
        Some(Value::String(aud)) => vec![aud.clone()],
        Some(Value::Array(list)) => {
            list.iter().filter_map(Value::as_str).map(str::to_owned).collect()
        }
        Some(_) => {
            return Err(IdentityError::InvalidClaim {
                claim: "aud".into(),
                reason: "it is neither a string nor a list of strings",
            });
        }
    };
    if found.iter().any(|aud| aud == expected) {
        return Ok(());
    }
    Err(IdentityError::WrongAudience { found, expected: expected.to_owned() })
}

/// Checks `exp` (required) and `nbf` (optional) with [`CLOCK_LEEWAY`]; returns the expiry.
fn check_times(claims: &Map<String, Value>, now: SystemTime) -> Result<SystemTime, IdentityError> {
    let expires_at =
        time_claim(claims, "exp")?.ok_or(IdentityError::MissingClaim { claim: "exp" })?;
    if now > expires_at + CLOCK_LEEWAY {
        return Err(IdentityError::Expired { expired_at: expires_at });
    }
    if let Some(not_before) = time_claim(claims, "nbf")?
        && now + CLOCK_LEEWAY < not_before
    {
        return Err(IdentityError::NotYetValid { not_before });
    }
    Ok(expires_at)
}

/// A NumericDate claim (seconds since the epoch, possibly fractional).
fn time_claim(
    claims: &Map<String, Value>,
    claim: &'static str,
) -> Result<Option<SystemTime>, IdentityError> {
    let invalid = |reason| IdentityError::InvalidClaim { claim: claim.into(), reason };
    let Some(value) = claims.get(claim).filter(|value| !value.is_null()) else { return Ok(None) };
    let seconds = value.as_f64().ok_or_else(|| invalid("it is not a number of seconds"))?;
    if !(0.0..=1e11).contains(&seconds) {
        return Err(invalid("it is not a plausible time"));
    }
    Ok(Some(UNIX_EPOCH + Duration::from_secs_f64(seconds)))
}

/// Groups from `claim`: a list of strings or one string; absent means no groups.
fn groups(claims: &Map<String, Value>, claim: &str) -> Result<Vec<String>, IdentityError> {
    let invalid = || IdentityError::InvalidClaim {
        claim: claim.to_owned(),
        reason: "groups must be a string or a list of strings",
    };
    match claims.get(claim) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(group)) => Ok(vec![group.clone()]),
        Some(Value::Array(list)) => {
            list.iter().map(|group| group.as_str().map(str::to_owned).ok_or_else(invalid)).collect()
        }
        Some(_) => Err(invalid()),
    }
}

fn rfc3339(at: SystemTime) -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_seconds(at)
}

fn ago(at: SystemTime) -> u64 {
    SystemTime::now().duration_since(at).map_or(0, |elapsed| elapsed.as_secs())
}

fn ahead(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::now()).map_or(0, |ahead| ahead.as_secs())
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    };

    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;
    use crate::identity::test_server::TestServer;

    const AUDIENCE: &str = "interceptor";

    /// A signing key of the test IdP.
    struct Key {
        kid: String,
        encoding: EncodingKey,
        jwk: Value,
    }

    impl Key {
        fn new(kid: &str) -> Self {
            let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let encoding = EncodingKey::from_ec_der(&pair.serialize_der());
            let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::ES256).unwrap();
            jwk.common.key_id = Some(kid.to_owned());
            Self { kid: kid.to_owned(), encoding, jwk: serde_json::to_value(jwk).unwrap() }
        }

        fn sign(&self, claims: &Value) -> String {
            let mut header = Header::new(Algorithm::ES256);
            header.kid = Some(self.kid.clone());
            jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
        }
    }

    /// The IdP's published state, changed by tests to rotate keys.
    #[derive(Default)]
    struct IdpState {
        jwks: Mutex<Vec<Value>>,
        jwks_fetches: AtomicUsize,
        /// Overrides the `issuer` of the discovery document.
        discovery_issuer: Mutex<Option<String>>,
    }

    struct Idp {
        state: Arc<IdpState>,
        server: TestServer,
    }

    impl Idp {
        async fn start(keys: &[&Key]) -> Self {
            let state = Arc::new(IdpState::default());
            state.publish(keys);
            let shared = state.clone();
            let server = TestServer::start(Arc::new(move |request| shared.answer(&request))).await;
            Self { state, server }
        }

        fn issuer(&self) -> String {
            self.server.url()
        }

        fn validator(&self) -> OidcValidator {
            let config = OidcConfig { issuer: self.issuer(), ..OidcConfig::default() };
            OidcValidator::new(&config).unwrap()
        }

        fn fetches(&self) -> usize {
            self.state.jwks_fetches.load(Ordering::SeqCst)
        }

        /// Claims of a token valid now, for `sub` "alice".
        fn claims(&self) -> Value {
            let now = unix_now();
            json!({
                "iss": self.issuer(), "aud": AUDIENCE, "sub": "alice",
                "iat": now, "nbf": now, "exp": now + 600, "groups": ["agents", "admins"],
            })
        }
    }

    impl IdpState {
        fn publish(&self, keys: &[&Key]) {
            *self.jwks.lock().unwrap() = keys.iter().map(|key| key.jwk.clone()).collect();
        }

        fn answer(&self, request: &http::Request<bytes::Bytes>) -> http::Response<String> {
            let host = request.headers()["host"].to_str().unwrap();
            let body = match request.uri().path() {
                "/.well-known/openid-configuration" => {
                    let issuer = self.discovery_issuer.lock().unwrap().clone();
                    json!({
                        "issuer": issuer.unwrap_or_else(|| format!("http://{host}")),
                        "jwks_uri": format!("http://{host}/jwks"),
                    })
                }
                "/jwks" => {
                    self.jwks_fetches.fetch_add(1, Ordering::SeqCst);
                    json!({ "keys": *self.jwks.lock().unwrap() })
                }
                _ => return http::Response::builder().status(404).body(String::new()).unwrap(),
            };
            http::Response::new(body.to_string())
        }
    }

    fn unix_now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    #[tokio::test]
    async fn valid_token_gives_subject_groups_and_expiry() {
        let key = Key::new("k1");
        let idp = Idp::start(&[&key]).await;
        let mut claims = idp.claims();
        claims["aud"] = json!(["other", AUDIENCE]);

        let identity = idp.validator().validate(&key.sign(&claims)).await.unwrap();

        assert_eq!(identity.subject, "alice");
        assert_eq!(identity.groups, ["agents", "admins"]);
        assert_eq!(identity.issuer, idp.issuer());
        let exp = claims["exp"].as_u64().unwrap();
        assert_eq!(identity.expires_at, UNIX_EPOCH + Duration::from_secs(exp));
        assert_eq!(identity.claims["sub"], "alice");
    }

    #[tokio::test]
    async fn expired_token_is_refused_with_its_expiry() {
        let key = Key::new("k1");
        let idp = Idp::start(&[&key]).await;
        let mut claims = idp.claims();
        claims["exp"] = json!(unix_now() - 120);

        let err = idp.validator().validate(&key.sign(&claims)).await.unwrap_err();

        assert!(matches!(err, IdentityError::Expired { .. }), "{err:?}");
        assert!(err.to_string().starts_with("token expired at "), "{err}");
        assert!(err.is_token_fault());
    }

    #[tokio::test]
    async fn token_within_leeway_of_expiry_is_accepted() {
        let key = Key::new("k1");
        let idp = Idp::start(&[&key]).await;
        let mut claims = idp.claims();
        claims["exp"] = json!(unix_now() - 5);

        assert!(idp.validator().validate(&key.sign(&claims)).await.is_ok());
    }

    #[tokio::test]
    async fn token_not_yet_valid_is_refused() {
        let key = Key::new("k1");
        let idp = Idp::start(&[&key]).await;
        let mut claims = idp.claims();
        claims["nbf"] = json!(unix_now() + 600);

        let err = idp.validator().validate(&key.sign(&claims)).await.unwrap_err();

        assert!(matches!(err, IdentityError::NotYetValid { .. }), "{err:?}");
        assert!(err.to_string().contains("not valid before"), "{err}");
    }

    #[tokio::test]
    async fn wrong_audience_names_both_audiences() {
        let key = Key::new("k1");
        let idp = Idp::start(&[&key]).await;
        let mut claims = idp.claims();
        claims["aud"] = json!("someone-else");

        let err = idp.validator().validate(&key.sign(&claims)).await.unwrap_err();

        assert!(matches!(err, IdentityError::WrongAudience { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("someone-else") && message.contains(AUDIENCE), "{message}");
    }

    #[tokio::test]
    async fn wrong_issuer_is_refused() {
        let key = Key::new("k1");
        let idp = Idp::start(&[&key]).await;
        let mut claims = idp.claims();
        claims["iss"] = json!("https://evil.example");

        let err = idp.validator().validate(&key.sign(&claims)).await.unwrap_err();

        assert!(matches!(err, IdentityError::WrongIssuer { .. }), "{err:?}");
        assert!(err.to_string().contains("https://evil.example"), "{err}");
    }

    #[tokio::test]
    async fn token_signed_by_another_key_with_the_same_kid_is_refused() {
        let key = Key::new("k1");
        let forger = Key::new("k1");
        let idp = Idp::start(&[&key]).await;

        let err = idp.validator().validate(&forger.sign(&idp.claims())).await.unwrap_err();

        assert!(matches!(err, IdentityError::BadSignature { .. }), "{err:?}");
        assert!(err.to_string().contains("signature does not verify"), "{err}");
    }

    #[tokio::test]
    async fn unknown_kid_refetches_once_and_accepts_the_rotated_key() {
        let old = Key::new("old");
        let new = Key::new("new");
        let idp = Idp::start(&[&old]).await;
        let validator = idp.validator().with_refetch_interval(Duration::ZERO);
        validator.validate(&old.sign(&idp.claims())).await.unwrap();
        assert_eq!(idp.fetches(), 1);

        idp.state.publish(&[&old, &new]);
        let identity = validator.validate(&new.sign(&idp.claims())).await.unwrap();

        assert_eq!(identity.subject, "alice");
        assert_eq!(idp.fetches(), 2, "exactly one refetch for the unknown kid");
        validator.validate(&new.sign(&idp.claims())).await.unwrap();
        assert_eq!(idp.fetches(), 2, "the rotated key is cached");
    }

    #[tokio::test]
    async fn unknown_kid_refetch_is_rate_limited() {
        let key = Key::new("k1");
        let idp = Idp::start(&[&key]).await;
        let validator = idp.validator();
        validator.validate(&key.sign(&idp.claims())).await.unwrap();

        let stranger = Key::new("nobody-knows");
        let err = validator.validate(&stranger.sign(&idp.claims())).await.unwrap_err();

        assert!(matches!(err, IdentityError::UnknownKeyId { .. }), "{err:?}");
        assert!(err.to_string().contains("nobody-knows"), "{err}");
        assert_eq!(idp.fetches(), 1, "no refetch within {JWKS_REFETCH_INTERVAL:?} of the last");
    }

    #[tokio::test]
    async fn none_and_hmac_algorithms_are_refused() {
        let key = Key::new("k1");
        let idp = Idp::start(&[&key]).await;
        let validator = idp.validator();
        let b64 = |value: Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
        };
        let unsigned = format!("{}.{}.", b64(json!({"alg": "none"})), b64(idp.claims()));
        let hmac = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &idp.claims(),
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();

        for token in [unsigned, hmac] {
            let err = validator.validate(&token).await.unwrap_err();
            assert!(matches!(err, IdentityError::UnsupportedAlgorithm { .. }), "{err:?}");
        }
    }

    #[tokio::test]
    async fn garbage_is_a_malformed_token() {
        let key = Key::new("k1");
        let idp = Idp::start(&[&key]).await;

        let err = idp.validator().validate("not-a-jwt").await.unwrap_err();

        assert!(matches!(err, IdentityError::Malformed { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn token_without_sub_is_refused() {
        let key = Key::new("k1");
        let idp = Idp::start(&[&key]).await;
        let mut claims = idp.claims();
        claims.as_object_mut().unwrap().remove("sub");

        let err = idp.validator().validate(&key.sign(&claims)).await.unwrap_err();

        assert!(matches!(err, IdentityError::MissingClaim { claim: "sub" }), "{err:?}");
    }

    #[tokio::test]
    async fn discovery_naming_another_issuer_is_refused() {
        let key = Key::new("k1");
        let idp = Idp::start(&[&key]).await;
        *idp.state.discovery_issuer.lock().unwrap() = Some("https://elsewhere.example".into());

        let err = idp.validator().validate(&key.sign(&idp.claims())).await.unwrap_err();

        assert!(matches!(err, IdentityError::DiscoveryInvalid { .. }), "{err:?}");
        assert!(err.to_string().contains("https://elsewhere.example"), "{err}");
        assert!(!err.is_token_fault());
    }

    #[tokio::test]
    async fn unreachable_idp_names_the_url() {
        // Bind then drop a listener: the port is then (almost certainly) closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let issuer = format!("http://127.0.0.1:{port}");
        let config = OidcConfig { issuer: issuer.clone(), ..OidcConfig::default() };

        let err = OidcValidator::new(&config).unwrap().prefetch().await.unwrap_err();

        assert!(matches!(err, IdentityError::IdpUnreachable { .. }), "{err:?}");
        assert!(err.to_string().contains(&issuer), "{err}");
    }

    #[test]
    fn plain_http_issuer_off_loopback_is_refused() {
        let config =
            OidcConfig { issuer: "http://idp.example.com".into(), ..OidcConfig::default() };

        let err = OidcValidator::new(&config).unwrap_err();

        assert!(matches!(err, IdentityError::InsecureUrl { .. }), "{err:?}");
    }

    #[test]
    fn groups_may_be_one_string_a_list_or_absent() {
        let claims = |value: Value| value.as_object().unwrap().clone();

        assert_eq!(groups(&claims(json!({"g": "ops"})), "g").unwrap(), ["ops"]);
        assert_eq!(groups(&claims(json!({"g": ["a", "b"]})), "g").unwrap(), ["a", "b"]);
        assert!(groups(&claims(json!({})), "g").unwrap().is_empty());
        assert!(groups(&claims(json!({"g": [1]})), "g").is_err());
    }

    #[test]
    fn discovery_url_keeps_the_issuer_path() {
        let url = |issuer: &str| discovery_url(&Url::parse(issuer).unwrap()).to_string();

        assert_eq!(
            url("https://idp.example"),
            "https://idp.example/.well-known/openid-configuration"
        );
        assert_eq!(
            url("https://idp.example/realms/ci/"),
            "https://idp.example/realms/ci/.well-known/openid-configuration"
        );
    }
}
