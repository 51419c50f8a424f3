//! Reading keepalived.conf into a tree of blocks (`keyword args { children }`), with `include`
//! expanded in place and every statement keeping its file and line.

use super::super::lines::{Resolver, marked_words};
use super::super::{Sink, Source};

/// Includes nest at most this deep (keepalived's own limit is similar); deeper is a loop.
const MAX_INCLUDE_DEPTH: usize = 8;
/// Includes may repeat a file; what they expand to is bounded in total (files read, words), so
/// that files including each other several times cannot multiply without end.
const MAX_INCLUDED_FILES: usize = 1000;
const MAX_TOKENS: usize = 1_000_000;

/// What is left of the total bound while reading, and whose file it is read for.
struct Budget {
    files: usize,
    exceeded: bool,
    /// keepalived's config id (`-i`, the host name by default): lines written `@id ...` apply
    /// only on that host, `@^id ...` everywhere else.
    config_id: Option<String>,
}

/// One statement and, for a block, its children.
#[derive(Debug, Clone)]
pub(super) struct Node {
    pub file: String,
    pub line: usize,
    pub words: Vec<String>,
    pub children: Option<Vec<Node>>,
}

impl Node {
    pub(super) fn keyword(&self) -> &str {
        self.words.first().map_or("", String::as_str)
    }
    pub(super) fn arg(&self, i: usize) -> &str {
        self.words.get(i).map_or("", String::as_str)
    }
    pub(super) fn children(&self) -> &[Node] {
        self.children.as_deref().unwrap_or(&[])
    }
}

/// A token with its place.
#[derive(Debug)]
struct Token {
    file: String,
    line: usize,
    text: String,
    brace: bool,
}

fn tokenize(file: &str, text: &str, resolver: &dyn Resolver, depth: usize, budget: &mut Budget, sink: &mut Sink, out: &mut Vec<Token>) {
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let Some(mut ws) = marked_words(raw, &['#', '!'], true) else {
            sink.error(file, line, "unterminated quote", "");
            continue;
        };
        if let Some(host) = ws.first().and_then(|(w, _)| w.strip_prefix('@')).map(str::to_string) {
            if !applies_here(&host, budget.config_id.as_deref(), file, line, sink) {
                continue;
            }
            ws.remove(0);
        }
        if ws.first().is_some_and(|(w, _)| w == "include") {
            include(file, line, ws.get(1).map_or("", |(w, _)| w.as_str()), resolver, depth, budget, sink, out);
            continue;
        }
        if budget.exceeded {
            return;
        }
        for (w, quoted) in ws {
            if quoted {
                // A quoted word is one word, braces and all (`"curl -w %{http_code}"`).
                out.push(Token { file: file.to_string(), line, text: w, brace: false });
                continue;
            }
            // keepalived keeps a `;` as part of the word: `auth_type PASS;` is the unknown type
            // `PASS;` there (its config test fails), so halo refuses rather than guess.
            if w.len() > 1 && w.ends_with(';') {
                sink.error(
                    file,
                    line,
                    format!("`{w}`: keepalived reads the `;` as part of the word and refuses it"),
                    "keepalived.conf has no statement separator: remove the `;`",
                );
            }
            // Braces may touch words: `unicast_peer {10.0.0.2}`.
            let mut rest = w.as_str();
            while !rest.is_empty() {
                let cut = rest.find(['{', '}']).unwrap_or(rest.len());
                if cut > 0 {
                    out.push(Token { file: file.to_string(), line, text: rest[..cut].to_string(), brace: false });
                }
                if cut < rest.len() {
                    out.push(Token { file: file.to_string(), line, text: rest[cut..=cut].to_string(), brace: true });
                    rest = &rest[cut + 1..];
                } else {
                    rest = "";
                }
            }
        }
    }
}

