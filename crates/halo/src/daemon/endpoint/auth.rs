//! Who may read the status endpoint: the bearer token of `[status] token_file`, compared in
//! constant time.

use hyper::Request;
use hyper::body::Incoming;
use subtle::ConstantTimeEq;

/// Whether the request carries `Authorization: Bearer TOKEN` with the expected token.
pub(super) fn authorized(request: &Request<Incoming>, token: &str) -> bool {
    let presented = request.headers().get(hyper::header::AUTHORIZATION).and_then(|v| bearer_token(v.as_bytes()));
    presented.is_some_and(|p| same_secret(p, token.as_bytes()))
}

/// The token of an `Authorization: Bearer TOKEN` header; the scheme is case-insensitive
/// (RFC 7235 §2.1), the token is not.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at(value.iter().position(|b| *b == b' ')?);
    scheme.eq_ignore_ascii_case(b"bearer").then(|| rest.trim_ascii()).filter(|t| !t.is_empty())
}

/// Compares a presented secret with the expected one in time that does not depend on how much
/// of it was right (subtle's comparison: the compiler cannot turn it into an early exit; a
/// length that differs answers at once, which tells only the length).
fn same_secret(presented: &[u8], expected: &[u8]) -> bool {
    bool::from(presented.ct_eq(expected))
}
