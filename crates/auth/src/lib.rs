//! Who may do what in Vigil.
//!
//! - Tokens are JWTs signed with Ed25519 (`EdDSA`, the only algorithm accepted), with `kid`,
//!   `iss`, `aud`, `exp`, `nbf`, `sub`, `jti`, a `role` and a `tenants` scope.
//! - A [`Verifier`] trusts a set of public keys and revoked token ids that the owning service
//!   refreshes from the store: revocation and key rotation need no restart.
//! - [`Principal::may`] is the one authorization decision: a role grants actions
//!   ([`Role::allows`]); the scope decides which tenants they apply to.
//! - Private keys are sealed at rest with a [`MasterKey`] that is not in the database.

mod access;
mod keys;
mod token;

pub use access::{Action, Denied, Principal, Role, Scope, Target};
pub use keys::{MasterKey, SigningKey, VerifyingKey, write_secret_file};
pub use token::{
    ALGORITHM, Claims, IssuedToken, TokenRequest, TokenSettings, TrustState, Verifier, issue, sign,
};

/// Why a token or key was refused. Messages name the reason, never key material or claims the
/// caller could not already read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Not a JWT.
    #[error("the token is not a well-formed JWT")]
    Malformed,
    /// Signed with another algorithm than EdDSA (including `none`).
    #[error("the token's algorithm is not accepted")]
    Algorithm,
    /// No trusted key has the token's `kid`.
    #[error("the token's signing key is not known")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the token's signature is invalid")]
    Signature,
    /// `exp` has passed.
    #[error("the token has expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// Wrong `iss`.
    #[error("the token's issuer is not accepted")]
    Issuer,
    /// Wrong `aud`.
    #[error("the token's audience is not accepted")]
    Audience,
    /// The token was revoked.
    #[error("the token has been revoked")]
    Revoked,
    /// Every tenant of the token's scope is suspended or deleted.
    #[error("the token's tenant is suspended")]
    TenantSuspended,
    /// The signing key was rotated out.
    #[error("the token's signing key has been retired")]
    KeyRetired,
    /// Claims that do not fit Vigil's rules.
    #[error("the token's claims are invalid: {0}")]
    Claims(String),
    /// Key handling failed.
    #[error("{0}")]
    Key(String),
}

/// Result with [`AuthError`].
pub type Result<T, E = AuthError> = std::result::Result<T, E>;
