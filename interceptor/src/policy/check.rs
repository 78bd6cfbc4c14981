//! `interceptor policy check`: validate a policy file, and dry-run a request against it.
//!
//! A request file is either raw HTTP (request line, headers, blank line, body), classified by
//! the same code the gateway runs, or JSON:
//! `{"subject": "alice", "groups": ["agents"], "action": "ec2:RunInstances",
//!   "region": "us-east-1", "params": {"MaxCount": 50}}`, or JSON with the identity and an
//! `"http"` member holding the raw request.

use std::{collections::BTreeMap, path::Path};

use anyhow::{Context as _, bail};
use serde::Deserialize;

use super::{Call, Params, Policy};
use crate::aws::request::{AwsRequest, classify};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestFile {
    #[serde(default)]
    subject: String,
    #[serde(default)]
    groups: Vec<String>,
    action: Option<String>,
    region: Option<String>,
    #[serde(default)]
    params: BTreeMap<String, serde_json::Value>,
    http: Option<String>,
}

/// Prints the verdict on the policy and, if given, on the request.
pub fn run(policy_path: &Path, request: Option<&Path>) -> anyhow::Result<()> {
    let policy = Policy::load(policy_path)?;
    println!(
        "{}: ok ({} rules, {} masks, default {})",
        policy_path.display(),
        policy.rules.len(),
        policy.masks.len(),
        policy.default.as_str()
    );
    let Some(request) = request else { return Ok(()) };
    let text = std::fs::read_to_string(request)
        .with_context(|| format!("reading request {}", request.display()))?;
    let file = if text.trim_start().starts_with('{') {
        serde_json::from_str::<RequestFile>(&text)
            .with_context(|| format!("request {} is not valid request JSON", request.display()))?
    } else {
        RequestFile {
            subject: String::new(),
            groups: Vec::new(),
            action: None,
            region: None,
            params: BTreeMap::new(),
            http: Some(text),
        }
    };

    let (action, region, params) = match &file.http {
        Some(http) => {
            let aws = parse_http(http)?;
            let action = aws.action.clone();
            let region = aws.region.clone();
            (action, region, Box::new(aws) as Box<dyn Params>)
        }
        None => {
            let params: BTreeMap<String, Vec<String>> = file
                .params
                .iter()
                .map(|(name, value)| (name.clone(), json_values(value)))
                .collect();
            // `region` is read at the top level, or from params where a user may well put it.
            let region = file
                .region
                .clone()
                .or_else(|| params.get("region").and_then(|v| v.first().cloned()))
                .unwrap_or_default();
            (file.action.clone(), region, Box::new(params) as _)
        }
    };
    // A raw HTTP request carries no identity; say so rather than print an empty name.
    let subject = if file.subject.is_empty() { "(no subject)" } else { file.subject.as_str() };
    let decision = policy.evaluate(&Call {
        subject,
        groups: &file.groups,
        action: action.as_deref(),
        region: &region,
        params: params.as_ref(),
    });
    println!("action:   {}", action.as_deref().unwrap_or("(unclassified)"));
    println!("identity: {} {:?}", if file.subject.is_empty() { "(none)" } else { &file.subject }, file.groups);
    println!("decision: {}", decision.effect.as_str());
    println!("rule:     {}", decision.rule.as_deref().unwrap_or("(default)"));
    println!("reason:   {}", decision.reason);
    if let Some(limit) = decision.rule_index.and_then(|i| policy.rules[i].limit.as_ref()) {
        let weight = limit.weight(&params.values(&limit.count));
        let per = humantime::format_duration(limit.per);
        println!("limit:    uses {weight} of {} {} per {per}", limit.max, limit.count);
    }
    Ok(())
}

/// The values a JSON parameter offers to conditions: scalars as text, lists element-wise.
fn json_values(value: &serde_json::Value) -> Vec<String> {
    match value {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(items) => items.iter().flat_map(json_values).collect(),
        serde_json::Value::Null => Vec::new(),
        other => vec![other.to_string()],
    }
}

/// Raw HTTP text to the parsed request the gateway would see.
fn parse_http(text: &str) -> anyhow::Result<AwsRequest> {
    let text = text.replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let request_line = lines.next().context("request file is empty")?;
    let mut words = request_line.split_whitespace();
    let (Some(method), Some(target)) = (words.next(), words.next()) else {
        bail!("request line {request_line:?} is not `METHOD TARGET HTTP/1.1`");
    };
    let mut builder = http::Request::builder().method(method).uri(target);
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .with_context(|| format!("header line {line:?} has no colon"))?;
        builder = builder.header(name.trim(), value.trim());
    }
    let (parts, ()) = builder.body(()).context("building the request")?.into_parts();
    let body = body.as_bytes();
    Ok(classify(&parts, Some(body))?)
}

/// The policy reads an AWS call's parameters as flattened by the classifier, plus the S3 bucket
/// and key under `Bucket` and `Key`.
impl Params for AwsRequest {
    fn values(&self, name: &str) -> Vec<String> {
        let special = match name {
            "Bucket" => self.bucket.clone(),
            "Key" => self.key.clone(),
            _ => None,
        };
        if let Some(value) = special {
            return vec![value];
        }
        self.params.get_all(name).filter_map(|v| v.as_str().map(|s| s.into_owned())).collect()
    }
}
