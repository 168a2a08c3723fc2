//! What an access token may do: S2's `AccessTokenScope`, exactly as the
//! spec draws it (`ResourceSet` exact/prefix for basins, streams and token
//! ids; individual `ops` and read/write `op_groups` at account, basin and
//! stream level, whose union is the set of permitted operations).
//!
//! This module is the model only: parsing, matching one name, and whether
//! one scope lies within another (a token may only issue tokens no wider
//! than itself). Which operation each HTTP route needs lives in the API.

use serde::{Deserialize, Serialize};

/// A set of resource names. An absent set (`None` where a scope holds an
/// `Option<ResourceSet>`) matches nothing, as `{"exact": ""}` does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ResourceSet {
    /// Only this name; the empty string matches nothing.
    Exact(String),
    /// Every name that starts with this; the empty string matches all.
    Prefix(String),
}

impl ResourceSet {
    pub fn matches(&self, name: &str) -> bool {
        match self {
            ResourceSet::Exact(exact) => !exact.is_empty() && exact == name,
            ResourceSet::Prefix(prefix) => name.starts_with(prefix.as_str()),
        }
    }

    /// Whether every name `other` matches, this matches too.
    pub fn covers(&self, other: &ResourceSet) -> bool {
        match other {
            ResourceSet::Exact(name) => name.is_empty() || self.matches(name),
            ResourceSet::Prefix(prefix) => match self {
                ResourceSet::Prefix(mine) => prefix.starts_with(mine.as_str()),
                ResourceSet::Exact(_) => false,
            },
        }
    }
}

/// Whether the set `outer` (absent: nothing) covers the set `inner`.
pub fn set_covers(outer: Option<&ResourceSet>, inner: Option<&ResourceSet>) -> bool {
    match (outer, inner) {
        (_, None) => true,
        (_, Some(ResourceSet::Exact(name))) if name.is_empty() => true,
        (None, Some(_)) => false,
        (Some(outer), Some(inner)) => outer.covers(inner),
    }
}

/// Whether the set (absent: nothing) matches `name`.
pub fn set_matches(set: Option<&ResourceSet>, name: &str) -> bool {
    set.is_some_and(|set| set.matches(name))
}

/// The level an operation acts at, which picks its operation group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Account,
    Basin,
    Stream,
}

macro_rules! operations {
    ($($variant:ident = $name:literal, $level:ident, $write:literal;)*) => {
        /// An operation a token can be allowed, spelled as in S2's spec.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum Operation {
            $(#[serde(rename = $name)] $variant,)*
        }

        impl Operation {
            pub const ALL: &'static [Operation] = &[$(Operation::$variant),*];

            pub fn name(self) -> &'static str {
                match self { $(Operation::$variant => $name,)* }
            }

            /// The group granting it: its level, and whether it writes.
            pub fn group(self) -> (Level, bool) {
                match self { $(Operation::$variant => (Level::$level, $write),)* }
            }
        }
    };
}

// Reads and writes at each level. Stream-level writes include creating,
// reconfiguring and deleting streams, as S2's documentation lists them.
operations! {
    ListBasins = "list-basins", Account, false;
    CreateBasin = "create-basin", Account, true;
    DeleteBasin = "delete-basin", Account, true;
    ReconfigureBasin = "reconfigure-basin", Basin, true;
    GetBasinConfig = "get-basin-config", Basin, false;
    IssueAccessToken = "issue-access-token", Account, true;
    RevokeAccessToken = "revoke-access-token", Account, true;
    ListAccessTokens = "list-access-tokens", Account, false;
    ListStreams = "list-streams", Basin, false;
    CreateStream = "create-stream", Stream, true;
    DeleteStream = "delete-stream", Stream, true;
    GetStreamConfig = "get-stream-config", Stream, false;
    ReconfigureStream = "reconfigure-stream", Stream, true;
    CheckTail = "check-tail", Stream, false;
    Append = "append", Stream, true;
    Read = "read", Stream, false;
    Trim = "trim", Stream, true;
    Fence = "fence", Stream, true;
    AccountMetrics = "account-metrics", Account, false;
    BasinMetrics = "basin-metrics", Basin, false;
    StreamMetrics = "stream-metrics", Stream, false;
}

/// `read` and `write` of one operation group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadWrite {
    #[serde(default)]
    pub read: bool,
    #[serde(default)]
    pub write: bool,
}

/// S2's `PermittedOperationGroups`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpGroups {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<ReadWrite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basin: Option<ReadWrite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<ReadWrite>,
}

