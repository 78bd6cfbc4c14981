use std::collections::BTreeMap;

use super::*;

const EXAMPLE: &str = r#"
default = "deny"

[[rule]]
name = "read-only"
groups = ["agents"]
actions = ["ec2:Describe*", "s3:Get*", "s3:List*", "sts:GetCallerIdentity"]
effect = "allow"

[[rule]]
name = "small launches"
actions = ["ec2:RunInstances"]
when = { MaxCount = "<= 2", InstanceType = ["t3.micro", "t3.small"] }
effect = "allow"
limit = { count = "MaxCount", max = 4, per = "1h" }

[[rule]]
name = "deletes need a human"
actions = ["ec2:TerminateInstances", "s3:Delete*"]
effect = "approve"
timeout = "10m"

[[rule]]
name = "no prod buckets"
actions = ["s3:*"]
when = { Bucket = "prod-*" }
effect = "deny"

[[mask]]
actions = ["secretsmanager:GetSecretValue"]
fields = ["SecretString", "SecretBinary"]
"#;

fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in pairs {
        map.entry(k.to_string()).or_default().push(v.to_string());
    }
    map
}

fn decide(policy: &Policy, subject: &str, groups: &[&str], action: Option<&str>, p: &[(&str, &str)]) -> Decision {
    let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
    let params = params(p);
    policy.evaluate(&Call { subject, groups: &groups, action, region: "us-east-1", params: &params })
}

#[test]
fn the_design_example_parses() {
    let policy = Policy::parse(EXAMPLE, "example").unwrap();
    assert_eq!(policy.rules.len(), 4);
    assert_eq!(policy.masks.len(), 1);
    assert_eq!(policy.rules[2].timeout, Some(Duration::from_secs(600)));
}

#[test]
fn groups_and_action_globs_select_rules() {
    let policy = Policy::parse(EXAMPLE, "example").unwrap();
    let d = decide(&policy, "alice", &["agents"], Some("ec2:DescribeInstances"), &[]);
    assert_eq!((d.effect, d.rule.as_deref()), (Effect::Allow, Some("read-only")));
    let d = decide(&policy, "mallory", &["guests"], Some("ec2:DescribeInstances"), &[]);
    assert_eq!((d.effect, d.rule), (Effect::Deny, None));
    assert!(d.reason.contains("ec2:DescribeInstances"), "{}", d.reason);
}

#[test]
fn conditions_decide_launches() {
    let policy = Policy::parse(EXAMPLE, "example").unwrap();
    let small = [("MaxCount", "2"), ("InstanceType", "t3.micro")];
    assert_eq!(decide(&policy, "a", &[], Some("ec2:RunInstances"), &small).effect, Effect::Allow);
    let big = [("MaxCount", "50"), ("InstanceType", "t3.micro")];
    assert_eq!(decide(&policy, "a", &[], Some("ec2:RunInstances"), &big).effect, Effect::Deny);
    let wide = [("MaxCount", "1"), ("InstanceType", "p5.48xlarge")];
    assert_eq!(decide(&policy, "a", &[], Some("ec2:RunInstances"), &wide).effect, Effect::Deny);
}

#[test]
fn deny_beats_approve_beats_allow() {
    let policy = Policy::parse(EXAMPLE, "example").unwrap();
    let d = decide(&policy, "a", &["agents"], Some("s3:DeleteObject"), &[("Bucket", "scratch")]);
    assert_eq!((d.effect, d.timeout), (Effect::Approve, Some(Duration::from_secs(600))));
    let d = decide(&policy, "a", &["agents"], Some("s3:DeleteObject"), &[("Bucket", "prod-db")]);
    assert_eq!((d.effect, d.rule.as_deref()), (Effect::Deny, Some("no prod buckets")));
    let d = decide(&policy, "a", &["agents"], Some("s3:GetObject"), &[("Bucket", "prod-db")]);
    assert_eq!(d.effect, Effect::Deny);
}

#[test]
fn unclassified_calls_fall_to_the_default_unless_a_rule_says_star() {
    let policy = Policy::parse(EXAMPLE, "example").unwrap();
    assert_eq!(decide(&policy, "a", &["agents"], None, &[]).effect, Effect::Deny);
    let open = Policy::parse("default = \"deny\"\n[[rule]]\nname = \"all\"\nactions = [\"*\"]\neffect = \"allow\"\n", "t").unwrap();
    assert_eq!(decide(&open, "a", &[], None, &[]).effect, Effect::Allow);
}

#[test]
fn action_matching_ignores_case_like_iam() {
    let policy = Policy::parse(EXAMPLE, "example").unwrap();
    let d = decide(&policy, "a", &["agents"], Some("EC2:describeinstances"), &[]);
    assert_eq!(d.effect, Effect::Allow);
}

#[test]
fn broken_files_name_the_line_and_reason() {
    let err = Policy::parse("default = \"deny\"\n\n[[rule]]\nname = \"x\"\nactions = [\"ec2:*\"]\neffect = \"alow\"\n", "p.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 6"), "{err}");
    assert!(err.contains("alow"), "{err}");

    let err = Policy::parse("[[rule]]\nname = \"x\"\nactions = [\"RunInstances\"]\neffect = \"allow\"\n", "p.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 3") && err.contains("service:Action"), "{err}");

    let err = Policy::parse("[[rule]]\nname = \"x\"\nactions = [\"ec2:*\"]\neffect = \"allow\"\nwhen = { MaxCount = \"<= many\" }\n", "p.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 5") && err.contains("number"), "{err}");

    let err = Policy::parse("[[rule]]\nname = \"x\"\nactions = [\"ec2:*\"]\neffect = \"allow\"\nlimt = 3\n", "p.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("limt"), "{err}");
}

