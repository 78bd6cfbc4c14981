//! One agent request, start to end: find the session, classify the call, get the session's
//! credentials, strip the agent's signature and sign again, forward, stream the answer back,
//! and write the audit line.

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;

use super::{
    ConnectionInfo, Gateway,
    mask::{MARKER, MaskFields, Masker, mask_json_or_xml_text, mask_response},
    capture::{CaptureBody, CaptureSlot, OnEnd},
    refusal::Refusal,
    upstream::{Body, BoxError, Upstream, UpstreamBody},
};
use crate::{
    approvals::{HeldCall, Verdict},
    records::audit::{AuditIdentity, AuditRecord, Event},
    policy::{
        Call, Decision, Effect, Params as _, Rule,
        quota::{Charge, Limit},
    },
    records::{
        audit::AuditLog,
        recording::{Entry, Exchange, RecordedBody, RecordedRequest, RecordedResponse, recorded_headers},
    },
    aws::{
        error::error_response,
        request::{AwsRequest, Protocol, RequestError, classify, protocol_hint},
        chunked::ResignedBody,
        sigv4::{Payload, chunk_signed, resign, resign_chunked},
    },
    identity::sts::AssumeRequest,
    session::{Session, SessionToken},
};

/// Largest answer the gateway reads whole to mask it (masked answers are API results: a secret,
/// a parameter list, an item).
const MAX_MASKED_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// How long an API call's body (parameters, at most `gateway.max_api_body_bytes`) may take to
/// arrive; a client announcing a body it never sends must not hold the request forever.
const API_BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// An agent connection idle this long between requests is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// A token is re-read from its file this long before it expires, so calls never see the gap.
const TOKEN_RENEW_MARGIN: Duration = Duration::from_secs(60);

/// Gateway settings taken from the config.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub max_api_body_bytes: u64,
    /// How long AWS may take to answer once a request has been sent in full.
    pub upstream_response_timeout: Duration,
    pub other_destinations: super::OtherDestinations,
}

/// Headers that belong to one hop and are never forwarded (RFC 9110 section 7.6.1), plus
/// `expect`, which the gateway answers itself.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::EXPECT,
];

impl Gateway {
    /// Answers one request; never fails: every problem becomes an AWS error for the agent.
    pub async fn handle(&self, conn: &ConnectionInfo, request: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        let (mut parts, body) = request.into_parts();
        let mut audit = AuditGuard::new(&self.audit);
        audit.pid = Some(conn.agent.pid);
        audit.method = Some(parts.method.to_string());
        audit.path = Some(parts.uri.path().to_owned());
        audit.host = host_of(&parts.headers, &parts.uri).or_else(|| conn.sni.clone());

        let session = self.sessions.by_cgroup(conn.agent.cgroup_id).filter(|s| !s.is_ended());
        let Some(session) = session else {
            let refusal = Refusal::NoSession { cgroup_id: conn.agent.cgroup_id };
            let response = self.refuse(protocol_hint(&parts), &refusal, &mut audit);
            audit.finish(&response, started);
            return response;
        };
        audit.session = Some(session.id.clone());
        audit.identity = Some(AuditIdentity {
            subject: session.identity.subject.clone(),
            groups: session.identity.groups.clone(),
        });
        audit.role_arn = Some(session.role_arn.clone());
        session.counters.requests.fetch_add(1, Ordering::Relaxed);

        let mut exchange = ExchangeNotes::new(&parts, audit.time.clone(), audit.host.clone());
        let upstream = &self.upstreams[conn.worker];
        let outcome =
            self.forward(upstream, &session, &mut parts, body, &mut audit, &mut exchange).await;
        let response = match outcome {
            Ok(response) => {
                audit.decision.get_or_insert_with(|| "allow".to_owned());
                audit.forwarded = Some(true);
                audit.request_id = request_id(response.headers());
                response
            }
            Err(refusal) => {
                if refusal.decision() == "deny" {
                    session.counters.denied.fetch_add(1, Ordering::Relaxed);
                }
                self.refuse(exchange.protocol, &refusal, &mut audit)
            }
        };
        audit.finish(&response, started);
        exchange.record(session, audit.into_record(), response, started)
    }

