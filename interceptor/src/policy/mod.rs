//! The policy: which identity may make which AWS call, with which parameters, how often, and
//! which calls wait for a human.
//!
//! A policy file is TOML (shape in DESIGN.md and the README). It is parsed once into typed
//! rules; a file that does not parse, or names an unknown key, effect or operator, is refused
//! with its line and the reason, and the previous policy stays in force.
//!
//! Evaluation: of the rules whose identity, action and `when` conditions all match, a deny wins,
//! then approve, then allow; when none matches, the file's `default` decides. An allow or
//! approve rule with a `limit` that the call would exceed denies the call instead.

pub mod check;
pub mod condition;
pub mod quota;
pub mod store;

use std::{collections::BTreeMap, path::Path, time::Duration};

use serde::Deserialize;

pub use condition::Condition;

/// What the policy says of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Allow,
    Deny,
    /// Hold the call until a human approves or denies it, or its timeout passes.
    Approve,
}

impl Effect {
    /// Deny wins over approve, approve over allow.
    fn strength(self) -> u8 {
        match self {
            Effect::Deny => 2,
            Effect::Approve => 1,
            Effect::Allow => 0,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
            Effect::Approve => "approve",
        }
    }
}

/// How long an approval waits when the rule names no timeout.
pub const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// A parsed policy file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// What happens to a call no rule matches.
    #[serde(default = "default_effect")]
    pub default: Effect,
    #[serde(default, rename = "rule")]
    pub rules: Vec<Rule>,
    #[serde(default, rename = "mask")]
    pub masks: Vec<Mask>,
}

fn default_effect() -> Effect {
    Effect::Deny
}

/// One `[[rule]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    /// The rule applies to members of any of these groups...
    #[serde(default)]
    pub groups: Vec<String>,
    /// ...or to any of these subjects. Neither given: to everyone.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// IAM-style action globs, `ec2:Describe*`; `*` matches every call, even unclassified ones.
    pub actions: Vec<ActionPattern>,
    /// Parameter conditions, all of which must hold.
    #[serde(default)]
    pub when: BTreeMap<String, Condition>,
    pub effect: Effect,
    pub limit: Option<quota::Limit>,
    /// For `approve`: how long the call waits for a human before it is denied.
    #[serde(default, deserialize_with = "optional_duration")]
    pub timeout: Option<Duration>,
}

/// One `[[mask]]`: response fields hidden from the agent and the recording.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mask {
    pub actions: Vec<ActionPattern>,
    pub fields: Vec<String>,
}

/// An action glob, lower-cased service prefix and case-insensitive action as IAM compares them.
#[derive(Debug, Clone)]
pub struct ActionPattern(String);

impl<'de> Deserialize<'de> for ActionPattern {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let text = String::deserialize(de)?;
        if text != "*" && !text.contains(':') {
            return Err(serde::de::Error::custom(format!(
                "action {text:?} must be service:Action (for example \"ec2:RunInstances\") or \"*\""
            )));
        }
        Ok(Self(text.to_ascii_lowercase()))
    }
}

impl ActionPattern {
    /// `action` is None for a call the gateway could not classify: only `*` matches it.
    pub fn matches(&self, action: Option<&str>) -> bool {
        if self.0 == "*" {
            return true;
        }
        action.is_some_and(|action| condition::glob(&self.0, &action.to_ascii_lowercase()))
    }
}

/// What a call is, as the policy sees it.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    pub subject: &'a str,
    pub groups: &'a [String],
    /// `service:Action`, or None when the call could not be classified.
    pub action: Option<&'a str>,
    pub region: &'a str,
    /// The call's parameters; `region` is also offered under that name.
    pub params: &'a dyn Params,
}

/// Where the policy reads a call's parameters from.
pub trait Params {
    /// Every value of the named parameter (a list parameter has several); empty if absent.
    fn values(&self, name: &str) -> Vec<String>;
}

impl Params for BTreeMap<String, Vec<String>> {
    fn values(&self, name: &str) -> Vec<String> {
        self.get(name).cloned().unwrap_or_default()
    }
}

/// The decision on one call.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub effect: Effect,
    /// The deciding rule's name; None when the default decided.
    pub rule: Option<String>,
    /// Why, in words an agent's user can act on.
    pub reason: String,
    /// For approve: how long to wait.
    pub timeout: Option<Duration>,
    /// Index of the deciding rule, for charging its limit once the call goes ahead.
    pub rule_index: Option<usize>,
}

/// Why a policy file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy {path}: {source}")]
    Read { path: String, source: std::io::Error },
    /// Malformed TOML, an unknown key, or a bad value; the message carries the line.
    #[error("invalid policy {path}: {message}")]
    Invalid { path: String, message: String },
}

