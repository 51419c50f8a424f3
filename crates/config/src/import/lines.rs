//! Shared lexing for the classic formats: words with quotes, comments, and haproxy/keepalived
//! time values. Both formats are line oriented; every token keeps its file and line.

use std::time::Duration;

/// Reads the files a keepalived `include` names (a path or a glob), relative to the including
/// file. Returns `(name, text)` pairs, or a message saying why nothing could be read.
pub trait Resolver {
    /// Resolves one include pattern written in `from`, reading at most `limit` + 1 of its files
    /// (one more than the limit says that there were more: the caller refuses them all).
    fn include(&self, from: &str, pattern: &str, limit: usize) -> Result<Vec<(String, String)>, String>;

    /// The full path of a program named without one, found as keepalived finds it (PATH);
    /// `None` when there is none.
    fn which(&self, _program: &str) -> Option<String> {
        None
    }
}

/// A resolver that refuses every include (for text imported from memory).
impl Resolver for () {
    fn include(&self, _from: &str, pattern: &str, _limit: usize) -> Result<Vec<(String, String)>, String> {
        Err(format!("includes are not available here (`{pattern}`)"))
    }
}

/// Splits a line into words: whitespace separates, double or single quotes group, a backslash
/// escapes the next character, and `comment` starts a comment outside quotes at the start of a
/// word (haproxy). Returns `None` on an unterminated quote.
pub fn words(line: &str, comment: &[char]) -> Option<Vec<String>> {
    marked_words(line, comment, false).map(|ws| ws.into_iter().map(|(w, _)| w).collect())
}

/// Like [`words`], each word saying whether any of it was quoted; with `anywhere`, a comment
/// character starts a comment in the middle of a word too (keepalived: `auth_pass ab#cd` is
/// `ab`).
pub fn marked_words(line: &str, comment: &[char], anywhere: bool) -> Option<Vec<(String, bool)>> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), '\\') | (None, '\\') => {
                if let Some(next) = chars.next() {
                    current.push(next);
                    in_word = true;
                }
            }
            (Some(_), c) => current.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
                quoted = true;
            }
            (None, c) if comment.contains(&c) && (anywhere || !in_word) => break,
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push((std::mem::take(&mut current), quoted));
                    in_word = false;
                    quoted = false;
                }
            }
            (None, c) => {
                current.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return None;
    }
    if in_word {
        out.push((current, quoted));
    }
    Some(out)
}

/// haproxy's time format: a number with an optional unit (us, ms, s, m, h, d); no unit means
/// milliseconds.
pub fn haproxy_time(s: &str) -> Option<Duration> {
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let value: u64 = s[..digits].parse().ok()?;
    let unit = match &s[digits..] {
        "us" => Duration::from_micros(1),
        "" | "ms" => Duration::from_millis(1),
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        "d" => Duration::from_secs(86_400),
        _ => return None,
    };
    unit.checked_mul(u32::try_from(value).ok()?)
}

/// keepalived's seconds, possibly fractional ("1", "0.1", "2.5"), to microsecond precision.
pub fn keepalived_seconds(s: &str) -> Option<Duration> {
    let (whole, fraction) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.len() > 6 {
        return None;
    }
    let all_digits = |p: &str| p.chars().all(|c| c.is_ascii_digit());
    if !all_digits(whole) || !all_digits(fraction) {
        return None;
    }
    let secs: u64 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let micros: u32 = if fraction.is_empty() { 0 } else { format!("{fraction:0<6}").parse().ok()? };
    if secs > 1_000_000 {
        return None;
    }
    Some(Duration::from_secs(secs) + Duration::from_micros(u64::from(micros)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_quotes_escapes_comments() {
        assert_eq!(
            words("server a 1.2.3.4:6443 check # x", &['#']),
            Some(vec!["server".into(), "a".into(), "1.2.3.4:6443".into(), "check".into()])
        );
        assert_eq!(words("script \"/bin/a b\" ! c", &['!', '#']), Some(vec!["script".into(), "/bin/a b".into()]));
        assert_eq!(words("a\\ b 'c d'", &['#']), Some(vec!["a b".into(), "c d".into()]));
        assert_eq!(words("x#y", &['#']), Some(vec!["x#y".into()]));
        assert_eq!(words("\"open", &['#']), None);
        assert_eq!(marked_words("auth_pass P@##D32!", &['#', '!'], true), Some(vec![("auth_pass".into(), false), ("P@".into(), false)]));
        assert_eq!(marked_words("script \"a {b}\"", &['#'], true), Some(vec![("script".into(), false), ("a {b}".into(), true)]));
    }

    #[test]
    fn times() {
        assert_eq!(haproxy_time("20s"), Some(Duration::from_secs(20)));
        assert_eq!(haproxy_time("500"), Some(Duration::from_millis(500)));
        assert_eq!(haproxy_time("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(haproxy_time("5x"), None);
        assert_eq!(haproxy_time(""), None);
        assert_eq!(haproxy_time("99999999999999999999s"), None);
        assert_eq!(keepalived_seconds("0.1"), Some(Duration::from_millis(100)));
        assert_eq!(keepalived_seconds("3"), Some(Duration::from_secs(3)));
        assert_eq!(keepalived_seconds("."), None);
        assert_eq!(keepalived_seconds("-1"), None);
    }
}
