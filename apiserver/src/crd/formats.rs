//! The string `format`s a CRD schema may name, checked as the API server's OpenAPI validator checks them.
//! Formats outside this list are accepted without a check (upstream only warns about them).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use base64::Engine;
use regex::Regex;

fn re(cell: &'static OnceLock<Option<Regex>>, pattern: &str) -> Option<&'static Regex> {
    cell.get_or_init(|| Regex::new(pattern).ok()).as_ref()
}

fn matches(cell: &'static OnceLock<Option<Regex>>, pattern: &str, s: &str) -> bool {
    // A pattern that failed to compile is a bug of ours; it must not reject user data.
    re(cell, pattern).is_none_or(|r| r.is_match(s))
}

/// Whether `s` is valid for `format`; `None` when the format is not one that is checked.
pub fn check(format: &str, s: &str) -> Option<bool> {
    static HOSTNAME: OnceLock<Option<Regex>> = OnceLock::new();
    static EMAIL: OnceLock<Option<Regex>> = OnceLock::new();
    static MAC: OnceLock<Option<Regex>> = OnceLock::new();
    static UUID: OnceLock<Option<Regex>> = OnceLock::new();
    static HEXCOLOR: OnceLock<Option<Regex>> = OnceLock::new();
    static RGBCOLOR: OnceLock<Option<Regex>> = OnceLock::new();
    static DURATION: OnceLock<Option<Regex>> = OnceLock::new();
    static BSON: OnceLock<Option<Regex>> = OnceLock::new();
    Some(match format {
        "date-time" | "datetime" => date_time(s),
        "date" => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok(),
        "byte" => base64::engine::general_purpose::STANDARD.decode(s).is_ok(),
        "ipv4" => s.parse::<Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<Ipv6Addr>().is_ok(),
        "cidr" => cidr(s),
        "mac" => matches(
            &MAC,
            r"^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$|^([0-9A-Fa-f]{2}[:-]){7}[0-9A-Fa-f]{2}$|^([0-9A-Fa-f]{4}\.){2}[0-9A-Fa-f]{4}$",
            s,
        ),
        "uuid" | "uuid3" | "uuid4" | "uuid5" => {
            let shape = matches(
                &UUID,
                r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$",
                s,
            );
            let version = s.chars().filter(|c| *c != '-').nth(12);
            shape
                && match format {
                    "uuid3" => version == Some('3'),
                    "uuid4" => version == Some('4'),
                    "uuid5" => version == Some('5'),
                    _ => true,
                }
        }
        "hostname" => {
            s.len() <= 253
                && matches(
                    &HOSTNAME,
                    r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$",
                    s,
                )
        }
        "email" => matches(&EMAIL, r"^[^@\s]+@[^@\s]+$", s),
        "uri" => url::Url::parse(s).is_ok(),
        "hexcolor" => matches(&HEXCOLOR, r"^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$", s),
        "rgbcolor" => matches(
            &RGBCOLOR,
            r"^rgb\(\s*\d{1,3}%?\s*,\s*\d{1,3}%?\s*,\s*\d{1,3}%?\s*\)$",
            s,
        ),
        "duration" => matches(
            &DURATION,
            r"^(\s*[-+]?[0-9]+(\.[0-9]+)?\s*(ns|us|µs|ms|s|m|h|d|w|sec|secs|second|seconds|min|mins|minute|minutes|hr|hrs|hour|hours|day|days|wk|wks|week|weeks))+\s*$",
            s,
        ),
        "bsonobjectid" => matches(&BSON, r"^[0-9a-fA-F]{24}$", s),
        _ => return None,
    })
}

fn date_time(s: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(s).is_ok()
        || chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").is_ok()
        || chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").is_ok()
}

fn cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    let Ok(bits) = bits.parse::<u8>() else {
        return false;
    };
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => bits <= 32,
        Ok(IpAddr::V6(_)) => bits <= 128,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn formats_accept_and_refuse() {
        let cases = [
            ("date-time", "2024-01-02T03:04:05Z", true),
            ("date-time", "2024-01-02T03:04:05.5+01:00", true),
            ("date-time", "yesterday", false),
            ("date", "2024-02-29", true),
            ("date", "2023-02-29", false),
            ("byte", "aGVsbG8=", true),
            ("byte", "not base64!", false),
            ("ipv4", "10.0.0.1", true),
            ("ipv4", "10.0.0.256", false),
            ("ipv6", "fd00::1", true),
            ("cidr", "10.0.0.0/8", true),
            ("cidr", "10.0.0.0/33", false),
            ("mac", "aa:bb:cc:dd:ee:ff", true),
            ("mac", "aa:bb:cc", false),
            ("uuid", "3fa85f64-5717-4562-b3fc-2c963f66afa6", true),
            ("uuid4", "3fa85f64-5717-4562-b3fc-2c963f66afa6", true),
            ("uuid3", "3fa85f64-5717-4562-b3fc-2c963f66afa6", false),
            ("hostname", "node-1.example.com", true),
            ("hostname", "-bad", false),
            ("email", "a@b.c", true),
            ("email", "nope", false),
            ("uri", "https://example.com/x", true),
            ("uri", "not a uri", false),
            ("duration", "1h30m", true),
            ("duration", "soon", false),
        ];
        for (f, v, ok) in cases {
            assert_eq!(check(f, v), Some(ok), "{f} {v}");
        }
        assert_eq!(check("int32", "x"), None);
        assert_eq!(check("my-format", "x"), None);
    }
}
