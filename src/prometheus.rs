//! The Prometheus text exposition format (version 0.0.4), as the node's and the
//! scheduler's `/metrics` write it. Written here rather than taken from a metrics crate:
//! both render snapshots they already hold, so a registry of live metric objects would
//! only duplicate the counters; what is needed is the text format's escaping and number
//! rules, a few lines.

use std::fmt::Write;

/// A metric family being written: its header once, then samples.
pub(crate) struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl Family<'_> {
    /// One sample with `labels` (values escaped here).
    pub(crate) fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        let _ = write!(self.out, "{}", self.name);
        if !labels.is_empty() {
            let parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            let _ = write!(self.out, "{{{}}}", parts.join(","));
        }
        let _ = writeln!(self.out, " {}", number(value));
    }
}

/// Starts the family `name` in `out` with its `# HELP` and `# TYPE` lines.
pub(crate) fn family<'a>(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Family<'a> {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    Family { out, name }
}

/// `proxy_cert_expiry_seconds{cert=...}`: seconds from `now_unix` until each certificate's
/// not-after (negative once expired); `certs` are (label, validity), and one whose
/// validity is unknown is left out.
pub(crate) fn cert_expiry(out: &mut String, certs: &[(&str, Option<(i64, i64)>)], now_unix: u64) {
    let now = i64::try_from(now_unix).unwrap_or(i64::MAX);
    let mut f = family(
        out,
        "proxy_cert_expiry_seconds",
        "gauge",
        "Seconds until the certificate expires (negative once expired), by certificate.",
    );
    for (cert, validity) in certs {
        if let Some((_, not_after)) = validity {
            f.sample(&[("cert", cert)], not_after.saturating_sub(now) as f64);
        }
    }
}

/// Label values escape backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_numbers_are_plain() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.25), "0.25");
    }
}
