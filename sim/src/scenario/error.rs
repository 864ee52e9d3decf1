//! Scenario errors that point at the file, the line and the field.

use miette::{Diagnostic, NamedSource, SourceSpan};
use thiserror::Error;

/// A scenario that cannot be used, with where and why.
#[derive(Debug, Error, Diagnostic)]
#[error("{file}: {message}")]
#[diagnostic(code(moesim::scenario))]
pub struct ScenarioError {
    pub file: String,
    pub message: String,
    #[source_code]
    pub source_code: NamedSource<String>,
    #[label("{label}")]
    pub span: Option<SourceSpan>,
    pub label: String,
    #[help]
    pub help: Option<String>,
}

impl ScenarioError {
    pub fn new(file: &str, text: &str, message: impl Into<String>) -> Self {
        ScenarioError {
            file: file.to_string(),
            message: message.into(),
            source_code: NamedSource::new(file, text.to_string()),
            span: None,
            label: "here".into(),
            help: None,
        }
    }

    pub fn at(mut self, span: Option<std::ops::Range<usize>>, label: impl Into<String>) -> Self {
        self.span = span.map(Into::into);
        self.label = label.into();
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Line and column (1-based) of the span, for plain-text messages.
    pub fn line_col(&self) -> Option<(usize, usize)> {
        let span = self.span?;
        let text = self.source_code.inner();
        let before = &text[..span.offset().min(text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.len() - before.rfind('\n').map_or(0, |p| p + 1) + 1;
        Some((line, col))
    }
}
