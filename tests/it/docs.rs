//! The documentation's promises that code can check: the README stays a
//! front door (at most 250 lines), its exit-code table is `exit::TABLE`, and
//! every relative link of README.md and docs/ reaches a file and, with a
//! `#fragment`, a heading or an `<a id>` of it. (scripts/doc-blocks.sh runs
//! the blocks marked runnable; it needs more than a test should.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::common::repo;

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn pages() -> Vec<PathBuf> {
    let mut out = vec![repo().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    assert!(docs.len() >= 7, "docs/*.md: {docs:?}");
    out.extend(docs);
    out
}

#[test]
fn the_readme_is_short_and_lists_every_exit_code() {
    let readme = read(&repo().join("README.md"));
    assert!(
        readme.lines().count() <= 250,
        "{} lines",
        readme.lines().count()
    );
    let table = readme
        .split("## Exit codes\n")
        .nth(1)
        .expect("an Exit codes section");
    let codes: Vec<u8> = table
        .lines()
        .skip_while(|l| !l.starts_with("| 0 |"))
        .take_while(|l| l.starts_with('|'))
        .map(|l| l.split('|').nth(1).unwrap().trim().parse().unwrap())
        .collect();
    let want: Vec<u8> = hermes_harvest::exit::TABLE
        .iter()
        .map(|(c, _)| *c)
        .collect();
    assert_eq!(codes, want);
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces
/// as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = text
        .lines()
        .filter_map(|l| {
            l.trim_start_matches('#')
                .strip_prefix(' ')
                .filter(|_| l.starts_with('#'))
        })
        .map(anchor)
        .collect();
    for part in text.split("<a id=\"").skip(1) {
        out.insert(part.split('"').next().unwrap().to_string());
    }
    out
}

/// The targets of `[text](target)` links that are not URLs.
fn links(text: &str) -> Vec<String> {
    text.split("](")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .filter(|t| !t.contains("://") && !t.starts_with("mailto:"))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_relative_link_reaches_its_page_and_heading() {
    for page in pages() {
        let text = read(&page);
        let dir = page.parent().unwrap();
        for link in links(&text) {
            let (file, fragment) = link.split_once('#').unwrap_or((&link, ""));
            let target = if file.is_empty() {
                page.clone()
            } else {
                dir.join(file)
            };
            assert!(target.exists(), "{}: {link}: no such file", page.display());
            if !fragment.is_empty() {
                let known = anchors(&read(&target));
                assert!(
                    known.contains(fragment),
                    "{}: {link}: no such heading in {known:?}",
                    page.display()
                );
            }
        }
    }
}
