//! Every way a token can be forged, stale or misused is refused with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use time::OffsetDateTime;
use vigil_auth::{
    AuthError, Claims, Role, Scope, SigningKey, TokenRequest, TokenSettings, TrustState, Verifier,
    VerifyingKey, issue, sign,
};
use vigil_schema::TenantId;

struct Fixture {
    settings: TokenSettings,
    platform: SigningKey,
    acme: SigningKey,
    verifier: Verifier,
}

fn fixture() -> Fixture {
    let settings = TokenSettings::default();
    let platform = SigningKey::generate(None).unwrap();
    let acme = SigningKey::generate(Some(tenant("acme"))).unwrap();
    let verifier = Verifier::new(settings.clone());
    let errors = verifier.replace(TrustState {
        keys: vec![platform.verifying_key(), acme.verifying_key()],
        revoked: Default::default(),
        suspended_tenants: Default::default(),
    });
    assert!(errors.is_empty());
    Fixture {
        settings,
        platform,
        acme,
        verifier,
    }
}

fn tenant(id: &str) -> TenantId {
    TenantId::new(id).unwrap()
}

fn admin_claims(settings: &TokenSettings) -> Claims {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    Claims {
        iss: settings.issuer.clone(),
        aud: settings.audience.clone(),
        sub: "admin".into(),
        iat: now,
        nbf: now,
        exp: now + 3600,
        jti: "jti-1".into(),
        role: Role::MsspAdmin,
        tenants: vec!["*".into()],
    }
}

fn ingest_request() -> TokenRequest {
    TokenRequest {
        subject: "ingest:acme".into(),
        role: Role::Ingest,
        scope: Scope::tenant(tenant("acme")),
        ttl: Duration::from_secs(3600),
    }
}

fn segments(token: &str) -> Vec<String> {
    token.split('.').map(str::to_owned).collect()
}