    /// The AWS error for a refusal, noted in the audit record.
    fn refuse(&self, protocol: Protocol, refusal: &Refusal, audit: &mut AuditRecord) -> Response<Body> {
        let (status, code) = refusal.status_and_code();
        // JSON services name the same error AccessDeniedException.
        let code = if code == "AccessDenied" && protocol.is_json_rpc() { "AccessDeniedException" } else { code };
        let request_id = gateway_request_id();
        let message = refusal.to_string();
        tracing::warn!(%message, code, "call refused");
        audit.decision = Some(refusal.decision().to_owned());
        audit.reason = Some(message.clone());
        audit.forwarded = Some(false);
        audit.request_id = Some(request_id.clone());
        error_response(protocol, status, code, &message, &request_id)
            .map(|body| Full::new(body).map_err(|never| match never {}).boxed())
    }

    /// Classifies, decides, signs and forwards; the answer's body streams back to the agent.
    async fn forward(
        &self,
        upstream: &Upstream,
        session: &Session,
        parts: &mut http::request::Parts,
        body: Incoming,
        audit: &mut AuditRecord,
        exchange: &mut ExchangeNotes,
    ) -> Result<Response<Body>, Refusal> {
        let token = self.current_token(session).await?;
        let mut aws_request = classify(parts, None).map_err(Refusal::Malformed)?;
        exchange.protocol = aws_request.protocol;

        // S3 bodies stream through untouched (S3 checks them against the signed hash header);
        // API calls carry their parameters in the body, which is read to classify and hash it.
        let cap = session.recording.body_cap();
        let (upstream_body, api_body) = if aws_request.streams_body() {
            let captured = CaptureBody::new(body, cap, exchange.request_body.clone(), None);
            (captured.map_err(BoxError::from).boxed(), None)
        } else {
            let bytes = self.read_api_body(body).await?;
            aws_request = classify(parts, Some(&bytes)).map_err(Refusal::Malformed)?;
            (Full::new(bytes.clone()).map_err(|never| match never {}).boxed(), Some(bytes))
        };
        let masker = self.masker();
        let request_secrets = masker.request_fields_for(aws_request.action.as_deref());
        if let Some(bytes) = &api_body {
            exchange.keep_request_body(bytes, request_secrets.as_ref(), cap);
        }
        if let Some(fields) = &request_secrets {
            exchange.target = masked_target(&exchange.target, fields);
        }
        audit.service = Some(aws_request.service.clone());
        audit.region = Some(aws_request.region.clone());
        audit.action = aws_request.action.clone();
        audit.resource = aws_request.resource.clone();
        exchange.params = recorded_params(&aws_request, request_secrets.as_ref());

        let charged = self.decide(session, &aws_request, audit).await?;
        let forwarded = self
            .sign_and_send(upstream, session, parts, &aws_request, api_body, upstream_body, token)
            .await;
        // A call AWS refused (or never got) did not use its limit: a dry run, a bad parameter.
        if let Some(charged) = charged
            && !forwarded.as_ref().is_ok_and(|(head, _)| head.status.is_success())
        {
            self.quotas.refund(&charged.rule, &session.identity.subject, charged.weight);
        }
        let (mut head, body) = forwarded?;
        // Error answers carry no secrets (and may not parse); only successes are masked.
        let fields = masker.fields_for(aws_request.action.as_deref());
        let body = match fields {
            Some(fields) if head.status.is_success() => {
                self.masked_body(&fields, &mut head.headers, body).await?
            }
            _ => body.map_err(BoxError::from).boxed(),
        };
        Ok(Response::from_parts(head, body))
    }

