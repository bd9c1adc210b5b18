//! Issuing and verifying tokens.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::access::{Principal, Role, Scope};
use crate::keys::{SigningKey, VerifyingKey};
use crate::{AuthError, Result};

/// The one signature algorithm Vigil issues and accepts. Pinning it rules out `alg: none` and
/// algorithm confusion (an HS256 token "signed" with a public key).
pub const ALGORITHM: Algorithm = Algorithm::EdDSA;

/// Who issues tokens and for whom: checked on every token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    /// The `iss` claim.
    pub issuer: String,
    /// The `aud` claim.
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            issuer: "vigil".into(),
            audience: "vigil".into(),
            leeway_secs: 30,
        }
    }
}

/// The claims of a Vigil token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Subject: who the token is for.
    pub sub: String,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Expiry.
    pub exp: i64,
    /// Token id, for revocation and audit.
    pub jti: String,
    /// The role.
    pub role: Role,
    /// Tenant scope: tenant ids, or `["*"]` for every tenant.
    pub tenants: Vec<String>,
}

/// A freshly issued token: the only time its text exists outside the caller.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The compact JWT.
    pub token: String,
    /// Its claims.
    pub claims: Claims,
    /// The key that signed it.
    pub kid: String,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("claims", &self.claims)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// What a token should say.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// The subject.
    pub subject: String,
    /// The role.
    pub role: Role,
    /// The tenants.
    pub scope: Scope,
    /// How long it is valid.
    pub ttl: Duration,
}

/// Signs a token for `request` with `key`. A tenant key signs only tokens scoped to its tenant.
pub fn issue(
    settings: &TokenSettings,
    key: &SigningKey,
    request: &TokenRequest,
) -> Result<IssuedToken> {
    request
        .role
        .check_scope(&request.scope)
        .map_err(AuthError::Claims)?;
    if request.subject.is_empty() || request.subject.len() > 256 {
        return Err(AuthError::Claims(
            "the subject must have 1 to 256 characters".into(),
        ));
    }
    if let Some(tenant) = key.tenant()
        && request.scope != Scope::tenant(tenant.clone())
    {
        return Err(AuthError::Claims(format!(
            "a key of tenant {tenant} signs only tokens scoped to that tenant"
        )));
    }
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let ttl = i64::try_from(request.ttl.as_secs())
        .map_err(|_| AuthError::Claims("the validity is too long".into()))?;
    let claims = Claims {
        iss: settings.issuer.clone(),
        aud: settings.audience.clone(),
        sub: request.subject.clone(),
        iat: now,
        nbf: now,
        exp: now.saturating_add(ttl),
        jti: uuid::Uuid::now_v7().to_string(),
        role: request.role,
        tenants: request.scope.to_claim(),
    };
    sign(key, &claims)
}

/// Signs `claims` as they are. [`issue`] is the normal way; tests use this to build tokens with
/// unusual claims.
pub fn sign(key: &SigningKey, claims: &Claims) -> Result<IssuedToken> {
    let mut header = Header::new(ALGORITHM);
    header.kid = Some(key.kid().to_owned());
    let token = jsonwebtoken::encode(&header, claims, &key.encoding_key()?)
        .map_err(|err| AuthError::Key(format!("signing a token failed: {err}")))?;
    Ok(IssuedToken {
        token,
        claims: claims.clone(),
        kid: key.kid().to_owned(),
    })
}

/// The keys and revocations a [`Verifier`] trusts; replaced as a whole on refresh.
#[derive(Debug, Clone, Default)]
pub struct TrustState {
    /// Public keys by key id.
    pub keys: Vec<VerifyingKey>,
    /// Revoked token ids (only those not yet expired need to be listed).
    pub revoked: HashSet<String>,
    /// Suspended or deleted tenants: tokens scoped only to them are refused.
    pub suspended_tenants: HashSet<vigil_schema::TenantId>,
}

struct LoadedKey {
    key: VerifyingKey,
    decoding: jsonwebtoken::DecodingKey,
}

#[derive(Default)]
struct Trust {
    keys: HashMap<String, LoadedKey>,
    revoked: HashSet<String>,
    suspended_tenants: HashSet<vigil_schema::TenantId>,
}

/// Verifies tokens against the keys it trusts. Cheap to clone; [`Verifier::replace`] swaps keys
/// and revocations at once (the owning service refreshes them from the store), so revocation
/// and rotation take effect without a restart.
#[derive(Clone)]
pub struct Verifier {
    settings: Arc<TokenSettings>,
    trust: Arc<RwLock<Arc<Trust>>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier that trusts nothing yet.
    pub fn new(settings: TokenSettings) -> Self {
        Self {
            settings: Arc::new(settings),
            trust: Arc::default(),
        }
    }

