//! Checks an uploaded threat-intel feed before it is stored: the format parses and holds
//! indicators. Matching (CIDR tries, subdomains, `valid_until`) is the detect service's.

use serde_json::Value;

/// The feed formats accepted.
pub const FORMATS: &[&str] = &["stix", "misp", "csv", "list"];

/// Counts the indicators of a feed, or says precisely why it cannot be used.
pub fn count_indicators(format: &str, content: &[u8]) -> Result<i64, String> {
    if content.is_empty() {
        return Err("the feed is empty".into());
    }
    match format {
        "stix" => stix(content),
        "misp" => misp(content),
        "csv" => csv_rows(content),
        "list" => list(content),
        other => Err(format!(
            "unknown feed format {other:?}: expected {}",
            FORMATS.join(", ")
        )),
    }
}

fn json(content: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(content).map_err(|err| format!("not JSON: {err}"))
}

fn stix(content: &[u8]) -> Result<i64, String> {
    let bundle = json(content)?;
    if bundle.get("type").and_then(Value::as_str) != Some("bundle") {
        return Err("a STIX 2.1 feed must be a bundle (\"type\": \"bundle\")".into());
    }
    let objects = bundle
        .get("objects")
        .and_then(Value::as_array)
        .ok_or("the STIX bundle has no \"objects\" array")?;
    let mut count = 0;
    for (index, object) in objects.iter().enumerate() {
        if object.get("type").and_then(Value::as_str) != Some("indicator") {
            continue;
        }
        if object.get("pattern").and_then(Value::as_str).is_none() {
            return Err(format!(
                "STIX object {index} is an indicator without a pattern"
            ));
        }
        count += 1;
    }
    if count == 0 {
        return Err("the STIX bundle holds no indicator".into());
    }
    Ok(count)
}

fn misp(content: &[u8]) -> Result<i64, String> {
    let document = json(content)?;
    let event = document.get("Event").unwrap_or(&document);
    if let Some(attributes) = event.get("Attribute").and_then(Value::as_array) {
        let objects = event
            .get("Object")
            .and_then(Value::as_array)
            .map(|objects| {
                objects
                    .iter()
                    .filter_map(|object| object.get("Attribute").and_then(Value::as_array))
                    .map(Vec::len)
                    .sum::<usize>()
            })
            .unwrap_or(0);
        return Ok(i64::try_from(attributes.len() + objects).unwrap_or(i64::MAX));
    }
    // A feed manifest: event uuid -> event summary.
    match document.as_object() {
        Some(manifest)
            if !manifest.is_empty()
                && manifest.values().all(|event| {
                    event.get("info").is_some() || event.get("timestamp").is_some()
                }) =>
        {
            Ok(i64::try_from(manifest.len()).unwrap_or(i64::MAX))
        }
        _ => Err("not a MISP event (\"Event\" with \"Attribute\") or feed manifest".into()),
    }
}

fn csv_rows(content: &[u8]) -> Result<i64, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(content);
    let headers = reader
        .headers()
        .map_err(|err| format!("CSV header: {err}"))?
        .clone();
    let column = headers
        .iter()
        .position(|name| {
            matches!(
                name.trim().to_ascii_lowercase().as_str(),
                "indicator" | "value" | "ioc"
            )
        })
        .ok_or("the CSV header has no indicator, value or ioc column")?;
    let mut count = 0;
    for (row, record) in reader.records().enumerate() {
        let record = record.map_err(|err| format!("CSV row {}: {err}", row + 2))?;
        if record
            .get(column)
            .is_some_and(|value| !value.trim().is_empty())
        {
            count += 1;
        }
    }
    if count == 0 {
        return Err("the CSV feed holds no indicator".into());
    }
    Ok(count)
}

fn list(content: &[u8]) -> Result<i64, String> {
    let text = std::str::from_utf8(content).map_err(|_| "a list feed must be UTF-8 text")?;
    let mut count = 0;
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.contains(char::is_whitespace) {
            return Err(format!(
                "line {}: one indicator per line, without spaces",
                number + 1
            ));
        }
        count += 1;
    }
    if count == 0 {
        return Err("the list holds no indicator".into());
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_counted_or_rejected_with_a_reason() {
        let stix = br#"{"type":"bundle","objects":[{"type":"indicator","pattern":"[ipv4-addr:value = '1.2.3.4']"},{"type":"malware"}]}"#;
        assert_eq!(count_indicators("stix", stix), Ok(1));
        assert!(
            count_indicators("stix", br#"{"type":"indicator"}"#)
                .unwrap_err()
                .contains("bundle")
        );
        let misp = br#"{"Event":{"info":"x","Attribute":[{"type":"ip-dst","value":"1.2.3.4"}]}}"#;
        assert_eq!(count_indicators("misp", misp), Ok(1));
        assert_eq!(
            count_indicators(
                "csv",
                b"indicator,confidence\n1.2.3.4,80\nevil.example,50\n"
            ),
            Ok(2)
        );
        assert!(
            count_indicators("csv", b"ip\n1.2.3.4\n")
                .unwrap_err()
                .contains("no indicator, value or ioc column")
        );
        assert_eq!(
            count_indicators("list", b"# c\n1.2.3.4\n\nevil.example\n"),
            Ok(2)
        );
        assert!(
            count_indicators("list", b"1.2.3.4 evil\n")
                .unwrap_err()
                .starts_with("line 1")
        );
        assert!(
            count_indicators("yara", b"x")
                .unwrap_err()
                .contains("unknown feed format")
        );
        assert!(count_indicators("stix", b"").unwrap_err().contains("empty"));
        assert!(
            count_indicators("misp", b"[1,2")
                .unwrap_err()
                .starts_with("not JSON")
        );
    }
}