    /// Gets the session's credentials, re-signs and sends the call; the answer's head and its
    /// still-unread body.
    #[allow(clippy::too_many_arguments)] // the call's parts, each taken apart by the caller
    async fn sign_and_send(
        &self,
        upstream: &Upstream,
        session: &Session,
        parts: &mut http::request::Parts,
        aws_request: &AwsRequest,
        api_body: Option<Bytes>,
        upstream_body: Body,
        token: SessionToken,
    ) -> Result<(http::response::Parts, UpstreamBody), Refusal> {
        let credentials = self
            .broker
            .credentials(&AssumeRequest {
                session_id: session.id.clone(),
                role_arn: session.role_arn.clone(),
                subject: session.identity.subject.clone(),
                web_identity_token: token.token,
            })
            .await
            .map_err(Refusal::Credentials)?;
        // A kill while STS answered: the session's calls are refused from that instant on.
        if session.is_ended() {
            return Err(Refusal::NoSession { cgroup_id: session.cgroup_id });
        }

        for name in &HOP_BY_HOP {
            parts.headers.remove(name);
        }
        let payload = match &api_body {
            Some(bytes) => Payload::Bytes(bytes),
            None => Payload::ClientDeclared,
        };
        // A chunk-signed body (STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]) is re-framed with
        // chunk signatures chained from the new seed signature, as it streams.
        let upstream_body = if chunk_signed(parts).is_some() {
            let signer = resign_chunked(parts, aws_request, &credentials, SystemTime::now())
                .map_err(Refusal::Signing)?;
            ResignedBody::new(upstream_body, signer).boxed()
        } else {
            resign(parts, aws_request, payload, &credentials, SystemTime::now())
                .map_err(Refusal::Signing)?;
            upstream_body
        };

        let host = host_of(&parts.headers, &parts.uri).unwrap_or_default();
        let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let uri = upstream
            .uri(&host, path_and_query)
            .map_err(|err| Refusal::Malformed(RequestError::NotAwsHost { host: err.0 }))?;
        let mut upstream_request = Request::from_parts(parts.clone(), upstream_body);
        *upstream_request.uri_mut() = uri;
        *upstream_request.version_mut() = http::Version::HTTP_11;

        let response = upstream
            .send(upstream_request, self.settings.upstream_response_timeout)
            .await
            .map_err(|err| Refusal::Upstream { host: host.clone(), cause: error_chain(&err) })?;
        let (mut head, body) = response.into_parts();
        for name in &HOP_BY_HOP {
            head.headers.remove(name);
        }
        Ok((head, body))
    }

