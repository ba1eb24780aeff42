//! Reading one value of the file: each function returns the value, or records what is wrong
//! with it, at its place, and returns `None`.

use std::ops::Range;
use std::time::Duration;

use toml::{Spanned, Value};

use super::PortRange;
use super::duration::{self, Bounds};
use super::error::Problems;
use super::raw::Text;

/// A table being read, named for the problems about keys it lacks.
pub(super) struct Table {
    span: Range<usize>,
    kind: &'static str,
}

impl Table {
    /// `kind` as the file writes it, such as "[[endpoint]]".
    pub(super) fn new<T>(raw: &Spanned<T>, kind: &'static str) -> Self {
        Self {
            span: raw.span(),
            kind,
        }
    }

    pub(super) fn span(&self) -> Range<usize> {
        self.span.clone()
    }

    /// The value of a key the table must have; a problem at the header when it is missing.
    pub(super) fn required<'r, T>(
        &self,
        problems: &mut Problems,
        key: &str,
        value: &'r Option<T>,
    ) -> Option<&'r T> {
        if value.is_none() {
            problems.push(&self.span, format!("missing key `{key}` in {}", self.kind));
        }
        value.as_ref()
    }
}

/// A name of an endpoint, gate or issuer: letters, digits, '_', '.' and '-'.
pub(super) fn name(problems: &mut Problems, text: &Text) -> Option<String> {
    let name = text.get_ref();
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !valid {
        problems.push(
            &text.span(),
            format!("name: expected letters, digits, '_', '.' or '-', found {name:?}"),
        );
        return None;
    }
    Some(name.clone())
}

/// A string that must say something, such as a file path.
pub(super) fn non_empty(
    problems: &mut Problems,
    key: &str,
    text: &Text,
    expected: &str,
) -> Option<String> {
    let value = text.get_ref();
    if value.trim().is_empty() {
        problems.push(
            &text.span(),
            format!("{key}: expected {expected}, found {value:?}"),
        );
        return None;
    }
    Some(value.clone())
}

/// One of a fixed set of words, such as `mode = "enforce"`.
pub(super) fn choice<T: Copy>(
    problems: &mut Problems,
    key: &str,
    text: &Text,
    options: &[(&str, T)],
) -> Option<T> {
    let found = text.get_ref();
    if let Some((_, value)) = options.iter().find(|(word, _)| word == found) {
        return Some(*value);
    }

    let words: Vec<String> = options
        .iter()
        .map(|(word, _)| format!("{word:?}"))
        .collect();
    let expected = match words.as_slice() {
        [one, other] => format!("{one} or {other}"),
        _ => format!("one of {}", words.join(", ")),
    };
    problems.push(
        &text.span(),
        format!("{key}: expected {expected}, found {found:?}"),
    );
    None
}

pub(super) fn port_range(problems: &mut Problems, value: &Spanned<Value>) -> Option<PortRange> {
    PortRange::from_value(value.get_ref())
        .map_err(|message| problems.push(&value.span(), message))
        .ok()
}

pub(super) fn duration(
    problems: &mut Problems,
    key: &str,
    text: &Text,
    bounds: &Bounds,
) -> Option<Duration> {
    duration::parse(key, text.get_ref(), bounds)
        .map_err(|message| problems.push(&text.span(), message))
        .ok()
}

/// Each item of a list, read by `read`; the problems of every item are recorded.
pub(super) fn each<T>(
    problems: &mut Problems,
    list: &Spanned<Vec<Text>>,
    read: impl Fn(&str) -> Result<T, String>,
) -> Vec<T> {
    let mut values = Vec::new();
    for text in list.get_ref() {
        match read(text.get_ref()) {
            Ok(value) => values.push(value),
            Err(message) => problems.push(&text.span(), message),
        }
    }
    values
}