    /// The issuer and audience this verifier expects.
    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    /// Trusts exactly the keys and revocations of `state` from now on. Keys that do not load
    /// are skipped and returned as errors.
    pub fn replace(&self, state: TrustState) -> Vec<AuthError> {
        let mut errors = Vec::new();
        let mut keys = HashMap::with_capacity(state.keys.len());
        for key in state.keys {
            match key.decoding_key() {
                Ok(decoding) => {
                    keys.insert(key.kid.clone(), LoadedKey { key, decoding });
                }
                Err(err) => errors.push(err),
            }
        }
        let trust = Arc::new(Trust {
            keys,
            revoked: state.revoked,
            suspended_tenants: state.suspended_tenants,
        });
        match self.trust.write() {
            Ok(mut guard) => *guard = trust,
            Err(poisoned) => *poisoned.into_inner() = trust,
        }
        errors
    }

    /// Adds one revoked token id at once (the process that revoked it need not wait for the
    /// next refresh).
    pub fn revoke(&self, token_id: &str) {
        let mut guard = match self.trust.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut revoked = guard.revoked.clone();
        revoked.insert(token_id.to_owned());
        let keys = guard
            .keys
            .iter()
            .map(|(kid, loaded)| {
                (
                    kid.clone(),
                    LoadedKey {
                        key: loaded.key.clone(),
                        decoding: loaded.decoding.clone(),
                    },
                )
            })
            .collect();
        *guard = Arc::new(Trust {
            keys,
            revoked,
            suspended_tenants: guard.suspended_tenants.clone(),
        });
    }

    /// Whether the token id is revoked as far as this verifier knows.
    pub fn is_revoked(&self, token_id: &str) -> bool {
        self.current().revoked.contains(token_id)
    }

    fn current(&self) -> Arc<Trust> {
        match self.trust.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Verifies `token` and returns who it identifies. Every failure is an [`AuthError`] whose
    /// message names the reason and nothing secret.
    pub fn verify(&self, token: &str) -> Result<Principal> {
        self.verify_at(token, OffsetDateTime::now_utc())
    }

    fn verify_at(&self, token: &str, now: OffsetDateTime) -> Result<Principal> {
        if token.len() > 8 * 1024 {
            return Err(AuthError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        if header.alg != ALGORITHM {
            return Err(AuthError::Algorithm);
        }
        let kid = header.kid.ok_or(AuthError::UnknownKey)?;
        let trust = self.current();
        let loaded = trust.keys.get(&kid).ok_or(AuthError::UnknownKey)?;

        let mut validation = Validation::new(ALGORITHM);
        validation.leeway = self.settings.leeway_secs;
        validation.validate_nbf = true;
        validation.validate_exp = true;
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &loaded.decoding, &validation).map_err(
            |err| match err.kind() {
                ErrorKind::InvalidSignature => AuthError::Signature,
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidIssuer => AuthError::Issuer,
                ErrorKind::InvalidAudience => AuthError::Audience,
                ErrorKind::InvalidAlgorithm => AuthError::Algorithm,
                ErrorKind::MissingRequiredClaim(claim) => {
                    AuthError::Claims(format!("the {claim} claim is missing"))
                }
                ErrorKind::Json(_) => {
                    AuthError::Claims("the claims are not Vigil's (role, tenants, jti)".into())
                }
                _ => AuthError::Malformed,
            },
        )?;
        let claims = data.claims;
        if let Some(not_after) = loaded.key.not_after
            && now > not_after
        {
            return Err(AuthError::KeyRetired);
        }
        if trust.revoked.contains(&claims.jti) {
            return Err(AuthError::Revoked);
        }
        let scope = Scope::from_claim(&claims.tenants).map_err(AuthError::Claims)?;
        claims.role.check_scope(&scope).map_err(AuthError::Claims)?;
        if let Some(tenant) = &loaded.key.tenant
            && scope != Scope::tenant(tenant.clone())
        {
            return Err(AuthError::Claims(
                "the token's tenants do not match its signing key".into(),
            ));
        }
        if let Scope::Tenants(tenants) = &scope
            && tenants
                .iter()
                .all(|tenant| trust.suspended_tenants.contains(tenant))
        {
            return Err(AuthError::TenantSuspended);
        }
        Ok(Principal {
            subject: claims.sub,
            role: claims.role,
            scope,
            token_id: claims.jti,
        })
    }
}
