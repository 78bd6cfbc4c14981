//! `when` conditions: a number compared (`"<= 2"`), a set of allowed values (`["t3.micro"]`),
//! a glob (`"prod-*"`), or an exact number or boolean. A condition on a parameter the call does
//! not carry does not hold; a list parameter holds only when every one of its values does.

use serde::{Deserialize, Deserializer, de};

/// One parsed condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// Every value is a number and compares so.
    Compare(Comparison, f64),
    /// Every value matches one of these globs.
    OneOf(Vec<String>),
    /// Every value matches this glob.
    Glob(String),
}

/// A numeric comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    Equal,
    NotEqual,
}

impl Comparison {
    fn holds(self, value: f64, bound: f64) -> bool {
        match self {
            Self::Less => value < bound,
            Self::LessOrEqual => value <= bound,
            Self::Greater => value > bound,
            Self::GreaterOrEqual => value >= bound,
            Self::Equal => value == bound,
            Self::NotEqual => value != bound,
        }
    }
}

/// How a condition is applied to a list parameter (`InstanceId.1`, `InstanceId.2`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantifier {
    /// Every value must satisfy it: an allow (or approve) rule grants only what it names all of.
    Every,
    /// One value satisfying it is enough: a deny rule catches a protected value even when it
    /// comes with others.
    Any,
}

impl Condition {
    /// Every value satisfies the condition (and there is at least one).
    pub fn holds(&self, values: &[String]) -> bool {
        self.holds_for(values, Quantifier::Every)
    }

    /// Whether the condition holds for these values under `quantifier`; a parameter the call
    /// does not carry never satisfies a condition.
    pub fn holds_for(&self, values: &[String], quantifier: Quantifier) -> bool {
        if values.is_empty() {
            return false;
        }
        let one = |value: &String| match self {
            Self::Compare(op, bound) => {
                value.trim().parse::<f64>().is_ok_and(|number| op.holds(number, *bound))
            }
            Self::OneOf(allowed) => allowed.iter().any(|pattern| glob(pattern, value)),
            Self::Glob(pattern) => glob(pattern, value),
        };
        match quantifier {
            Quantifier::Every => values.iter().all(one),
            Quantifier::Any => values.iter().any(one),
        }
    }

    /// The condition as a policy author wrote it: `<= 2`, `one of [t3.micro, t3.small]`.
    pub fn describe(&self) -> String {
        match self {
            Self::Compare(op, bound) => {
                let symbol = match op {
                    Comparison::Less => "<",
                    Comparison::LessOrEqual => "<=",
                    Comparison::Greater => ">",
                    Comparison::GreaterOrEqual => ">=",
                    Comparison::Equal => "==",
                    Comparison::NotEqual => "!=",
                };
                format!("{symbol} {bound}")
            }
            Self::OneOf(allowed) => format!("one of [{}]", allowed.join(", ")),
            Self::Glob(pattern) => format!("to match {pattern:?}"),
        }
    }

    /// Parses the string form: an operator and a number, else a glob.
    fn from_text(text: &str) -> Result<Self, String> {
        const OPERATORS: [(&str, Comparison); 6] = [
            ("<=", Comparison::LessOrEqual),
            (">=", Comparison::GreaterOrEqual),
            ("==", Comparison::Equal),
            ("!=", Comparison::NotEqual),
            ("<", Comparison::Less),
            (">", Comparison::Greater),
        ];
        let trimmed = text.trim();
        for (symbol, op) in OPERATORS {
            if let Some(rest) = trimmed.strip_prefix(symbol) {
                let bound = rest.trim().parse::<f64>().map_err(|_| {
                    format!("condition {text:?}: {symbol} must be followed by a number")
                })?;
                return Ok(Self::Compare(op, bound));
            }
        }
        Ok(Self::Glob(text.to_owned()))
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = Condition;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"<= 2\", a glob string, a list of allowed values, a number or a bool")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Condition, E> {
                Condition::from_text(text).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Condition, E> {
                Ok(Condition::Compare(Comparison::Equal, n as f64))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Condition, E> {
                Ok(Condition::Compare(Comparison::Equal, n))
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Condition, E> {
                Ok(Condition::Glob(b.to_string()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Condition, A::Error> {
                let mut allowed = Vec::new();
                while let Some(value) = seq.next_element::<toml::Value>()? {
                    match value {
                        toml::Value::String(s) => allowed.push(s),
                        toml::Value::Integer(n) => allowed.push(n.to_string()),
                        toml::Value::Boolean(b) => allowed.push(b.to_string()),
                        other => {
                            return Err(de::Error::custom(format!(
                                "a list condition holds strings or numbers, not {}",
                                other.type_str()
                            )));
                        }
                    }
                }
                Ok(Condition::OneOf(allowed))
            }
        }
        de.deserialize_any(Visitor)
    }
}

/// `*` matches any run of characters, `?` any one; everything else literally.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            backtrack = Some((pi, ti));
            pi += 1;
        } else if let Some((star, matched)) = backtrack {
            pi = star + 1;
            ti = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn globs() {
        assert!(glob("ec2:describe*", "ec2:describeinstances"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXbYbZc"));
        assert!(glob("t3.?icro", "t3.micro"));
        assert!(!glob("ec2:describe*", "ec2:runinstances"));
        assert!(!glob("abc", "abcd"));
    }

    #[test]
    fn comparisons_need_every_value_to_be_a_number_in_range() {
        let at_most_two = Condition::from_text("<= 2").unwrap();
        assert!(at_most_two.holds(&values(&["2"])));
        assert!(!at_most_two.holds(&values(&["50"])));
        assert!(!at_most_two.holds(&values(&["two"])));
        assert!(!at_most_two.holds(&[]), "an absent parameter never satisfies a condition");
        assert!(!at_most_two.holds(&values(&["1", "3"])));
    }

    #[test]
    fn operator_without_number_is_an_error() {
        assert!(Condition::from_text("<= lots").unwrap_err().contains("number"));
    }

    #[test]
    fn sets_allow_listed_values_only() {
        let set = Condition::OneOf(values(&["t3.micro", "t3.small"]));
        assert!(set.holds(&values(&["t3.small"])));
        assert!(!set.holds(&values(&["m5.24xlarge"])));
    }
}