#[test]
fn a_default_denial_says_which_condition_missed() {
    let policy = Policy::parse(EXAMPLE, "example").unwrap();
    let big = [("MaxCount", "50"), ("InstanceType", "t3.micro")];
    let d = decide(&policy, "a", &[], Some("ec2:RunInstances"), &big);
    assert!(d.reason.contains("rule \"small launches\" needs MaxCount <= 2 (MaxCount is 50)"), "{}", d.reason);
}

#[test]
fn checks_after_parsing_name_the_rule_line() {
    let text = "default = \"deny\"\n\n[[rule]]\nname = \"ok\"\nactions = [\"ec2:*\"]\neffect = \"allow\"\n\n[[rule]]\nname = \"bad\"\nactions = [\"ec2:*\"]\neffect = \"allow\"\ntimeout = \"1m\"\n";
    let err = Policy::parse(text, "p.toml").unwrap_err().to_string();
    assert!(err.contains("line 12: rule \"bad\""), "{err}");
}

#[test]
fn a_deny_on_a_list_parameter_catches_one_protected_value_among_others() {
    let text = "default = \"allow\"\n[[rule]]\nname = \"keep the db\"\nactions = [\"ec2:TerminateInstances\"]\nwhen = { InstanceId = \"i-db\" }\neffect = \"deny\"\n";
    let policy = Policy::parse(text, "t").unwrap();
    let both = [("InstanceId", "i-other"), ("InstanceId", "i-db")];
    assert_eq!(decide(&policy, "a", &[], Some("ec2:TerminateInstances"), &both).effect, Effect::Deny);
    let other = [("InstanceId", "i-other")];
    assert_eq!(decide(&policy, "a", &[], Some("ec2:TerminateInstances"), &other).effect, Effect::Allow);
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    const PATTERNS: [&str; 5] = ["*", "ec2:*", "ec2:RunInstances", "s3:Get*", "sts:GetCallerIdentity"];
    const ACTIONS: [&str; 5] =
        ["ec2:RunInstances", "ec2:DescribeInstances", "s3:GetObject", "s3:PutObject", "sts:GetCallerIdentity"];
    const EFFECTS: [&str; 3] = ["allow", "deny", "approve"];

    /// An independent reading of the pattern set above: `*` all, `x*` a prefix, else equality.
    fn reference_match(pattern: &str, action: Option<&str>) -> bool {
        match (pattern, action) {
            ("*", _) => true,
            (_, None) => false,
            (p, Some(a)) => match p.strip_suffix('*') {
                Some(prefix) => a.to_lowercase().starts_with(&prefix.to_lowercase()),
                None => p.eq_ignore_ascii_case(a),
            },
        }
    }

    fn rule_strategy() -> impl Strategy<Value = (usize, usize, Option<bool>)> {
        // (pattern, effect, group: None = everyone, Some(true) = "a", Some(false) = "b")
        (0..PATTERNS.len(), 0..EFFECTS.len(), proptest::option::of(any::<bool>()))
    }

    proptest! {
        #[test]
        fn deny_wins_then_approve_then_allow_then_the_default(
            rules in proptest::collection::vec(rule_strategy(), 0..6),
            default_deny in any::<bool>(),
            action in proptest::option::of(0..ACTIONS.len()),
            in_group_a in any::<bool>(),
        ) {
            let mut text = format!("default = \"{}\"\n", if default_deny { "deny" } else { "allow" });
            for (i, (pattern, effect, group)) in rules.iter().enumerate() {
                text.push_str(&format!(
                    "[[rule]]\nname = \"r{i}\"\nactions = [\"{}\"]\neffect = \"{}\"\n",
                    PATTERNS[*pattern], EFFECTS[*effect]
                ));
                if let Some(a) = group {
                    text.push_str(if *a { "groups = [\"a\"]\n" } else { "groups = [\"b\"]\n" });
                }
            }
            let policy = Policy::parse(&text, "prop").unwrap();
            let groups: Vec<String> = if in_group_a { vec!["a".into()] } else { vec![] };
            let action = action.map(|i| ACTIONS[i]);
            let params = BTreeMap::<String, Vec<String>>::new();
            let decision = policy.evaluate(&Call {
                subject: "s", groups: &groups, action, region: "us-east-1", params: &params,
            });

            let matching: Vec<&str> = rules
                .iter()
                .filter(|(pattern, _, group)| {
                    let who = match group { None => true, Some(a) => *a && in_group_a };
                    who && reference_match(PATTERNS[*pattern], action)
                })
                .map(|(_, effect, _)| EFFECTS[*effect])
                .collect();
            let expected = if matching.contains(&"deny") {
                Effect::Deny
            } else if matching.contains(&"approve") {
                Effect::Approve
            } else if matching.contains(&"allow") {
                Effect::Allow
            } else if default_deny {
                Effect::Deny
            } else {
                Effect::Allow
            };
            prop_assert_eq!(decision.effect, expected);
            prop_assert_eq!(decision.rule.is_none(), matching.is_empty());
        }
    }
}