/// Whether a line written `@host ...` (or `@^host ...`) applies to the host the file is read
/// for. With no config id known, `@host` lines are left out and `@^host` lines kept (this host
/// is taken to be none of those named), with a warning.
fn applies_here(condition: &str, config_id: Option<&str>, file: &str, line: usize, sink: &mut Sink) -> bool {
    let (negated, host) = match condition.strip_prefix('^') {
        Some(host) => (true, host),
        None => (false, condition),
    };
    match config_id {
        Some(id) => (id == host) != negated,
        None => {
            sink.warn(
                file,
                line,
                format!("a line for host `{host}` only: imported as for another host"),
                "pass --config-id HOST (keepalived's -i) to import the file for that host",
            );
            negated
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn include(
    file: &str,
    line: usize,
    pattern: &str,
    resolver: &dyn Resolver,
    depth: usize,
    budget: &mut Budget,
    sink: &mut Sink,
    out: &mut Vec<Token>,
) {
    if budget.exceeded {
        return;
    }
    if budget.files == 0 || out.len() >= MAX_TOKENS {
        budget.exceeded = true;
        sink.error(
            file,
            line,
            format!("includes expand past {MAX_INCLUDED_FILES} files or {MAX_TOKENS} words"),
            "files that include each other several times multiply",
        );
        return;
    }
    if depth >= MAX_INCLUDE_DEPTH {
        sink.error(file, line, format!("include nested deeper than {MAX_INCLUDE_DEPTH}"), "an include loop?");
        return;
    }
    match resolver.include(file, pattern, budget.files) {
        Ok(files) if files.len() > budget.files => {
            budget.exceeded = true;
            sink.error(
                file,
                line,
                format!("includes expand past {MAX_INCLUDED_FILES} files or {MAX_TOKENS} words"),
                "a glob that matches too many files?",
            );
        }
        Ok(files) => {
            for (name, text) in files {
                budget.files = budget.files.saturating_sub(1);
                tokenize(&name, &text, resolver, depth + 1, budget, sink, out);
            }
        }
        Err(why) => sink.error(file, line, format!("cannot include `{pattern}`: {why}"), ""),
    }
}

/// Builds the block tree. Statements end at a line change; `{` opens a block for the statement
/// before it (on the same line or alone on the next one).
fn tree(tokens: &[Token], pos: &mut usize, depth: usize, sink: &mut Sink) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    while *pos < tokens.len() {
        let t = &tokens[*pos];
        if t.brace && t.text == "}" {
            if depth == 0 {
                sink.error(&t.file, t.line, "`}` without a matching `{`", "");
                *pos += 1;
                continue;
            }
            *pos += 1;
            return nodes;
        }
        if t.brace {
            *pos += 1;
            if depth > 64 {
                sink.error(&t.file, t.line, "blocks nested too deep", "");
                continue;
            }
            let children = tree(tokens, pos, depth + 1, sink);
            match nodes.last_mut() {
                Some(last) if last.children.is_none() => last.children = Some(children),
                _ => sink.error(&t.file, t.line, "`{` without a keyword before it", ""),
            }
            continue;
        }
        let (file, line) = (t.file.clone(), t.line);
        let mut ws = Vec::new();
        while *pos < tokens.len() && !tokens[*pos].brace && tokens[*pos].line == line && tokens[*pos].file == file {
            ws.push(tokens[*pos].text.clone());
            *pos += 1;
        }
        nodes.push(Node { file, line, words: ws, children: None });
    }
    if depth > 0
        && let Some(last) = tokens.last()
    {
        sink.error(&last.file, last.line, "a `{` block is never closed", "add the missing `}`");
    }
    nodes
}

/// Reads a file (and what it includes) into its top-level statements.
pub(super) fn read(src: Source<'_>, resolver: &dyn Resolver, config_id: Option<&str>, sink: &mut Sink) -> Vec<Node> {
    let mut tokens = Vec::new();
    let mut budget = Budget { files: MAX_INCLUDED_FILES, exceeded: false, config_id: config_id.map(str::to_string) };
    tokenize(src.file, src.text, resolver, 0, &mut budget, sink, &mut tokens);
    let mut pos = 0;
    tree(&tokens, &mut pos, 0, sink)
}
