//! Signing keys (Ed25519) and the master key that seals them at rest.
//!
//! Private signing keys live in the store, sealed (XChaCha20-Poly1305) with a master key that
//! never enters the database: a file in the data directory for `vigil run`, a mounted Secret in
//! Kubernetes. The store alone, a backup of it or a SQL injection yields no usable key.

use std::fmt;
use std::io::Write;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use ed25519_dalek::pkcs8::EncodePrivateKey;
use vigil_schema::TenantId;

use crate::{AuthError, Result};

const SEAL_VERSION: u8 = 1;
const NONCE_LEN: usize = 24;

/// Fills `buffer` from the operating system's random source.
pub(crate) fn random_bytes(buffer: &mut [u8]) -> Result<()> {
    getrandom::fill(buffer).map_err(|err| AuthError::Key(format!("no randomness: {err}")))
}

/// The key that seals signing keys at rest. Its bytes are never printed.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

impl MasterKey {
    /// A new random master key.
    pub fn generate() -> Result<Self> {
        let mut bytes = [0u8; 32];
        random_bytes(&mut bytes)?;
        Ok(Self(bytes))
    }

    /// Reads a master key file: 32 bytes, base64-encoded, surrounding whitespace ignored.
    pub fn from_file_contents(text: &str) -> Result<Self> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| AuthError::Key("the master key is not base64".into()))?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|bytes: Vec<u8>| {
            AuthError::Key(format!(
                "the master key has {} bytes, 32 are required",
                bytes.len()
            ))
        })?;
        Ok(Self(bytes))
    }

    /// Reads the master key at `path`, or creates it (mode 0600) when the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_file_contents(&text).map_err(|err| {
                AuthError::Key(format!("master key file {}: {err}", path.display()))
            }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate()?;
                write_secret_file(path, STANDARD.encode(key.0).as_bytes()).map_err(|err| {
                    AuthError::Key(format!(
                        "cannot write master key file {}: {err}",
                        path.display()
                    ))
                })?;
                Ok(key)
            }
            Err(err) => Err(AuthError::Key(format!(
                "cannot read master key file {}: {err}",
                path.display()
            ))),
        }
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&self.0).into())
    }
}

/// Writes `contents` to a new file readable only by its owner (0600 on Unix); fails if the file
/// exists, so a secret is never silently replaced.
pub fn write_secret_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// An Ed25519 signing key with its key id. Platform keys (no tenant) sign user tokens; each
/// tenant has its own keys for its ingest tokens, so rotating one tenant's key touches no other.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    tenant: Option<TenantId>,
    secret: ed25519_dalek::SigningKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new random key for `tenant` (or the platform).
    pub fn generate(tenant: Option<TenantId>) -> Result<Self> {
        let mut seed = [0u8; 32];
        random_bytes(&mut seed)?;
        Ok(Self {
            kid: uuid::Uuid::now_v7().simple().to_string(),
            tenant,
            secret: ed25519_dalek::SigningKey::from_bytes(&seed),
        })
    }

    /// The key id, sent as the token header's `kid`.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The tenant the key signs for; `None` for the platform key.
    pub fn tenant(&self) -> Option<&TenantId> {
        self.tenant.as_ref()
    }

    /// The 32-byte public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.secret.verifying_key().to_bytes()
    }

    /// The private key encrypted with `master`, bound to the key id.
    pub fn seal(&self, master: &MasterKey) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        random_bytes(&mut nonce)?;
        let sealed = master
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: self.secret.as_bytes(),
                    aad: self.kid.as_bytes(),
                },
            )
            .map_err(|_| AuthError::Key("sealing a signing key failed".into()))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens a key sealed by [`SigningKey::seal`]. Fails when the master key differs or the
    /// sealed bytes were changed.
    pub fn unseal(
        kid: &str,
        tenant: Option<TenantId>,
        sealed: &[u8],
        master: &MasterKey,
    ) -> Result<Self> {
        let unreadable = || {
            AuthError::Key(format!(
                "signing key {kid} cannot be opened with this master key"
            ))
        };
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != SEAL_VERSION {
            return Err(unreadable());
        }
        let (nonce, ciphertext) = sealed[1..].split_at(NONCE_LEN);
        let seed = master
            .cipher()
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: kid.as_bytes(),
                },
            )
            .map_err(|_| unreadable())?;
        let seed: [u8; 32] = seed.try_into().map_err(|_| unreadable())?;
        Ok(Self {
            kid: kid.to_owned(),
            tenant,
            secret: ed25519_dalek::SigningKey::from_bytes(&seed),
        })
    }

    pub(crate) fn encoding_key(&self) -> Result<jsonwebtoken::EncodingKey> {
        let der = self
            .secret
            .to_pkcs8_der()
            .map_err(|_| AuthError::Key("encoding a signing key failed".into()))?;
        Ok(jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()))
    }

    /// The public half, for verifiers.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey {
            kid: self.kid.clone(),
            tenant: self.tenant.clone(),
            public_key: self.public_key(),
            not_after: None,
        }
    }
}

/// A public key a verifier trusts, with the tenant it may sign for and, once rotated out, the
/// time after which its tokens are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    /// Key id.
    pub kid: String,
    /// The tenant it signs for; `None` for the platform key.
    pub tenant: Option<TenantId>,
    /// The Ed25519 public key.
    pub public_key: [u8; 32],
    /// After this time tokens signed with the key are refused (set by rotation).
    pub not_after: Option<time::OffsetDateTime>,
}

impl VerifyingKey {
    pub(crate) fn decoding_key(&self) -> Result<jsonwebtoken::DecodingKey> {
        jsonwebtoken::DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(self.public_key))
            .map_err(|_| AuthError::Key(format!("public key {} is not valid", self.kid)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_keys_open_only_with_their_master_key_and_kid() {
        let master = MasterKey::generate().unwrap();
        let key = SigningKey::generate(None).unwrap();
        let sealed = key.seal(&master).unwrap();
        assert!(
            !sealed
                .windows(32)
                .any(|w| w == key.secret.as_bytes().as_slice())
        );
        let opened = SigningKey::unseal(key.kid(), None, &sealed, &master).unwrap();
        assert_eq!(opened.public_key(), key.public_key());

        let other = MasterKey::generate().unwrap();
        assert!(SigningKey::unseal(key.kid(), None, &sealed, &other).is_err());
        assert!(SigningKey::unseal("another-kid", None, &sealed, &master).is_err());
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(SigningKey::unseal(key.kid(), None, &tampered, &master).is_err());
        assert!(SigningKey::unseal(key.kid(), None, &[], &master).is_err());
    }

    #[test]
    fn master_key_file_is_created_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let first = MasterKey::load_or_create(&path).unwrap();
        let again = MasterKey::load_or_create(&path).unwrap();
        assert_eq!(first.0, again.0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "c2hvcnQ=").unwrap();
        let err = MasterKey::load_or_create(&path).unwrap_err().to_string();
        assert!(err.contains("5 bytes, 32 are required"), "{err}");
        assert_eq!(format!("{first:?}"), "MasterKey(***)");
    }
}