impl OpGroups {
    fn grants(&self, op: Operation) -> bool {
        let (level, write) = op.group();
        let group = match level {
            Level::Account => self.account,
            Level::Basin => self.basin,
            Level::Stream => self.stream,
        };
        group.is_some_and(|g| if write { g.write } else { g.read })
    }
}

/// S2's `AccessTokenScope`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basins: Option<ResourceSet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streams: Option<ResourceSet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_tokens: Option<ResourceSet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op_groups: Option<OpGroups>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<Vec<Operation>>,
}

impl Scope {
    /// Whether the scope permits `op`: listed in `ops`, or in a group.
    pub fn permits(&self, op: Operation) -> bool {
        self.ops.as_ref().is_some_and(|ops| ops.contains(&op))
            || self.op_groups.as_ref().is_some_and(|g| g.grants(op))
    }

    /// The operations the scope permits, in the spec's order.
    pub fn permitted(&self) -> impl Iterator<Item = Operation> + '_ {
        Operation::ALL
            .iter()
            .copied()
            .filter(|op| self.permits(*op))
    }

    /// Whether everything `other` allows, this allows too.
    pub fn covers(&self, other: &Scope) -> bool {
        other.permitted().all(|op| self.permits(op))
            && set_covers(self.basins.as_ref(), other.basins.as_ref())
            && set_covers(self.streams.as_ref(), other.streams.as_ref())
            && set_covers(self.access_tokens.as_ref(), other.access_tokens.as_ref())
    }

    /// The part of `what` this scope cannot cover, for an error message.
    pub fn uncovered(&self, other: &Scope) -> Option<String> {
        if let Some(op) = other.permitted().find(|op| !self.permits(*op)) {
            return Some(format!("operation `{}`", op.name()));
        }
        let sets = [
            ("basins", &self.basins, &other.basins),
            ("streams", &self.streams, &other.streams),
            ("access_tokens", &self.access_tokens, &other.access_tokens),
        ];
        sets.into_iter()
            .find(|(_, mine, theirs)| !set_covers(mine.as_ref(), theirs.as_ref()))
            .map(|(what, _, _)| format!("`{what}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(s: &str) -> Option<ResourceSet> {
        Some(ResourceSet::Exact(s.into()))
    }
    fn prefix(s: &str) -> Option<ResourceSet> {
        Some(ResourceSet::Prefix(s.into()))
    }

    #[test]
    fn resource_sets_match_as_s2_documents() {
        assert!(set_matches(prefix("").as_ref(), "anything"));
        assert!(!set_matches(exact("").as_ref(), ""));
        assert!(!set_matches(None, "a"));
        assert!(set_matches(exact("a").as_ref(), "a"));
        assert!(!set_matches(exact("a").as_ref(), "ab"));
        assert!(set_matches(prefix("a").as_ref(), "ab"));
    }

    #[test]
    fn covering_is_containment() {
        let cases = [
            (prefix(""), prefix("x"), true),
            (prefix("x"), prefix(""), false),
            (prefix("x"), prefix("xy"), true),
            (prefix("xy"), prefix("x"), false),
            (prefix("x"), exact("xz"), true),
            (exact("xz"), prefix("xz"), false),
            (exact("a"), exact("a"), true),
            (exact("a"), exact("b"), false),
            (None, exact(""), true),
            (None, None, true),
            (None, prefix(""), false),
            (exact(""), exact("a"), false),
        ];
        for (outer, inner, expected) in cases {
            assert_eq!(
                set_covers(outer.as_ref(), inner.as_ref()),
                expected,
                "{outer:?} covers {inner:?}"
            );
        }
    }

    #[test]
    fn ops_and_groups_are_a_union() {
        let scope: Scope = serde_json::from_value(serde_json::json!({
            "ops": ["create-basin"],
            "op_groups": {"stream": {"read": true}}
        }))
        .unwrap();
        assert!(scope.permits(Operation::CreateBasin));
        assert!(scope.permits(Operation::Read));
        assert!(scope.permits(Operation::CheckTail));
        assert!(!scope.permits(Operation::Append));
        assert!(!scope.permits(Operation::ListBasins));
        let narrower: Scope = serde_json::from_value(serde_json::json!({
            "ops": ["read"]
        }))
        .unwrap();
        assert!(scope.covers(&narrower));
        assert!(!narrower.covers(&scope));
        assert_eq!(
            narrower.uncovered(&scope).as_deref(),
            Some("operation `create-basin`")
        );
    }

    #[test]
    fn unknown_operations_are_refused() {
        let parsed = serde_json::from_value::<Scope>(serde_json::json!({"ops": ["rule-all"]}));
        assert!(parsed.is_err());
    }
}
