//! API keys: `Authorization: Bearer KEY` against the configured keys (several tenants may
//! each have one), compared in constant time so a key cannot be guessed byte by byte from
//! response times. A request's key decides its tenant, and tenants do not share cached
//! prompts (see `prompt_cache`).

use axum::http::HeaderValue;
use subtle::ConstantTimeEq;

/// The keys a server accepts; empty: no key needed (one tenant).
#[derive(Clone, Debug, Default)]
pub struct ApiKeys {
    keys: Vec<String>,
}

/// Which key a request used: its index among the keys, 0 without keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tenant(pub u64);

impl ApiKeys {
    /// Keys as given; empty strings are dropped, duplicates kept once.
    pub fn new(keys: impl IntoIterator<Item = String>) -> Self {
        let mut out: Vec<String> = Vec::new();
        for k in keys {
            let k = k.trim().to_string();
            if !k.is_empty() && !out.contains(&k) {
                out.push(k);
            }
        }
        Self { keys: out }
    }

    /// One key per line of a key file; blank lines and lines starting with `#` are skipped.
    pub fn parse_file(text: &str) -> Vec<String> {
        text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The tenant of a request with this `Authorization` header, or `None` when keys are
    /// required and it names none of them. The scheme is case-insensitive (RFC 9110).
    pub fn check(&self, authorization: Option<&HeaderValue>) -> Option<Tenant> {
        if self.keys.is_empty() {
            return Some(Tenant(0));
        }
        let given = authorization.and_then(|v| v.to_str().ok()).and_then(bearer_token).unwrap_or("");
        // Every key is compared, whatever matched, so timing says nothing about which.
        let mut found = None;
        for (i, k) in self.keys.iter().enumerate() {
            let ok: bool = given.as_bytes().ct_eq(k.as_bytes()).into();
            if ok && found.is_none() {
                found = Some(Tenant(i as u64 + 1));
            }
        }
        found
    }
}

/// The token of a `Bearer` credential, whatever the scheme's case.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(char::is_whitespace)?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn keys_pick_tenants_and_the_scheme_ignores_case() {
        let keys = ApiKeys::new(["alpha".to_string(), "beta".to_string(), String::new()]);
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.check(Some(&h("Bearer alpha"))), Some(Tenant(1)));
        assert_eq!(keys.check(Some(&h("bearer beta"))), Some(Tenant(2)));
        assert_eq!(keys.check(Some(&h("BEARER   beta "))), Some(Tenant(2)));
        assert_eq!(keys.check(Some(&h("Bearer alph"))), None);
        assert_eq!(keys.check(Some(&h("Basic alpha"))), None);
        assert_eq!(keys.check(None), None);
        assert_eq!(ApiKeys::default().check(None), Some(Tenant(0)));
    }

    #[test]
    fn key_files_skip_blanks_and_comments() {
        assert_eq!(ApiKeys::parse_file("# tenants\nk1\n\n  k2  \n#k3\n"), vec!["k1", "k2"]);
    }
}
