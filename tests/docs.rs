//! The manual's links hold: every relative Markdown link in `README.md` and `docs/*.md`
//! names a file or directory that exists (relative to the linking file), and every
//! `#fragment` into a Markdown file names one of its headings, by GitHub's slug rules. No
//! engine is needed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use portcullis_tests::workspace;

/// The files whose links are checked: the front page and every page of the manual.
fn manual() -> Vec<PathBuf> {
    let root = workspace();
    let mut files = vec![root.join("README.md")];
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|entry| entry.expect("docs/ is readable").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    pages.sort();
    files.extend(pages);
    files
}

/// The text outside fenced code blocks, with inline code spans blanked out (a code span
/// may run over a line break, so spans are found over the whole text, not per line).
/// Backticks inside a link's text stay a code span, and the link around it is kept.
fn prose(markdown: &str) -> String {
    let mut out = String::with_capacity(markdown.len());
    let mut fenced = false;
    let mut in_code = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            in_code = false;
            out.push('\n');
            continue;
        }
        if fenced {
            out.push('\n');
            continue;
        }
        if line.trim().is_empty() {
            // A code span never crosses a paragraph break.
            in_code = false;
        }
        for c in line.chars() {
            if c == '`' {
                in_code = !in_code;
                out.push('`');
            } else if in_code {
                out.push(' ');
            } else {
                out.push(c);
            }
        }
        out.push('\n');
    }
    out
}

/// Every inline link target `[text](target)` in the prose, in order.
fn links(markdown: &str) -> Vec<String> {
    let text = prose(markdown);
    let mut found = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        // The target ends at the closing parenthesis, or at a space before a title.
        let end = after.find([')', ' ', '\n']).unwrap_or(after.len());
        let target = after[..end].trim_matches(['<', '>']);
        if !target.is_empty() {
            found.push(target.to_string());
        }
        rest = &after[end..];
    }
    found
}

/// GitHub's anchor for a heading: lowercase, punctuation dropped except `-` and `_`,
/// spaces to `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings; a repeated heading gets `-1`, `-2`, ... as on
/// GitHub.
fn anchors(markdown: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(line[hashes..].trim().trim_end_matches('#'));
        let mut anchor = base.clone();
        let mut n = 0;
        while !seen.insert(anchor.clone()) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
    }
    seen
}

fn is_external(target: &str) -> bool {
    ["http://", "https://", "mailto:"]
        .iter()
        .any(|scheme| target.starts_with(scheme))
}

/// What is wrong with one file's links, one line per broken link.
fn broken_links(file: &Path) -> Vec<String> {
    let root = workspace();
    let shown = file
        .strip_prefix(&root)
        .unwrap_or(file)
        .display()
        .to_string();
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{shown}: {e}"));
    let dir = file.parent().expect("a file has a directory");
    let mut problems = Vec::new();
    for target in links(&text) {
        if is_external(&target) {
            continue;
        }
        let (path, fragment) = match target.split_once('#') {
            Some((path, fragment)) => (path, Some(fragment)),
            None => (target.as_str(), None),
        };
        // A pure `#anchor` points into the linking file itself.
        let linked = if path.is_empty() {
            file.to_path_buf()
        } else {
            dir.join(path)
        };
        if !linked.exists() {
            problems.push(format!("{shown}: ({target}): {path} does not exist"));
            continue;
        }
        let Some(fragment) = fragment else { continue };
        if linked.extension().is_none_or(|ext| ext != "md") {
            continue;
        }
        let heading_text = std::fs::read_to_string(&linked).unwrap_or_default();
        if !anchors(&heading_text).contains(fragment) {
            let into = if path.is_empty() {
                shown.as_str()
            } else {
                path
            };
            problems.push(format!(
                "{shown}: ({target}): {into} has no heading whose anchor is #{fragment}"
            ));
        }
    }
    problems
}

#[test]
fn manual_links_resolve() {
    let files = manual();
    assert!(
        files.len() > 1,
        "docs/ holds no Markdown pages: {:?}",
        files
    );
    let problems: Vec<String> = files.iter().flat_map(|f| broken_links(f)).collect();
    assert!(
        problems.is_empty(),
        "{} broken link(s) in the manual:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn links_and_anchors_are_read_as_github_does() {
    let page = "# The `portcullis plugin` commands\n\
                ## tenancy (mutate + response): owner isolation\n\
                ## Notes\n## Notes\n\
                See [a](x.md#notes-1), [`[[plugins]]`](configuration.md), `[no](code.md)`,\n\
                ```\n[fenced](nothing.md)\n```\n\
                and [b](https://example.com \"title\").\n";
    assert_eq!(
        links(page),
        ["x.md#notes-1", "configuration.md", "https://example.com"]
    );
    let anchors = anchors(page);
    for anchor in [
        "the-portcullis-plugin-commands",
        "tenancy-mutate--response-owner-isolation",
        "notes",
        "notes-1",
    ] {
        assert!(anchors.contains(anchor), "{anchor} in {anchors:?}");
    }
}
