//! The matrix summary: one row per run, as an HTML page linking each run's report and as a Markdown table
//! for docs/jepsen.md.

use std::fmt::Write as _;

use crate::checker::Validity;

use super::html::{badge, page_start};
use super::{esc, verdict_word, MatrixRow};

fn counts(rows: &[MatrixRow]) -> [usize; 3] {
    let mut c = [0; 3];
    for r in rows {
        c[match r.verdict {
            Validity::Valid => 0,
            Validity::Unknown => 1,
            Validity::Invalid => 2,
        }] += 1;
    }
    c
}

fn worst(rows: &[MatrixRow]) -> Validity {
    rows.iter().map(|r| r.verdict).max().unwrap_or(Validity::Unknown)
}

pub(crate) fn html(rows: &[MatrixRow]) -> String {
    let [valid, unknown, invalid] = counts(rows);
    let mut h = page_start(&format!("Jepsen matrix — {}", verdict_word(worst(rows))));
    let _ = write!(
        h,
        r#"<h1>Jepsen matrix {}</h1><p>{} runs: {} {valid} &nbsp; {} {unknown} &nbsp; {} {invalid}</p>"#,
        badge(worst(rows), "big"),
        rows.len(),
        badge(Validity::Valid, ""),
        badge(Validity::Unknown, ""),
        badge(Validity::Invalid, ""),
    );
    h.push_str(
        "<table><tr><th>workload</th><th>nemesis</th><th>db</th><th>bug</th><th>seed</th><th>expected</th><th>verdict</th><th>checkers</th>\
         <th>ops</th><th>duration</th><th>report</th></tr>",
    );
    for r in rows {
        let checkers: Vec<String> = r
            .checkers
            .iter()
            .map(|(name, v)| format!("{} {}", esc(name), badge(*v, "")))
            .collect();
        let link = format!("{}/index.html", r.run_dir.trim_end_matches('/'));
        let _ = write!(
            h,
            r#"<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="n">{}</td><td>{}</td><td>{}{}</td><td>{}</td><td class="n">{}</td><td class="n">{:.1} s</td><td><a href="{}">{}</a></td></tr>"#,
            esc(&r.workload),
            esc(&r.nemesis),
            esc(&r.db),
            esc(r.bug.as_deref().unwrap_or("-")),
            r.seed,
            verdict_word(r.expected),
            badge(r.verdict, ""),
            if r.verdict == r.expected {
                " ✓"
            } else {
                " ✗ unexpected"
            },
            checkers.join(" &nbsp; "),
            r.ops,
            r.duration_s,
            esc(&link),
            esc(&r.run_dir),
        );
    }
    h.push_str("</table>\n</body></html>\n");
    h
}

/// Markdown cells cannot hold `|` or line breaks.
fn md(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

pub(crate) fn markdown(rows: &[MatrixRow]) -> String {
    let [valid, unknown, invalid] = counts(rows);
    let mut m = format!(
        "{} runs: {valid} valid, {unknown} unknown, {invalid} invalid.\n\n",
        rows.len()
    );
    m.push_str("| workload | nemesis | db | bug | seed | expected | verdict | checkers | ops | duration | report |\n");
    m.push_str("| --- | --- | --- | --- | ---: | --- | --- | --- | ---: | ---: | --- |\n");
    for r in rows {
        let checkers: Vec<String> = r
            .checkers
            .iter()
            .map(|(n, v)| format!("{} {}", md(n), verdict_word(*v)))
            .collect();
        let verdict = match (r.verdict, r.verdict == r.expected) {
            (v, true) => format!("{} (as expected)", verdict_word(v)),
            (v, false) => format!("**{}** (unexpected)", verdict_word(v)),
        };
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} | {} | {} | {verdict} | {} | {} | {:.1} s | [{}]({}/index.html) |",
            md(&r.workload),
            md(&r.nemesis),
            md(&r.db),
            md(r.bug.as_deref().unwrap_or("-")),
            r.seed,
            verdict_word(r.expected),
            checkers.join(", "),
            r.ops,
            r.duration_s,
            md(&r.run_dir),
            md(r.run_dir.trim_end_matches('/')),
        );
    }
    m
}
