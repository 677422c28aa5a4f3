//! Ed25519 keys for evidence: the signing key is a 32-byte seed written as
//! 64 hex digits (in an environment variable or a file named by the config,
//! see docs/configuration.md `[audit]`); the public key, also 64 hex
//! digits, is what an auditor is given to check exports and checkpoints.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use rand::RngCore;

use crate::AuditError;

fn bytes32(what: &str, text: &str) -> Result<[u8; 32], AuditError> {
    let bytes = hex::decode(text.trim())
        .map_err(|_| AuditError::Invalid(format!("the {what} is not hex")))?;
    bytes
        .try_into()
        .map_err(|_| AuditError::Invalid(format!("the {what} must be 32 bytes (64 hex digits)")))
}

/// A signing key from its hex seed. The error never repeats the input.
pub fn signing_key(hex_seed: &str) -> Result<SigningKey, AuditError> {
    Ok(SigningKey::from_bytes(&bytes32("signing key", hex_seed)?))
}

/// A public key from hex.
pub fn public_key(hex_key: &str) -> Result<VerifyingKey, AuditError> {
    VerifyingKey::from_bytes(&bytes32("public key", hex_key)?)
        .map_err(|_| AuditError::Invalid("the public key is not a valid Ed25519 point".into()))
}

/// A fresh signing key from the operating system's random source.
pub fn generate() -> SigningKey {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    SigningKey::from_bytes(&seed)
}

pub fn seed_hex(key: &SigningKey) -> String {
    hex::encode(key.to_bytes())
}

pub fn public_hex(key: &VerifyingKey) -> String {
    hex::encode(key.to_bytes())
}

pub fn sign(key: &SigningKey, message: &[u8]) -> [u8; 64] {
    key.sign(message).to_bytes()
}

/// Whether `signature` (64 bytes) signs `message` under `key`.
pub fn verify(key: &VerifyingKey, message: &[u8], signature: &[u8]) -> bool {
    let Ok(bytes) = <[u8; 64]>::try_from(signature) else {
        return false;
    };
    key.verify(message, &Signature::from_bytes(&bytes)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_hex_and_sign() {
        let key = generate();
        let again = signing_key(&seed_hex(&key)).unwrap();
        let public = public_key(&public_hex(&again.verifying_key())).unwrap();
        let sig = sign(&again, b"m");
        assert!(verify(&public, b"m", &sig));
        assert!(!verify(&public, b"n", &sig));
        assert!(!verify(&generate().verifying_key(), b"m", &sig));
        assert!(!verify(&public, b"m", &sig[..63]));
    }

    #[test]
    fn bad_keys_are_refused_without_echoing_them() {
        let err = signing_key("zz-secret").unwrap_err().to_string();
        assert!(!err.contains("secret"), "{err}");
        assert!(signing_key("abcd").is_err());
    }
}