    /// Reads a whole answer that has fields to mask, masks them and fixes the integrity
    /// headers. If the answer cannot be masked it is not passed on: fail closed.
    async fn masked_body(
        &self,
        fields: &MaskFields,
        headers: &mut HeaderMap,
        body: UpstreamBody,
    ) -> Result<Body, Refusal> {
        let limited = Limited::new(body, MAX_MASKED_ANSWER_BYTES);
        let bytes = match limited.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(err) => return Err(Refusal::MaskFailed(format!("answer unreadable: {err}"))),
        };
        let outcome = mask_response(fields, headers, bytes)
            .map_err(|err| Refusal::MaskFailed(err.to_string()))?;
        Ok(Full::new(outcome.body).map_err(|never| match never {}).boxed())
    }

    /// The masker for the policy in force, rebuilt only when the policy was reloaded.
    fn masker(&self) -> Arc<Masker> {
        let policy = self.policy.current();
        let mut cached = self.masker.lock().unwrap_or_else(|e| e.into_inner());
        match &*cached {
            Some((for_policy, masker)) if Arc::ptr_eq(for_policy, &policy) => masker.clone(),
            _ => {
                let masker = Arc::new(Masker::new(&policy.masks));
                *cached = Some((policy, masker.clone()));
                masker
            }
        }
    }

    /// Applies the policy: returns once the call may go ahead (allowed, within its limit, or
    /// approved by a human), else the refusal the agent gets. A call charged against a limit
    /// returns its charge, to be refunded if AWS does not carry the call out.
    async fn decide(
        &self,
        session: &Session,
        request: &AwsRequest,
        audit: &mut AuditRecord,
    ) -> Result<Option<Charged>, Refusal> {
        let policy = self.policy.current();
        let decision = policy.evaluate(&Call {
            subject: &session.identity.subject,
            groups: &session.identity.groups,
            action: request.action.as_deref(),
            region: &request.region,
            params: request,
        });
        audit.rule = decision.rule.clone();
        audit.decision = Some(decision.effect.as_str().to_owned());
        let rule = decision.rule_index.map(|index| &policy.rules[index]);
        let limited = rule.and_then(|rule| {
            let limit = rule.limit.as_ref()?;
            Some((rule, limit, limit.weight(&request.values(&limit.count))))
        });
        let subject = &session.identity.subject;

        match decision.effect {
            Effect::Deny => return Err(Refusal::Denied { reason: decision.reason }),
            Effect::Allow => {}
            Effect::Approve => {
                // No human is asked to approve what its limit would refuse anyway.
                if let Some((rule, limit, weight)) = limited
                    && let Some(exceeded) = self.quotas.would_exceed(&rule.name, subject, limit, weight)
                {
                    return Err(limit_refusal(rule, limit, exceeded));
                }
                self.hold_for_approval(session, request, &decision, audit).await?;
            }
        }

        // Limits are charged only once the call goes ahead (after any approval).
        let Some((rule, limit, weight)) = limited else { return Ok(None) };
        match self.quotas.charge(&rule.name, subject, limit, weight) {
            Charge::Charged { .. } => Ok(Some(Charged { rule: rule.name.clone(), weight })),
            exceeded @ Charge::Exceeded { .. } => Err(limit_refusal(rule, limit, exceeded)),
        }
    }

    /// Parks the call until a human answers or the rule's timeout passes.
    async fn hold_for_approval(
        &self,
        session: &Session,
        request: &AwsRequest,
        decision: &Decision,
        audit: &mut AuditRecord,
    ) -> Result<(), Refusal> {
        let rule_name = decision.rule.clone().unwrap_or_else(|| "default".to_owned());
        let timeout = decision.timeout.unwrap_or(crate::policy::DEFAULT_APPROVAL_TIMEOUT);
        let held = HeldCall {
            id: String::new(),
            session: session.id.clone(),
            subject: session.identity.subject.clone(),
            groups: session.identity.groups.clone(),
            action: request.action.clone().unwrap_or_else(|| "(unclassified)".into()),
            rule: decision.rule.clone(),
            params: key_params(request, &self.masker()),
            held_since: 0,
            expires_in: timeout.as_secs(),
        };
        let hold = self.approvals.hold(held, timeout);
        tracing::info!(id = hold.id(), session = %session.id, action = ?request.action,
            "call held for approval");
        audit.approval = Some(hold.id().to_owned());
        session.counters.held.fetch_add(1, Ordering::Relaxed);
        // Counted down however the wait ends, the agent's disconnect included.
        let _held = scopeguard(|| {
            session.counters.held.fetch_sub(1, Ordering::Relaxed);
        });
        match hold.wait().await {
            Some(Verdict::Approved { by }) => {
                audit.decision = Some("approved".to_owned());
                audit.approved_by = Some(by);
                Ok(())
            }
            Some(Verdict::Denied { by, reason }) => {
                audit.approved_by = Some(by.clone());
                Err(Refusal::ApprovalDenied { rule: rule_name, by, reason })
            }
            None => Err(Refusal::ApprovalTimedOut {
                rule: rule_name,
                after: humantime::format_duration(timeout).to_string(),
            }),
        }
    }

    async fn read_api_body(&self, body: Incoming) -> Result<Bytes, Refusal> {
        let limit = self.settings.max_api_body_bytes;
        let limited = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
        let Ok(collected) = tokio::time::timeout(API_BODY_TIMEOUT, limited.collect()).await else {
            return Err(Refusal::BodyRead(format!(
                "the body did not arrive within {}",
                humantime::format_duration(API_BODY_TIMEOUT)
            )));
        };
        match collected {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(err) if err.is::<http_body_util::LengthLimitError>() => {
                Err(Refusal::BodyTooLarge { limit })
            }
            Err(err) => Err(Refusal::BodyRead(err.to_string())),
        }
    }

    /// The session's token if still valid; near expiry, the token file is read again.
    async fn current_token(&self, session: &Session) -> Result<SessionToken, Refusal> {
        let token = session.token();
        if token.expires_at > SystemTime::now() + TOKEN_RENEW_MARGIN {
            return Ok(token);
        }
        let Some(path) = &session.token_file else {
            return still_valid(token);
        };
        let Some(text) = read_token_file(path).await else {
            return still_valid(token);
        };
        let text = text.trim();
        if text == token.token {
            return still_valid(token);
        }
        let identity = self.oidc.validate(text).await.map_err(Refusal::TokenExpired)?;
        if identity.subject != session.identity.subject {
            tracing::warn!(session = %session.id, "token file now names another subject; ignored");
            return still_valid(token);
        }
        let renewed = SessionToken { token: text.to_owned(), expires_at: identity.expires_at };
        session.set_token(renewed.clone());
        self.sessions.persist(session);
        tracing::info!(session = %session.id, "session token renewed from its file");
        Ok(renewed)
    }
}

/// The classified parameters as the recording keeps them, secret-bearing values masked.
fn recorded_params(request: &AwsRequest, secret: Option<&MaskFields>) -> Vec<(String, String)> {
    request
        .params
        .0
        .iter()
        .filter_map(|(name, value)| {
            let value = value.as_str()?.into_owned();
            let masked = secret.is_some_and(|fields| fields.masks_name(name));
            Some((name.clone(), if masked { MARKER.to_owned() } else { value }))
        })
        .collect()
}

