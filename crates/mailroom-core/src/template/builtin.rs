//! The templates mailroom ships for business documents, and sample data for previews.
//!
//! They share one layout with inline styles (mail clients ignore most `<style>` blocks, and inline
//! styles need no CSS pass at render time): a header with the company, greeting text, the document's
//! key facts, its lines and totals, a payment link where one applies, and a closing.

use super::TemplateSource;
use serde_json::{Value, json};

/// A built-in template: its id, the document type it renders, and its sources.
pub struct BuiltIn {
    pub id: &'static str,
    pub document_type: &'static str,
    pub source: TemplateSource,
}

struct Wording {
    id: &'static str,
    title: &'static str,
    greeting: &'static str,
    closing: &'static str,
    amount_label: &'static str,
    pay_link: bool,
}

const DOCUMENTS: &[Wording] = &[
    Wording {
        id: "sales-quote",
        title: "Quote",
        greeting: "thank you for your interest. Please find our quote below.",
        closing: "The quote is valid until {{ document.valid_until }}. We look forward to your order.",
        amount_label: "Total",
        pay_link: false,
    },
    Wording {
        id: "sales-order",
        title: "Order confirmation",
        greeting: "thank you for your order. We confirm it as follows.",
        closing: "We will let you know when it ships.",
        amount_label: "Total",
        pay_link: false,
    },
    Wording {
        id: "sales-invoice",
        title: "Invoice",
        greeting: "please find your invoice below.",
        closing: "Please pay by {{ document.due_date }}.",
        amount_label: "Amount due",
        pay_link: true,
    },
    Wording {
        id: "sales-credit-memo",
        title: "Credit memo",
        greeting: "we have credited your account as follows.",
        closing: "The amount will be offset against open invoices or refunded.",
        amount_label: "Credited",
        pay_link: false,
    },
    Wording {
        id: "purchase-order",
        title: "Purchase order",
        greeting: "we would like to order the following.",
        closing: "Please confirm delivery by {{ document.delivery_date }}.",
        amount_label: "Order total",
        pay_link: false,
    },
    Wording {
        id: "reminder",
        title: "Payment reminder",
        greeting: "according to our records the following amount is overdue.",
        closing: "If you have already paid, please disregard this reminder.",
        amount_label: "Overdue",
        pay_link: true,
    },
];

fn html(wording: &Wording) -> String {
    let pay = if wording.pay_link {
        r#"{% if document.payment_link is defined %}<p style="margin:24px 0"><a href="{{ document.payment_link }}" style="background:#1f5fbf;color:#ffffff;padding:12px 20px;border-radius:4px;text-decoration:none;font-weight:bold">Pay {{ document.total|money(document.currency) }} now</a></p>{% endif %}"#
    } else {
        ""
    };
    format!(
        r#"<!doctype html><html><body style="margin:0;padding:0;background:#f4f5f7">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" style="background:#f4f5f7;padding:24px 0"><tr><td align="center">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" style="width:100%;max-width:600px;background:#ffffff;border-radius:6px;font-family:Helvetica,Arial,sans-serif;color:#222222;font-size:15px;line-height:1.5">
<tr><td style="padding:20px 16px;border-bottom:3px solid #1f5fbf"><strong style="font-size:18px">{{{{ company.name }}}}</strong><br><span style="color:#666666">{title} {{{{ document.number }}}}</span></td></tr>
<tr><td style="padding:20px 16px">
<p>Dear {{{{ greeting_name }}}},</p>
<p>{greeting}</p>
<table role="presentation" width="100%" cellpadding="4" cellspacing="0" style="border-collapse:collapse;margin:16px 0;font-size:14px">
<tr style="background:#f0f3f8"><th align="left">Item</th><th align="right">Qty</th><th align="right">Price</th><th align="right">Amount</th></tr>
{{% for line in document.lines %}}<tr style="border-bottom:1px solid #e5e7eb"><td>{{{{ line.description }}}}</td><td align="right">{{{{ line.quantity }}}}</td><td align="right">{{{{ line.unit_price|money }}}}</td><td align="right">{{{{ line.amount|money }}}}</td></tr>
{{% endfor %}}<tr><td colspan="3" align="right"><strong>{amount_label}</strong></td><td align="right"><strong>{{{{ document.total|money(document.currency) }}}}</strong></td></tr>
</table>
{pay}
{{% if attachments is defined and attachments %}}<p>The {lower_title} is attached as {{% for file in attachments %}}{{{{ file.filename }}}}{{% if not loop.last %}}, {{% endif %}}{{% endfor %}}.</p>{{% endif %}}
<p>{closing}</p>
<p>Kind regards,<br>{{{{ company.name }}}}</p>
</td></tr>
<tr><td style="padding:16px;color:#888888;font-size:12px;border-top:1px solid #e5e7eb">{{{{ company.name }}}}{{% if company.address is defined %}} · {{{{ company.address }}}}{{% endif %}}</td></tr>
</table></td></tr></table></body></html>"#,
        title = wording.title,
        lower_title = wording.title.to_lowercase(),
        greeting = wording.greeting,
        amount_label = wording.amount_label,
        pay = pay,
        closing = wording.closing,
    )
}

