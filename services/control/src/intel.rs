//! Checks an uploaded threat-intel feed before it is stored, with the parser the detect
//! service loads it with (`vigil-intel`): a feed that is not of its format, or holds no usable
//! indicator, is refused with the reason; a feed with some unusable indicators is stored and
//! the skipped ones are reported.

/// What a feed holds: usable indicators, and the skipped ones with the first reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedCheck {
    /// Indicators the detect service will match.
    pub indicators: i64,
    /// Indicators it will skip.
    pub skipped: i64,
    /// Why, for the first few.
    pub reasons: Vec<String>,
}

/// Checks a feed, or says precisely why it cannot be used.
pub fn check_feed(format: &str, content: &[u8]) -> Result<FeedCheck, String> {
    if content.is_empty() {
        return Err("the feed is empty".into());
    }
    // Expiry is judged when the feed is loaded, not when it is uploaded.
    let report = vigil_intel::parse_feed("upload", format, content, i64::MIN, &mut drop)?;
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    if report.loaded == 0 {
        let reasons = if report.reasons.is_empty() {
            String::new()
        } else {
            format!(": {}", report.reasons.join("; "))
        };
        return Err(format!(
            "the feed holds no usable indicator ({} skipped){reasons}",
            report.skipped
        ));
    }
    Ok(FeedCheck {
        indicators: count(report.loaded),
        skipped: count(report.skipped),
        reasons: report.reasons,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(format: &str, content: &[u8]) -> Result<i64, String> {
        check_feed(format, content).map(|check| check.indicators)
    }

    #[test]
    fn formats_are_counted_or_rejected_with_a_reason() {
        let stix = br#"{"type":"bundle","objects":[{"type":"indicator","pattern":"[ipv4-addr:value = '1.2.3.4']"},{"type":"malware"}]}"#;
        assert_eq!(count("stix", stix), Ok(1));
        assert!(
            count("stix", br#"{"type":"indicator"}"#)
                .unwrap_err()
                .contains("bundle")
        );
        let misp = br#"{"Event":{"info":"x","Attribute":[{"type":"ip-dst","value":"1.2.3.4"}]}}"#;
        assert_eq!(count("misp", misp), Ok(1));
        assert_eq!(
            count(
                "csv",
                b"indicator,confidence\n1.2.3.4,80\nevil.example,50\n"
            ),
            Ok(2)
        );
        assert!(
            count("csv", b"ip\n1.2.3.4\n")
                .unwrap_err()
                .contains("no indicator, value or ioc column")
        );
        assert_eq!(count("list", b"# c\n1.2.3.4\n\nevil.example\n"), Ok(2));
        let partly = check_feed("list", b"1.2.3.4\nnot an indicator\n").unwrap();
        assert_eq!((partly.indicators, partly.skipped), (1, 1));
        assert!(partly.reasons[0].starts_with("line 2"), "{partly:?}");
        let none = count("list", b"not an indicator\n").unwrap_err();
        assert!(
            none.contains("no usable indicator") && none.contains("line 1"),
            "{none}"
        );
        let pattern = br#"{"type":"bundle","objects":[{"type":"indicator","pattern":"[process:name = 'x.exe']"}]}"#;
        assert!(count("stix", pattern).unwrap_err().contains("process:name"));
        assert!(
            count("yara", b"x")
                .unwrap_err()
                .contains("unknown feed format")
        );
        assert!(count("stix", b"").unwrap_err().contains("empty"));
        assert!(count("misp", b"[1,2").unwrap_err().starts_with("not JSON"));
        let manifest = count("misp", br#"{"5f2a": {"info": "e", "timestamp": "1"}}"#);
        assert!(manifest.unwrap_err().contains("manifest"));
    }
}
