//! Protocol configuration ([`ProtocolConfig`]): limits and timers of the reliable-multicast
//! core, with defaults, validation and `VSYNC_*` environment variables.
//!
//! | variable | meaning | default | accepted |
//! |---|---|---|---|
//! | `VSYNC_MTU` | largest datagram vsync writes (bytes, trailer included) | 1472 | 576..=65507 |
//! | `VSYNC_MAXMSGLEN` | largest message (bytes) | 16777216 | 1..=1073741824 |
//! | `VSYNC_WINDOW_BYTES` | bytes a sender may have in flight beyond its slowest receiver's consumption | 8388608 | ≥ 65536 |
//! | `VSYNC_WINDOW_FRAMES` | frames in flight beyond the slowest receiver | 16384 | 64..=1048576 |
//! | `VSYNC_SEND_BUFFER_BYTES` | bytes a sender retains until stable (≥ `VSYNC_MAXMSGLEN`) | 33554432 | ≥ max message |
//! | `VSYNC_NAK_DELAY_US` | NAKs are sent after a random delay in 0..this | 200 | 0..=1000000 |
//! | `VSYNC_NAK_RETRY_US` | re-NAK interval while a gap persists | 2000 | 100..=10000000 |
//! | `VSYNC_ACK_INTERVAL_US` | longest time a changed receipt report waits | 1000 | 50..=1000000 |
//! | `VSYNC_HEARTBEAT_US` | sender heartbeat interval while it holds unstable data | 2000 | 100..=10000000 |
//! | `VSYNC_RETAIN_BYTES` | bytes each incoming group stream keeps until all-stable (to relay them in a view-change flush) | 2 × `VSYNC_WINDOW_BYTES` | ≥ 65536 |
//! | `VSYNC_RELAY_THRESHOLD` | a group without an IP-multicast address and with more members than this sends its data down a relay tree instead of flat unicast fan-out (0 = never) | 16 | 0..=65535 |
//! | `VSYNC_RELAY_FANOUT` | children per node of the relay tree | 4 | 2..=64 |

use std::time::Duration;

use crate::wire::{seal::TRAILER_MAX, FRAME_PREFIX_LEN, HEADER_LEN, RELAY_SUBHEADER_LEN};

/// A configuration error naming the variable (or field), the bad value and what is accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The variable or field name.
    pub name: String,
    /// The rejected value.
    pub value: String,
    /// What would have been accepted.
    pub expected: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}={}: expected {}",
            self.name, self.value, self.expected
        )
    }
}

impl std::error::Error for ConfigError {}

/// Limits and timers of the reliable-multicast core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolConfig {
    /// Largest datagram written, trailer included (no IP fragmentation as long as this fits the
    /// path MTU: 1472 = 1500 − IP − UDP headers).
    pub mtu: usize,
    /// Largest message accepted by a send.
    pub max_message_bytes: usize,
    /// Bytes a sender may transmit beyond the slowest receiver's consumed position.
    pub window_bytes: usize,
    /// Frames a sender may transmit beyond the slowest receiver's consumed position.
    pub window_frames: usize,
    /// Bytes a sender retains until all members hold them (admission limit of sends).
    pub send_buffer_bytes: usize,
    /// Upper bound of the random delay before a NAK.
    pub nak_delay: Duration,
    /// Interval between repeated NAKs of a persisting gap.
    pub nak_retry: Duration,
    /// Longest a changed receipt report waits before it is sent.
    pub ack_interval: Duration,
    /// Sender heartbeat interval while unstable data exists.
    pub heartbeat_interval: Duration,
    /// A NAK for a frame retransmitted less than this long ago is ignored (suppression).
    pub retransmit_linger: Duration,
    /// Deliver a member's own multicasts to itself (Isis² semantics).
    pub self_delivery: bool,
    /// Most senders tracked by replay protection.
    pub max_senders: usize,
    /// Bytes each incoming group stream retains (frames held contiguously but not yet held by
    /// every other member), so a survivor can relay a failed sender's frames in a view-change
    /// flush. A frame that does not fit is treated as lost (NAKed again later). Should cover
    /// twice the window.
    pub retain_bytes: usize,
    /// A group without an IP-multicast address whose view has more members than this sends the
    /// first transmission of its group-stream data down a relay tree (`relay_fanout` children
    /// per node) instead of one unicast copy per member; 0 disables the tree.
    pub relay_threshold: usize,
    /// Children per node of the relay tree (k of the k-ary tree).
    pub relay_fanout: usize,
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        ProtocolConfig {
            mtu: 1472,
            max_message_bytes: 16 << 20,
            window_bytes: 8 << 20,
            window_frames: 16384,
            send_buffer_bytes: 32 << 20,
            nak_delay: Duration::from_micros(200),
            nak_retry: Duration::from_millis(2),
            ack_interval: Duration::from_millis(1),
            heartbeat_interval: Duration::from_millis(2),
            retransmit_linger: Duration::from_micros(500),
            self_delivery: true,
            max_senders: 65536,
            retain_bytes: 2 * (8 << 20),
            relay_threshold: 16,
            relay_fanout: 4,
        }
    }
}

