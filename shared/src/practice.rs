//! Practice configuration and the owner's policy (DESIGN §4.4).

use std::collections::BTreeMap;
use std::fmt;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use crate::action::ActionKind;
use crate::ids::PracticeId;
use crate::treatment::Treatment;

/// How a kind of action is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Sent without asking, within the limits.
    Auto,
    /// The owner approves each one (the default).
    Approve,
    /// Never proposed.
    Off,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            "approve" => Some(Self::Approve),
            "off" => Some(Self::Off),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Approve => "approve",
            Self::Off => "off",
        }
    }
}

/// Per-kind policy. Anything over a limit falls back to owner approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindPolicy {
    pub mode: Mode,
    /// Most auto-approved actions of this kind per practice-local day.
    pub max_auto_per_day: u32,
    /// Largest estimated value that may be auto-approved.
    pub max_auto_value: u32,
}

impl Default for KindPolicy {
    fn default() -> Self {
        Self {
            mode: Mode::Approve,
            max_auto_per_day: 20,
            max_auto_value: 1000,
        }
    }
}

/// The whole policy. `Policy::default()` is "everything needs approval" (DESIGN §2.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub kinds: BTreeMap<ActionKind, KindPolicy>,
    /// Days after a nudge before the same patient may be nudged again.
    pub cooldown_days: u32,
    /// Most nudges per patient in any 30 days.
    pub max_nudges_per_30_days: u32,
    /// Practice-local hours [start, end) in which triggers are not delivered.
    pub quiet_hours: Option<(u8, u8)>,
    /// Hours an approval link stays valid.
    pub approval_expiry_hours: u32,
    /// Slot fill offers an opened slot to this many due patients (DESIGN §5, K).
    #[serde(default = "default_slot_fill_k")]
    pub slot_fill_k: u32,
}

fn default_slot_fill_k() -> u32 {
    3
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            kinds: ActionKind::ALL
                .into_iter()
                .map(|k| (k, KindPolicy::default()))
                .collect(),
            cooldown_days: 14,
            max_nudges_per_30_days: 2,
            quiet_hours: Some((20, 8)),
            approval_expiry_hours: 72,
            slot_fill_k: default_slot_fill_k(),
        }
    }
}

impl Policy {
    pub fn for_kind(&self, kind: ActionKind) -> KindPolicy {
        self.kinds.get(&kind).cloned().unwrap_or_default()
    }

    /// When `now` falls in the quiet hours (practice-local `[start, end)`, wrapping past
    /// midnight when start > end), the instant they end: delivery waits until then. `None`
    /// outside quiet hours, or with none set. The end is the next local `end:00`, so a DST
    /// change inside the window moves the instant, not the local hour.
    pub fn quiet_until(&self, tz: &TimeZone, now: jiff::Timestamp) -> Option<jiff::Timestamp> {
        let (start, end) = self.quiet_hours?;
        if start == end {
            return None;
        }
        let local = now.to_zoned(tz.clone());
        let h = local.hour();
        let (start, end) = (i8::try_from(start).ok()?, i8::try_from(end).ok()?);
        let quiet = if start < end {
            start <= h && h < end
        } else {
            h >= start || h < end
        };
        if !quiet {
            return None;
        }
        let mut day = local.date();
        loop {
            let at = day.at(end, 0, 0, 0).to_zoned(tz.clone()).ok()?.timestamp();
            if at > now {
                return Some(at);
            }
            day = day.tomorrow().ok()?;
        }
    }
}

/// Secrets as stored: sealed (KMS ciphertext, base64). Opening them needs the key service.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecrets {
    /// Inbound webhook secrets, newest first; two during a rotation overlap.
    pub webhook: Vec<String>,
    pub trigger: String,
    /// Key for approval-link tokens.
    pub link: String,
}

impl fmt::Debug for SealedSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SealedSecrets(webhook: {}, <sealed>)",
            self.webhook.len()
        )
    }
}

/// One practice's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Practice {
    pub id: PracticeId,
    /// IANA time zone name.
    pub time_zone: String,
    pub owner_emails: Vec<String>,
    pub trigger_url: String,
    pub secrets: SealedSecrets,
    pub policy: Policy,
    #[serde(default)]
    pub cycle_days: BTreeMap<Treatment, u32>,
    #[serde(default)]
    pub avg_ticket: BTreeMap<Treatment, u32>,
    /// Follow-up interval overrides (days after the completion).
    #[serde(default)]
    pub follow_up_days: BTreeMap<Treatment, u32>,
    /// Win-back after this many cycles without a visit (default 2).
    #[serde(default)]
    pub win_back_multiple: Option<u32>,
    #[serde(default)]
    pub disabled: bool,
    /// Set when the PMS answered 410: no triggers are sent until the URL is updated.
    #[serde(default)]
    pub endpoint_retired: bool,
    /// Last practice-local date the nightly scan ran for.
    #[serde(default)]
    pub last_scan_date: Option<Date>,
    /// Bumped on every write; writes are conditional on it.
    #[serde(default)]
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("time_zone: not an IANA time zone name")]
    TimeZone,
    #[error("owner_email: not an e-mail address")]
    OwnerEmail,
    #[error("trigger_url: must be https (http only for loopback in the local stack)")]
    TriggerUrl,
}

impl Practice {
    pub fn tz(&self) -> TimeZone {
        TimeZone::get(&self.time_zone).unwrap_or(TimeZone::UTC)
    }

