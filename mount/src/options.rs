//! `-o` mount options of elkfs-mount.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum OptionError {
    #[error("option {0}: {1}")]
    Value(String, String),
}

#[derive(Debug, Clone)]
pub struct MountOptions {
    pub read_only: bool,
    pub allow_other: bool,
    pub attr_timeout: Duration,
    pub entry_timeout: Duration,
    pub threads: usize,
    /// Answer lookups and attribute requests from what the master's replies and notices
    /// tell (`entry_cache=0`: ask the master every time).
    pub entry_cache: bool,
    /// More master addresses (`master=ADDR`, repeatable), tried after the ones given
    /// before the mountpoint.
    pub masters: Vec<String>,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            read_only: false,
            allow_other: false,
            attr_timeout: Duration::from_secs(1),
            entry_timeout: Duration::from_secs(1),
            threads: 4,
            entry_cache: true,
            masters: Vec::new(),
        }
    }
}

fn seconds(key: &str, v: &str) -> Result<Duration, OptionError> {
    v.parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| OptionError::Value(key.into(), format!("not a number of seconds: {v}")))
}

/// Parses option words (already split at commas). Unknown options are reported back so the
/// caller can log them: mount(8) and fstab pass generic ones like `defaults` or `_netdev`.
pub fn parse<'a>(
    words: impl IntoIterator<Item = &'a str>,
) -> Result<(MountOptions, Vec<String>), OptionError> {
    let mut o = MountOptions::default();
    let mut unknown = Vec::new();
    for word in words.into_iter().map(str::trim).filter(|w| !w.is_empty()) {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word, None),
        };
        match (key, value) {
            ("ro", None) => o.read_only = true,
            ("rw", None) => o.read_only = false,
            ("allow_other", None) => o.allow_other = true,
            ("attr_timeout", Some(v)) => o.attr_timeout = seconds(key, v)?,
            ("entry_timeout", Some(v)) => o.entry_timeout = seconds(key, v)?,
            ("entry_cache", Some("0")) => o.entry_cache = false,
            ("entry_cache", Some("1")) => o.entry_cache = true,
            ("master", Some(v)) if !v.is_empty() => o.masters.push(v.to_owned()),
            ("threads", Some(v)) => {
                o.threads = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=256).contains(n))
                    .ok_or_else(|| OptionError::Value(key.into(), format!("not 1..256: {v}")))?
            }
            _ => unknown.push(word.to_owned()),
        }
    }
    Ok((o, unknown))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_and_reports_unknown() {
        let (o, unknown) = parse([
            "ro",
            "allow_other",
            "attr_timeout=0.5",
            "threads=8",
            "entry_cache=0",
            "master=c:1",
            "_netdev",
            "master=d:1",
        ])
        .unwrap();
        assert!(o.read_only && o.allow_other);
        assert_eq!(o.attr_timeout, Duration::from_millis(500));
        assert_eq!(o.entry_timeout, Duration::from_secs(1));
        assert_eq!(o.threads, 8);
        assert!(!o.entry_cache);
        assert_eq!(unknown, vec!["_netdev".to_string()]);
        assert_eq!(o.masters, vec!["c:1", "d:1"]);
        assert!(parse(["threads=0"]).is_err());
        assert!(parse(["attr_timeout=x"]).is_err());
    }
}