fn err(name: &str, value: impl ToString, expected: impl ToString) -> ConfigError {
    ConfigError {
        name: name.into(),
        value: value.to_string(),
        expected: expected.to_string(),
    }
}

/// Parses an integer variable within `range`, or returns `default` when unset.
pub fn parse_env_u64(
    lookup: &dyn Fn(&str) -> Option<String>,
    name: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ConfigError> {
    match lookup(name) {
        None => Ok(default),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(err(
                name,
                &v,
                format!("an integer in {}..={}", range.start(), range.end()),
            )),
        },
    }
}

impl ProtocolConfig {
    /// Payload bytes of an unfragmented message frame at this MTU (worst-case trailer). Sized so
    /// that the frame can also be relayed in one RELAY frame (whose sub-header is the largest).
    pub fn max_frame_payload(&self) -> usize {
        self.mtu - HEADER_LEN - TRAILER_MAX - FRAME_PREFIX_LEN - RELAY_SUBHEADER_LEN
    }

    /// Payload bytes per fragment at this MTU (worst-case trailer; relayable like
    /// [`ProtocolConfig::max_frame_payload`]).
    pub fn fragment_payload(&self) -> usize {
        self.mtu - HEADER_LEN - TRAILER_MAX - FRAME_PREFIX_LEN - RELAY_SUBHEADER_LEN
    }

