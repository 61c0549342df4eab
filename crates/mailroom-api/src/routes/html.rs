//! The few plain HTML pages the API serves to people's browsers (unsubscribe links, the OAuth
//! sign-in's last stop) and the escaping of what they show.

use axum::response::Html;

/// Text made safe to place in HTML, in an element or an attribute value.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A small page: `title` (escaped here) and `body` (HTML, escaped by the caller).
pub fn page(title: &str, body: &str) -> Html<String> {
    let title = escape(title);
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <meta name=\"robots\" content=\"noindex\"><title>{title}</title></head>\
         <body style=\"font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem\">\
         <main><h1>{title}</h1>{body}</main></body></html>"
    ))
}
