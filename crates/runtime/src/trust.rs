//! Keeps a verifier's keys, revocations and suspended tenants in step with the store: every
//! service that verifies tokens (control, ingest) runs [`refresh_loop`], so a revocation made by
//! any process applies everywhere within the refresh interval.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use vigil_auth::{TrustState, Verifier, VerifyingKey};
use vigil_schema::TenantId;
use vigil_store::{Store, StoreError, TenantState};

/// What the store says a verifier should trust now.
pub async fn load_trust(store: &Store) -> Result<TrustState, StoreError> {
    let now = vigil_store::micros(time::OffsetDateTime::now_utc());
    let platform = store.platform();
    let mut keys = Vec::new();
    for record in platform.trusted_keys(now).await? {
        let Ok(public_key) = <[u8; 32]>::try_from(record.public_key.as_slice()) else {
            tracing::warn!(kid = %record.kid, "stored public key has the wrong length, skipped");
            continue;
        };
        let tenant = match record.tenant.as_deref().map(TenantId::new).transpose() {
            Ok(tenant) => tenant,
            Err(err) => {
                tracing::warn!(kid = %record.kid, error = %err, "stored key tenant invalid, skipped");
                continue;
            }
        };
        keys.push(VerifyingKey {
            kid: record.kid,
            tenant,
            public_key,
            not_after: record.not_after.map(vigil_store::from_micros),
        });
    }
    let revoked = platform.revoked_tokens(now).await?.into_iter().collect();
    let suspended_tenants = platform
        .list_tenants()
        .await?
        .into_iter()
        .filter(|tenant| tenant.state != TenantState::Active)
        .map(|tenant| tenant.id)
        .collect();
    Ok(TrustState {
        keys,
        revoked,
        suspended_tenants,
    })
}

/// Reloads `verifier` from the store once.
pub async fn refresh_trust(store: &Store, verifier: &Verifier) -> Result<(), StoreError> {
    let state = load_trust(store).await?;
    for err in verifier.replace(state) {
        tracing::warn!(error = %err, "a stored signing key could not be loaded");
    }
    Ok(())
}

/// Reloads `verifier` every `every` until `shutdown`; on a store error the previous trust state
/// stays in force.
pub async fn refresh_loop(
    store: Store,
    verifier: Verifier,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        if let Err(err) = refresh_trust(&store, &verifier).await {
            // The previous keys and revocations stay in force until the store answers again.
            tracing::warn!(error = %err, "reloading keys and revocations failed");
        }
    }
}

/// Verifies tokens, reloading the trust state from the store at once (at most once a second)
/// when a token names a key this process does not know yet: a tenant created a moment ago by
/// another process can send events with its first token without waiting for the next refresh.
#[derive(Debug, Clone)]
pub struct OnDemandVerifier {
    store: Store,
    verifier: Verifier,
    last_reload: std::sync::Arc<tokio::sync::Mutex<Option<tokio::time::Instant>>>,
}

impl OnDemandVerifier {
    /// Wraps `verifier`, reloading it from `store` on unknown keys.
    pub fn new(store: Store, verifier: Verifier) -> Self {
        Self {
            store,
            verifier,
            last_reload: Default::default(),
        }
    }

    /// The wrapped verifier.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Verifies `token`; on an unknown key, reloads once and verifies again.
    pub async fn verify(
        &self,
        token: &str,
    ) -> Result<vigil_auth::Principal, vigil_auth::AuthError> {
        match self.verifier.verify(token) {
            Err(vigil_auth::AuthError::UnknownKey) => {
                let mut last = self.last_reload.lock().await;
                let due = last.is_none_or(|at| at.elapsed() >= Duration::from_secs(1));
                if due {
                    *last = Some(tokio::time::Instant::now());
                    if let Err(err) = refresh_trust(&self.store, &self.verifier).await {
                        tracing::warn!(error = %err, "reloading keys for an unknown key failed");
                    }
                }
                drop(last);
                self.verifier.verify(token)
            }
            other => other,
        }
    }
}

/// The store's record of a new signing key: its public key and its private key sealed with
/// `master`. The control plane and the operator both create tenant keys this way.
pub fn key_record(
    key: &vigil_auth::SigningKey,
    master: &vigil_auth::MasterKey,
    now: i64,
) -> vigil_auth::Result<vigil_store::KeyRecord> {
    Ok(vigil_store::KeyRecord {
        kid: key.kid().to_owned(),
        tenant: key.tenant().map(|t| t.to_string()),
        public_key: key.public_key().to_vec(),
        sealed_private_key: key.seal(master)?,
        created_at: now,
        not_after: None,
    })
}

/// The store's record of an issued token: its metadata, never the token itself.
pub fn token_record(issued: &vigil_auth::IssuedToken) -> vigil_store::TokenRecord {
    let claims = &issued.claims;
    let tenant = match claims.tenants.as_slice() {
        [one] if one != "*" => Some(one.clone()),
        _ => None,
    };
    vigil_store::TokenRecord {
        jti: claims.jti.clone(),
        tenant,
        tenants: serde_json::to_string(&claims.tenants).unwrap_or_default(),
        subject: claims.sub.clone(),
        role: claims.role.to_string(),
        kid: issued.kid.clone(),
        issued_at: claims.iat.saturating_mul(1_000_000),
        expires_at: claims.exp.saturating_mul(1_000_000),
        revoked_at: None,
        revoked_by: None,
    }
}