    /// Checks internal consistency; the error names the offending field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(576..=65507).contains(&self.mtu) {
            return Err(err("VSYNC_MTU", self.mtu, "576..=65507"));
        }
        if self.max_message_bytes == 0 || self.max_message_bytes > 1 << 30 {
            return Err(err(
                "VSYNC_MAXMSGLEN",
                self.max_message_bytes,
                "1..=1073741824",
            ));
        }
        let frames_per_max = self.max_message_bytes.div_ceil(self.fragment_payload());
        if frames_per_max > u32::MAX as usize {
            return Err(err(
                "VSYNC_MAXMSGLEN",
                self.max_message_bytes,
                "fewer than 2^32 fragments",
            ));
        }
        if self.window_bytes < 65536 {
            return Err(err(
                "VSYNC_WINDOW_BYTES",
                self.window_bytes,
                "at least 65536",
            ));
        }
        if !(64..=1 << 20).contains(&self.window_frames) {
            return Err(err(
                "VSYNC_WINDOW_FRAMES",
                self.window_frames,
                "64..=1048576",
            ));
        }
        if 4 * self.window_frames < frames_per_max {
            return Err(err(
                "VSYNC_WINDOW_FRAMES",
                self.window_frames,
                format!(
                    "at least {} (a quarter of the {frames_per_max} fragments of a VSYNC_MAXMSGLEN message)",
                    frames_per_max.div_ceil(4)
                ),
            ));
        }
        if self.retain_bytes < 65536 {
            return Err(err(
                "VSYNC_RETAIN_BYTES",
                self.retain_bytes,
                "at least 65536",
            ));
        }
        if self.relay_threshold > u16::MAX as usize {
            return Err(err(
                "VSYNC_RELAY_THRESHOLD",
                self.relay_threshold,
                "0..=65535",
            ));
        }
        if !(2..=64).contains(&self.relay_fanout) {
            return Err(err("VSYNC_RELAY_FANOUT", self.relay_fanout, "2..=64"));
        }
        if self.send_buffer_bytes < self.max_message_bytes {
            return Err(err(
                "VSYNC_SEND_BUFFER_BYTES",
                self.send_buffer_bytes,
                format!("at least VSYNC_MAXMSGLEN ({})", self.max_message_bytes),
            ));
        }
        Ok(())
    }

    /// Defaults overridden by `VSYNC_*` variables looked up through `lookup` (pass
    /// `|k| std::env::var(k).ok()` for the process environment), then validated.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let d = ProtocolConfig::default();
        let us = |name: &str, default: Duration, range| -> Result<Duration, ConfigError> {
            parse_env_u64(lookup, name, default.as_micros() as u64, range)
                .map(Duration::from_micros)
        };
        let c = ProtocolConfig {
            mtu: parse_env_u64(lookup, "VSYNC_MTU", d.mtu as u64, 576..=65507)? as usize,
            max_message_bytes: parse_env_u64(
                lookup,
                "VSYNC_MAXMSGLEN",
                d.max_message_bytes as u64,
                1..=1 << 30,
            )? as usize,
            window_bytes: parse_env_u64(
                lookup,
                "VSYNC_WINDOW_BYTES",
                d.window_bytes as u64,
                65536..=1 << 34,
            )? as usize,
            window_frames: parse_env_u64(
                lookup,
                "VSYNC_WINDOW_FRAMES",
                d.window_frames as u64,
                64..=1 << 20,
            )? as usize,
            send_buffer_bytes: parse_env_u64(
                lookup,
                "VSYNC_SEND_BUFFER_BYTES",
                d.send_buffer_bytes as u64,
                1..=1 << 36,
            )? as usize,
            nak_delay: us("VSYNC_NAK_DELAY_US", d.nak_delay, 0..=1_000_000)?,
            nak_retry: us("VSYNC_NAK_RETRY_US", d.nak_retry, 100..=10_000_000)?,
            ack_interval: us("VSYNC_ACK_INTERVAL_US", d.ack_interval, 50..=1_000_000)?,
            heartbeat_interval: us("VSYNC_HEARTBEAT_US", d.heartbeat_interval, 100..=10_000_000)?,
            relay_threshold: parse_env_u64(
                lookup,
                "VSYNC_RELAY_THRESHOLD",
                d.relay_threshold as u64,
                0..=65535,
            )? as usize,
            relay_fanout: parse_env_u64(
                lookup,
                "VSYNC_RELAY_FANOUT",
                d.relay_fanout as u64,
                2..=64,
            )? as usize,
            ..d
        };
        let c = ProtocolConfig {
            retain_bytes: parse_env_u64(
                lookup,
                "VSYNC_RETAIN_BYTES",
                2 * c.window_bytes as u64,
                65536..=1 << 36,
            )? as usize,
            ..c
        };
        c.validate()?;
        Ok(c)
    }

    /// Defaults overridden by the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&|k| std::env::var(k).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        ProtocolConfig::default().validate().unwrap();
        assert!(ProtocolConfig::default().max_frame_payload() > 1300);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = ProtocolConfig::from_lookup(&|k| (k == "VSYNC_MTU").then(|| "9".to_string()))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "VSYNC_MTU=9: expected an integer in 576..=65507"
        );
        let e =
            ProtocolConfig::from_lookup(&|k| (k == "VSYNC_MAXMSGLEN").then(|| "abc".to_string()))
                .unwrap_err();
        assert!(e.to_string().starts_with("VSYNC_MAXMSGLEN=abc"));
        let e = ProtocolConfig::from_lookup(&|k| match k {
            "VSYNC_SEND_BUFFER_BYTES" => Some("1000".into()),
            _ => None,
        })
        .unwrap_err();
        assert!(e.to_string().contains("at least VSYNC_MAXMSGLEN"));
    }

    #[test]
    fn relay_tree_settings_parse_and_validate() {
        let c = ProtocolConfig::from_lookup(&|k| match k {
            "VSYNC_RELAY_THRESHOLD" => Some("32".into()),
            "VSYNC_RELAY_FANOUT" => Some("8".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!((c.relay_threshold, c.relay_fanout), (32, 8));
        let c =
            ProtocolConfig::from_lookup(&|k| (k == "VSYNC_RELAY_THRESHOLD").then(|| "0".into()))
                .unwrap();
        assert_eq!(c.relay_threshold, 0);
        let e = ProtocolConfig::from_lookup(&|k| (k == "VSYNC_RELAY_FANOUT").then(|| "1".into()))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "VSYNC_RELAY_FANOUT=1: expected an integer in 2..=64"
        );
        let bad = ProtocolConfig {
            relay_fanout: 65,
            ..ProtocolConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().name, "VSYNC_RELAY_FANOUT");
        let bad = ProtocolConfig {
            relay_threshold: 70_000,
            ..ProtocolConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().name, "VSYNC_RELAY_THRESHOLD");
    }

    #[test]
    fn retain_bytes_defaults_to_twice_the_window() {
        let c =
            ProtocolConfig::from_lookup(&|k| (k == "VSYNC_WINDOW_BYTES").then(|| "100000".into()))
                .unwrap();
        assert_eq!(c.retain_bytes, 200_000);
        let c =
            ProtocolConfig::from_lookup(&|k| (k == "VSYNC_RETAIN_BYTES").then(|| "70000".into()))
                .unwrap();
        assert_eq!(c.retain_bytes, 70_000);
        let e = ProtocolConfig::from_lookup(&|k| (k == "VSYNC_RETAIN_BYTES").then(|| "10".into()))
            .unwrap_err();
        assert!(e.to_string().starts_with("VSYNC_RETAIN_BYTES=10"), "{e}");
        assert_eq!(
            ProtocolConfig::default().retain_bytes,
            2 * ProtocolConfig::default().window_bytes
        );
    }
}
