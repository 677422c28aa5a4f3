//! Who may call the operator API. Closed by default: without a configured
//! token every /v1 request is refused. Each request names one token
//! (`Authorization: Bearer …`); its SHA-256 is compared, in constant time,
//! with the hash of every configured token, and the token's scopes must
//! grant the route's scope.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tenure_config::api_token::{parse_hash, HASH_PREFIX};
use tenure_config::{ApiTokens, ConfigError, Scope};

/// The name under which the deprecated single `[api] token` acts.
pub const LEGACY_TOKEN_NAME: &str = "token";

/// The caller a request was authenticated as; handlers record its name
/// with every operator action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub scopes: Vec<Scope>,
}

impl Caller {
    /// How the audit trail names this caller (`metadata.actor`).
    pub fn actor(&self) -> String {
        format!("api:{}", self.name)
    }
}

#[derive(Clone)]
struct Known {
    name: String,
    hash: [u8; 32],
    scopes: Vec<Scope>,
}

/// The configured tokens.
#[derive(Clone, Default)]
pub struct Tokens {
    known: Vec<Known>,
}

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No token is configured at all.
    Closed,
    /// No bearer token in the request.
    Missing,
    /// A bearer token that matches no configured token.
    Unknown,
    /// A known token without the scope the route needs.
    Forbidden { name: String, needed: Scope },
}

/// `sha256:` and the hex SHA-256 of `token`: the form `[[api.token]] hash`
/// takes. A plain (unkeyed, unsalted) hash is enough because tokens are
/// random and long (`tenure api token-hash` refuses short ones): there is
/// no dictionary to try, unlike passwords.
pub fn hash_token(token: &str) -> String {
    format!(
        "{HASH_PREFIX}{}",
        hex::encode(Sha256::digest(token.as_bytes()))
    )
}

impl Tokens {
    /// From the config; the deprecated single secret is resolved and
    /// becomes an `admin` token named [`LEGACY_TOKEN_NAME`].
    pub fn from_config(tokens: &ApiTokens) -> Result<Tokens, ConfigError> {
        let known = match tokens {
            ApiTokens::None => Vec::new(),
            ApiTokens::Single(secret) => {
                let secret = secret.resolve()?;
                vec![Known {
                    name: LEGACY_TOKEN_NAME.into(),
                    hash: Sha256::digest(secret.expose().as_bytes()).into(),
                    scopes: vec![Scope::Admin],
                }]
            }
            ApiTokens::Named(list) => list
                .iter()
                .map(|t| {
                    let hash = parse_hash(&t.hash).ok_or_else(|| {
                        ConfigError::Invalid(format!("api.token {:?}: bad hash", t.name))
                    })?;
                    Ok(Known {
                        name: t.name.clone(),
                        hash,
                        scopes: t.scopes.clone(),
                    })
                })
                .collect::<Result<_, ConfigError>>()?,
        };
        Ok(Tokens { known })
    }

    /// One token with its plain value, for tests and embedding.
    pub fn single(name: &str, token: &str, scopes: &[Scope]) -> Tokens {
        Tokens::none().with(name, token, scopes)
    }

    pub fn none() -> Tokens {
        Tokens::default()
    }

    pub fn with(mut self, name: &str, token: &str, scopes: &[Scope]) -> Tokens {
        self.known.push(Known {
            name: name.into(),
            hash: Sha256::digest(token.as_bytes()).into(),
            scopes: scopes.to_vec(),
        });
        self
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// Authenticates the value of an `Authorization` header and checks
    /// that the token grants `needed`.
    pub fn check(&self, authorization: Option<&str>, needed: Scope) -> Result<Caller, Refusal> {
        if self.known.is_empty() {
            return Err(Refusal::Closed);
        }
        let given = authorization
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(rest.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or(Refusal::Missing)?;
        let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        // Every configured hash is compared, so the time taken does not
        // tell which token (if any) came close.
        let mut found: Option<&Known> = None;
        for k in &self.known {
            if bool::from(k.hash.ct_eq(&digest)) {
                found = Some(k);
            }
        }
        let k = found.ok_or(Refusal::Unknown)?;
        if !k.scopes.iter().any(|s| s.grants(needed)) {
            return Err(Refusal::Forbidden {
                name: k.name.clone(),
                needed,
            });
        }
        Ok(Caller {
            name: k.name.clone(),
            scopes: k.scopes.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_refused_for_each_reason_in_turn() {
        assert_eq!(
            Tokens::none().check(Some("Bearer x"), Scope::AuditRead),
            Err(Refusal::Closed)
        );
        let tokens = Tokens::single("auditor", "t-audit", &[Scope::AuditRead]).with(
            "ops",
            "t-ops",
            &[Scope::Operate],
        );
        assert_eq!(tokens.check(None, Scope::AuditRead), Err(Refusal::Missing));
        assert_eq!(
            tokens.check(Some("Basic dDp4"), Scope::AuditRead),
            Err(Refusal::Missing)
        );
        assert_eq!(
            tokens.check(Some("Bearer t-nope"), Scope::AuditRead),
            Err(Refusal::Unknown)
        );
        assert_eq!(
            tokens.check(Some("Bearer t-audit"), Scope::Operate),
            Err(Refusal::Forbidden {
                name: "auditor".into(),
                needed: Scope::Operate
            })
        );
        let caller = tokens
            .check(Some("bearer t-ops"), Scope::AuditRead)
            .unwrap();
        assert_eq!(caller.name, "ops");
        assert_eq!(caller.actor(), "api:ops");
    }

    #[test]
    fn the_config_hash_is_the_hash_of_the_token() {
        let hash = hash_token("s3cret");
        let tokens = Tokens::from_config(&ApiTokens::Named(vec![tenure_config::ApiToken {
            name: "n".into(),
            hash,
            scopes: vec![Scope::Admin],
        }]))
        .unwrap();
        assert!(tokens.check(Some("Bearer s3cret"), Scope::Admin).is_ok());
        assert_eq!(
            tokens.check(Some("Bearer s3cre"), Scope::Admin),
            Err(Refusal::Unknown)
        );
    }
}
