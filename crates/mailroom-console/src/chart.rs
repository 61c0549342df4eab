//! Charts drawn on the server as SVG: no script, nothing fetched, readable by screen readers
//! through the title and description (and the table beside each chart).

use serde_json::Value;
use std::fmt::Write;

/// The series of an hour chart, bottom to top: (field, label, colour). The colours keep a 3:1
/// contrast against the white background (WCAG 1.4.11).
const SERIES: [(&str, &str, &str); 3] = [
    ("sent", "sent", "#0b57d0"),
    ("deferred", "deferred", "#8a5300"),
    ("failed", "failed", "#a4161a"),
];

/// A stacked bar per hour of `per_hour` (the API's `per_hour`), with the hours marked every six.
pub(crate) fn hour_bars(per_hour: &[Value]) -> String {
    let (width, height, left, bottom, top) = (720.0_f64, 180.0_f64, 40.0_f64, 24.0_f64, 8.0_f64);
    let count = per_hour.len().max(1) as f64;
    let slot = (width - left) / count;
    let value = |h: &Value, field: &str| h[field].as_i64().unwrap_or(0).max(0);
    let highest = per_hour
        .iter()
        .map(|h| SERIES.iter().map(|(f, _, _)| value(h, f)).sum::<i64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let scale = (height - bottom - top) / highest as f64;
    let totals: Vec<i64> = SERIES
        .iter()
        .map(|(f, _, _)| per_hour.iter().map(|h| value(h, f)).sum())
        .collect();
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-labelledby="chart-title chart-desc" xmlns="http://www.w3.org/2000/svg"><title id="chart-title">Attempts per hour, last {n} hours</title><desc id="chart-desc">{sent} sent, {deferred} deferred, {failed} failed; the busiest hour had {highest}.</desc>"#,
        n = per_hour.len(),
        sent = totals[0],
        deferred = totals[1],
        failed = totals[2],
    );
    // The axis and the highest value.
    let base = height - bottom;
    let _ = write!(
        svg,
        r##"<line x1="{left}" y1="{base}" x2="{width}" y2="{base}" stroke="#4a5360"/><text x="{x}" y="{y}" font-size="11" text-anchor="end" fill="#1b1f24">{highest}</text><text x="{x}" y="{base}" font-size="11" text-anchor="end" fill="#1b1f24">0</text>"##,
        x = left - 4.0,
        y = top + 10.0,
    );
    for (i, hour) in per_hour.iter().enumerate() {
        let x = left + i as f64 * slot + slot * 0.15;
        let bar = slot * 0.7;
        let mut y = base;
        for (field, label, colour) in SERIES {
            let n = value(hour, field);
            if n == 0 {
                continue;
            }
            let h = n as f64 * scale;
            y -= h;
            let _ = write!(
                svg,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{bar:.1}" height="{h:.1}" fill="{colour}"><title>{at}: {n} {label}</title></rect>"#,
                at = label_of(hour),
            );
        }
        if i % 6 == 0 {
            let _ = write!(
                svg,
                r##"<text x="{tx:.1}" y="{ty}" font-size="11" text-anchor="middle" fill="#1b1f24">{at}</text>"##,
                tx = x + bar / 2.0,
                ty = height - 6.0,
                at = label_of(hour),
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// `HH:00` of an hour's RFC 3339 start (the text is ours: digits and a colon only).
fn label_of(hour: &Value) -> String {
    let at = hour["hour"].as_str().unwrap_or_default();
    at.get(11..13)
        .filter(|h| h.chars().all(|c| c.is_ascii_digit()))
        .map(|h| format!("{h}:00"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bars_stack_in_proportion_and_the_description_sums_the_hours() {
        let hours: Vec<Value> = (0..24)
            .map(|i| json!({"hour": format!("2026-11-27T{i:02}:00:00Z"), "sent": if i == 3 { 10 } else { 0 }, "deferred": if i == 3 { 5 } else { 0 }, "failed": if i == 23 { 2 } else { 0 }}))
            .collect();
        let svg = hour_bars(&hours);
        assert!(
            svg.contains("10 sent, 5 deferred, 2 failed; the busiest hour had 15."),
            "{svg}"
        );
        assert_eq!(svg.matches("<rect").count(), 3);
        assert!(svg.contains("<title>03:00: 10 sent</title>"));
        assert!(svg.contains(">18:00</text>"), "hours marked every six");
        // The plot is 148 high: 10 of the busiest hour's 15 is two thirds of it, and the stack
        // reaches the top (y = 8).
        assert!(
            svg.contains(r##"y="57.3" width="19.8" height="98.7" fill="#0b57d0""##),
            "{svg}"
        );
        assert!(
            svg.contains(r##"y="8.0" width="19.8" height="49.3" fill="#8a5300""##),
            "{svg}"
        );
    }

    #[test]
    fn an_empty_day_draws_an_axis_and_no_bars() {
        let hours: Vec<Value> = (0..24).map(|i| json!({"hour": format!("2026-11-27T{i:02}:00:00Z"), "sent": 0, "deferred": 0, "failed": 0})).collect();
        let svg = hour_bars(&hours);
        assert_eq!(svg.matches("<rect").count(), 0);
        assert!(svg.contains("0 sent, 0 deferred, 0 failed"));
    }
}
