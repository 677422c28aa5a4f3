//! `tenure api …`: helpers for the operator API's configuration.

use anyhow::bail;
use clap::Subcommand;
use std::io::Read;

#[derive(Subcommand)]
pub enum ApiCmd {
    /// Read a token from stdin and print the `hash` to put in an
    /// `[[api.token]]` table (`sha256:<hex>`). The token itself stays out
    /// of the config; give it only to whoever calls the API.
    TokenHash,
}

/// A SHA-256 without salt or stretching is safe only for tokens nobody
/// could guess: 32 characters of `openssl rand -hex 32` is 128 bits at the
/// least.
const MIN_TOKEN_CHARS: usize = 32;

pub fn run(cmd: &ApiCmd) -> anyhow::Result<()> {
    match cmd {
        ApiCmd::TokenHash => {
            let mut input = String::new();
            std::io::stdin().read_to_string(&mut input)?;
            println!("{}", token_hash(&input)?);
            Ok(())
        }
    }
}

/// The hash of the token read from stdin (one line; the line break and
/// surrounding blanks are not part of it, as the API trims them too).
pub fn token_hash(input: &str) -> anyhow::Result<String> {
    let token = input.trim();
    if token.contains(char::is_whitespace) {
        bail!("the token must be one word (no blanks or line breaks inside)");
    }
    if token.chars().count() < MIN_TOKEN_CHARS {
        bail!(
            "the token is {} characters; use at least {MIN_TOKEN_CHARS} random ones, e.g. \
             `openssl rand -hex 32`",
            token.chars().count()
        );
    }
    Ok(tenure_api::auth::hash_token(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_printed_hash_is_the_one_the_api_accepts() {
        let token = "7f".repeat(32);
        let hash = token_hash(&format!("{token}\n")).unwrap();
        let cfg = tenure_config::ApiTokens::Named(vec![tenure_config::ApiToken {
            name: "ops".into(),
            hash,
            scopes: vec![tenure_config::Scope::Operate],
        }]);
        let tokens = tenure_api::auth::Tokens::from_config(&cfg).unwrap();
        let caller = tokens
            .check(
                Some(&format!("Bearer {token}")),
                tenure_config::Scope::Operate,
            )
            .unwrap();
        assert_eq!(caller.name, "ops");
        assert!(token_hash("short")
            .unwrap_err()
            .to_string()
            .contains("openssl"));
        assert!(token_hash(&format!("{token} {token}")).is_err());
    }
}
