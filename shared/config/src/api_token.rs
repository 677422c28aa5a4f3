//! Tokens of the operator API: `[[api.token]]` tables naming each token,
//! the SHA-256 of its value and its scopes, or (deprecated) one
//! `token = { env = "…" }` secret that holds every scope.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

use crate::{ConfigError, SecretRef};

/// What a token may do. `admin` holds every scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
pub enum Scope {
    /// Reading persons, accounts, timelines, dead letters and the audit
    /// queries (`/v1/audit/...`).
    #[serde(rename = "audit:read")]
    AuditRead,
    /// Operator actions: redrive, approve held changes, replay. Includes
    /// reading (an operator must see a dead letter to redrive it).
    #[serde(rename = "operate")]
    Operate,
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::AuditRead => "audit:read",
            Scope::Operate => "operate",
            Scope::Admin => "admin",
        }
    }

    /// Whether holding `self` allows what `needed` guards.
    pub fn grants(self, needed: Scope) -> bool {
        match self {
            Scope::Admin => true,
            Scope::Operate => matches!(needed, Scope::Operate | Scope::AuditRead),
            Scope::AuditRead => needed == Scope::AuditRead,
        }
    }
}

/// One named token. Only the hash of the value is in the config.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// Recorded with every operator action done with the token.
    pub name: String,
    /// `sha256:` and 64 hex digits (`tenure api token-hash` prints it).
    pub hash: String,
    pub scopes: Vec<Scope>,
}

/// `[api] token`: a list of named tokens, or the deprecated single secret.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum ApiTokens {
    #[default]
    None,
    /// Deprecated: one bearer token holding every scope, named `token`.
    Single(SecretRef),
    Named(Vec<ApiToken>),
}

impl<'de> Deserialize<'de> for ApiTokens {
    // `token = { env = "…" }` and `[[api.token]]` share the key; decoding
    // by shape keeps each form's own error messages (an untagged enum
    // would only say that nothing matched).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = toml::Value::deserialize(d)?;
        if value.is_array() {
            Vec::<ApiToken>::deserialize(value)
                .map(ApiTokens::Named)
                .map_err(D::Error::custom)
        } else {
            SecretRef::deserialize(value)
                .map(ApiTokens::Single)
                .map_err(|e| {
                    D::Error::custom(format!(
                        "{e}: api.token is either [[api.token]] tables (name, hash, scopes) \
                         or, deprecated, a secret {{ env = \"…\" }} / {{ file = \"…\" }}"
                    ))
                })
        }
    }
}

/// The prefix of a token hash in the config.
pub const HASH_PREFIX: &str = "sha256:";

/// The 32 bytes of a `sha256:<hex>` hash.
pub fn parse_hash(hash: &str) -> Option<[u8; 32]> {
    let hex_part = hash.strip_prefix(HASH_PREFIX)?;
    if hex_part.len() != 64 || !hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in hex_part.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

pub(crate) fn validate(tokens: &ApiTokens) -> Result<(), ConfigError> {
    let ApiTokens::Named(tokens) = tokens else {
        return Ok(());
    };
    let mut names = std::collections::BTreeSet::new();
    for t in tokens {
        let name_ok = !t.name.is_empty()
            && t.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
        if !name_ok {
            return Err(ConfigError::Invalid(format!(
                "api.token name {:?}: use letters, digits, - _ . @",
                t.name
            )));
        }
        if !names.insert(t.name.as_str()) {
            return Err(ConfigError::Invalid(format!(
                "api.token name {:?} is used twice",
                t.name
            )));
        }
        if parse_hash(&t.hash).is_none() {
            return Err(ConfigError::Invalid(format!(
                "api.token {:?}: hash must be \"sha256:\" and 64 hex digits \
                 (`tenure api token-hash` prints it)",
                t.name
            )));
        }
        if t.scopes.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "api.token {:?}: give at least one scope (audit:read, operate, admin)",
                t.name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_nest_admin_over_operate_over_audit_read() {
        use Scope::*;
        assert!(Admin.grants(Operate) && Admin.grants(AuditRead) && Admin.grants(Admin));
        assert!(Operate.grants(AuditRead) && Operate.grants(Operate) && !Operate.grants(Admin));
        assert!(AuditRead.grants(AuditRead) && !AuditRead.grants(Operate));
    }

    #[test]
    fn hashes_parse_only_in_their_one_form() {
        let good = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(parse_hash(&good), Some([0xab; 32]));
        assert_eq!(parse_hash(&"ab".repeat(32)), None);
        assert_eq!(parse_hash(&format!("sha256:{}", "ab".repeat(31))), None);
        assert_eq!(parse_hash(&format!("sha256:{}zz", "ab".repeat(31))), None);
    }

    fn parse(api: &str) -> Result<crate::Config, ConfigError> {
        crate::Config::parse(api, "test.toml")
    }

    #[test]
    fn both_forms_of_api_token_load_and_bad_tables_say_why() {
        let hash = format!("sha256:{}", "0f".repeat(32));
        let named = parse(&format!(
            "[[api.token]]\nname = \"auditor\"\nhash = \"{hash}\"\nscopes = [\"audit:read\"]\n\
             [[api.token]]\nname = \"ops\"\nhash = \"{hash}\"\nscopes = [\"operate\", \"admin\"]\n"
        ))
        .unwrap();
        let ApiTokens::Named(tokens) = &named.api.token else {
            panic!("{:?}", named.api.token)
        };
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens[1].scopes, [Scope::Operate, Scope::Admin]);

        let single = parse("[api]\ntoken = { env = \"T\" }\n").unwrap();
        assert_eq!(
            single.api.token,
            ApiTokens::Single(SecretRef::Env { env: "T".into() })
        );
        assert_eq!(parse("").unwrap().api.token, ApiTokens::None);

        let typo = parse(&format!(
            "[[api.token]]\nname = \"a\"\nhash = \"{hash}\"\nscope = [\"admin\"]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(typo.contains("scope"), "{typo}");
        let bad_scope = parse(&format!(
            "[[api.token]]\nname = \"a\"\nhash = \"{hash}\"\nscopes = [\"write\"]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(bad_scope.contains("write"), "{bad_scope}");
        let plain = parse("[[api.token]]\nname = \"a\"\nhash = \"secret\"\nscopes = [\"admin\"]\n")
            .unwrap_err()
            .to_string();
        assert!(plain.contains("token-hash"), "{plain}");
        let twice = parse(&format!(
            "[[api.token]]\nname = \"a\"\nhash = \"{hash}\"\nscopes = [\"admin\"]\n\
             [[api.token]]\nname = \"a\"\nhash = \"{hash}\"\nscopes = [\"admin\"]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(twice.contains("twice"), "{twice}");
    }
}