/// The name a message greets: the contact person when there is one, else the customer.
const GREETING_NAME: &str = "{% set greeting_name = contact.name if contact is defined and contact.name is defined and contact.name else customer.name %}";

fn text(wording: &Wording) -> String {
    let pay = if wording.pay_link {
        "{% if document.payment_link is defined %}\nPay online: {{ document.payment_link }}\n{% endif %}"
    } else {
        ""
    };
    format!(
        "Dear {{{{ greeting_name }}}},\n\n{greeting}\n\n{title} {{{{ document.number }}}}\n\n\
         {{% for line in document.lines %}}- {{{{ line.description }}}}: {{{{ line.quantity }}}} x {{{{ line.unit_price|money }}}} = {{{{ line.amount|money }}}}\n{{% endfor %}}\n\
         {amount_label}: {{{{ document.total|money(document.currency) }}}}\n{pay}\n\
         {{% if attachments is defined and attachments %}}The {lower_title} is attached as {{% for file in attachments %}}{{{{ file.filename }}}}{{% if not loop.last %}}, {{% endif %}}{{% endfor %}}.\n\n{{% endif %}}\
         {closing}\n\nKind regards,\n{{{{ company.name }}}}\n",
        greeting = wording.greeting,
        title = wording.title,
        lower_title = wording.title.to_lowercase(),
        amount_label = wording.amount_label,
        pay = pay,
        closing = wording.closing,
    )
}

/// Every built-in template.
pub fn built_in() -> Vec<BuiltIn> {
    DOCUMENTS
        .iter()
        .map(|wording| BuiltIn {
            id: wording.id,
            document_type: wording.id,
            source: TemplateSource {
                subject: format!(
                    "{} {{{{ document.number }}}} from {{{{ company.name }}}}",
                    wording.title
                ),
                html: format!("{GREETING_NAME}{}", html(wording)),
                text: Some(format!("{GREETING_NAME}{}", text(wording))),
            },
        })
        .collect()
}

/// Data to preview a template of a document type with.
pub fn sample_data(document_type: &str) -> Value {
    json!({
        "company": {"name": "Cronus Trading Ltd.", "address": "5 The Ring, London"},
        "customer": {"name": "Adatum Corporation", "id": "C10000"},
        "contact": {"name": "Robert Townes", "id": "CT-7"},
        "attachments": [{"filename": format!("{document_type}-103001.pdf")}],
        "salesperson": {"name": "Annette Hill"},
        "document": {
            "type": document_type, "number": "103001", "date": "2026-11-22", "due_date": "2026-12-22",
            "valid_until": "2026-12-31", "delivery_date": "2026-12-05", "currency": "EUR",
            "payment_link": "https://pay.example.com/103001",
            "lines": [
                {"description": "ATHENS Desk", "quantity": 2, "unit_price": 649.4, "amount": 1298.8},
                {"description": "PARIS Guest Chair, black", "quantity": 4, "unit_price": 192.8, "amount": 771.2}
            ],
            "total": 2070.0
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::CompiledTemplate;

    #[test]
    fn every_built_in_template_renders_its_sample_data() {
        let templates = built_in();
        assert_eq!(templates.len(), 6);
        for template in templates {
            let rendered = CompiledTemplate::compile(&template.source)
                .unwrap()
                .render(&sample_data(template.document_type))
                .unwrap();
            assert!(
                rendered.subject.as_str().contains("103001"),
                "{}",
                template.id
            );
            assert!(rendered.html.contains("2,070.00 EUR"), "{}", template.id);
            assert!(rendered.text.contains("ATHENS Desk"), "{}", template.id);
            assert!(
                rendered.html.contains("Dear Robert Townes,"),
                "the contact is greeted"
            );
            assert!(rendered.text.contains("Dear Robert Townes,"));
            let attached = format!("is attached as {}-103001.pdf.", template.document_type);
            assert!(rendered.html.contains(&attached), "{}", rendered.html);
            assert!(rendered.text.contains(&attached), "{}", rendered.text);
        }
    }

    #[test]
    fn without_a_contact_the_customer_is_greeted_and_the_text_part_has_no_html_entities() {
        for template in built_in() {
            let mut data = sample_data(template.document_type);
            data.as_object_mut().unwrap().remove("contact");
            data.as_object_mut().unwrap().remove("attachments");
            data["customer"]["name"] = serde_json::json!("Smith & <Sons> \"Ltd\"");
            data["document"]["lines"][0]["description"] = serde_json::json!("Desk & chair");
            let rendered = CompiledTemplate::compile(&template.source)
                .unwrap()
                .render(&data)
                .unwrap();
            assert!(
                rendered.text.contains("Dear Smith & <Sons> \"Ltd\","),
                "{}",
                rendered.text
            );
            assert!(rendered.text.contains("Desk & chair"));
            for entity in ["&amp;", "&lt;", "&gt;", "&quot;", "&#"] {
                assert!(
                    !rendered.text.contains(entity),
                    "{entity} in {}",
                    rendered.text
                );
            }
            assert!(
                rendered.html.contains("Smith &amp; &lt;Sons&gt;"),
                "escaped in HTML"
            );
            assert!(!rendered.text.contains("is attached as"));
        }
    }
}
