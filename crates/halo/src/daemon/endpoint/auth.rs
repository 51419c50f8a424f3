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

/// Compares a presented secret with the expected one in time that depends only on the expected
/// one's length: the presented bytes are laid over the expected length (a missing byte never
/// matches) and compared with subtle's constant-time equality, which the optimiser cannot turn
/// into an early exit; the lengths are compared the same way.
fn same_secret(presented: &[u8], expected: &[u8]) -> bool {
    let laid_over: Vec<u8> = expected.iter().enumerate().map(|(i, byte)| presented.get(i).copied().unwrap_or(!byte)).collect();
    let lengths = (presented.len() as u64).ct_eq(&(expected.len() as u64));
    bool::from(laid_over.ct_eq(expected) & lengths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_bytes_of_the_same_length_are_the_same_secret() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        for other in [&b"s3cre"[..], b"s3crett", b"S3cret", b"", b"s3cre\xff", b"s3cret\0"] {
            assert!(!same_secret(other, b"s3cret"), "{other:?}");
        }
        assert!(!same_secret(b"x", b""));
        assert!(same_secret(b"", b""));
    }

    #[test]
    fn the_bearer_token_is_what_follows_the_scheme() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bEaReR   abc  "), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bearer "), None);
        assert_eq!(bearer_token(b"Bearer"), None);
    }
}