fn millis(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

/// Largest token file the daemon reads: a JWT is a few KiB.
const MAX_TOKEN_FILE_BYTES: u64 = 64 * 1024;

/// The agent's token file, if it is a regular file of sensible size. The path comes from the
/// agent and is read as root, so nothing else (a device, a huge file) is read.
async fn read_token_file(path: &std::path::Path) -> Option<String> {
    use tokio::io::AsyncReadExt as _;
    let file = tokio::fs::File::open(path).await.ok()?;
    let meta = file.metadata().await.ok()?;
    if !meta.is_file() || meta.len() > MAX_TOKEN_FILE_BYTES {
        tracing::warn!(path = %path.display(), "token file is not a small regular file; ignored");
        return None;
    }
    let mut text = String::new();
    file.take(MAX_TOKEN_FILE_BYTES).read_to_string(&mut text).await.ok()?;
    Some(text)
}

fn still_valid(token: SessionToken) -> Result<SessionToken, Refusal> {
    if token.expires_at > SystemTime::now() {
        return Ok(token);
    }
    Err(Refusal::TokenExpired(crate::identity::oidc::IdentityError::Expired {
        expired_at: token.expires_at,
    }))
}

/// What the recording needs of an exchange, gathered while it is served.
struct ExchangeNotes {
    time: String,
    method: String,
    host: String,
    target: String,
    request_headers: Vec<(String, String)>,
    request_body: CaptureSlot,
    content_type: Option<String>,
    params: Vec<(String, String)>,
    protocol: Protocol,
}

impl ExchangeNotes {
    /// `time` is when the request arrived (the audit record's time).
    fn new(parts: &http::request::Parts, time: String, host: Option<String>) -> Self {
        Self {
            time,
            method: parts.method.to_string(),
            host: host.unwrap_or_default(),
            target: parts.uri.path_and_query().map_or("/", |pq| pq.as_str()).to_owned(),
            request_headers: recorded_headers(&parts.headers),
            request_body: CaptureSlot::default(),
            content_type: parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            params: Vec::new(),
            protocol: protocol_hint(parts),
        }
    }

    /// Keeps the (masked) API body; masking runs on the whole body, then the cap cuts it.
    fn keep_request_body(&self, bytes: &Bytes, secret: Option<&MaskFields>, cap: usize) {
        let masked = match secret {
            Some(fields) => {
                let content_type = self.content_type.as_deref();
                mask_json_or_xml_text(fields, content_type, bytes)
            }
            None => bytes.clone(),
        };
        let mut slot = self.request_body.lock().unwrap_or_else(|e| e.into_inner());
        slot.size = bytes.len() as u64;
        slot.kept.extend_from_slice(&masked[..masked.len().min(cap)]);
        slot.complete = true;
    }

    /// Wraps the answer so that, once its body has been sent (or the agent left), the whole
    /// exchange is appended to the session's recording.
    fn record(
        self,
        session: Arc<Session>,
        audit: AuditRecord,
        response: Response<Body>,
        started: Instant,
    ) -> Response<Body> {
        let (head, body) = response.into_parts();
        let response_body = CaptureSlot::default();
        let status = head.status.as_u16();
        let response_headers = recorded_headers(&head.headers);
        let cap = session.recording.body_cap();
        let slot = response_body.clone();
        let on_end: OnEnd = Box::new(move || {
            let captured = std::mem::take(&mut *slot.lock().unwrap_or_else(|e| e.into_inner()));
            let request = std::mem::take(&mut *self.request_body.lock().unwrap_or_else(|e| e.into_inner()));
            let recording = session.recording.clone();
            let exchange = Exchange {
                seq: recording.next_seq(),
                time: self.time,
                duration_ms: millis(started.elapsed()),
                subject: session.identity.subject.clone(),
                groups: session.identity.groups.clone(),
                service: audit.service,
                region: audit.region,
                action: audit.action,
                params: self.params,
                decision: audit.decision.unwrap_or_default(),
                rule: audit.rule,
                reason: audit.reason,
                request: RecordedRequest {
                    method: self.method,
                    host: self.host,
                    target: self.target,
                    headers: self.request_headers,
                    body: RecordedBody::new(&request.kept, request.size),
                },
                response: RecordedResponse {
                    status,
                    headers: response_headers,
                    body: RecordedBody::new(&captured.kept, captured.size),
                    complete: captured.complete,
                },
                request_id: audit.request_id,
            };
            recording.append(&Entry::Exchange(Box::new(exchange)));
        });
        let body = CaptureBody::new(body, cap, response_body, Some(on_end)).boxed();
        Response::from_parts(head, body)
    }
}

/// The audit record of one request, written exactly once: when the answer is ready, or, if the
/// request is abandoned first (the agent disconnected while its call was held, say), when it is
/// dropped, so every decision reaches the audit log.
struct AuditGuard<'a> {
    log: &'a AuditLog,
    record: AuditRecord,
    written: bool,
}

