//! NATS users limited to one tenant: JWTs signed with the MSSP's account key (NATS's
//! decentralized authentication), written as a `.creds` file the tenant's services load with
//! `bus.credentials_file`.
//!
//! A tenant's user may publish only to `vigil.<tenant>.>`, read only through the consumers the
//! operator created for it (their filters name the tenant's subject, so reading them yields only
//! its messages), create those consumers only with their own filter, and receive replies only on
//! its own inbox prefix (`_INBOX_<tenant>`), so it never sees another tenant's replies.

use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD};
use nkeys::KeyPair;
use serde_json::{Value, json};
use sha2::{Digest, Sha512_256};
use vigil_bus::{ConsumerSpec, stream_name};
use vigil_schema::{Stage, TenantId};

/// Why a NATS credential could not be made.
#[derive(Debug, thiserror::Error)]
pub enum NatsKeyError {
    /// The configured seed is not an account key.
    #[error("{0}")]
    Seed(String),
    /// Signing failed.
    #[error("signing a NATS JWT failed: {0}")]
    Sign(String),
}

/// Mints tenant users with the MSSP's NATS account key (or one of its signing keys).
pub struct NatsIssuer {
    signer: KeyPair,
    /// The account's identity key, when `signer` is one of its signing keys.
    issuer_account: Option<String>,
    /// The NATS URL the tenants' services connect to, written beside the credentials.
    url: Option<String>,
}

impl std::fmt::Debug for NatsIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The seed is a secret; only the public key is shown.
        f.debug_struct("NatsIssuer")
            .field("signer", &self.signer.public_key())
            .field("issuer_account", &self.issuer_account)
            .field("url", &self.url)
            .finish()
    }
}

/// A tenant's NATS user.
#[derive(Debug, Clone)]
pub struct TenantUser {
    /// The `.creds` file: the user JWT and its nkey seed.
    pub creds: String,
    /// The inbox prefix the tenant's services must use.
    pub inbox_prefix: String,
    /// The URL to connect to, when configured.
    pub url: Option<String>,
}

impl NatsIssuer {
    /// An issuer from an account seed (`SA...`). `account` is the account's public key when the
    /// seed is one of its signing keys rather than its identity key.
    pub fn new(
        seed: &str,
        account: Option<&str>,
        url: Option<String>,
    ) -> Result<Self, NatsKeyError> {
        let signer = KeyPair::from_seed(seed.trim()).map_err(|err| {
            NatsKeyError::Seed(format!("the NATS account seed is invalid: {err}"))
        })?;
        if !signer.public_key().starts_with('A') {
            return Err(NatsKeyError::Seed(
                "the NATS seed is not an account key (its public key must start with A)".into(),
            ));
        }
        let issuer_account = match account.map(str::trim) {
            Some(account) if account == signer.public_key() => None,
            Some(account) if account.starts_with('A') && account.len() == 56 => {
                Some(account.to_owned())
            }
            Some(other) => {
                return Err(NatsKeyError::Seed(format!(
                    "the NATS account {other:?} is not an account public key"
                )));
            }
            None => None,
        };
        Ok(Self {
            signer,
            issuer_account,
            url,
        })
    }

    /// A new user for `tenant`, valid for `ttl_secs`, allowed to use `consumers`.
    pub fn tenant_user(
        &self,
        tenant: &TenantId,
        consumers: &[ConsumerSpec],
        now: i64,
        ttl_secs: i64,
    ) -> Result<TenantUser, NatsKeyError> {
        let user = KeyPair::new_user();
        let inbox_prefix = inbox_prefix(tenant);
        let mut nats = json!({
            "pub": {"allow": publish_permissions(tenant, consumers)},
            "sub": {"allow": [format!("{inbox_prefix}.>")]},
            "subs": -1,
            "data": -1,
            "payload": -1,
            "type": "user",
            "version": 2,
        });
        if let Some(account) = &self.issuer_account {
            nats["issuer_account"] = Value::String(account.clone());
        }
        let claims = json!({
            "iat": now,
            "exp": now.saturating_add(ttl_secs),
            "iss": self.signer.public_key(),
            "name": format!("vigil-{tenant}"),
            "sub": user.public_key(),
            "nats": nats,
        });
        let jwt = encode_jwt(&self.signer, claims)?;
        let seed = user
            .seed()
            .map_err(|err| NatsKeyError::Sign(err.to_string()))?;
        Ok(TenantUser {
            creds: creds_file(&jwt, &seed),
            inbox_prefix,
            url: self.url.clone(),
        })
    }
}

/// The inbox prefix of a tenant's connections.
pub fn inbox_prefix(tenant: &TenantId) -> String {
    format!("_INBOX_{tenant}")
}