impl Policy {
    /// Reads and checks a policy file.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| PolicyError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses policy text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, PolicyError> {
        let invalid = |message: String| PolicyError::Invalid { path: origin.to_owned(), message };
        let policy: Policy = toml::from_str(text).map_err(|err| invalid(describe(&err, text)))?;
        let mut problems = Vec::new();
        let rule_lines = table_lines(text, "[[rule]]");
        for (index, rule) in policy.rules.iter().enumerate() {
            // Name the line of the offending key, else the rule's [[rule]] line.
            let at = |key: &str| {
                let header = rule_lines.get(index).copied();
                match header.map(|header| key_line(text, header, key).unwrap_or(header)) {
                    Some(line) => format!("line {line}: rule {:?}", rule.name),
                    None => format!("rule {:?}", rule.name),
                }
            };
            if rule.actions.is_empty() {
                problems.push(format!("{}: actions is empty", at("actions")));
            }
            if rule.timeout.is_some() && rule.effect != Effect::Approve {
                let at = at("timeout");
                problems.push(format!("{at}: timeout only applies to effect = \"approve\""));
            }
            if rule.limit.is_some() && rule.effect == Effect::Deny {
                problems.push(format!("{}: a deny rule cannot have a limit", at("limit")));
            }
        }
        if !problems.is_empty() {
            return Err(invalid(problems.join("; ")));
        }
        Ok(policy)
    }

    /// The decision for `call`, before limits are charged (see [`quota::Quotas`]).
    pub fn evaluate(&self, call: &Call<'_>) -> Decision {
        let mut best: Option<(usize, &Rule)> = None;
        for (index, rule) in self.rules.iter().enumerate() {
            if !rule.matches(call) {
                continue;
            }
            let stronger = best.is_none_or(|(_, b)| rule.effect.strength() > b.effect.strength());
            if stronger {
                best = Some((index, rule));
            }
        }
        match best {
            Some((index, rule)) => Decision {
                effect: rule.effect,
                rule: Some(rule.name.clone()),
                reason: match rule.effect {
                    Effect::Deny => format!("denied by policy rule {:?}", rule.name),
                    Effect::Approve => format!("rule {:?} needs a human's approval", rule.name),
                    Effect::Allow => format!("allowed by policy rule {:?}", rule.name),
                },
                timeout: (rule.effect == Effect::Approve)
                    .then(|| rule.timeout.unwrap_or(DEFAULT_APPROVAL_TIMEOUT)),
                rule_index: Some(index),
            },
            None => Decision {
                effect: self.default,
                rule: None,
                reason: match self.default {
                    Effect::Deny => format!(
                        "no policy rule allows {} for {}; the default is deny{}",
                        call.action.unwrap_or("this unclassified call"),
                        call.subject,
                        self.near_misses(call)
                    ),
                    _ => format!("no rule matched; the default is {}", self.default.as_str()),
                },
                timeout: (self.default == Effect::Approve).then_some(DEFAULT_APPROVAL_TIMEOUT),
                rule_index: None,
            },
        }
    }
}

impl Policy {
    /// Why the rules that name this identity and action did not match: their first failing
    /// condition, so a denied agent's user sees what to change ("MaxCount is 50, rule ...
    /// needs <= 2").
    fn near_misses(&self, call: &Call<'_>) -> String {
        let misses: Vec<String> = self
            .rules
            .iter()
            .filter(|rule| rule.effect != Effect::Deny && rule.selects(call))
            .filter_map(|rule| {
                let (name, condition, values) = rule.failing_condition(call)?;
                let got = if values.is_empty() { "absent".to_owned() } else { values.join(",") };
                Some(format!(
                    "rule {:?} needs {name} {} ({name} is {got})",
                    rule.name,
                    condition.describe()
                ))
            })
            .collect();
        if misses.is_empty() {
            return String::new();
        }
        format!("; {}", misses.join("; "))
    }
}

impl Rule {
    fn matches(&self, call: &Call<'_>) -> bool {
        self.selects(call) && self.failing_condition(call).is_none()
    }

    /// Identity and action match; the `when` conditions are not looked at.
    fn selects(&self, call: &Call<'_>) -> bool {
        self.applies_to(call.subject, call.groups)
            && self.actions.iter().any(|pattern| pattern.matches(call.action))
    }

    /// The first `when` condition the call fails, with the values it was tested on. A deny
    /// rule matches when any value of a list parameter meets its condition; allow and approve
    /// rules only when every value does.
    fn failing_condition(&self, call: &Call<'_>) -> Option<(&str, &Condition, Vec<String>)> {
        let quantifier = match self.effect {
            Effect::Deny => condition::Quantifier::Any,
            Effect::Allow | Effect::Approve => condition::Quantifier::Every,
        };
        self.when.iter().find_map(|(name, condition)| {
            let values = if name == "region" {
                vec![call.region.to_owned()]
            } else {
                call.params.values(name)
            };
            (!condition.holds_for(&values, quantifier)).then_some((name.as_str(), condition, values))
        })
    }

    fn applies_to(&self, subject: &str, groups: &[String]) -> bool {
        if self.groups.is_empty() && self.subjects.is_empty() {
            return true;
        }
        self.subjects.iter().any(|s| s == subject) || self.groups.iter().any(|g| groups.contains(g))
    }
}

/// The 1-based line of each `header` table (`[[rule]]`), in order.
fn table_lines(text: &str, header: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| line.trim() == header)
        .map(|(index, _)| index + 1)
        .collect()
}

/// The 1-based line where `key = ...` is set in the table that starts at line `header`.
fn key_line(text: &str, header: usize, key: &str) -> Option<usize> {
    text.lines()
        .enumerate()
        .skip(header)
        .take_while(|(_, line)| !line.trim_start().starts_with('['))
        .find(|(_, line)| {
            line.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|(index, _)| index + 1)
}

/// A TOML error as one line: "line N: reason".
fn describe(err: &toml::de::Error, text: &str) -> String {
    let message = err.message().trim_end();
    match err.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message.to_owned(),
    }
}

fn optional_duration<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
    crate::config::duration(de).map(Some)
}

#[cfg(test)]
mod tests;
