use serde::Deserialize;
use std::fmt;

/// Where a secret lives. The value itself never appears in the config file.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged, deny_unknown_fields)]
pub enum SecretRef {
    Env { env: String },
    File { file: String },
}

impl SecretRef {
    pub fn resolve(&self) -> Result<Secret, crate::ConfigError> {
        let value = match self {
            SecretRef::Env { env } => std::env::var(env).map_err(|_| {
                crate::ConfigError::Secret(format!("environment variable {env} is not set"))
            })?,
            SecretRef::File { file } => std::fs::read_to_string(file)
                .map_err(|e| crate::ConfigError::Secret(format!("cannot read file {file}: {e}")))?,
        };
        let value = value.trim().to_string();
        if value.is_empty() {
            let origin = match self {
                SecretRef::Env { env } => format!("environment variable {env}"),
                SecretRef::File { file } => format!("file {file}"),
            };
            return Err(crate::ConfigError::Secret(format!("{origin} is empty")));
        }
        Ok(Secret(value))
    }
}

/// A secret value whose Debug and Display never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(v: impl Into<String>) -> Self {
        Secret(v.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}
