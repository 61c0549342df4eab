//! Every delivery status notification and feedback report of the inbound corpus (tags `dsn` and
//! `arf` in `MANIFEST.tsv`) read by `parse_report`, compared with what Python's `email` package
//! reads in the same bytes (`report_corpus.py`): the same recipients with the same action and
//! status, and the same feedback type.

use mailroom_core::inbound::report::{Report, parse_report};
use std::path::PathBuf;

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../mailroom-testkit/corpus/inbound")
}

#[test]
fn every_corpus_report_gives_the_recipients_and_statuses_python_reads() {
    let manifest = std::fs::read_to_string(corpus().join("MANIFEST.tsv")).expect("the manifest");
    let files: Vec<PathBuf> = manifest
        .lines()
        .skip(1)
        .filter_map(|line| {
            let columns: Vec<&str> = line.split('\t').collect();
            let tags = columns.last()?;
            tags.split(',')
                .any(|t| t == "dsn" || t == "arf")
                .then(|| corpus().join(columns[0]))
        })
        .collect();
    assert!(
        files.len() >= 20,
        "the corpus has its reports: {}",
        files.len()
    );
    let python = std::process::Command::new("python3")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/report_corpus.py"))
        .args(&files)
        .output()
        .expect("python3 runs");
    assert!(
        python.status.success(),
        "{}",
        String::from_utf8_lossy(&python.stderr)
    );
    let mut compared = 0;
    for line in String::from_utf8(python.stdout).unwrap().lines() {
        let expected: serde_json::Value = serde_json::from_str(line).unwrap();
        let file = expected["file"].as_str().unwrap();
        let raw = std::fs::read(corpus().join(file)).unwrap();
        let wanted = expected["recipients"].as_array().unwrap();
        match parse_report(&raw) {
            Some(Report::Delivery { recipients, .. }) => {
                let got: Vec<(String, String, String)> = recipients
                    .iter()
                    .map(|r| (r.recipient.clone(), r.action.clone(), r.status.clone()))
                    .collect();
                let want: Vec<(String, String, String)> = wanted
                    .iter()
                    .map(|r| {
                        (
                            r["recipient"].as_str().unwrap().to_owned(),
                            r["action"].as_str().unwrap().to_owned(),
                            r["status"].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect();
                assert_eq!(got, want, "{file}");
                compared += 1;
            }
            Some(Report::Feedback {
                feedback_type,
                recipients,
                ..
            }) => {
                assert_eq!(
                    Some(feedback_type.as_str()),
                    expected["feedback_type"].as_str(),
                    "{file}"
                );
                let want: Vec<String> = wanted
                    .iter()
                    .map(|r| r["recipient"].as_str().unwrap().to_owned())
                    .collect();
                if !want.is_empty() {
                    assert_eq!(recipients, want, "{file}");
                }
                compared += 1;
            }
            None => assert!(
                wanted.is_empty() && expected["feedback_type"].is_null(),
                "{file}: Python found a report, parse_report none: {expected}"
            ),
        }
    }
    assert!(compared >= 15, "reports compared: {compared}");
}
