//! Diagnostics: every problem found in an input, with its place (`file:line:col`), a message and
//! a hint, separated into errors (the input is refused) and warnings (it is accepted).

use std::fmt;
use std::ops::Range;

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Accepted, but the user should know (a defect carried over, a risky choice).
    Warning,
    /// Refused: nothing runs with this input.
    Error,
}

/// A place in a file, 1-based. A column of 0 means "the whole line" (importers know lines only).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    /// The file as the user named it.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column in characters, or 0 when only the line is known.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.column == 0 { write!(f, "{}:{}", self.file, self.line) } else { write!(f, "{}:{}:{}", self.file, self.line, self.column) }
    }
}

/// One problem in one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Where; `None` for problems of the input as a whole (an empty file).
    pub location: Option<Location>,
    /// What is wrong, in one sentence.
    pub message: String,
    /// What to do about it, when there is something useful to say.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// Attaches a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match &self.location {
            Some(location) => write!(f, "{location}: {level}: {}", self.message)?,
            None => write!(f, "{level}: {}", self.message)?,
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n    hint: {hint}")?;
        }
        Ok(())
    }
}

/// Maps byte offsets of one text to lines and columns, and collects diagnostics against it.
#[derive(Debug)]
pub struct Report<'a> {
    file: &'a str,
    text: &'a str,
    line_starts: Vec<usize>,
    /// Everything found so far, in the order found.
    pub diagnostics: Vec<Diagnostic>,
}

impl<'a> Report<'a> {
    /// Starts a report on `text`, read from `file`.
    pub fn new(file: &'a str, text: &'a str) -> Self {
        let line_starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Self { file, text, line_starts, diagnostics: Vec::new() }
    }

    /// The location of a byte offset (clamped to the text, rounded down to a char boundary).
    pub fn locate(&self, offset: usize) -> Location {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line_index = self.line_starts.partition_point(|&start| start <= offset) - 1;
        let line_start = self.line_starts[line_index];
        let column = self.text[line_start..offset].chars().count() + 1;
        Location { file: self.file.to_string(), line: line_index + 1, column }
    }

    /// Records an error at a span (its start) and returns it for a hint.
    pub fn error(&mut self, span: Range<usize>, message: impl Into<String>) -> &mut Diagnostic {
        self.push(Severity::Error, Some(span), message)
    }

    /// Records a warning at a span (its start) and returns it for a hint.
    pub fn warning(&mut self, span: Range<usize>, message: impl Into<String>) -> &mut Diagnostic {
        self.push(Severity::Warning, Some(span), message)
    }

    /// Records a problem, at a span or of the whole file.
    pub fn push(&mut self, severity: Severity, span: Option<Range<usize>>, message: impl Into<String>) -> &mut Diagnostic {
        let location = span.map(|s| self.locate(s.start));
        self.diagnostics.push(Diagnostic { severity, location, message: message.into(), hint: None });
        let last = self.diagnostics.len() - 1;
        &mut self.diagnostics[last]
    }

    /// True when an error was recorded.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Sets the hint of a diagnostic just recorded (`report.error(..).hint("...")`).
pub trait Hint {
    /// Sets the hint.
    fn hint(&mut self, hint: impl Into<String>);
}

impl Hint for Diagnostic {
    fn hint(&mut self, hint: impl Into<String>) {
        self.hint = Some(hint.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_character_columns() {
        let report = Report::new("f.toml", "a = 1\nb = \"é\" x\n");
        assert_eq!(report.locate(0).to_string(), "f.toml:1:1");
        assert_eq!(report.locate(6).to_string(), "f.toml:2:1");
        // The byte after "é" (two bytes) is character column 7.
        assert_eq!(report.locate(6 + 4 + 3).to_string(), "f.toml:2:7");
        assert_eq!(report.locate(9999).line, 3);
    }

    #[test]
    fn display_has_place_level_and_hint() {
        let mut report = Report::new("f.toml", "x\n");
        report.error(0..1, "bad").hint("fix it");
        assert_eq!(report.diagnostics[0].to_string(), "f.toml:1:1: error: bad\n    hint: fix it");
    }
}