impl<'a> AuditGuard<'a> {
    fn new(log: &'a AuditLog) -> Self {
        Self { log, record: AuditRecord::new(Event::Request), written: false }
    }

    fn finish(&mut self, response: &Response<Body>, started: Instant) {
        self.record.status = Some(response.status().as_u16());
        self.record.duration_ms = Some(millis(started.elapsed()));
        self.log.record(&self.record);
        self.written = true;
    }

    /// The record once written (for the session recording), without a copy.
    fn into_record(mut self) -> AuditRecord {
        debug_assert!(self.written, "into_record before finish");
        std::mem::take(&mut self.record)
    }
}

impl std::ops::Deref for AuditGuard<'_> {
    type Target = AuditRecord;
    fn deref(&self) -> &AuditRecord {
        &self.record
    }
}

impl std::ops::DerefMut for AuditGuard<'_> {
    fn deref_mut(&mut self) -> &mut AuditRecord {
        &mut self.record
    }
}

impl Drop for AuditGuard<'_> {
    fn drop(&mut self) {
        if self.written {
            return;
        }
        let held = self.record.approval.is_some();
        self.record.reason = Some(if held {
            "the agent disconnected while the call was held for approval".to_owned()
        } else {
            "the agent disconnected before the call was answered".to_owned()
        });
        self.record.decision = Some("abandoned".to_owned());
        self.record.forwarded = Some(false);
        self.log.record(&self.record);
    }
}

/// The request target with the values of secret-bearing query parameters masked.
fn masked_target(target: &str, fields: &MaskFields) -> String {
    let Some((path, query)) = target.split_once('?') else { return target.to_owned() };
    let masked: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if fields.masks_name(&crate::aws::request::percent_decode(name)) => format!("{name}={MARKER}"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{path}?{}", masked.join("&"))
}

/// Runs `f` when dropped.
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// A limit charge made for a call, refunded if AWS does not carry the call out.
struct Charged {
    rule: String,
    weight: u64,
}

fn limit_refusal(rule: &Rule, limit: &Limit, exceeded: Charge) -> Refusal {
    let (used, wanted) = match exceeded {
        Charge::Exceeded { used, wanted } => (used, wanted),
        Charge::Charged { used } => (used, 0),
    };
    Refusal::LimitExceeded {
        rule: rule.name.clone(),
        count: limit.count.clone(),
        used,
        wanted,
        max: limit.max,
        per: humantime::format_duration(limit.per).to_string(),
    }
}

/// The parameters an approver needs to see, `name=value`, at most a handful.
fn key_params(request: &AwsRequest, masker: &Masker) -> Vec<String> {
    let secret = masker.request_fields_for(request.action.as_deref());
    const SHOWN: usize = 8;
    let mut shown: Vec<String> = Vec::new();
    if let Some(bucket) = &request.bucket {
        shown.push(format!("Bucket={bucket}"));
    }
    if let Some(key) = &request.key {
        shown.push(format!("Key={key}"));
    }
    for (name, value) in &request.params.0 {
        if shown.len() >= SHOWN {
            shown.push("...".to_owned());
            break;
        }
        let masked = secret.as_ref().is_some_and(|fields| fields.masks_name(name));
        if masked {
            shown.push(format!("{name}={MARKER}"));
        } else if let Some(value) = value.as_str() {
            shown.push(format!("{name}={value}"));
        }
    }
    shown
}

/// The Host the agent addressed: the Host header, else the URI authority.
fn host_of(headers: &HeaderMap, uri: &http::Uri) -> Option<String> {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.to_string()))
}

/// The AWS request id of an answer, under the names the services use.
fn request_id(headers: &HeaderMap) -> Option<String> {
    ["x-amzn-requestid", "x-amz-request-id", "x-amzn-request-id"]
        .iter()
        .find_map(|name| headers.get(*name))
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .map(str::to_owned)
}

/// Request ids of the gateway's own answers, so an agent's error can be found in the audit log.
fn gateway_request_id() -> String {
    let bits: u128 = rand::random();
    format!("icpt-{bits:032x}")
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
