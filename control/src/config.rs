//! Control-plane configuration ([`ControlConfig`]) from `VSYNC_*` variables, with validation
//! whose errors name the variable, the rejected value and what is accepted.
//!
//! | variable | meaning | default | accepted |
//! |---|---|---|---|
//! | `VSYNC_HOSTS` | hosts running the oracle replicas, comma-separated; unset = embedded single-replica oracle | unset | non-empty names, no spaces |
//! | `VSYNC_ORACLE_REPLICAS` | oracle replicas when `VSYNC_HOSTS` is set | 3 | odd, 1..=9 |
//! | `VSYNC_UNICAST_ONLY` | no IP multicast at all (requires `VSYNC_HOSTS`) | false | true/false/1/0/yes/no |
//! | `VSYNC_MAXIPMCADDRS` | most physical IP-multicast addresses in use | 25 | 0..=4096 |
//! | `VSYNC_MCRANGE_LOW` | lowest physical IPMC address | 239.255.0.1 | dotted multicast address, or an Isis²-style offset from 224.0.0.0 |
//! | `VSYNC_MCRANGE_HIGH` | highest physical IPMC address | 239.255.255.254 | as above, ≥ low |
//! | `VSYNC_FD_INTERVAL_MS` | failure-detector heartbeat interval | 100 | 1..=60000 |
//! | `VSYNC_FD_TIMEOUT_MS` | silence before suspicion | 1000 | ≥ 2 × interval, ≤ 600000 |
//! | `VSYNC_ORACLE_TICK_MS` | oracle raft tick (heartbeat 2 ticks, election 10–20 ticks) | 100 | 1..=10000 |
//! | `VSYNC_REMAP_INTERVAL_S` | periodic Dr. Multicast recomputation (also on every membership change) | 60 | 1..=86400 |

use std::net::Ipv4Addr;
use std::time::Duration;

use vsync_dataplane::config::parse_env_u64;
pub use vsync_dataplane::config::ConfigError;

use crate::drmc::{is_usable_multicast, McParams, DEFAULT_MAX_IPMC_ADDRS, MAX_IPMC_ADDRS_LIMIT};
use crate::fd::FdConfig;

/// Where the oracle runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OracleMode {
    /// One in-process replica: a single process or a loopback demo needs nothing else.
    Embedded,
    /// Replicas on the listed hosts.
    Replicated {
        /// Number of replicas.
        replicas: usize,
        /// Their hosts.
        hosts: Vec<String>,
    },
}

/// The control plane's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlConfig {
    /// Oracle hosts (`VSYNC_HOSTS`); empty = embedded oracle.
    pub hosts: Vec<String>,
    /// Oracle replicas when hosts are given (`VSYNC_ORACLE_REPLICAS`).
    pub oracle_replicas: usize,
    /// Dr. Multicast parameters (`VSYNC_UNICAST_ONLY`, `VSYNC_MAXIPMCADDRS`,
    /// `VSYNC_MCRANGE_LOW/HIGH`).
    pub multicast: McParams,
    /// Failure detection (`VSYNC_FD_INTERVAL_MS`, `VSYNC_FD_TIMEOUT_MS`).
    pub fd: FdConfig,
    /// Oracle raft tick (`VSYNC_ORACLE_TICK_MS`).
    pub oracle_tick: Duration,
    /// Periodic Dr. Multicast recomputation (`VSYNC_REMAP_INTERVAL_S`).
    pub remap_interval: Duration,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            hosts: Vec::new(),
            oracle_replicas: 3,
            multicast: McParams::default(),
            fd: FdConfig::default(),
            oracle_tick: Duration::from_millis(100),
            remap_interval: Duration::from_secs(60),
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

fn parse_bool(
    lookup: &dyn Fn(&str) -> Option<String>,
    name: &str,
    default: bool,
) -> Result<bool, ConfigError> {
    match lookup(name) {
        None => Ok(default),
        Some(v) => match v.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(err(name, &v, "true or false (also 1/0, yes/no, on/off)")),
        },
    }
}

/// Parses an IP-multicast address: dotted (`239.1.2.3`) or an Isis²-style integer offset
/// from 224.0.0.0 (`5000` = 224.0.19.136).
fn parse_mcaddr(
    lookup: &dyn Fn(&str) -> Option<String>,
    name: &str,
    default: Ipv4Addr,
) -> Result<Ipv4Addr, ConfigError> {
    let Some(v) = lookup(name) else {
        return Ok(default);
    };
    let t = v.trim();
    let addr = if let Ok(a) = t.parse::<Ipv4Addr>() {
        Some(a)
    } else if let Ok(off) = t.parse::<u32>() {
        u32::from(Ipv4Addr::new(224, 0, 0, 0))
            .checked_add(off)
            .map(Ipv4Addr::from)
    } else {
        None
    };
    match addr {
        Some(a) if is_usable_multicast(a) => Ok(a),
        _ => Err(err(
            name,
            &v,
            "an IPv4 multicast address in 224.0.1.0..=239.255.255.255, or an offset from \
             224.0.0.0 in 256..=268435455",
        )),
    }
}