fn b64(value: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

#[test]
fn valid_tokens_verify_to_their_principal() {
    let f = fixture();
    let admin = sign(&f.platform, &admin_claims(&f.settings)).unwrap();
    let principal = f.verifier.verify(&admin.token).unwrap();
    assert_eq!(principal.role, Role::MsspAdmin);
    assert_eq!(principal.scope, Scope::All);
    assert_eq!(principal.subject, "admin");

    let ingest = issue(&f.settings, &f.acme, &ingest_request()).unwrap();
    let principal = f.verifier.verify(&ingest.token).unwrap();
    assert_eq!(principal.role, Role::Ingest);
    assert_eq!(principal.scope, Scope::tenant(tenant("acme")));
    assert!(!format!("{ingest:?}").contains(&ingest.token));
}

#[test]
fn alg_none_is_refused() {
    let f = fixture();
    let header = serde_json::json!({"alg": "none", "typ": "JWT", "kid": f.platform.kid()});
    let claims = serde_json::to_value(admin_claims(&f.settings)).unwrap();
    for token in [
        format!("{}.{}.", b64(&header), b64(&claims)),
        format!("{}.{}", b64(&header), b64(&claims)),
    ] {
        let err = f.verifier.verify(&token).unwrap_err();
        assert!(
            matches!(err, AuthError::Malformed | AuthError::Algorithm),
            "{err}"
        );
    }
}

#[test]
fn hs256_signed_with_the_public_key_is_refused() {
    let f = fixture();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(f.platform.kid().to_owned());
    let token = jsonwebtoken::encode(
        &header,
        &admin_claims(&f.settings),
        &jsonwebtoken::EncodingKey::from_secret(&f.platform.public_key()),
    )
    .unwrap();
    assert_eq!(f.verifier.verify(&token), Err(AuthError::Algorithm));
}

#[test]
fn a_key_the_verifier_does_not_trust_is_refused() {
    let f = fixture();
    let stranger = SigningKey::generate(None).unwrap();
    let token = sign(&stranger, &admin_claims(&f.settings)).unwrap().token;
    assert_eq!(f.verifier.verify(&token), Err(AuthError::UnknownKey));

    // The attacker's key under a kid the verifier trusts: the signature does not verify.
    let attacker = Verifier::new(f.settings.clone());
    attacker.replace(TrustState {
        keys: vec![VerifyingKey {
            kid: stranger.kid().to_owned(),
            tenant: None,
            public_key: f.platform.public_key(),
            not_after: None,
        }],
        ..Default::default()
    });
    assert_eq!(attacker.verify(&token), Err(AuthError::Signature));
}

#[test]
fn expired_and_not_yet_valid_are_refused() {
    let f = fixture();
    let mut claims = admin_claims(&f.settings);
    claims.exp = claims.iat - 3600;
    claims.nbf = claims.iat - 7200;
    let token = sign(&f.platform, &claims).unwrap().token;
    assert_eq!(f.verifier.verify(&token), Err(AuthError::Expired));

    let mut claims = admin_claims(&f.settings);
    claims.nbf = claims.iat + 3600;
    claims.exp = claims.iat + 7200;
    let token = sign(&f.platform, &claims).unwrap().token;
    assert_eq!(f.verifier.verify(&token), Err(AuthError::NotYetValid));
}

#[test]
fn wrong_issuer_or_audience_is_refused() {
    let f = fixture();
    let mut claims = admin_claims(&f.settings);
    claims.iss = "someone-else".into();
    let token = sign(&f.platform, &claims).unwrap().token;
    assert_eq!(f.verifier.verify(&token), Err(AuthError::Issuer));

    let mut claims = admin_claims(&f.settings);
    claims.aud = "another-service".into();
    let token = sign(&f.platform, &claims).unwrap().token;
    assert_eq!(f.verifier.verify(&token), Err(AuthError::Audience));
}

#[test]
fn revoked_tokens_and_retired_keys_are_refused_without_restart() {
    let f = fixture();
    let issued = issue(&f.settings, &f.acme, &ingest_request()).unwrap();
    assert!(f.verifier.verify(&issued.token).is_ok());
    f.verifier.revoke(&issued.claims.jti);
    assert_eq!(f.verifier.verify(&issued.token), Err(AuthError::Revoked));

    let other = issue(&f.settings, &f.acme, &ingest_request()).unwrap();
    let mut retired = f.acme.verifying_key();
    retired.not_after = Some(OffsetDateTime::now_utc() - time::Duration::seconds(1));
    f.verifier.replace(TrustState {
        keys: vec![f.platform.verifying_key(), retired],
        ..Default::default()
    });
    assert_eq!(f.verifier.verify(&other.token), Err(AuthError::KeyRetired));

    f.verifier.replace(TrustState {
        keys: vec![f.platform.verifying_key(), f.acme.verifying_key()],
        suspended_tenants: [tenant("acme")].into(),
        ..Default::default()
    });
    assert_eq!(
        f.verifier.verify(&other.token),
        Err(AuthError::TenantSuspended)
    );
    let admin = sign(&f.platform, &admin_claims(&f.settings)).unwrap();
    assert!(f.verifier.verify(&admin.token).is_ok());
}

#[test]
fn tampered_payload_is_refused() {
    let f = fixture();
    let issued = issue(&f.settings, &f.acme, &ingest_request()).unwrap();
    let parts = segments(&issued.token);
    let mut claims = serde_json::to_value(&issued.claims).unwrap();
    claims["role"] = "mssp-admin".into();
    claims["tenants"] = serde_json::json!(["*"]);
    let forged = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
    assert_eq!(f.verifier.verify(&forged), Err(AuthError::Signature));

    let mut claims = serde_json::to_value(&issued.claims).unwrap();
    claims["tenants"] = serde_json::json!(["globex"]);
    let forged = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
    assert_eq!(f.verifier.verify(&forged), Err(AuthError::Signature));
}

#[test]
fn a_tenant_key_cannot_sign_for_another_tenant_or_the_platform() {
    let f = fixture();
    let mut request = ingest_request();
    request.scope = Scope::tenant(tenant("globex"));
    assert!(matches!(
        issue(&f.settings, &f.acme, &request),
        Err(AuthError::Claims(_))
    ));
    // Signed anyway, bypassing `issue`: the verifier refuses it.
    let mut claims = admin_claims(&f.settings);
    claims.role = Role::Ingest;
    claims.tenants = vec!["globex".into()];
    let token = sign(&f.acme, &claims).unwrap().token;
    assert!(matches!(
        f.verifier.verify(&token),
        Err(AuthError::Claims(_))
    ));
    let token = sign(&f.acme, &admin_claims(&f.settings)).unwrap().token;
    assert!(matches!(
        f.verifier.verify(&token),
        Err(AuthError::Claims(_))
    ));
}

#[test]
fn scopes_that_do_not_fit_the_role_are_refused() {
    let f = fixture();
    let mut claims = admin_claims(&f.settings);
    claims.role = Role::TenantViewer;
    let token = sign(&f.platform, &claims).unwrap().token;
    assert!(matches!(
        f.verifier.verify(&token),
        Err(AuthError::Claims(_))
    ));
    let mut claims = admin_claims(&f.settings);
    claims.tenants = vec!["NOT A TENANT".into()];
    let token = sign(&f.platform, &claims).unwrap().token;
    assert!(matches!(
        f.verifier.verify(&token),
        Err(AuthError::Claims(_))
    ));
}

#[test]
fn errors_never_carry_the_token() {
    let f = fixture();
    let issued = issue(&f.settings, &f.acme, &ingest_request()).unwrap();
    f.verifier.revoke(&issued.claims.jti);
    let err = f.verifier.verify(&issued.token).unwrap_err().to_string();
    assert!(!err.contains(&issued.token));
    assert!(!err.contains(&issued.claims.jti));
}

proptest! {
    #[test]
    fn garbage_never_panics_and_never_verifies(text in "\\PC{0,300}") {
        let f = fixture();
        prop_assert!(f.verifier.verify(&text).is_err());
    }

    #[test]
    fn dotted_garbage_never_verifies(a in "[A-Za-z0-9_-]{0,80}", b in "[A-Za-z0-9_-]{0,200}", c in "[A-Za-z0-9_-]{0,90}") {
        let f = fixture();
        let token = format!("{a}.{b}.{c}");
        prop_assert!(f.verifier.verify(&token).is_err());
    }
}
