//! The data each built-in document type's template expects, as a JSON Schema (draft 2020-12), and
//! the first place where given data falls short of it — so that a missing variable is named with
//! its path (`document.lines[0].amount`), not only with the template line that needed it.

use serde_json::{Value, json};

/// The JSON Schema of the data for a built-in document type; `None` for other types.
pub fn data_schema(document_type: &str) -> Option<Value> {
    let extra_required: &[&str] = match document_type {
        "sales-quote" => &["valid_until"],
        "sales-invoice" | "reminder" => &["due_date"],
        "purchase-order" => &["delivery_date"],
        "sales-order" | "sales-credit-memo" => &[],
        _ => return None,
    };
    let mut document_required = vec!["number", "currency", "total", "lines"];
    document_required.extend_from_slice(extra_required);
    let party = |what: &str| {
        json!({"type": "object", "description": what, "required": ["name"],
               "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "email": {"type": "string"}}})
    };
    Some(json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": format!("Data of a {document_type} email"),
        "description": "What the built-in template reads. POST /v1/documents/send fills in customer, contact, salesperson and document.number from its own fields.",
        "type": "object",
        "required": ["company", "customer", "document"],
        "properties": {
            "company": {"type": "object", "required": ["name"],
                        "properties": {"name": {"type": "string"}, "address": {"type": "string"}}},
            "customer": party("The customer (greeted when there is no contact)."),
            "contact": party("The customer's contact person, greeted by name when given."),
            "salesperson": party("Who signs for the company."),
            "attachments": {"type": "array", "description": "The files attached, named in the text.",
                            "items": {"type": "object", "properties": {"filename": {"type": "string"}}}},
            "document": {
                "type": "object",
                "required": document_required,
                "properties": {
                    "number": {"type": "string"},
                    "date": {"type": "string", "description": "ISO 8601 date"},
                    "due_date": {"type": "string"},
                    "valid_until": {"type": "string"},
                    "delivery_date": {"type": "string"},
                    "currency": {"type": "string", "description": "ISO 4217 code, e.g. EUR"},
                    "total": {"type": "number"},
                    "payment_link": {"type": "string", "description": "Shown as a button on invoices and reminders"},
                    "lines": {"type": "array", "items": {
                        "type": "object",
                        "required": ["description", "quantity", "unit_price", "amount"],
                        "properties": {
                            "description": {"type": "string"},
                            "quantity": {"type": "number"},
                            "unit_price": {"type": "number"},
                            "amount": {"type": "number"}
                        }
                    }}
                }
            }
        }
    }))
}

/// The first path at which `data` lacks what `schema` requires (a required property, or a value of
/// the wrong type), with what is wrong; `None` when it conforms. Supports the keywords the schemas
/// above use: `type`, `required`, `properties`, `items`.
pub fn first_shortfall(schema: &Value, data: &Value) -> Option<(String, String)> {
    shortfalls(schema, data).into_iter().next()
}

/// Every path at which `data` falls short of `schema`, in document order.
pub fn shortfalls(schema: &Value, data: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    collect(schema, data, String::new(), &mut found);
    found
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn type_matches(expected: &str, value: &Value) -> bool {
    match expected {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        "boolean" => value.is_boolean(),
        _ => true,
    }
}

fn collect(schema: &Value, data: &Value, path: String, found: &mut Vec<(String, String)>) {
    if let Some(expected) = schema["type"].as_str()
        && !type_matches(expected, data)
    {
        found.push((path, format!("must be of type {expected}")));
        return;
    }
    if let Some(required) = schema["required"].as_array() {
        for key in required.iter().filter_map(Value::as_str) {
            if data.get(key).is_none_or(Value::is_null) {
                found.push((join(&path, key), "is missing".into()));
            }
        }
    }
    if let (Some(properties), Some(object)) = (schema["properties"].as_object(), data.as_object()) {
        for (key, property) in properties {
            if let Some(value) = object.get(key).filter(|v| !v.is_null()) {
                collect(property, value, join(&path, key), found);
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), data.as_array()) {
        for (index, item) in array.iter().enumerate() {
            collect(items, item, format!("{path}[{index}]"), found);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::builtin::{built_in, sample_data};

    #[test]
    fn every_built_in_document_type_has_a_schema_its_sample_data_meets() {
        for template in built_in() {
            let schema = data_schema(template.document_type).expect("a schema");
            assert_eq!(
                first_shortfall(&schema, &sample_data(template.document_type)),
                None,
                "{}",
                template.id
            );
        }
        assert!(data_schema("warranty-claim").is_none());
    }

    #[test]
    fn a_shortfall_is_named_with_its_path() {
        let schema = data_schema("sales-invoice").unwrap();
        let mut data = sample_data("sales-invoice");
        data["document"]["lines"][1]
            .as_object_mut()
            .unwrap()
            .remove("amount");
        assert_eq!(
            first_shortfall(&schema, &data),
            Some(("document.lines[1].amount".into(), "is missing".into()))
        );
        let mut wrong_type = sample_data("sales-invoice");
        wrong_type["document"]["total"] = json!("a lot");
        assert_eq!(
            first_shortfall(&schema, &wrong_type),
            Some(("document.total".into(), "must be of type number".into()))
        );
        let mut no_due = sample_data("sales-invoice");
        no_due["document"]
            .as_object_mut()
            .unwrap()
            .remove("due_date");
        assert_eq!(
            first_shortfall(&schema, &no_due).unwrap().0,
            "document.due_date"
        );
    }
}
