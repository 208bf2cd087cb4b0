//! Bearer-key authentication: every route but `/health` needs `Authorization: Bearer <key>`
//! when `AUTH=required`. Keys are stored as SHA-256 digests; the caller's owner is put in the
//! request for handlers to scope their reads and writes.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SecureRandom;

use crate::error::ApiError;
use crate::settings::Secret;
pub use crate::spend::CallerKey;
use crate::store::ApiKeys;

/// The owner given to every request when `AUTH=off`.
pub const LOCAL_OWNER: &str = "local";
/// Every key starts with this, so leaked keys are easy to find in code and logs.
pub const KEY_PREFIX: &str = "lsk_";

/// Who is calling: the owner of the key used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner(pub String);

pub use crate::settings::AuthMode;

/// What the middleware checks keys against.
#[derive(Clone)]
pub struct Auth {
    mode: AuthMode,
    keys: Arc<dyn ApiKeys>,
    /// `AUTH_TOKEN`: one static key for the simplest setups, and its owner.
    static_token: Option<(Vec<u8>, String)>,
}

impl Auth {
    pub fn new(
        mode: AuthMode,
        keys: Arc<dyn ApiKeys>,
        static_token: Option<(&Secret, &str)>,
    ) -> Self {
        Self {
            mode,
            keys,
            static_token: static_token.map(|(t, owner)| (digest(t.expose()), owner.to_owned())),
        }
    }

    /// From `AUTH`, `AUTH_TOKEN` and `AUTH_TOKEN_OWNER`.
    pub fn from_settings(settings: &crate::settings::AuthSettings, keys: Arc<dyn ApiKeys>) -> Self {
        Self::new(
            settings.mode,
            keys,
            settings
                .static_token
                .as_ref()
                .map(|t| (t, settings.static_token_owner.as_str())),
        )
    }

    /// Every request is `local`'s: for development and tests only.
    pub fn off(keys: Arc<dyn ApiKeys>) -> Self {
        Self::new(AuthMode::Off, keys, None)
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// The owner of a presented `Authorization` header value, and the stored key it is (none
    /// for `AUTH=off` and `AUTH_TOKEN`).
    async fn owner(&self, header: Option<&str>) -> Result<(Owner, Option<CallerKey>), ApiError> {
        if self.mode == AuthMode::Off {
            return Ok((Owner(LOCAL_OWNER.to_owned()), None));
        }
        let key = header
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        let presented = digest(key);
        if let Some((token, owner)) = &self.static_token
            && *token == presented
        {
            return Ok((Owner(owner.clone()), None));
        }
        // What cannot be a key is refused without asking the database.
        if !could_be_key(key) {
            return Err(ApiError::Unauthorized);
        }
        match self.keys.key_of(&presented).await? {
            Some(k) => Ok((
                Owner(k.owner),
                Some(CallerKey {
                    id: k.id,
                    limits: k.limits,
                }),
            )),
            None => Err(ApiError::Unauthorized),
        }
    }
}

/// The middleware: a valid key (or `AUTH=off`) puts an [`Owner`] in the request, and a stored
/// key its [`CallerKey`] (its id and limits); anything else is a 401 with the JSON error body.
pub async fn require_key(State(auth): State<Auth>, mut request: Request, next: Next) -> Response {
    let header = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match auth.owner(header.as_deref()).await {
        Ok((owner, key)) => {
            request.extensions_mut().insert(owner);
            if let Some(key) = key {
                request.extensions_mut().insert(key);
            }
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

/// The length of a key: the prefix and 32 bytes in unpadded base64url.
pub const KEY_LEN: usize = KEY_PREFIX.len() + 43;

/// Whether `value` has the shape of a key [`new_key`] makes (prefix, length, alphabet).
pub fn could_be_key(value: &str) -> bool {
    value.len() == KEY_LEN
        && value.starts_with(KEY_PREFIX)
        && value[KEY_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// SHA-256 of a key.
pub fn digest(key: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, key.as_bytes())
        .as_ref()
        .to_vec()
}

/// A new random key: `lsk_` and 32 random bytes, base64url.
pub fn new_key() -> Result<String, ring::error::Unspecified> {
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes)?;
    Ok(format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_prefixed_and_digests_fixed_length() {
        let a = new_key().unwrap();
        let b = new_key().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX) && a.len() == KEY_LEN);
        assert!(could_be_key(&a));
        for not_a_key in [
            "",
            "lsk_",
            "sk-abc",
            &a[1..],
            &format!("{a}x"),
            &a.replace('_', "/"),
        ] {
            assert!(!could_be_key(not_a_key), "{not_a_key}");
        }
        assert_eq!(digest(&a).len(), 32);
        assert_eq!(digest(&a), digest(&a));
    }
}
