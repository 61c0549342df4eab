//! Email templates: a subject, an HTML body and optionally a text body, rendered with minijinja from a
//! document's JSON data. Rendering is strict — a variable the data does not have is an error naming it
//! and its line, never an empty gap in a customer's invoice. A `<style>` block is inlined for mail
//! clients; without a text template the text is derived from the rendered HTML.

pub mod builtin;
pub mod schema;

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
    /// The limit a render went over (`fuel`, `output_bytes`), when that is what stopped it.
    pub limit: Option<&'static str>,
}

/// Bounds on one render, so that a template (written by anyone with `email-setup`, fed with data
/// from any sender) cannot take the server down: a loop of loops runs out of fuel, a huge output
/// stops at the byte cap. The wall-clock cap is the caller's (this crate reads no clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderLimits {
    /// minijinja's fuel: roughly the number of instructions one part may execute.
    pub fuel: u64,
    /// The largest output of one part, in bytes.
    pub max_output_bytes: usize,
}

impl Default for RenderLimits {
    /// About 50 ms of work on a slow core; the built-in invoice with 1,000 lines uses a small part.
    fn default() -> Self {
        Self {
            fuel: 5_000_000,
            max_output_bytes: 10 * 1024 * 1024,
        }
    }
}

/// The output of one part, refusing to grow past its cap.
struct CappedOutput {
    bytes: Vec<u8>,
    cap: usize,
    exceeded: bool,
}

impl std::io::Write for CappedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.cap {
            self.exceeded = true;
            return Err(std::io::Error::other("the output cap is reached"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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
        limit: None,
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
    limits: RenderLimits,
}

impl CompiledTemplate {
    /// Compiles the parts with the default [`RenderLimits`], reporting the first syntax error with
    /// its part and line.
    pub fn compile(source: &TemplateSource) -> Result<Self, TemplateError> {
        Self::compile_with_limits(source, RenderLimits::default())
    }

    /// Compiles the parts; every render is bounded by `limits`.
    pub fn compile_with_limits(
        source: &TemplateSource,
        limits: RenderLimits,
    ) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_fuel(Some(limits.fuel));
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
            limits,
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
        let mut output = CappedOutput {
            bytes: Vec::new(),
            cap: self.limits.max_output_bytes,
            exceeded: false,
        };
        let rendered = template.render_captured_to(
            minijinja::Value::from(minijinja::value::Serde(data)),
            &mut output,
        );
        match rendered {
            Ok(_) => String::from_utf8(output.bytes).map_err(|_| TemplateError {
                part,
                line: None,
                reason: "the output is not UTF-8".into(),
                limit: None,
            }),
            Err(_) if output.exceeded => Err(TemplateError {
                part,
                line: None,
                reason: format!(
                    "the output grew past {} bytes, the limit of one rendered part",
                    self.limits.max_output_bytes
                ),
                limit: Some("output_bytes"),
            }),
            Err(error) if error.kind() == minijinja::ErrorKind::OutOfFuel => Err(TemplateError {
                part,
                line: error.line(),
                reason: format!(
                    "rendering took more than {} steps (fuel), the limit of one rendered part: look for loops inside loops",
                    self.limits.fuel
                ),
                limit: Some("fuel"),
            }),
            Err(error) => Err(error_in(part, &error)),
        }
    }

    /// Renders the template with a document's data.
    pub fn render(&self, data: &serde_json::Value) -> Result<Rendered, TemplateError> {
        let subject_text = self.render_part("subject", data)?;
        let subject =
            HeaderText::parse("subject", subject_text.trim()).map_err(|e| TemplateError {
                part: "subject",
                line: None,
                reason: format!("the rendered subject is not one clean line: {}", e.reason),
                limit: None,
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
                limit: None,
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

    #[test]
    fn a_loop_of_loops_runs_out_of_fuel_instead_of_running_for_seconds() {
        let template = CompiledTemplate::compile(&source(
            "s",
            "{% for a in range(10000) %}{% for b in range(10000) %}{% endfor %}{% endfor %}",
        ))
        .unwrap();
        let error = template.render(&json!({})).unwrap_err();
        assert_eq!(error.limit, Some("fuel"), "{error}");
        assert_eq!(error.part, "html");
    }

    #[test]
    fn an_output_past_the_cap_is_refused_naming_the_limit() {
        let template = CompiledTemplate::compile_with_limits(
            &source("s", "{% for a in range(1000) %}0123456789{% endfor %}"),
            RenderLimits {
                fuel: 1_000_000,
                max_output_bytes: 5_000,
            },
        )
        .unwrap();
        let error = template.render(&json!({})).unwrap_err();
        assert_eq!(error.limit, Some("output_bytes"), "{error}");
        let fits = CompiledTemplate::compile_with_limits(
            &source("s", "{% for a in range(100) %}0123456789{% endfor %}"),
            RenderLimits {
                fuel: 1_000_000,
                max_output_bytes: 5_000,
            },
        )
        .unwrap();
        assert_eq!(fits.render(&json!({})).unwrap().html.len(), 1000);
    }

    #[test]
    fn the_built_in_invoice_with_a_thousand_lines_renders_within_the_default_limits() {
        let invoice = builtin::built_in()
            .into_iter()
            .find(|t| t.document_type == "sales-invoice")
            .unwrap();
        let template = CompiledTemplate::compile(&invoice.source).unwrap();
        let mut data = builtin::sample_data("sales-invoice");
        let line = data["document"]["lines"][0].clone();
        data["document"]["lines"] = serde_json::Value::Array(vec![line; 1000]);
        template.render(&data).unwrap();
    }
}