impl ControlConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&|k| std::env::var(k).ok())
    }

    /// Reads variables through `lookup` (unset = `None`) and validates the result.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let d = ControlConfig::default();
        let hosts = match lookup("VSYNC_HOSTS") {
            None => Vec::new(),
            Some(v) => {
                let hosts: Vec<String> = v.split(',').map(|h| h.trim().to_owned()).collect();
                if hosts
                    .iter()
                    .any(|h| h.is_empty() || h.contains(char::is_whitespace))
                {
                    return Err(err(
                        "VSYNC_HOSTS",
                        &v,
                        "a comma-separated list of host names or addresses, none empty \
                         (e.g. oracle1,oracle2,oracle3)",
                    ));
                }
                hosts
            }
        };
        let replicas_set = lookup("VSYNC_ORACLE_REPLICAS").is_some();
        let oracle_replicas = parse_env_u64(lookup, "VSYNC_ORACLE_REPLICAS", 3, 1..=9)? as usize;
        if replicas_set && hosts.is_empty() && oracle_replicas > 1 {
            return Err(err(
                "VSYNC_ORACLE_REPLICAS",
                oracle_replicas,
                "1 unless VSYNC_HOSTS lists the hosts the replicas run on \
                 (without VSYNC_HOSTS the oracle is embedded: one in-process replica)",
            ));
        }
        let multicast = McParams {
            range_low: parse_mcaddr(lookup, "VSYNC_MCRANGE_LOW", d.multicast.range_low)?,
            range_high: parse_mcaddr(lookup, "VSYNC_MCRANGE_HIGH", d.multicast.range_high)?,
            max_addrs: parse_env_u64(
                lookup,
                "VSYNC_MAXIPMCADDRS",
                u64::from(DEFAULT_MAX_IPMC_ADDRS),
                0..=u64::from(MAX_IPMC_ADDRS_LIMIT),
            )? as u32,
            unicast_only: parse_bool(lookup, "VSYNC_UNICAST_ONLY", false)?,
        };
        let interval = parse_env_u64(lookup, "VSYNC_FD_INTERVAL_MS", 100, 1..=60_000)?;
        let timeout = parse_env_u64(lookup, "VSYNC_FD_TIMEOUT_MS", 1000, 2..=600_000)?;
        let tick = parse_env_u64(lookup, "VSYNC_ORACLE_TICK_MS", 100, 1..=10_000)?;
        let remap = parse_env_u64(lookup, "VSYNC_REMAP_INTERVAL_S", 60, 1..=86_400)?;
        let cfg = ControlConfig {
            hosts,
            oracle_replicas,
            multicast,
            fd: FdConfig {
                interval: Duration::from_millis(interval),
                timeout: Duration::from_millis(timeout),
            },
            oracle_tick: Duration::from_millis(tick),
            remap_interval: Duration::from_secs(remap),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks cross-variable rules; the error names the variable to change.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.multicast.unicast_only && self.hosts.is_empty() {
            return Err(err(
                "VSYNC_UNICAST_ONLY",
                "true",
                "VSYNC_HOSTS to be set as well (comma-separated oracle hosts): without IP \
                 multicast, processes cannot discover the oracle",
            ));
        }
        if !(1..=9).contains(&self.oracle_replicas) || self.oracle_replicas.is_multiple_of(2) {
            return Err(err(
                "VSYNC_ORACLE_REPLICAS",
                self.oracle_replicas,
                "an odd number in 1..=9 (an even count tolerates no more failures than one \
                 fewer replica)",
            ));
        }
        if !self.hosts.is_empty() && self.hosts.len() < self.oracle_replicas {
            return Err(err(
                "VSYNC_HOSTS",
                self.hosts.join(","),
                format!(
                    "at least VSYNC_ORACLE_REPLICAS={} hosts (one per replica; a host may be \
                     listed more than once)",
                    self.oracle_replicas
                ),
            ));
        }
        self.multicast.validate().map_err(|e| match e {
            crate::drmc::McParamsError::NotMulticast { variable, addr } => err(
                variable,
                addr,
                "an IPv4 multicast address in 224.0.1.0..=239.255.255.255",
            ),
            crate::drmc::McParamsError::Inverted { low, high } => err(
                "VSYNC_MCRANGE_HIGH",
                high,
                format!("an address at or above VSYNC_MCRANGE_LOW={low}"),
            ),
            crate::drmc::McParamsError::TooManyAddrs { max_addrs } => err(
                "VSYNC_MAXIPMCADDRS",
                max_addrs,
                format!("an integer in 0..={MAX_IPMC_ADDRS_LIMIT}"),
            ),
        })?;
        if self.fd.interval.is_zero() || self.fd.timeout < self.fd.interval * 2 {
            return Err(err(
                "VSYNC_FD_TIMEOUT_MS",
                self.fd.timeout.as_millis(),
                format!(
                    "at least twice VSYNC_FD_INTERVAL_MS={} (one lost heartbeat must not \
                     cause a suspicion)",
                    self.fd.interval.as_millis()
                ),
            ));
        }
        if self.oracle_tick.is_zero() {
            return Err(err("VSYNC_ORACLE_TICK_MS", 0, "1..=10000"));
        }
        Ok(())
    }

    /// Where the oracle runs under this configuration.
    pub fn oracle_mode(&self) -> OracleMode {
        if self.hosts.is_empty() {
            OracleMode::Embedded
        } else {
            OracleMode::Replicated {
                replicas: self.oracle_replicas,
                hosts: self.hosts.clone(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn cfg(vars: &[(&str, &str)]) -> Result<ControlConfig, ConfigError> {
        let map: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ControlConfig::from_lookup(&|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_are_embedded_and_valid() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c, ControlConfig::default());
        assert_eq!(c.oracle_mode(), OracleMode::Embedded);
        assert_eq!(c.multicast.max_addrs, 25);
        assert_eq!(c.oracle_replicas, 3);
    }

    #[test]
    fn unicast_only_without_hosts_names_both_variables() {
        let e = cfg(&[("VSYNC_UNICAST_ONLY", "true")]).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("VSYNC_UNICAST_ONLY") && s.contains("VSYNC_HOSTS"),
            "{s}"
        );
        let c = cfg(&[("VSYNC_UNICAST_ONLY", "1"), ("VSYNC_HOSTS", "a,b,c")]).unwrap();
        assert!(c.multicast.unicast_only);
        assert_eq!(
            c.oracle_mode(),
            OracleMode::Replicated {
                replicas: 3,
                hosts: vec!["a".into(), "b".into(), "c".into()]
            }
        );
    }

    #[test]
    fn bad_values_name_variable_value_and_accepted() {
        let e = cfg(&[("VSYNC_MAXIPMCADDRS", "lots")]).unwrap_err();
        assert_eq!(e.name, "VSYNC_MAXIPMCADDRS");
        assert_eq!(e.value, "lots");
        assert!(e.expected.contains("0..=4096"));
        let e = cfg(&[("VSYNC_MCRANGE_LOW", "10.0.0.1")]).unwrap_err();
        assert_eq!(e.name, "VSYNC_MCRANGE_LOW");
        let e = cfg(&[
            ("VSYNC_MCRANGE_LOW", "239.2.0.0"),
            ("VSYNC_MCRANGE_HIGH", "239.1.0.0"),
        ])
        .unwrap_err();
        assert_eq!(e.name, "VSYNC_MCRANGE_HIGH");
        assert!(e.expected.contains("VSYNC_MCRANGE_LOW=239.2.0.0"));
        let e = cfg(&[("VSYNC_HOSTS", "a,,b")]).unwrap_err();
        assert_eq!(e.name, "VSYNC_HOSTS");
        let e = cfg(&[("VSYNC_HOSTS", "a,b,c,d"), ("VSYNC_ORACLE_REPLICAS", "4")]).unwrap_err();
        assert!(e.to_string().contains("odd"), "{e}");
        let e = cfg(&[("VSYNC_HOSTS", "a,b"), ("VSYNC_ORACLE_REPLICAS", "3")]).unwrap_err();
        assert_eq!(e.name, "VSYNC_HOSTS");
        let e = cfg(&[("VSYNC_ORACLE_REPLICAS", "3")]).unwrap_err();
        assert!(e.expected.contains("VSYNC_HOSTS"));
        let e = cfg(&[
            ("VSYNC_FD_INTERVAL_MS", "500"),
            ("VSYNC_FD_TIMEOUT_MS", "600"),
        ])
        .unwrap_err();
        assert_eq!(e.name, "VSYNC_FD_TIMEOUT_MS");
        let e = cfg(&[("VSYNC_UNICAST_ONLY", "maybe")]).unwrap_err();
        assert!(e.expected.contains("true or false"));
    }

    #[test]
    fn isis_style_offsets_are_accepted() {
        let c = cfg(&[
            ("VSYNC_MCRANGE_LOW", "5000"),
            ("VSYNC_MCRANGE_HIGH", "505000"),
        ])
        .unwrap();
        assert_eq!(c.multicast.range_low, Ipv4Addr::new(224, 0, 19, 136));
        assert!(c.multicast.range_high > c.multicast.range_low);
        // Offsets inside 224.0.0.0/24 are link-local control addresses: refused.
        assert!(cfg(&[("VSYNC_MCRANGE_LOW", "5")]).is_err());
    }
}
