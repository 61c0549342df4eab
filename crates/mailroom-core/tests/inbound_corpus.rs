//! Every message of the inbound corpus (376 real-world and malformed messages) is read without a
//! panic, and the attachment parts found are those two independent parsers found
//! (`MANIFEST.tsv`: `py_attachments`; either parser's count where they disagree).

use mailroom_core::inbound::parse_inbound;
use std::path::PathBuf;

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../mailroom-testkit/corpus/inbound")
}

struct Row {
    file: String,
    py: usize,
    node: usize,
    flagged: bool,
}

fn manifest() -> Vec<Row> {
    let text = std::fs::read_to_string(corpus().join("MANIFEST.tsv")).expect("the manifest");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (file, py, node, flag) = (
        column("file"),
        column("py_attachments"),
        column("node_attachments"),
        column("flag"),
    );
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let cells: Vec<&str> = line.split('\t').collect();
            Row {
                file: cells[file].to_owned(),
                py: cells[py].parse().unwrap(),
                node: cells[node].parse().unwrap_or(usize::MAX),
                flagged: !cells[flag].is_empty(),
            }
        })
        .collect()
}

#[test]
fn every_corpus_message_yields_the_attachment_parts_the_reference_parsers_found() {
    let rows = manifest();
    assert_eq!(rows.len(), 376);
    let mut wrong = Vec::new();
    for row in &rows {
        let raw = std::fs::read(corpus().join(&row.file)).unwrap();
        let parsed = parse_inbound(&raw);
        let found = parsed.attachments.len();
        let fine = found == row.py || (row.flagged && found == row.node);
        if !fine {
            wrong.push(format!(
                "{}: found {found}, python {} node {}{}",
                row.file,
                row.py,
                row.node,
                if row.flagged { " (flagged)" } else { "" }
            ));
        }
        // Paths are IMAP part numbers: digits separated by dots, each unique in the message.
        let mut paths: Vec<&str> = parsed.attachments.iter().map(|a| a.path.as_str()).collect();
        for path in &paths {
            assert!(
                path.split('.')
                    .all(|n| n.parse::<u32>().is_ok_and(|n| n > 0)),
                "{}: bad part path {path}",
                row.file
            );
        }
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), found, "{}: a part path repeats", row.file);
    }
    assert!(
        wrong.is_empty(),
        "{} mismatches:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn every_corpus_message_read_from_its_skeleton_gives_what_reading_it_whole_gives() {
    use mailroom_core::inbound::large::{LargeParse, decode_base64, parse_skeleton, skeleton};
    let (mut from_skeleton, mut whole) = (0, 0);
    for row in manifest() {
        let raw = std::fs::read(corpus().join(&row.file)).unwrap();
        let expected = parse_inbound(&raw);
        // Runs of 64 bytes and more are left out, so that the corpus's attachments are.
        let skeleton = skeleton(&raw[..], 64).unwrap();
        let LargeParse::Parsed { mut parsed, runs } = parse_skeleton(&skeleton) else {
            whole += 1;
            continue;
        };
        from_skeleton += 1;
        for (part, run) in parsed.attachments.iter_mut().zip(runs) {
            if let Some(run) = run {
                decode_base64(&raw[run.start as usize..run.end as usize], &mut part.bytes).unwrap();
            }
        }
        assert_eq!(*parsed, expected, "{}", row.file);
    }
    // Most messages stand for themselves through their skeleton; the rest are read whole.
    assert!(
        from_skeleton > 300,
        "{from_skeleton} from the skeleton, {whole} whole"
    );
}
