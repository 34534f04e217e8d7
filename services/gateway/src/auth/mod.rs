//! Token checks at the handshake: an HS256 JWT whose `sub` is the user id, taken from
//! `Authorization: Bearer` or, for browsers that cannot set headers, `?access_token=`.

mod hs256;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use protocol::UserId;
use serde::{Deserialize, Serialize};

/// The claims natter reads. Other claims are ignored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// Why a token was refused; logged, never shown in detail to the client.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no token")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    #[error("token subject is not a valid user id")]
    BadSubject,
}

/// A verified identity.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user: UserId,
    /// Expiry, seconds since the Unix epoch; the session closes when it passes.
    pub exp: u64,
}

/// Verifies tokens with one secret.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl Verifier {
    pub fn new(secret: &str, leeway_secs: u64) -> Self {
        hs256::install();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = leeway_secs;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    pub fn verify(&self, token: Option<&str>) -> Result<Identity, AuthError> {
        let token = token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)?;
        let user = UserId::new(&data.claims.sub).map_err(|_| AuthError::BadSubject)?;
        Ok(Identity {
            user,
            exp: data.claims.exp,
        })
    }
}

/// The token of a request: the bearer header wins over the query parameter.
pub fn token_from(authorization: Option<&str>, query: Option<&str>) -> Option<String> {
    if let Some(h) = authorization {
        return h.strip_prefix("Bearer ").map(|t| t.trim().to_string());
    }
    url_query_param(query?, "access_token")
}

pub fn url_query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        // JWTs are base64url and dots: no percent-decoding needed for a valid one.
        (k == name).then(|| v.to_string())
    })
}

/// Mints a token for `user` valid for `ttl_secs` (dev tokens, tests, the CLI).
pub fn mint_token(secret: &str, user: &str, ttl_secs: u64) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        .saturating_add(ttl_secs);
    let claims = Claims {
        sub: user.to_string(),
        exp,
    };
    encode_claims(secret, &claims)
}

/// Signs arbitrary claims with HS256 (tests of expired or odd tokens).
pub fn encode_claims(secret: &str, claims: &Claims) -> String {
    hs256::install();
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_good_tokens_and_refuses_bad_ones() {
        let v = Verifier::new("s3cret", 0);
        let ok = mint_token("s3cret", "alice", 60);
        assert_eq!(v.verify(Some(&ok)).unwrap().user.as_str(), "alice");
        assert!(matches!(v.verify(None), Err(AuthError::Missing)));
        assert!(v.verify(Some(&mint_token("other", "alice", 60))).is_err());
        assert!(v.verify(Some(&mint_token("s3cret", "bob.*", 60))).is_err());
        let expired = encode_claims(
            "s3cret",
            &Claims {
                sub: "alice".into(),
                exp: 1,
            },
        );
        assert!(v.verify(Some(&expired)).is_err());
    }

    #[test]
    fn only_hs256_is_accepted() {
        let v = Verifier::new("s3cret", 0);
        let ok = mint_token("s3cret", "alice", 60);
        let (_, rest) = ok.split_once('.').unwrap();
        // The same claims and signature under a header naming another algorithm.
        for alg in ["HS384", "HS512", "none", "RS256"] {
            let header = format!(r#"{{"typ":"JWT","alg":"{alg}"}}"#);
            let forged = format!("{}.{rest}", b64(header.as_bytes()));
            assert!(v.verify(Some(&forged)).is_err(), "{alg} accepted");
        }
        // A flipped signature bit.
        let mut tampered = ok.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(
            v.verify(Some(std::str::from_utf8(&tampered).unwrap()))
                .is_err()
        );
    }

    /// base64url without padding, as JWTs use.
    fn b64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n =
                chunk.iter().fold(0u32, |n, b| n << 8 | u32::from(*b)) << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn token_comes_from_header_or_query() {
        assert_eq!(token_from(Some("Bearer abc"), None).as_deref(), Some("abc"));
        assert_eq!(token_from(Some("Basic abc"), Some("access_token=x")), None);
        assert_eq!(
            token_from(None, Some("a=1&access_token=x.y")).as_deref(),
            Some("x.y")
        );
        assert_eq!(token_from(None, Some("a=1")), None);
    }
}
