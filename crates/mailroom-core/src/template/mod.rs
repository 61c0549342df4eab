//! Email templates: a subject, an HTML body and optionally a text body, rendered with minijinja from a
//! document's JSON data. Rendering is strict — a variable the data does not have is an error naming it
//! and its line, never an empty gap in a customer's invoice. A `<style>` block is inlined for mail
//! clients; without a text template the text is derived from the rendered HTML.

pub mod builtin;

use crate::header::HeaderText;
use crate::message::html_to_text;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use std::fmt;

/// The sources of one template version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSource {
    pub subject: String,
    pub html: String,
    pub text: Option<String>,
}

/// A rendered message body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: HeaderText,
    pub html: String,
    pub text: String,
}

/// What is wrong with a template, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// `subject`, `html` or `text`.
    pub part: &'static str,
    pub line: Option<usize>,
    pub reason: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{} template, line {line}: {}", self.part, self.reason),
            None => write!(f, "{} template: {}", self.part, self.reason),
        }
    }
}

impl std::error::Error for TemplateError {}

const PARTS: [&str; 3] = ["subject", "html", "text"];

fn error_in(part: &'static str, error: &minijinja::Error) -> TemplateError {
    let reason = match error.detail() {
        Some(detail) => format!("{}: {detail}", error.kind()),
        None => error.kind().to_string(),
    };
    TemplateError {
        part,
        line: error.line(),
        reason,
    }
}

/// Formats a number as money with two decimals and thousands separators: `money(1250.5, "EUR")`
/// gives `1,250.50 EUR`.
fn money(value: f64, currency: Option<String>) -> String {
    let cents = (value * 100.0).round() as i64;
    let (sign, cents) = if cents < 0 {
        ("-", -cents)
    } else {
        ("", cents)
    };
    let whole = (cents / 100).to_string();
    let mut grouped = String::new();
    for (index, digit) in whole.chars().enumerate() {
        if index > 0 && (whole.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    let amount = format!("{sign}{grouped}.{:02}", cents % 100);
    match currency {
        Some(currency) => format!("{amount} {currency}"),
        None => amount,
    }
}

/// A template compiled once and rendered many times.
pub struct CompiledTemplate {
    env: Environment<'static>,
    has_text: bool,
    inline_css: bool,
}

impl CompiledTemplate {
    /// Compiles the parts, reporting the first syntax error with its part and line.
    pub fn compile(source: &TemplateSource) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|name| {
            if name == "html" {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        env.add_filter("money", money);
        let sources = [
            Some(source.subject.clone()),
            Some(source.html.clone()),
            source.text.clone(),
        ];
        for (part, text) in PARTS.into_iter().zip(sources) {
            if let Some(text) = text {
                env.add_template_owned(part, text)
                    .map_err(|e| error_in(part, &e))?;
            }
        }
        Ok(Self {
            env,
            has_text: source.text.is_some(),
            inline_css: source.html.contains("<style"),
        })
    }

    fn render_part(
        &self,
        part: &'static str,
        data: &serde_json::Value,
    ) -> Result<String, TemplateError> {
        let template = self
            .env
            .get_template(part)
            .map_err(|e| error_in(part, &e))?;
        template
            .render(minijinja::Value::from(minijinja::value::Serde(data)))
            .map_err(|e| error_in(part, &e))
    }

    /// Renders the template with a document's data.
    pub fn render(&self, data: &serde_json::Value) -> Result<Rendered, TemplateError> {
        let subject_text = self.render_part("subject", data)?;
        let subject =
            HeaderText::parse("subject", subject_text.trim()).map_err(|e| TemplateError {
                part: "subject",
                line: None,
                reason: format!("the rendered subject is not one clean line: {}", e.reason),
            })?;
        let mut html = self.render_part("html", data)?;
        if self.inline_css {
            let inliner = css_inline::CSSInliner::options()
                .load_remote_stylesheets(false)
                .build();
            html = inliner.inline(&html).map_err(|e| TemplateError {
                part: "html",
                line: None,
                reason: format!("the CSS could not be inlined: {e}"),
            })?;
        }
        let text = if self.has_text {
            self.render_part("text", data)?
        } else {
            html_to_text(&html)
        };
        Ok(Rendered {
            subject,
            html,
            text,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn source(subject: &str, html: &str) -> TemplateSource {
        TemplateSource {
            subject: subject.into(),
            html: html.into(),
            text: None,
        }
    }

    #[test]
    fn a_template_renders_document_data_with_escaping_and_money() {
        let template = CompiledTemplate::compile(&source(
            "Invoice {{ number }}",
            "<p>Dear {{ customer.name }},</p>{% for line in lines %}<div>{{ line.item }}: {{ line.amount|money(currency) }}</div>{% endfor %}",
        ))
        .unwrap();
        let data = json!({"number": "103001", "currency": "EUR", "customer": {"name": "Smith & <Sons>"},
                          "lines": [{"item": "Widget", "amount": 1250.5}]});
        let rendered = template.render(&data).unwrap();
        assert_eq!(rendered.subject.as_str(), "Invoice 103001");
        assert!(
            rendered.html.contains("Smith &amp; &lt;Sons&gt;"),
            "{}",
            rendered.html
        );
        assert!(rendered.html.contains("Widget: 1,250.50 EUR"));
        assert!(
            rendered.text.contains("Widget: 1,250.50 EUR"),
            "the text is derived from the HTML: {}",
            rendered.text
        );
    }

    #[test]
    fn a_syntax_error_names_the_part_and_line() {
        let error =
            CompiledTemplate::compile(&source("ok", "<p>\n{% for x in xs %}\n<b>{{ x }</b>\n"))
                .err()
                .unwrap();
        assert_eq!(error.part, "html");
        assert_eq!(error.line, Some(3));
        assert!(!error.reason.is_empty());
    }

    #[test]
    fn a_missing_variable_is_an_error_in_strict_mode_not_an_empty_gap() {
        let template =
            CompiledTemplate::compile(&source("Invoice {{ number }}", "<p>Due {{ due_date }}</p>"))
                .unwrap();
        let error = template.render(&json!({"number": "1"})).unwrap_err();
        assert_eq!(error.part, "html");
        assert!(error.reason.contains("undefined"), "{error}");
    }

    #[test]
    fn a_rendered_subject_with_a_line_break_is_refused() {
        let template =
            CompiledTemplate::compile(&source("Invoice {{ number }}", "<p>x</p>")).unwrap();
        let error = template
            .render(&json!({"number": "1\r\nBcc: evil@example.com"}))
            .unwrap_err();
        assert_eq!(error.part, "subject");
    }

    #[test]
    fn a_style_block_is_inlined_for_mail_clients() {
        let template = CompiledTemplate::compile(&source(
            "s",
            "<html><head><style>p { color: #123456 }</style></head><body><p>Hi</p></body></html>",
        ))
        .unwrap();
        let rendered = template.render(&json!({})).unwrap();
        assert!(
            rendered.html.contains("style=\"color: #123456"),
            "{}",
            rendered.html
        );
    }

    #[test]
    fn money_groups_thousands_and_keeps_two_decimals() {
        assert_eq!(money(1234567.891, Some("EUR".into())), "1,234,567.89 EUR");
        assert_eq!(money(-5.0, None), "-5.00");
        assert_eq!(money(0.5, None), "0.50");
    }
}