/// What a tenant's user may publish: its own subjects, and the JetStream API calls on its own
/// consumers (create with its own filter, info, next message, acknowledgements) and on the stage
/// streams' info.
pub fn publish_permissions(tenant: &TenantId, consumers: &[ConsumerSpec]) -> Vec<String> {
    let mut allow = vec![format!("vigil.{tenant}.>")];
    for stage in Stage::ALL {
        allow.push(format!("$JS.API.STREAM.INFO.{}", stream_name(stage)));
    }
    for spec in consumers {
        let stream = stream_name(spec.stage);
        let durable = spec.durable_name();
        let filter = spec.filter_subject();
        allow.push(format!(
            "$JS.API.CONSUMER.CREATE.{stream}.{durable}.{filter}"
        ));
        allow.push(format!("$JS.API.CONSUMER.INFO.{stream}.{durable}"));
        allow.push(format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"));
        allow.push(format!("$JS.ACK.{stream}.{durable}.>"));
    }
    allow
}

/// A NATS JWT: `claims` (without `jti`, which is derived from them) signed by `signer`.
pub fn encode_jwt(signer: &KeyPair, mut claims: Value) -> Result<String, NatsKeyError> {
    // NATS's JWT id: the base32 SHA-512/256 of the claims without it.
    let unsigned =
        serde_json::to_vec(&claims).map_err(|err| NatsKeyError::Sign(err.to_string()))?;
    claims["jti"] = Value::String(BASE32_NOPAD.encode(&Sha512_256::digest(&unsigned)));
    let header = BASE64URL_NOPAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let payload = BASE64URL_NOPAD
        .encode(&serde_json::to_vec(&claims).map_err(|err| NatsKeyError::Sign(err.to_string()))?);
    let input = format!("{header}.{payload}");
    let signature = signer
        .sign(input.as_bytes())
        .map_err(|err| NatsKeyError::Sign(err.to_string()))?;
    Ok(format!("{input}.{}", BASE64URL_NOPAD.encode(&signature)))
}

/// The `.creds` file NATS clients read: the user JWT, then its seed.
pub fn creds_file(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn permissions_name_only_the_tenant() {
        let tenant = TenantId::new("acme").unwrap();
        let spec = ConsumerSpec::new("detect", Stage::Events, Some(tenant.clone()));
        let mut partition =
            ConsumerSpec::new("detect-correlate", Stage::Correlate, Some(tenant.clone()));
        partition.partition = Some(3);
        let allow = publish_permissions(&tenant, &[spec, partition]);
        assert!(allow.contains(&"vigil.acme.>".to_owned()));
        assert!(allow.contains(
            &"$JS.API.CONSUMER.CREATE.VIGIL_EVENTS.detect-acme.vigil.acme.events".to_owned()
        ));
        assert!(allow.contains(
            &"$JS.API.CONSUMER.CREATE.VIGIL_CORRELATE.detect-correlate-acme-p3.vigil.acme.correlate.3"
                .to_owned()
        ));
        for subject in &allow {
            assert!(!subject.contains('*'), "{subject} has a wildcard");
            assert!(
                !subject.ends_with("CREATE.VIGIL_EVENTS.detect-acme"),
                "a create without the filter would let the user pick another tenant's"
            );
        }
    }

    #[test]
    fn a_user_key_is_not_an_account_key() {
        let user = KeyPair::new_user();
        let error = NatsIssuer::new(&user.seed().unwrap(), None, None).unwrap_err();
        assert!(error.to_string().contains("not an account key"), "{error}");
        let error = NatsIssuer::new("SAnot-a-seed", None, None).unwrap_err();
        assert!(error.to_string().contains("invalid"), "{error}");
    }

    #[test]
    fn jwt_verifies_with_the_signer() {
        let account = KeyPair::new_account();
        let issuer = NatsIssuer::new(&account.seed().unwrap(), None, None).unwrap();
        let tenant = TenantId::new("acme").unwrap();
        let user = issuer.tenant_user(&tenant, &[], 1_000, 60).unwrap();
        let jwt = user.creds.lines().nth(1).unwrap();
        let (input, signature) = jwt.rsplit_once('.').unwrap();
        let signature = BASE64URL_NOPAD.decode(signature.as_bytes()).unwrap();
        account.verify(input.as_bytes(), &signature).unwrap();
        let payload = input.split('.').nth(1).unwrap();
        let claims: Value =
            serde_json::from_slice(&BASE64URL_NOPAD.decode(payload.as_bytes()).unwrap()).unwrap();
        assert_eq!(claims["iss"], account.public_key());
        assert_eq!(claims["exp"], 1_060);
        assert_eq!(claims["nats"]["sub"]["allow"][0], "_INBOX_acme.>");
        assert!(user.creds.contains("-----BEGIN USER NKEY SEED-----\nSU"));
    }
}