    pub fn cycle_days(&self, t: Treatment) -> Option<u32> {
        self.cycle_days
            .get(&t)
            .copied()
            .or_else(|| t.default_cycle_days())
    }

    pub fn follow_up_days(&self, t: Treatment) -> Option<u32> {
        self.follow_up_days
            .get(&t)
            .copied()
            .or_else(|| crate::rules::default_follow_up_days(t))
    }

    pub fn series_interval(&self, t: Treatment) -> Option<u32> {
        self.cycle_days
            .get(&t)
            .copied()
            .or_else(|| crate::rules::default_series_interval(t))
    }

    pub fn win_back_multiple(&self) -> u32 {
        self.win_back_multiple
            .unwrap_or(crate::rules::DEFAULT_WIN_BACK_MULTIPLE)
            .max(2)
    }

    pub fn avg_ticket(&self, t: Treatment) -> u32 {
        self.avg_ticket
            .get(&t)
            .copied()
            .unwrap_or_else(|| t.default_avg_ticket())
    }

    /// The practice-local calendar date of an instant.
    pub fn local_date(&self, at: jiff::Timestamp) -> Date {
        at.to_zoned(self.tz()).date()
    }
}

pub fn validate_time_zone(tz: &str) -> Result<(), ConfigError> {
    TimeZone::get(tz)
        .map(|_| ())
        .map_err(|_| ConfigError::TimeZone)
}

pub fn validate_email(e: &str) -> Result<(), ConfigError> {
    let ok = e.len() <= 254
        && e.split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'))
        && !e.contains(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(ConfigError::OwnerEmail)
    }
}

/// Trigger URLs are https. Plain http is allowed only to a loopback host and only when the
/// caller says loopback is allowed (the local stack).
pub fn validate_trigger_url(u: &str, allow_loopback_http: bool) -> Result<(), ConfigError> {
    let url = url::Url::parse(u).map_err(|_| ConfigError::TriggerUrl)?;
    match url.scheme() {
        "https" if url.host().is_some() => Ok(()),
        "http" if allow_loopback_http && is_loopback(&url) => Ok(()),
        _ => Err(ConfigError::TriggerUrl),
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(tz: &TimeZone, s: &str) -> jiff::Timestamp {
        s.parse::<jiff::civil::DateTime>()
            .unwrap()
            .to_zoned(tz.clone())
            .unwrap()
            .timestamp()
    }

    #[test]
    fn quiet_hours_defer_to_their_local_end_across_midnight_and_dst() {
        let tz = TimeZone::get("America/New_York").unwrap();
        let p = Policy::default(); // 20:00-08:00
        assert_eq!(p.quiet_until(&tz, at(&tz, "2026-11-23T12:00")), None);
        assert_eq!(p.quiet_until(&tz, at(&tz, "2026-11-23T19:59:59")), None);
        assert_eq!(
            p.quiet_until(&tz, at(&tz, "2026-11-23T20:00")),
            Some(at(&tz, "2026-11-24T08:00"))
        );
        assert_eq!(
            p.quiet_until(&tz, at(&tz, "2026-11-24T07:30")),
            Some(at(&tz, "2026-11-24T08:00"))
        );
        assert_eq!(p.quiet_until(&tz, at(&tz, "2026-11-24T08:00")), None);
        // Fall back (Nov 1, 2026): the night is 13 hours long, still ends at 08:00 local.
        let end = p.quiet_until(&tz, at(&tz, "2026-10-31T21:00")).unwrap();
        assert_eq!(end, at(&tz, "2026-11-01T08:00"));
        assert_eq!(
            end.duration_since(at(&tz, "2026-10-31T21:00")).as_hours(),
            12
        );
        // Spring forward (Mar 8, 2026): 02:00-03:00 does not exist; the end is still 08:00.
        let end = p.quiet_until(&tz, at(&tz, "2026-03-08T01:30")).unwrap();
        assert_eq!(end, at(&tz, "2026-03-08T08:00"));
        // A window inside one day, and none.
        let day = Policy {
            quiet_hours: Some((12, 14)),
            ..Policy::default()
        };
        assert_eq!(
            day.quiet_until(&tz, at(&tz, "2026-11-23T13:00")),
            Some(at(&tz, "2026-11-23T14:00"))
        );
        assert_eq!(day.quiet_until(&tz, at(&tz, "2026-11-23T14:00")), None);
        let none = Policy {
            quiet_hours: None,
            ..Policy::default()
        };
        assert_eq!(none.quiet_until(&tz, at(&tz, "2026-11-23T23:00")), None);
    }

    #[test]
    fn trigger_urls_are_https_except_loopback_locally() {
        assert!(validate_trigger_url("https://pms.example.com/hooks", false).is_ok());
        assert!(validate_trigger_url("http://pms.example.com/hooks", true).is_err());
        assert!(validate_trigger_url("http://127.0.0.1:4000/t", true).is_ok());
        assert!(validate_trigger_url("http://127.0.0.1:4000/t", false).is_err());
        assert!(validate_trigger_url("ftp://x", true).is_err());
    }

    #[test]
    fn default_policy_needs_approval_for_everything() {
        let p = Policy::default();
        assert!(
            ActionKind::ALL
                .iter()
                .all(|k| p.for_kind(*k).mode == Mode::Approve)
        );
    }

    #[test]
    fn time_zone_and_email_checks() {
        assert!(validate_time_zone("America/New_York").is_ok());
        assert!(validate_time_zone("Mars/Base").is_err());
        assert!(validate_email("owner@clinic.example").is_ok());
        assert!(validate_email("owner").is_err());
    }
}
