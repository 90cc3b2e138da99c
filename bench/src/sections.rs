//! `docs/benchmarks.md` is written by two harnesses: the store benchmark owns the file, the API server
//! benchmark owns one marked section in it. Each keeps the other's part when it rewrites the file.

/// Opens the API server benchmark's section.
pub const APISERVER_BEGIN: &str = "<!-- rudder-bench-apiserver: begin -->";
/// Closes it.
pub const APISERVER_END: &str = "<!-- rudder-bench-apiserver: end -->";

/// The marked section of `doc` (markers included), if it has one.
pub fn extract(doc: &str) -> Option<&str> {
    let start = doc.find(APISERVER_BEGIN)?;
    let end = doc[start..].find(APISERVER_END)? + start + APISERVER_END.len();
    Some(&doc[start..end])
}

/// `doc` with its marked section replaced by `section` (appended when it has none).
pub fn replace(doc: &str, section: &str) -> String {
    match extract(doc) {
        Some(old) => doc.replacen(old, section, 1),
        None => {
            let mut out = doc.trim_end().to_string();
            if !out.is_empty() {
                out.push_str("\n\n");
            }
            out.push_str(section);
            out.push('\n');
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(body: &str) -> String {
        format!("{APISERVER_BEGIN}\n{body}\n{APISERVER_END}")
    }

    #[test]
    fn appends_then_replaces_in_place() {
        let doc = "# Store\n\ntable\n";
        let once = replace(doc, &section("one"));
        assert_eq!(extract(&once), Some(section("one").as_str()));
        let twice = replace(&format!("{once}\n## After\n"), &section("two"));
        assert!(twice.contains("two") && !twice.contains("one"), "{twice}");
        assert!(twice.starts_with("# Store") && twice.contains("## After"), "{twice}");
    }

    #[test]
    fn unterminated_section_is_not_a_section() {
        assert_eq!(extract(&format!("x {APISERVER_BEGIN} y")), None);
    }
}
