//! Token checks at the handshake: an HS256 JWT whose `sub` is the user id, taken from
//! `Authorization: Bearer` or, for browsers that cannot set headers, `?access_token=`.

mod hs256;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use protocol::UserId;
use serde::{Deserialize, Serialize};

/// The claims natter reads. Other claims are ignored, except `aud` and `iss` when the
/// gateway is configured to check them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Not before, seconds since the Unix epoch: refused until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the Unix epoch: a token issued in the future is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

/// What a token must satisfy besides its signature (from `GatewayConfig`).
#[derive(Debug, Clone)]
pub struct TokenRules {
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    pub leeway_secs: u64,
    /// A token whose `exp` lies further ahead than this is refused, so no token lives
    /// forever.
    pub max_lifetime_secs: u64,
    /// When set, `aud` must be this.
    pub audience: Option<String>,
    /// When set, `iss` must be this.
    pub issuer: Option<String>,
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
    #[error("token lives longer than the gateway allows")]
    TooLong,
    #[error("token issued in the future")]
    IssuedInFuture,
}

impl AuthError {
    /// The error as one line safe to log: a token's header is attacker-controlled text (an
    /// `alg` can hold a newline and terminal escapes), so control characters are escaped.
    pub fn for_log(&self) -> String {
        self.to_string().escape_debug().to_string()
    }
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
    rules: TokenRules,
}

impl Verifier {
    pub fn new(secret: &str, rules: TokenRules) -> Self {
        hs256::install();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = rules.leeway_secs;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(audience) = &rules.audience {
            validation.set_audience(&[audience]);
            required.push("aud");
        } else {
            validation.validate_aud = false;
        }
        if let Some(issuer) = &rules.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Self {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            rules,
        }
    }

    pub fn verify(&self, token: Option<&str>) -> Result<Identity, AuthError> {
        let token = token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)?;
        let now = jsonwebtoken::get_current_timestamp();
        let latest = now.saturating_add(self.rules.leeway_secs);
        if data.claims.exp > latest.saturating_add(self.rules.max_lifetime_secs) {
            return Err(AuthError::TooLong);
        }
        if data.claims.iat.is_some_and(|iat| iat > latest) {
            return Err(AuthError::IssuedInFuture);
        }
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
    mint_token_expiring(secret, user, ttl_secs).0
}

/// [`mint_token`], with the token's expiry (`exp`, seconds since the Unix epoch).
pub fn mint_token_expiring(secret: &str, user: &str, ttl_secs: u64) -> (String, u64) {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        .saturating_add(ttl_secs);
    let claims = Claims {
        sub: user.to_string(),
        exp,
        ..Default::default()
    };
    (encode_claims(secret, &claims), exp)
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

    fn rules() -> TokenRules {
        TokenRules {
            leeway_secs: 0,
            max_lifetime_secs: 7 * 24 * 3600,
            audience: None,
            issuer: None,
        }
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    #[test]
    fn verifies_good_tokens_and_refuses_bad_ones() {
        let v = Verifier::new("s3cret", rules());
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
                ..Default::default()
            },
        );
        assert!(v.verify(Some(&expired)).is_err());
    }

    #[test]
    fn tokens_not_yet_valid_issued_ahead_or_living_forever_are_refused() {
        let v = Verifier::new("s3cret", rules());
        let claims = |f: &dyn Fn(&mut Claims)| {
            let mut c = Claims {
                sub: "alice".into(),
                exp: now() + 3600,
                ..Default::default()
            };
            f(&mut c);
            encode_claims("s3cret", &c)
        };
        assert!(v.verify(Some(&claims(&|_| {}))).is_ok());
        assert!(
            v.verify(Some(&claims(&|c| c.nbf = Some(now() - 10))))
                .is_ok()
        );
        assert!(
            v.verify(Some(&claims(&|c| c.nbf = Some(now() + 600))))
                .is_err()
        );
        assert!(matches!(
            v.verify(Some(&claims(&|c| c.iat = Some(now() + 600)))),
            Err(AuthError::IssuedInFuture)
        ));
        assert!(matches!(
            v.verify(Some(&claims(&|c| c.exp = u64::MAX))),
            Err(AuthError::TooLong)
        ));
        assert!(matches!(
            v.verify(Some(&claims(&|c| c.exp = now() + 8 * 24 * 3600))),
            Err(AuthError::TooLong)
        ));
    }

    #[test]
    fn audience_and_issuer_are_checked_when_configured() {
        let v = Verifier::new(
            "s3cret",
            TokenRules {
                audience: Some("natter".into()),
                issuer: Some("https://id.example".into()),
                ..rules()
            },
        );
        let token = |aud: Option<&str>, iss: Option<&str>| {
            encode_claims(
                "s3cret",
                &Claims {
                    sub: "alice".into(),
                    exp: now() + 60,
                    aud: aud.map(Into::into),
                    iss: iss.map(Into::into),
                    ..Default::default()
                },
            )
        };
        assert!(
            v.verify(Some(&token(Some("natter"), Some("https://id.example"))))
                .is_ok()
        );
        assert!(
            v.verify(Some(&token(Some("other"), Some("https://id.example"))))
                .is_err()
        );
        assert!(
            v.verify(Some(&token(Some("natter"), Some("https://evil.example"))))
                .is_err()
        );
        assert!(
            v.verify(Some(&token(None, Some("https://id.example"))))
                .is_err()
        );
        assert!(v.verify(Some(&token(Some("natter"), None))).is_err());
        // Without the options, both claims are ignored.
        let lax = Verifier::new("s3cret", rules());
        assert!(lax.verify(Some(&token(Some("anything"), None))).is_ok());
    }

    #[test]
    fn only_hs256_is_accepted() {
        let v = Verifier::new("s3cret", rules());
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

    #[test]
    fn a_forged_header_cannot_write_log_lines() {
        let v = Verifier::new("s3cret", rules());
        let ok = mint_token("s3cret", "alice", 60);
        let (_, rest) = ok.split_once('.').unwrap();
        let header = "{\"typ\":\"JWT\",\"alg\":\"HS256\\n\\u001b[31mERROR forged line\"}";
        let forged = format!("{}.{rest}", b64(header.as_bytes()));
        let e = v.verify(Some(&forged)).expect_err("refused");
        let logged = e.for_log();
        assert!(!logged.chars().any(char::is_control), "{logged}");
        assert!(
            logged.contains("\\n") || logged.contains("\\u{1b}"),
            "{logged}"
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
