//! Policy errors, and turning byte spans of the file into lines and columns.

use std::fmt;
use std::io;
use std::ops::Range;
use std::path::PathBuf;

/// Why a policy file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("read policy file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The file was read but is not a valid policy; `problems` is never empty.
    #[error("{}", render(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

/// One thing wrong in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    pub message: String,
}

/// A place in the policy file, 1-based; the column counts characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl PolicyError {
    /// The problems found in the file; empty when it could not be read.
    pub fn problems(&self) -> &[Problem] {
        match self {
            Self::Read { .. } => &[],
            Self::Invalid { problems, .. } => problems,
        }
    }
}

impl Location {
    /// Line 1, column 1: what a warning about the whole file points at.
    pub const START: Location = Location { line: 1, column: 1 };

    /// The location of byte `offset` in `text`.
    pub fn of(text: &str, offset: usize) -> Location {
        let mut end = offset.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }

        let before = &text[..end];
        let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
        Location {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

fn render(path: &std::path::Path, problems: &[Problem]) -> String {
    let lines: Vec<String> = problems
        .iter()
        .map(|problem| format!("{}:{problem}", path.display()))
        .collect();
    lines.join("\n")
}

/// The problem a TOML syntax error, an unknown key or a mistyped value stands for.
pub(super) fn syntax(text: &str, error: &toml::de::Error) -> Problem {
    let at = error
        .span()
        .map_or(Location::START, |span| Location::of(text, span.start));

    // toml's messages are lowercase already; some run over several lines.
    let message = error
        .message()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    Problem {
        line: at.line,
        column: at.column,
        message,
    }
}

/// The problems found so far while validating one file.
pub(super) struct Problems<'t> {
    text: &'t str,
    found: Vec<Problem>,
}

impl<'t> Problems<'t> {
    pub(super) fn new(text: &'t str) -> Self {
        Self {
            text,
            found: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, span: &Range<usize>, message: impl Into<String>) {
        let at = self.locate(span);
        self.found.push(Problem {
            line: at.line,
            column: at.column,
            message: message.into(),
        });
    }

    pub(super) fn locate(&self, span: &Range<usize>) -> Location {
        Location::of(self.text, span.start)
    }

    /// `value` when nothing was found, else every problem in file order.
    pub(super) fn finish<T>(mut self, value: T) -> Result<T, Vec<Problem>> {
        if self.found.is_empty() {
            return Ok(value);
        }

        self.found
            .sort_by_key(|problem| (problem.line, problem.column));
        Err(self.found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_counts_lines_and_characters_from_one() {
        let text = "a = 1\nbé = \"x\"\n";

        assert_eq!(Location::of(text, 0), Location { line: 1, column: 1 });
        assert_eq!(Location::of(text, 6), Location { line: 2, column: 1 });
        assert_eq!(Location::of(text, 11), Location { line: 2, column: 5 });
    }

    #[test]
    fn location_past_the_end_is_the_end() {
        assert_eq!(Location::of("a\n", 99), Location { line: 2, column: 1 });
    }
}
