//! Basin and stream configuration.
//!
//! These types serialize to exactly the JSON shapes of the S2 v1 API, and the
//! same JSON is what the engine persists in the metadata keyspace, so a config
//! read back from disk is the config the client set.

use serde::{Deserialize, Serialize};

pub const DEFAULT_RETENTION_SECS: u64 = 7 * 24 * 3600;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageClass {
    Standard,
    Express,
}

impl StorageClass {
    /// As the API spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Express => "express",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetentionPolicy {
    /// Records older than this many seconds are trimmed in the background.
    Age(u64),
    /// Records stay until explicitly trimmed.
    Infinite(InfiniteRetention),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfiniteRetention {}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimestampingMode {
    /// Use the client's timestamp when given, else the arrival time.
    #[default]
    ClientPrefer,
    /// Reject records without a client timestamp.
    ClientRequire,
    /// Always use the arrival time.
    Arrival,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimestampingConfig {
    pub mode: TimestampingMode,
    /// Allow client timestamps later than the arrival time.
    pub uncapped: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteOnEmptyConfig {
    /// 0 disables automatic deletion.
    pub min_age_secs: u64,
}

/// A stream's full, resolved configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamConfig {
    pub storage_class: StorageClass,
    pub retention_policy: RetentionPolicy,
    pub timestamping: TimestampingConfig,
    pub delete_on_empty: DeleteOnEmptyConfig,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            storage_class: StorageClass::Express,
            retention_policy: RetentionPolicy::Age(DEFAULT_RETENTION_SECS),
            timestamping: TimestampingConfig::default(),
            delete_on_empty: DeleteOnEmptyConfig::default(),
        }
    }
}

/// A partial stream configuration: what a create, ensure or reconfigure
/// request says. Absent (or `null`) fields leave the base value alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfigPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<StorageClass>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_policy: Option<RetentionPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamping: Option<TimestampingPatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_on_empty: Option<DeleteOnEmptyPatch>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimestampingPatch {
    #[serde(default)]
    pub mode: Option<TimestampingMode>,
    #[serde(default)]
    pub uncapped: Option<bool>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteOnEmptyPatch {
    #[serde(default)]
    pub min_age_secs: Option<u64>,
}

impl StreamConfig {
    /// Applies `patch` over `self`, rejecting values S2 rejects.
    pub fn apply(mut self, patch: &StreamConfigPatch) -> Result<Self, String> {
        if let Some(class) = patch.storage_class {
            self.storage_class = class;
        }
        if let Some(policy) = patch.retention_policy {
            if policy == RetentionPolicy::Age(0) {
                return Err("retention_policy.age must be greater than 0 seconds".into());
            }
            self.retention_policy = policy;
        }
        if let Some(ts) = patch.timestamping {
            if let Some(mode) = ts.mode {
                self.timestamping.mode = mode;
            }
            if let Some(uncapped) = ts.uncapped {
                self.timestamping.uncapped = uncapped;
            }
        }
        if let Some(doe) = patch.delete_on_empty {
            if let Some(secs) = doe.min_age_secs {
                self.delete_on_empty.min_age_secs = secs;
            }
        }
        Ok(self)
    }
}

/// A basin's full configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BasinConfig {
    /// Configuration given to streams created in this basin.
    pub default_stream_config: StreamConfig,
    pub create_stream_on_append: bool,
    pub create_stream_on_read: bool,
}

/// A partial basin configuration, as in create, ensure and reconfigure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasinConfigPatch {
    #[serde(default)]
    pub default_stream_config: Option<StreamConfigPatch>,
    #[serde(default)]
    pub create_stream_on_append: Option<bool>,
    #[serde(default)]
    pub create_stream_on_read: Option<bool>,
    /// Accepted for compatibility; Rill stores data unencrypted at rest.
    #[serde(default)]
    pub stream_cipher: Option<StreamCipher>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StreamCipher {
    #[serde(rename = "aegis-256")]
    Aegis256,
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
}

impl BasinConfig {
    pub fn apply(mut self, patch: &BasinConfigPatch) -> Result<Self, String> {
        if let Some(stream_patch) = &patch.default_stream_config {
            self.default_stream_config = self.default_stream_config.apply(stream_patch)?;
        }
        if let Some(v) = patch.create_stream_on_append {
            self.create_stream_on_append = v;
        }
        if let Some(v) = patch.create_stream_on_read {
            self.create_stream_on_read = v;
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shapes_match_s2() {
        let cfg = StreamConfig::default();
        let json = serde_json::to_value(cfg).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "storage_class": "express",
                "retention_policy": {"age": 604800},
                "timestamping": {"mode": "client-prefer", "uncapped": false},
                "delete_on_empty": {"min_age_secs": 0}
            })
        );
        let patch: StreamConfigPatch = serde_json::from_value(serde_json::json!({
            "retention_policy": {"infinite": {}},
            "timestamping": {"mode": "arrival", "uncapped": null},
        }))
        .unwrap();
        let applied = cfg.apply(&patch).unwrap();
        assert_eq!(
            applied.retention_policy,
            RetentionPolicy::Infinite(InfiniteRetention {})
        );
        assert_eq!(applied.timestamping.mode, TimestampingMode::Arrival);
    }

    #[test]
    fn zero_age_is_rejected() {
        let patch = StreamConfigPatch {
            retention_policy: Some(RetentionPolicy::Age(0)),
            ..Default::default()
        };
        assert!(StreamConfig::default().apply(&patch).is_err());
    }
}
